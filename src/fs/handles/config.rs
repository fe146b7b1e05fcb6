//! `ddmq.yaml` opened for writing: new settings, checked as lines arrive and applied at close.

use super::{Ctx, OpenHandle, only_to_zero, place, slice_at};
use crate::engine;
use crate::fs::{FsError, FsErrorKind, OpenMode, Result};

/// Largest `ddmq.yaml` accepted through the mount.
const MAX_CONFIG_BYTES: usize = 1 << 20;

/// `ddmq.yaml` opened for writing: the new text, applied on flush or close.
pub(in crate::fs) struct ConfigHandle {
    queue: String,
    /// The file as it was at open, for reads.
    snapshot: Vec<u8>,
    /// The new text: the file as it was unless opened with O_TRUNC (so `>>` appends).
    text: Vec<u8>,
    /// O_APPEND: writes go at the end, whatever offset the kernel passes.
    append: bool,
    /// Keys ddmq does not know that the file already had: kept; new ones are refused.
    unknown_at_open: Vec<String>,
    dirty: bool,
    refused: bool,
    /// The refusal was returned by a write already: the close does not repeat it.
    refusal_reported: bool,
}

impl ConfigHandle {
    pub fn open(ctx: &Ctx, queue: &str, snapshot: Vec<u8>, mode: OpenMode) -> Result<ConfigHandle> {
        let unknown_at_open = ctx
            .broker
            .validate_queue_settings(queue, &snapshot)
            .unwrap_or_default();
        Ok(ConfigHandle {
            queue: queue.to_string(),
            text: if mode.truncate {
                Vec::new()
            } else {
                snapshot.clone()
            },
            snapshot,
            append: mode.append,
            unknown_at_open,
            dirty: false,
            refused: false,
            refusal_reported: false,
        })
    }

    /// Whether the new text is settings the mount accepts: valid for the engine, and no key
    /// that ddmq does not know unless the file had it already.
    fn check(&self, ctx: &Ctx) -> std::result::Result<(), FsErrorKind> {
        let unknown = ctx
            .broker
            .validate_queue_settings(&self.queue, &self.text)?;
        match unknown.iter().find(|k| !self.unknown_at_open.contains(k)) {
            Some(key) => Err(FsErrorKind::Invalid(format!(
                "unknown setting {key:?} (ddmq knows {})",
                engine::config::KNOWN_KEYS.join(", ")
            ))),
            None => Ok(()),
        }
    }

    fn refuse(&mut self, ctx: &Ctx, kind: impl Into<FsErrorKind>) -> FsError {
        self.refused = true;
        self.refusal_reported = true;
        ctx.fail("write", kind)
    }
}

impl OpenHandle for ConfigHandle {
    fn read(&mut self, _ctx: &Ctx, offset: u64, size: u32, _pid: u32) -> Result<Vec<u8>> {
        Ok(slice_at(&self.snapshot, offset, size))
    }

    fn write(&mut self, ctx: &Ctx, offset: u64, data: &[u8]) -> Result<u32> {
        const OP: &str = "write";
        if self.refused {
            return Err(ctx.fail(
                OP,
                FsErrorKind::Invalid("the settings written are refused".into()),
            ));
        }
        let offset = if self.append {
            self.text.len()
        } else {
            offset as usize
        };
        if offset + data.len() > MAX_CONFIG_BYTES {
            return Err(self.refuse(
                ctx,
                FsErrorKind::TooLarge {
                    limit: MAX_CONFIG_BYTES as u64,
                },
            ));
        }
        place(&mut self.text, offset, data);
        self.dirty = true;
        // Shells ignore errors from close(): refuse bad settings here, where `echo` sees
        // it. Text is judged at line ends only, where a prefix of good YAML is good YAML.
        if self.text.ends_with(b"\n")
            && let Err(kind) = self.check(ctx)
        {
            return Err(self.refuse(ctx, kind));
        }
        Ok(data.len() as u32)
    }

    fn truncate(&mut self, ctx: &Ctx, size: u64) -> Result<()> {
        only_to_zero(ctx, size)?;
        self.text.clear();
        self.refused = false;
        self.refusal_reported = false;
        Ok(())
    }

    /// Applies the new text at every close that follows a change.
    fn flush(&mut self, ctx: &Ctx, _pid: u32) -> Result<()> {
        const OP: &str = "flush";
        if self.refused {
            if self.refusal_reported {
                return Ok(()); // the write that was refused said why
            }
            return Err(ctx.fail(
                OP,
                FsErrorKind::Invalid("the settings written were refused".into()),
            ));
        }
        if !self.dirty {
            return Ok(());
        }
        if let Err(kind) = self.check(ctx) {
            self.refused = true;
            return Err(ctx.fail(OP, kind));
        }
        self.dirty = false;
        ctx.queue(OP, &self.queue)?
            .write_config_text(&self.text)
            .map_err(|e| ctx.fail(OP, e))
    }

    fn release(self: Box<Self>, ctx: &Ctx, shutting_down: bool) -> Result<()> {
        const OP: &str = "release";
        if self.dirty && !self.refused && !shutting_down {
            ctx.queue(OP, &self.queue)?
                .write_config_text(&self.text)
                .map_err(|e| ctx.fail(OP, e))?;
        }
        Ok(())
    }
}
