//! The one place where engine errors become Python exceptions: each variant maps to a class of
//! the `ddmq.DdmqError` hierarchy (defined in `ddmq/errors.py`), carrying the path and the reason.

use ddmq::engine::Error;
use pyo3::prelude::*;
use pyo3::types::PyType;
use std::io::ErrorKind;
use std::path::Path;

/// The exception class for an engine error, its short code (`DdmqError.error`, as 0.9.10's
/// `"missing"` / `"uninitiated"`) and the path it is about.
fn classify(e: &Error) -> (&'static str, &'static str, Option<&Path>) {
    match e {
        Error::Io { path, source, .. } => {
            let class = match source.kind() {
                ErrorKind::NotFound => "NotFoundError",
                ErrorKind::PermissionDenied => "PermissionDeniedError",
                _ => "DdmqOSError",
            };
            (class, "io", Some(path))
        }
        Error::RootMissing(p) => ("RootMissingError", "missing", Some(p)),
        Error::RootUninitiated(p) => ("RootUninitiatedError", "uninitiated", Some(p)),
        Error::InvalidQueueName(_) => ("InvalidNameError", "invalid_queue_name", None),
        Error::NoSuchQueue(p) => ("QueueNotFoundError", "no_such_queue", Some(p)),
        Error::NotAQueue(p) => ("NotAQueueError", "not_a_queue", Some(p)),
        Error::QueueNotEmpty(p) => ("QueueNotEmptyError", "queue_not_empty", Some(p)),
        Error::ForeignFiles { path, .. } => ("ForeignFilesError", "foreign_files", Some(path)),
        Error::InvalidMessageName(_) => ("InvalidNameError", "invalid_message_name", None),
        Error::MessageNotFound(_) => ("MessageNotFoundError", "message_not_found", None),
        Error::Config { path, .. } => ("ConfigError", "config", Some(path)),
        Error::TooLarge { .. } => ("MessageTooLargeError", "too_large", None),
        Error::Corrupt { path, .. } => ("CorruptMessageError", "corrupt", Some(path)),
        Error::NotUtf8 { .. } => ("InvalidArgumentError", "not_utf8", None),
        Error::Invalid(_) => ("InvalidArgumentError", "invalid", None),
    }
}

/// The message a Python user reads: the engine's, with the CLI's `-f` advice worded for the API.
fn wording(e: &Error) -> String {
    match e {
        Error::RootMissing(p) => format!(
            "Root folder missing: {} (pass create=True to create it)",
            p.display()
        ),
        Error::RootUninitiated(p) => format!(
            "Root folder uninitiated: {} has no ddmq.yaml (pass create=True to initiate it)",
            p.display()
        ),
        other => other.to_string(),
    }
}

/// The reason alone, without the path (`DdmqError.reason`).
fn reason(e: &Error) -> String {
    match e {
        Error::Io { op, source, .. } => format!("{op}: {source}"),
        Error::Config { reason, .. } | Error::Corrupt { reason, .. } => reason.clone(),
        other => wording(other),
    }
}

/// Builds the Python exception for an engine error.
pub fn to_py_err(e: Error) -> PyErr {
    Python::attach(|py| match build(py, &e) {
        Ok(err) => err,
        Err(failed) => failed,
    })
}

fn build(py: Python<'_>, e: &Error) -> PyResult<PyErr> {
    let (class_name, code, path) = classify(e);
    let module = py.import("ddmq.errors")?;
    let class = module.getattr(class_name)?.cast_into::<PyType>()?;
    let path = path.map(|p| p.to_path_buf());
    let exc = class.call1((wording(e), code, path.clone(), reason(e)))?;
    if let Error::Io { source, .. } = e {
        // The OSError side, as Python's own calls would fill it.
        exc.setattr("errno", source.raw_os_error())?;
        exc.setattr("strerror", source.to_string())?;
        exc.setattr("filename", path)?;
    }
    Ok(PyErr::from_value(exc))
}
