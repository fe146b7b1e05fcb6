//! ddmq: the Dead Drop Messaging Queue, a message queue with no server. Each queue is a
//! directory, each message a JSON file, shared by any number of processes and hosts.
//!
//! Layers, each a module: [`engine`] (the protocol on disk), [`fs`] (the mount's synthetic
//! tree, without FUSE), [`fuse`] (the thin FUSE adapter), [`mount`] (the daemon's life cycle),
//! [`work`] (the task runner), [`top`] (the dashboard) and [`cli`] (the command line). Beside
//! them: [`sys`] (every `unsafe` system call, the only module allowed one), [`human`] (how
//! durations are written for people) and `locking` (locks that outlive a panic).

// `unsafe` lives in `sys` alone, where each call is wrapped and justified.
#![deny(unsafe_code)]

pub mod cli;
pub mod engine;
pub mod fs;
pub mod fuse;
pub mod human;
mod locking;
pub mod mount;
#[allow(unsafe_code)]
pub mod sys;
pub mod top;
pub mod work;

/// The version of this package (what `ddmq -v` prints).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
