//! Conversions between Python objects and the engine's JSON values and message records.
//!
//! Done here rather than through Python's `json` module: a message crosses this boundary on
//! every publish and consume, and a direct walk costs a fraction of an encode plus a decode.

use ddmq::engine::{Message, Requeue};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use serde_json::{Map, Number, Value};

/// Deepest nesting accepted in a message body (a cycle would otherwise never end).
const MAX_DEPTH: usize = 256;

/// A Python value as JSON, as `json.dumps` accepts it: dicts with string keys, lists and tuples,
/// strings, ints, floats, bools and None.
pub fn to_value(obj: &Bound<'_, PyAny>) -> PyResult<Value> {
    to_value_at(obj, 0)
}

fn to_value_at(obj: &Bound<'_, PyAny>, depth: usize) -> PyResult<Value> {
    if depth > MAX_DEPTH {
        return Err(PyValueError::new_err(
            "message body nested too deeply (or circular)",
        ));
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(Value::String(s.to_cow()?.into_owned()));
    }
    if obj.is_none() {
        return Ok(Value::Null);
    }
    if let Ok(b) = obj.cast::<PyBool>() {
        return Ok(Value::Bool(b.is_true()));
    }
    if obj.cast::<PyInt>().is_ok() {
        if let Ok(i) = obj.extract::<i64>() {
            return Ok(Value::Number(i.into()));
        }
        if let Ok(u) = obj.extract::<u64>() {
            return Ok(Value::Number(u.into()));
        }
        return Err(PyValueError::new_err(
            "integer in message body does not fit in 64 bits",
        ));
    }
    if let Ok(f) = obj.cast::<PyFloat>() {
        return Number::from_f64(f.value())
            .map(Value::Number)
            .ok_or_else(|| PyValueError::new_err("NaN and infinity cannot be stored in JSON"));
    }
    if let Ok(d) = obj.cast::<PyDict>() {
        let mut map = Map::new();
        for (k, v) in d.iter() {
            let key = if let Ok(s) = k.cast::<PyString>() {
                s.to_cow()?.into_owned()
            } else if k.is_none() || k.cast::<PyInt>().is_ok() || k.cast::<PyFloat>().is_ok() {
                // json.dumps turns these keys into strings too.
                match to_value_at(&k, depth + 1)? {
                    Value::Null => "null".to_owned(),
                    other => other.to_string(),
                }
            } else {
                return Err(PyTypeError::new_err(format!(
                    "keys must be str, int, float, bool or None, not {}",
                    k.get_type().name()?
                )));
            };
            map.insert(key, to_value_at(&v, depth + 1)?);
        }
        return Ok(Value::Object(map));
    }
    if let Ok(l) = obj.cast::<PyList>() {
        return l.iter().map(|v| to_value_at(&v, depth + 1)).collect();
    }
    if let Ok(t) = obj.cast::<PyTuple>() {
        return t.iter().map(|v| to_value_at(&v, depth + 1)).collect();
    }
    Err(PyTypeError::new_err(format!(
        "Object of type {} is not JSON serializable",
        obj.get_type().name()?
    )))
}

/// A JSON value as the Python object `json.loads` would give.
pub fn to_py<'py>(py: Python<'py>, value: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match value {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.into_pyobject(py)?.into_any()
            } else if let Some(u) = n.as_u64() {
                u.into_pyobject(py)?.into_any()
            } else {
                PyFloat::new(py, n.as_f64().unwrap_or(f64::NAN)).into_any()
            }
        }
        Value::String(s) => PyString::new(py, s).into_any(),
        Value::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(to_py(py, item)?)?;
            }
            list.into_any()
        }
        Value::Object(map) => {
            let dict = PyDict::new(py);
            for (k, v) in map {
                dict.set_item(k, to_py(py, v)?)?;
            }
            dict.into_any()
        }
    })
}

/// The `requeue` argument of the Python API: False/None/0 drop, True requeues at the queue's
/// `requeue_prio`, an integer N requeues at priority N.
pub fn requeue_from_py(obj: &Bound<'_, PyAny>) -> PyResult<Requeue> {
    if obj.is_none() {
        return Ok(Requeue::Drop);
    }
    if let Ok(b) = obj.cast::<PyBool>() {
        return Ok(if b.is_true() {
            Requeue::QueuePriority
        } else {
            Requeue::Drop
        });
    }
    match obj.extract::<i64>() {
        Ok(0) => Ok(Requeue::Drop),
        Ok(p) if p > 0 => Ok(Requeue::Priority(p as u64)),
        Ok(p) => Err(PyValueError::new_err(format!(
            "requeue priority must not be negative (requeue={p})"
        ))),
        Err(_) => Err(PyTypeError::new_err(
            "requeue must be True, False, None or a priority (int)",
        )),
    }
}

fn requeue_to_py<'py>(py: Python<'py>, r: Requeue) -> PyResult<Bound<'py, PyAny>> {
    Ok(match r {
        Requeue::Drop => PyBool::new(py, false).to_owned().into_any(),
        Requeue::QueuePriority => PyBool::new(py, true).to_owned().into_any(),
        Requeue::Priority(p) => p.into_pyobject(py)?.into_any(),
    })
}

/// A message record as the `__dict__` of a Python `ddmq.message`, in the attribute order of
/// 0.9.10's constructor (so `msg2json` writes the fields in the original's order), then any
/// extra keys the file carried. `body`, when given, stands for `m.message` (publish hands back
/// the caller's own object rather than a copy).
pub fn message_dict<'py>(
    py: Python<'py>,
    m: &Message,
    body: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    match body {
        Some(b) => d.set_item(pyo3::intern!(py, "message"), b)?,
        None => d.set_item(pyo3::intern!(py, "message"), to_py(py, &m.message)?)?,
    }
    d.set_item(pyo3::intern!(py, "queue"), &m.queue)?;
    d.set_item(pyo3::intern!(py, "timeout"), m.timeout)?;
    d.set_item(pyo3::intern!(py, "id"), &m.id)?;
    d.set_item(pyo3::intern!(py, "priority"), m.priority)?;
    d.set_item(pyo3::intern!(py, "queue_number"), m.queue_number)?;
    d.set_item(pyo3::intern!(py, "filename"), &m.filename)?;
    d.set_item(pyo3::intern!(py, "requeue"), requeue_to_py(py, m.requeue)?)?;
    d.set_item(pyo3::intern!(py, "requeue_counter"), m.requeue_counter)?;
    d.set_item(pyo3::intern!(py, "requeue_limit"), m.requeue_limit)?;
    for (k, v) in &m.extra {
        d.set_item(k, to_py(py, v)?)?;
    }
    Ok(d)
}
