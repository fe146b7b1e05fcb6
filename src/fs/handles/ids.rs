//! `ack` and `nack` opened for writing: message ids, one a line.

use super::{Ctx, OpenHandle, only_to_zero};
use crate::engine::{AckOutcome, RequeueOutcome};
use crate::fs::{FsError, FsErrorKind, Result};

/// `ack` or `nack`: ids, one a line; an incomplete last line waits here.
pub(in crate::fs) struct IdsHandle {
    queue: String,
    nack: bool,
    partial: Vec<u8>,
}

impl IdsHandle {
    pub fn new(queue: &str, nack: bool) -> IdsHandle {
        IdsHandle {
            queue: queue.to_string(),
            nack,
            partial: Vec::new(),
        }
    }

    /// Acks or nacks the message one line names.
    fn settle(&self, ctx: &Ctx, line: &[u8]) -> Result<()> {
        let op = if self.nack { "nack" } else { "ack" };
        let id = std::str::from_utf8(line)
            .map_err(|_| ctx.fail(op, FsErrorKind::Invalid("a message id is ASCII".into())))?
            .trim();
        if id.is_empty() {
            return Ok(());
        }
        let q = ctx.queue(op, &self.queue)?;
        // Files of this mount holding the message must not take this for a lost lease.
        let settling = ctx.leases.settling(&self.queue, id);
        let found = if self.nack {
            q.nack(id, false).map(|o| o != RequeueOutcome::NotFound)
        } else {
            q.ack(id).map(|o| o != AckOutcome::NotFound)
        };
        let found = match found {
            Ok(true) => true,
            other => {
                settling.failed();
                other.map_err(|e| ctx.fail(op, e))?
            }
        };
        if found {
            Ok(())
        } else {
            // The id names what was not found: the log line says which.
            Err(FsError::new(
                op,
                format!("{} {id}", ctx.path),
                FsErrorKind::NotFound,
            ))
        }
    }
}

/// The next complete line of `buf`, removed from it.
fn take_line(buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    let end = buf.iter().position(|b| *b == b'\n')?;
    let mut line: Vec<u8> = buf.drain(..=end).collect();
    line.pop();
    Some(line)
}

impl OpenHandle for IdsHandle {
    /// Settles each complete line as it arrives; the first failure is the write's error.
    fn write(&mut self, ctx: &Ctx, _offset: u64, data: &[u8]) -> Result<u32> {
        self.partial.extend_from_slice(data);
        let mut first_error = None;
        while let Some(line) = take_line(&mut self.partial) {
            if let Err(e) = self.settle(ctx, &line) {
                first_error.get_or_insert(e);
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(data.len() as u32),
        }
    }

    fn truncate(&mut self, ctx: &Ctx, size: u64) -> Result<()> {
        only_to_zero(ctx, size)?;
        self.partial.clear();
        Ok(())
    }

    /// Settles a last line written without its newline.
    fn flush(&mut self, ctx: &Ctx, _pid: u32) -> Result<()> {
        let line = std::mem::take(&mut self.partial);
        self.settle(ctx, &line)
    }

    fn release(self: Box<Self>, ctx: &Ctx, shutting_down: bool) -> Result<()> {
        if shutting_down {
            Ok(())
        } else {
            self.settle(ctx, &self.partial)
        }
    }
}
