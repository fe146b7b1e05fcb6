//! `ddmq._ddmq`: the native half of the `ddmq` Python package. A thin layer over the engine's
//! [`Broker`]: every call converts its arguments, releases the GIL for the filesystem work (and
//! for waits), and hands back plain Python values; `ddmq/__init__.py` shapes them into the
//! original 0.9.10 API (`broker`, `message`). Errors become `ddmq.DdmqError` subclasses in
//! [`errors`]. Also the entry point of the `ddmq` console script ([`run_cli`]).

mod convert;
mod errors;

use convert::{message_dict, requeue_from_py, to_value};
use ddmq::engine::{
    self, AckOutcome, Broker, ConsumeOptions, Delivery, Error, PublishOptions, Queue,
    RequeueOutcome, Wait, WorkName, names::is_valid_id,
};
use errors::to_py_err;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use std::cell::RefCell;
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How often a blocking consume looks at the queue directory (one stat) while it waits.
const WAIT_POLL: Duration = Duration::from_millis(20);

type EngineResult<T> = Result<T, Error>;

/// One ddmq root, opened once and kept: queue handles and their listings live as long as it.
#[pyclass(frozen, module = "ddmq._ddmq")]
struct Native {
    broker: Broker,
    /// Queues are created on first use (the original's `create=True`).
    create: bool,
}

impl Native {
    /// A handle on queue `name`, created first when the broker was opened with `create`.
    fn queue(&self, name: &str) -> EngineResult<Arc<Queue>> {
        match self.broker.queue(name) {
            Err(Error::NoSuchQueue(_)) if self.create => {
                self.broker.create_queue(name)?;
                self.broker.queue(name)
            }
            other => other,
        }
    }

    /// Runs `op` on queue `name` (created first when the broker was opened with `create`); a
    /// queue found gone is forgotten, so that the next call looks, and creates, again.
    fn with_queue<T>(
        &self,
        name: &str,
        op: impl FnOnce(&Queue) -> EngineResult<T>,
    ) -> EngineResult<T> {
        if self.create {
            self.queue(name)?;
        }
        self.broker.with_queue(name, op)
    }

    /// Puts claimed messages back at their place (the caller could not hand them over). One
    /// that cannot be given back is requeued when its lease runs out.
    fn give_back_all(&self, queue: &str, deliveries: &[Delivery]) {
        let Ok(q) = self.broker.queue(queue) else {
            return;
        };
        for d in deliveries {
            let _ = q.give_back(&d.work_name);
        }
    }
}

/// Refuses anything that is not a `work/` file name or a message id before acting on any of
/// `names` (0.9.10 joined any string, even an absolute path, onto the queue directory: S1).
fn check_in_flight_names(names: &[String]) -> EngineResult<()> {
    match names
        .iter()
        .find(|n| WorkName::parse(n).is_none() && !is_valid_id(n))
    {
        Some(bad) => Err(Error::InvalidMessageName(bad.clone())),
        None => Ok(()),
    }
}

fn settings_dict<'py>(py: Python<'py>, s: &engine::Settings) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("message_timeout", s.message_timeout)?;
    d.set_item("cleaned", s.cleaned)?;
    d.set_item("priority", s.priority)?;
    d.set_item("requeue", s.requeue)?;
    d.set_item("requeue_prio", s.requeue_prio)?;
    d.set_item("dead_letter", s.dead_letter)?;
    d.set_item("durable", s.durable)?;
    d.set_item("max_message_bytes", s.max_message_bytes)?;
    Ok(d)
}

#[pymethods]
impl Native {
    /// Opens ROOT; with `create`, creates and initialises it if needed.
    #[new]
    #[pyo3(signature = (root, create=false))]
    fn new(py: Python<'_>, root: PathBuf, create: bool) -> PyResult<Native> {
        let broker = py
            .detach(|| {
                if create {
                    Broker::open_or_init(root)
                } else {
                    Broker::open(root)
                }
            })
            .map_err(to_py_err)?;
        Ok(Native { broker, create })
    }

    #[getter]
    fn root(&self) -> PathBuf {
        self.broker.root().to_path_buf()
    }

