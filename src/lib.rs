//! ddmq: the Dead Drop Messaging Queue, a message queue with no server. Each queue is a
//! directory, each message a JSON file, shared by any number of processes and hosts.
//!
//! Layers, each a module: [`engine`] (the protocol on disk), `fs` (the mount's synthetic tree),
//! `fuse` (the thin FUSE adapter), `work` (the task runner) and `top` (the dashboard), and
//! `cli` (the command line).

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
