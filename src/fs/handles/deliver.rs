//! `next`, `wait` and `claim` opened for reading: the claimed message, acked or given back
//! by the rule in the module docs of [`super`].

use super::{Ctx, OpenHandle, lease_lost, slice_at};
use crate::engine::{self, AckOutcome, Delivery, Queue};
use crate::fs::Result;
use crate::fs::lease::Lease;
use std::sync::Arc;

/// An open `next`, `wait` or `claim`: the claimed message, its lease, and who read it to the end.
pub(in crate::fs) struct DeliverHandle {
    queue: String,
    lease: Arc<Lease>,
    bytes: Vec<u8>,
    /// How far the reads reached.
    handed: usize,
    /// Tasks whose read reached the end of the message (after the rest was handed over).
    finished_by: Vec<u32>,
    /// next and wait ack once the reader got everything; claim leaves the message in flight.
    ack_when_done: bool,
    /// Acked (or, for claim, left in flight for good): nothing is left to do at release.
    settled: bool,
    /// claim: its record can be read again (`head -1` seeks back); next and wait are streams.
    record: bool,
}

impl DeliverHandle {
    /// A handle for a message just claimed from `queue`: `claim` reads its record as JSON and
    /// leaves it in flight; `next` and `wait` read its body and ack it once it was read whole.
    pub fn new(path: &str, queue: &Queue, delivery: Delivery, record: bool) -> DeliverHandle {
        let bytes = if record {
            format!("{}\n", delivery.message.to_json()).into_bytes()
        } else {
            delivery.message.body_text().into_bytes()
        };
        DeliverHandle {
            queue: queue.name().to_string(),
            lease: Lease::new(path, queue.name(), delivery.work_name),
            bytes,
            handed: 0,
            finished_by: Vec::new(),
            ack_when_done: !record,
            settled: false,
            record,
        }
    }

    /// The process of `pid` is one whose read reached the end.
    fn finished_by(&self, pid: u32) -> Option<usize> {
        self.finished_by.iter().position(|r| *r == pid).or_else(|| {
            self.finished_by
                .iter()
                .position(|r| crate::fs::caller::same_process(pid, *r))
        })
    }

    /// Acks the message (next, wait), or checks that it is still in flight (claim, which
    /// leaves it there). Either fails with EIO if the lease was lost.
    fn ack(&mut self, ctx: &Ctx, op: &'static str) -> Result<()> {
        self.settled = true;
        let q = ctx.queue(op, &self.queue)?;
        let held = if self.ack_when_done {
            self.lease
                .settle_with(|name| Ok(q.ack(&name.to_string())? != AckOutcome::NotFound))
        } else {
            self.lease.check(&q)
        };
        match held.map_err(|e| ctx.fail(op, e))? {
            true => Ok(()),
            false => Err(lease_lost(ctx, op)),
        }
    }
}

impl OpenHandle for DeliverHandle {
    /// READ at `offset` (offsets are honoured: under direct I/O a reader stops at an empty read).
    fn read(&mut self, _ctx: &Ctx, offset: u64, size: u32, pid: u32) -> Result<Vec<u8>> {
        let data = slice_at(&self.bytes, offset, size);
        let end = offset as usize + data.len();
        if offset as usize <= self.handed {
            self.handed = self.handed.max(end);
        }
        if self.handed >= self.bytes.len() && !self.finished_by.contains(&pid) {
            self.finished_by.push(pid);
        }
        Ok(data)
    }

    /// The close of a process that read the message to the end acks it, unless that process
    /// is being killed (it may not have used what it read). Closes of other holders (a child
    /// that inherited the descriptor) decide nothing.
    fn flush(&mut self, ctx: &Ctx, pid: u32) -> Result<()> {
        if self.lease.is_lost() {
            return Err(lease_lost(ctx, "flush"));
        }
        if self.settled || self.finished_by.is_empty() {
            return Ok(());
        }
        let Some(i) = self.finished_by(pid) else {
            return Ok(());
        };
        if (ctx.killed)(pid) {
            log::info!(
                "{}: a reader (pid {pid}) was killed before it closed: unless another holder read it whole, the message goes back to the queue",
                ctx.path
            );
            self.finished_by.remove(i);
            return Ok(());
        }
        self.ack(ctx, "flush")
    }

    /// Gives the message back unless someone still alive read it whole.
    fn release(mut self: Box<Self>, ctx: &Ctx, _shutting_down: bool) -> Result<()> {
        const OP: &str = "release";
        if self.settled || self.lease.is_lost() {
            return Ok(()); // done, or taken back already (a FLUSH reported that)
        }
        if !self.finished_by.is_empty() {
            return self.ack(ctx, OP);
        }
        let q = ctx.queue(OP, &self.queue)?;
        // Under the lease's lock, so that no renewal renames it meanwhile.
        self.lease
            .settle_with(|name| {
                // The lease may have been extended by another client: find its current name.
                if let Some(w) = q.resolve_in_flight(&name.to_string())? {
                    q.give_back(&w)?;
                }
                Ok(true)
            })
            .map_err(|e: engine::Error| ctx.fail(OP, e))?;
        Ok(())
    }

    fn seekable(&self) -> bool {
        self.record
    }

    fn lease(&self) -> Option<Arc<Lease>> {
        Some(self.lease.clone())
    }
}
