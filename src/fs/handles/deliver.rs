//! `next`, `wait` and `claim` opened for reading: the claimed message, acked or given back
//! by the rule in the module docs of [`super`].

use super::{Ctx, OpenHandle, lease_lost, slice_at};
use crate::engine::{self, AckOutcome, Delivery, HeldDelivery, Queue};
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
    /// `claim` of a message just claimed from `queue` (leased under its `work/` name, so that
    /// its id is found there at once): reads its record as JSON and leaves it in flight.
    pub fn claimed(path: &str, queue: &Queue, delivery: Delivery) -> DeliverHandle {
        let bytes = format!("{}\n", delivery.message.to_json()).into_bytes();
        let lease = Lease::new(path, queue.name(), delivery.work_name);
        Self::with(queue, lease, bytes, true)
    }

    /// `next` or `wait` of a message just taken from `queue` with one rename: reads its body
    /// and acks it once it was read whole.
    pub fn held(path: &str, queue: &Queue, held: HeldDelivery) -> DeliverHandle {
        let bytes = held.message.body_text().into_bytes();
        let lease = Lease::held(path, queue.name(), held);
        Self::with(queue, lease, bytes, false)
    }

    fn with(queue: &Queue, lease: Arc<Lease>, bytes: Vec<u8>, record: bool) -> DeliverHandle {
        DeliverHandle {
            queue: queue.name().to_string(),
            lease,
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
                .settle_with(|m| Ok(q.ack_in_flight(m)? != AckOutcome::NotFound))
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
            .settle_with(|m| {
                // A leased one's lease may have been extended by another client: find it.
                if let Some(now) = q.locate_in_flight(m)? {
                    q.give_back_in_flight(&now)?;
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