    /// Publishes one message; returns its record (`message` is `body` itself).
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (queue, body, priority, timeout, requeue, requeue_limit, requeue_counter, clean))]
    fn publish<'py>(
        &self,
        py: Python<'py>,
        queue: &str,
        body: &Bound<'py, PyAny>,
        priority: Option<u64>,
        timeout: Option<u64>,
        requeue: &Bound<'py, PyAny>,
        requeue_limit: Option<u64>,
        requeue_counter: u64,
        clean: bool,
    ) -> PyResult<Bound<'py, PyDict>> {
        let value = to_value(body)?;
        let opts = PublishOptions {
            priority,
            timeout,
            requeue: Some(requeue_from_py(requeue)?),
            requeue_limit,
            clean,
        };
        let msg = py
            .detach(|| self.with_queue(queue, |q| q.publish_counted(value, &opts, requeue_counter)))
            .map_err(to_py_err)?;
        message_dict(py, &msg, Some(body))
    }

    /// Claims up to `n` messages in delivery order; with `wait` (seconds), waits that long for
    /// the first one. Returns the records (`filename` is the `work/` name).
    #[pyo3(signature = (queue, n=1, clean=true, wait=None))]
    fn consume<'py>(
        &self,
        py: Python<'py>,
        queue: &str,
        n: usize,
        clean: bool,
        wait: Option<f64>,
    ) -> PyResult<Bound<'py, PyList>> {
        if wait.is_some_and(f64::is_nan) {
            return Err(pyo3::exceptions::PyValueError::new_err(
                "wait must be a number of seconds",
            ));
        }
        let (deliveries, interrupted) = py.detach(|| {
            let interrupted: RefCell<Option<PyErr>> = RefCell::new(None);
            // Ctrl-C (in the main thread) ends the wait: signals are looked at between polls.
            let give_up = || match Python::attach(|py| py.check_signals()) {
                Ok(()) => false,
                Err(e) => {
                    *interrupted.borrow_mut() = Some(e);
                    true
                }
            };
            let wait = wait.map(|seconds| Wait::new(seconds, WAIT_POLL, &give_up));
            let result = self.with_queue(queue, |q| {
                q.consume_waiting(n, &ConsumeOptions { clean }, wait.as_ref())
            });
            (result, interrupted.into_inner())
        });
        if let Some(e) = interrupted {
            return Err(e);
        }
        let deliveries = deliveries.map_err(to_py_err)?;
        let records = deliveries
            .iter()
            .map(|Delivery { message, .. }| message_dict(py, message, None))
            .collect::<PyResult<Vec<_>>>();
        match records {
            Ok(records) => PyList::new(py, records),
            Err(e) => {
                // Nobody will see these messages: put them back rather than leave them leased.
                py.detach(|| self.give_back_all(queue, &deliveries));
                Err(e)
            }
        }
    }

    /// Acknowledges in-flight messages: deletes them, or with `requeue` requeues them. Returns the
    /// names that were still in flight.
    fn ack(
        &self,
        py: Python<'_>,
        queue: &str,
        names: Vec<String>,
        requeue: bool,
    ) -> PyResult<Vec<String>> {
        self.nack(py, queue, names, Some(requeue))
    }

    /// Negative acknowledgement: `requeue` None follows each message's own flag and limit, True
    /// requeues, False deletes. Returns the names that were still in flight.
    fn nack(
        &self,
        py: Python<'_>,
        queue: &str,
        names: Vec<String>,
        requeue: Option<bool>,
    ) -> PyResult<Vec<String>> {
        py.detach(|| {
            check_in_flight_names(&names)?;
            self.with_queue(queue, |q| {
                let mut done = Vec::with_capacity(names.len());
                for name in names {
                    let found = match requeue {
                        Some(false) => matches!(q.ack(&name)?, AckOutcome::Acked(_)),
                        force => q.nack(&name, force == Some(true))? != RequeueOutcome::NotFound,
                    };
                    if found {
                        done.push(name);
                    }
                }
                Ok(done)
            })
        })
        .map_err(to_py_err)
    }

    /// Extends the lease of an in-flight message by its timeout from now; its new `work/` name,
    /// or None when it is no longer in flight.
    fn extend(&self, py: Python<'_>, queue: &str, name: &str) -> PyResult<Option<String>> {
        py.detach(|| {
            check_in_flight_names(&[name.to_string()])?;
            self.with_queue(queue, |q| Ok(q.touch(name)?.map(|w| w.to_string())))
        })
        .map_err(to_py_err)
    }

    /// Puts an in-flight message back at its place in the queue, uncounted.
    fn give_back(&self, py: Python<'_>, queue: &str, name: &str) -> PyResult<bool> {
        py.detach(|| {
            check_in_flight_names(&[name.to_string()])?;
            self.with_queue(queue, |q| match q.resolve_in_flight(name)? {
                Some(w) => q.give_back(&w),
                None => Ok(false),
            })
        })
        .map_err(to_py_err)
    }

    /// Requeues an in-flight message (by `work/` name or id) as a nack with requeue would.
    fn requeue_message(&self, py: Python<'_>, queue: &str, name: &str) -> PyResult<bool> {
        py.detach(|| {
            check_in_flight_names(&[name.to_string()])?;
            self.with_queue(queue, |q| {
                Ok(q.nack(name, true)? != RequeueOutcome::NotFound)
            })
        })
        .map_err(to_py_err)
    }

    /// Creates a queue; False if it existed already.
    fn create_queue(&self, py: Python<'_>, queue: &str) -> PyResult<bool> {
        py.detach(|| self.broker.create_queue(queue))
            .map_err(to_py_err)
    }

    /// Deletes a queue with its messages (refusing, before deleting anything, if it holds files
    /// ddmq did not create).
    fn delete_queue(&self, py: Python<'_>, queue: &str) -> PyResult<()> {
        py.detach(|| self.broker.delete_queue(queue, false))
            .map_err(to_py_err)
    }

    /// Deletes every message, waiting and in flight: (waiting, in flight) counts.
    fn purge_queue(&self, py: Python<'_>, queue: &str) -> PyResult<(usize, usize)> {
        py.detach(|| self.with_queue(queue, |q| q.purge()))
            .map_err(to_py_err)
    }

    fn list_queues(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        py.detach(|| self.broker.list_queues()).map_err(to_py_err)
    }

    /// (waiting names in delivery order, in-flight names by expiry).
    fn message_list(&self, py: Python<'_>, queue: &str) -> PyResult<(Vec<String>, Vec<String>)> {
        py.detach(|| {
            self.with_queue(queue, |q| {
                let waiting = q.waiting()?.iter().map(|w| w.to_string()).collect();
                let work = q.in_flight()?.iter().map(|w| w.to_string()).collect();
                Ok((waiting, work))
            })
        })
        .map_err(to_py_err)
    }

    /// Housekeeping: requeues or drops expired messages. Unless `force`, at most once a minute
    /// per queue; True if it ran.
    fn clean(&self, py: Python<'_>, queue: &str, force: bool) -> PyResult<bool> {
        py.detach(|| {
            self.with_queue(queue, |q| {
                if force {
                    q.clean().map(|_| true)
                } else {
                    q.maybe_clean().map(|r| r.is_some())
                }
            })
        })
        .map_err(to_py_err)
    }

    /// Effective settings of a queue (defaults, root file, queue file), or of the root with "".
    fn settings<'py>(&self, py: Python<'py>, queue: &str) -> PyResult<Bound<'py, PyDict>> {
        let s = py
            .detach(|| {
                if queue.is_empty() {
                    self.broker.root_settings()
                } else {
                    self.with_queue(queue, |q| q.settings())
                }
            })
            .map_err(to_py_err)?;
        settings_dict(py, &s)
    }

    /// The keys written in a settings file (the root's with ""), as they are.
    fn config_file<'py>(&self, py: Python<'py>, queue: &str) -> PyResult<Bound<'py, PyDict>> {
        let map = py
            .detach(|| match queue {
                "" => self.broker.settings_file(None),
                name => self.with_queue(name, |_| self.broker.settings_file(Some(name))),
            })
            .map_err(to_py_err)?;
        let d = PyDict::new(py);
        for (k, v) in &map {
            d.set_item(k, convert::to_py(py, v)?)?;
        }
        Ok(d)
    }

    /// Sets keys of a settings file (the root's with ""): checked, then replaced atomically.
    fn update_settings_file(
        &self,
        py: Python<'_>,
        queue: &str,
        package: &Bound<'_, PyDict>,
    ) -> PyResult<()> {
        let changes = match to_value(package.as_any())? {
            serde_json::Value::Object(m) => m,
            _ => unreachable!("a dict converts to an object"),
        };
        py.detach(|| match queue {
            "" => self.broker.update_settings(None, changes),
            name => self.with_queue(name, |_| self.broker.update_settings(Some(name), changes)),
        })
        .map_err(to_py_err)
    }

    /// Deletes one message file, waiting or in flight; False if it was gone.
    fn delete_message(&self, py: Python<'_>, queue: &str, name: &str) -> PyResult<bool> {
        py.detach(|| self.with_queue(queue, |q| q.delete_message(name)))
            .map_err(to_py_err)
    }

    /// Reads the message file at `path`.
    #[staticmethod]
    fn read_message<'py>(py: Python<'py>, path: PathBuf) -> PyResult<Bound<'py, PyDict>> {
        let msg = py
            .detach(|| {
                let bytes = std::fs::read(&path).map_err(|source| Error::Io {
                    op: "read",
                    path: path.clone(),
                    source,
                })?;
                engine::Message::from_json(&bytes).map_err(|e| Error::Corrupt {
                    path: path.clone(),
                    reason: e.to_string(),
                })
            })
            .map_err(to_py_err)?;
        message_dict(py, &msg, None)
    }

    /// A new queue number: the time in microseconds, increasing within this process.
    #[staticmethod]
    fn next_queue_number() -> u64 {
        engine::next_queue_number()
    }
}

/// Runs the `ddmq` command line with `args` (`args[0]` is the program name); returns the exit
/// code. The GIL is released for the whole run.
#[pyfunction]
fn run_cli(py: Python<'_>, args: Vec<OsString>) -> u8 {
    py.detach(|| ddmq::cli::run_with_args(args))
}

#[pymodule]
fn _ddmq(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Native>()?;
    m.add_function(wrap_pyfunction!(run_cli, m)?)?;
    m.add("VERSION", ddmq::VERSION)?;
    Ok(())
}
