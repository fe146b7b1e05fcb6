//! `work/<id>` opened: the in-flight message's body (for reading), or nothing (opened for
//! writing, as `touch` does before it sets the times that extend the lease). While it is open
//! the message's lease is kept; a close after the lease was lost fails.

use super::{Ctx, OpenHandle, lease_lost, slice_at};
use crate::fs::lease::Lease;
use crate::fs::{FsErrorKind, Result};
use std::sync::Arc;

pub(in crate::fs) struct WorkEntryHandle {
    /// The body; empty when opened for writing.
    bytes: Vec<u8>,
    lease: Arc<Lease>,
}

impl WorkEntryHandle {
    pub fn new(bytes: Vec<u8>, lease: Arc<Lease>) -> WorkEntryHandle {
        WorkEntryHandle { bytes, lease }
    }
}

impl OpenHandle for WorkEntryHandle {
    fn read(&mut self, _ctx: &Ctx, offset: u64, size: u32, _pid: u32) -> Result<Vec<u8>> {
        Ok(slice_at(&self.bytes, offset, size))
    }

    fn write(&mut self, ctx: &Ctx, _offset: u64, _data: &[u8]) -> Result<u32> {
        Err(ctx.fail(
            "write",
            FsErrorKind::Access("an in-flight message cannot be changed (touch extends its lease)"),
        ))
    }

    fn seekable(&self) -> bool {
        true
    }

    /// Each close checks that the message is still in flight under this lease.
    fn flush(&mut self, ctx: &Ctx, _pid: u32) -> Result<()> {
        const OP: &str = "flush";
        let q = ctx.queue(OP, &self.lease.queue)?;
        match self.lease.check(&q).map_err(|e| ctx.fail(OP, e))? {
            true => Ok(()),
            false => Err(lease_lost(ctx, OP)),
        }
    }

    fn lease(&self) -> Option<Arc<Lease>> {
        Some(self.lease.clone())
    }
}
