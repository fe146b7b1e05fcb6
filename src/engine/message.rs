//! The message record stored in each message file, and its JSON encoding.
//!
//! Files are written the way Python's `json.dumps` writes them (`", "` and `": "` separators,
//! non-ASCII escaped as `\uXXXX`, fields in the order 0.9.10 uses on Python 3), so a file we write
//! is indistinguishable from one the original wrote. Reading is lenient: any key order, extra keys
//! (kept and written back), `requeue` as bool or int, nulls, and numbers written as floats.

use serde::de::{self, Deserializer};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::io;

/// What happens to a message that is nacked or expires (the `requeue` field).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Requeue {
    /// `false` (or null): delete it.
    #[default]
    Drop,
    /// `true`: requeue at the queue's `requeue_prio`.
    QueuePriority,
    /// an integer N: requeue at priority N.
    Priority(u64),
}

impl Requeue {
    pub fn is_requeue(self) -> bool {
        self != Requeue::Drop
    }
}

impl Serialize for Requeue {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Requeue::Drop => s.serialize_bool(false),
            Requeue::QueuePriority => s.serialize_bool(true),
            Requeue::Priority(p) => s.serialize_u64(*p),
        }
    }
}

impl<'de> Deserialize<'de> for Requeue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match Value::deserialize(d)? {
            Value::Null | Value::Bool(false) => Requeue::Drop,
            Value::Bool(true) => Requeue::QueuePriority,
            // Python's truthiness: 0 means "do not requeue".
            Value::Number(n) => match n.as_f64() {
                Some(f) if f >= 1.0 => Requeue::Priority(f as u64),
                Some(f) if f != 0.0 => {
                    return Err(de::Error::custom("requeue must not be negative"));
                }
                _ => Requeue::Drop,
            },
            Value::String(s) if s.is_empty() => Requeue::Drop,
            other => {
                return Err(de::Error::custom(format!(
                    "requeue must be a bool or an integer, not {other}"
                )));
            }
        })
    }
}

/// Accepts an integer, an integral float, or null; negative numbers are refused.
fn lenient_opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        Value::Bool(b) => Ok(Some(b as u64)),
        Value::Number(n) => match n.as_u64() {
            Some(v) => Ok(Some(v)),
            None => match n.as_f64() {
                Some(f) if f >= 0.0 && f.is_finite() => Ok(Some(f as u64)),
                _ => Err(de::Error::custom(format!(
                    "expected a non-negative integer, got {n}"
                ))),
            },
        },
        other => Err(de::Error::custom(format!(
            "expected an integer, got {other}"
        ))),
    }
}

fn lenient_u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    Ok(lenient_opt_u64(d)?.unwrap_or(0))
}

fn lenient_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Null => String::new(),
        Value::String(s) => s,
        other => other.to_string(),
    })
}

/// One message, as stored in its file. Field order is the order written.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// The payload: any JSON value (the CLI and the mount publish strings).
    #[serde(default)]
    pub message: Value,
    #[serde(default, deserialize_with = "lenient_string")]
    pub queue: String,
    /// Seconds in flight before expiry; None or 0 means the queue's `message_timeout`.
    #[serde(default, deserialize_with = "lenient_opt_u64")]
    pub timeout: Option<u64>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub id: String,
    #[serde(default, deserialize_with = "lenient_u64")]
    pub priority: u64,
    #[serde(default, deserialize_with = "lenient_u64")]
    pub queue_number: u64,
    /// The file name: the waiting name on disk; the `work/` name in what consume returns.
    #[serde(default, deserialize_with = "lenient_string")]
    pub filename: String,
    #[serde(default)]
    pub requeue: Requeue,
    #[serde(default, deserialize_with = "lenient_u64")]
    pub requeue_counter: u64,
    /// Requeues allowed; None or 0 means unlimited.
    #[serde(default, deserialize_with = "lenient_opt_u64")]
    pub requeue_limit: Option<u64>,
    /// Keys written by other tools, kept as they are.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Message {
    /// Decodes a message file's bytes.
    pub fn from_json(bytes: &[u8]) -> Result<Message, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// Encodes as Python's `json.dumps` would.
    pub fn to_json(&self) -> String {
        to_python_json(self)
    }

    /// The effective timeout, given the queue's default.
    pub fn timeout_or(&self, default: u64) -> u64 {
        match self.timeout {
            Some(t) if t > 0 => t,
            _ => default,
        }
    }

    /// True when another requeue is allowed by `requeue_limit`.
    pub fn may_requeue_again(&self) -> bool {
        match self.requeue_limit {
            Some(limit) if limit > 0 => self.requeue_counter < limit,
            _ => true,
        }
    }

    /// The body as text: strings as they are, other JSON values encoded.
    pub fn body_text(&self) -> String {
        match &self.message {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        }
    }
}

/// serde_json formatter that reproduces Python's `json.dumps` defaults.
struct PythonFormatter;

impl serde_json::ser::Formatter for PythonFormatter {
    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }
    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }
    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        // ensure_ascii: everything outside ASCII as \uXXXX, astral planes as surrogate pairs.
        if fragment.is_ascii() {
            return w.write_all(fragment.as_bytes()); // the common case, checked a word at a time
        }
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            if c.is_ascii() {
                continue;
            }
            w.write_all(&fragment.as_bytes()[start..i])?;
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                write!(w, "\\u{:04x}", unit)?;
            }
            start = i + c.len_utf8();
        }
        w.write_all(&fragment.as_bytes()[start..])
    }
}

/// Encodes any value as Python's `json.dumps(value)` would.
pub fn to_python_json<T: Serialize + ?Sized>(value: &T) -> String {
    let mut out = Vec::with_capacity(256);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, PythonFormatter);
    value
        .serialize(&mut ser)
        .expect("serialising to memory cannot fail");
    String::from_utf8(out).expect("the formatter writes ASCII")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_python_written_file_and_writes_it_back_identically() {
        let py = r#"{"message": "hello", "queue": "q", "timeout": null, "id": "c1c05212dc524a309be1016431c4fb4c", "priority": 999, "queue_number": 1, "filename": "999.1.ddmqc1c05212dc524a309be1016431c4fb4c", "requeue": false, "requeue_counter": 0, "requeue_limit": null}"#;
        let m = Message::from_json(py.as_bytes()).unwrap();
        assert_eq!(m.to_json(), py);
    }

    #[test]
    fn any_key_order_extra_keys_int_requeue_and_unicode() {
        let py = r#"{"requeue": 7, "extra_key": [1, 2], "message": "h\u00e9 \ud83d\ude00", "id": "ab", "priority": 5.0}"#;
        let m = Message::from_json(py.as_bytes()).unwrap();
        assert_eq!(m.requeue, Requeue::Priority(7));
        assert_eq!(m.priority, 5);
        assert_eq!(m.message, Value::String("hé 😀".into()));
        assert_eq!(m.extra["extra_key"], serde_json::json!([1, 2]));
        let back = m.to_json();
        assert!(
            back.contains(r#""message": "h\u00e9 \ud83d\ude00""#),
            "{back}"
        );
        assert!(back.ends_with(r#""extra_key": [1, 2]}"#), "{back}");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bad in [
            "",
            "{",
            "[]",
            "{\"requeue\": \"x\"}",
            "{\"priority\": -1}",
            "\u{0}",
        ] {
            assert!(Message::from_json(bad.as_bytes()).is_err(), "{bad:?}");
        }
    }
}
