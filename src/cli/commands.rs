//! The subcommands of the original `ddmq`, on top of the engine. Each takes its parsed arguments
//! and the (buffered) stdout; errors go back as [`CliError`], soft outcomes are printed lines.

use super::args::{
    AckArgs, ConsumeArgs, DelMsgArgs, ForceQueueFlag, ForceRootFlag, Format, PublishArgs,
    QueuesArgs, SkipCleaningFlag, ViewArgs, split_list,
};
use super::error::{CliError, CliResult};
use super::output::{self, ViewRow};
use crate::engine::{
    AckOutcome, Broker, ConsumeOptions, Delivery, Error, PublishOptions, Queue, Requeue,
    RequeueOutcome, Wait, WaitingName, WorkName, is_valid_queue_name, names::is_valid_id,
};
use serde_json::Value;
use std::io::{self, BufRead, Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Writes one line to stdout unless silenced.
macro_rules! say {
    ($out:expr, $silent:expr, $($fmt:tt)*) => {
        if !$silent {
            writeln!($out, $($fmt)*).map_err(CliError::stdout)?;
        }
    };
}

/// What a command does when ROOT or its queue is missing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum IfMissing {
    /// Creates it (`-f` was given).
    Create,
    /// Fails, advising `-f` (the command has it; it was not given).
    AdviseForce,
    /// Fails (the command has no `-f`).
    Fail,
}

impl IfMissing {
    fn by_force(force: bool) -> IfMissing {
        if force {
            IfMissing::Create
        } else {
            IfMissing::AdviseForce
        }
    }
}

impl From<&ForceQueueFlag> for IfMissing {
    fn from(flag: &ForceQueueFlag) -> IfMissing {
        IfMissing::by_force(flag.force)
    }
}

impl From<&ForceRootFlag> for IfMissing {
    fn from(flag: &ForceRootFlag) -> IfMissing {
        IfMissing::by_force(flag.force)
    }
}

/// Opens ROOT, creating and initialising it with [`IfMissing::Create`]. A command without `-f`
/// fails with no advice to use it (0.9.10 printed a traceback instead, B9).
pub(super) fn open_broker(root: &Path, if_missing: IfMissing) -> CliResult<Broker> {
    match if_missing {
        IfMissing::Create => Ok(Broker::open_or_init(root)?),
        IfMissing::AdviseForce => {
            Broker::open(root).map_err(|e| CliError::opening_root(e, Some("-f")))
        }
        IfMissing::Fail => Broker::open(root).map_err(|e| CliError::opening_root(e, None)),
    }
}

/// A handle on queue `name`. With [`IfMissing::Create`] a missing queue is created first (after
/// the name is validated; 0.9.10 created any name, B17), and `Created new queue: …` is said on
/// `announce` if given.
pub(super) fn queue_for(
    broker: &Broker,
    name: &str,
    if_missing: IfMissing,
    announce: Option<&mut dyn Write>,
) -> CliResult<Arc<Queue>> {
    // An invalid name is the engine's InvalidQueueName, before anything is created.
    match broker.queue(name) {
        Ok(q) => Ok(q),
        Err(Error::NoSuchQueue(path)) if if_missing == IfMissing::Create => {
            match broker.create_queue(name) {
                Ok(true) => {
                    if let Some(out) = announce {
                        writeln!(out, "Created new queue: {name}").map_err(CliError::stdout)?;
                    }
                }
                Ok(false) => {}
                Err(Error::NotAQueue(p)) => return Err(not_a_queue(&p)),
                Err(e) => return Err(e.into()),
            }
            broker.queue(name).map_err(|e| match e {
                Error::NoSuchQueue(_) => CliError::failed(format!(
                    "queue {} vanished right after it was created",
                    path.display()
                )),
                other => other.into(),
            })
        }
        Err(Error::NoSuchQueue(path)) if if_missing == IfMissing::AdviseForce => {
            Err(CliError::failed(format!(
                "The specified queue ({}) does not exist. Please run the same command with the (-f) force flag to create it.",
                path.display()
            )))
        }
        Err(Error::NoSuchQueue(path)) => Err(CliError::failed(format!(
            "The specified queue ({}) does not exist.",
            path.display()
        ))),
        Err(Error::NotAQueue(path)) => Err(not_a_queue(&path)),
        Err(e) => Err(e.into()),
    }
}

fn not_a_queue(path: &Path) -> CliError {
    CliError::failed(format!(
        "Unable to use the specified queue directory ({}): it exists but is not a ddmq queue (no ddmq.yaml or no work/ directory in it)",
        path.display()
    ))
}

/// Housekeeping after ack, nack and del_msg (unless -C): throttled to once a minute per queue.
fn clean_after(queue: &Queue, flag: &SkipCleaningFlag) {
    if flag.skip_cleaning {
        return;
    }
    if let Err(e) = queue.maybe_clean() {
        log::warn!("cleaning queue {} failed: {e}", queue.name());
    }
}

/// Ends a command that handled a list item by item: an error if any item failed (each was
/// already reported on stderr).
fn finish(what: &'static str, failed: usize, total: usize) -> CliResult {
    if failed == 0 {
        Ok(())
    } else {
        Err(CliError::Partial {
            what,
            failed,
            total,
        })
    }
}

// ------------------------------------------------------------------------------------ view

pub fn view(a: &ViewArgs, out: &mut dyn Write) -> CliResult {
    let broker = open_broker(&a.root.root, IfMissing::from(&a.force))?;
    let all = broker.list_queues()?;
    let mut selected: Vec<String> = match &a.queues {
        None => all,
        Some(list) => {
            let mut picked = Vec::new();
            for name in split_list(list) {
                if all.iter().any(|q| q == name) {
                    picked.push(name.to_string());
                } else {
                    warn_line!("Warning: requested queue does not exist ({name})");
                }
            }
            picked
        }
    };
    selected.sort();
    selected.dedup();
    let mut rows = Vec::with_capacity(selected.len());
    for name in selected {
        let counts = if a.names_only {
            None
        } else {
            match broker.queue(&name).and_then(|q| q.status(false)) {
                Ok(st) => Some((st.waiting, st.in_flight)),
                // Deleted by someone else while we were looking: no longer a queue to show.
                Err(Error::NoSuchQueue(_)) | Err(Error::NotAQueue(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        };
        rows.push(ViewRow {
            queue: name,
            counts,
        });
    }
    let text = match a.format {
        Format::Default => output::view_table(&rows, a.names_only),
        Format::Plain => output::view_plain(&rows, a.names_only),
        Format::Json => output::view_json(&rows, a.names_only),
        Format::Yaml => output::view_yaml(&rows, a.names_only)?,
    };
    out.write_all(text.as_bytes()).map_err(CliError::stdout)
}

// ------------------------------------------------------------------------------------ create, delete, purge, clean

/// What one named queue of a create, delete, purge or clean came to.
enum QueueOutcome {
    /// It was done: counted, and said unless silent.
    Done(String),
    /// Nothing to do: said unless silent.
    Nothing(String),
    /// Said even when silent.
    Notice(String),
}

/// Runs `op` on each queue of a comma-separated list: names are checked first (-s silences the
/// message, never the check; 0.9.10's -s skipped the check, B11), errors are reported per queue, and `total` words the count
/// of queues done when there was more than one.
fn for_each_queue(
    a: &QueuesArgs,
    out: &mut dyn Write,
    total: fn(usize) -> String,
    op: impl Fn(&Broker, &str) -> Result<QueueOutcome, Error>,
) -> CliResult {
    let broker = open_broker(&a.root.root, IfMissing::from(&a.force))?;
    let silent = a.silent.silent;
    let names = split_list(&a.queues);
    let (mut done, mut failed) = (0, 0);
    for name in &names {
        if !is_valid_queue_name(name) {
            say!(out, silent, "Skipping {name}, invalid name");
            continue;
        }
        match op(&broker, name) {
            Ok(QueueOutcome::Done(text)) => {
                done += 1;
                say!(out, silent, "{text}");
            }
            Ok(QueueOutcome::Nothing(text)) => say!(out, silent, "{text}"),
            Ok(QueueOutcome::Notice(text)) => writeln!(out, "{text}").map_err(CliError::stdout)?,
            Err(e) => {
                failed += 1;
                warn_line!("Error: {e}");
            }
        }
    }
    if done > 1 {
        say!(out, silent, "{}", total(done));
    }
    finish("queues", failed, names.len())
}

pub fn create(a: &QueuesArgs, out: &mut dyn Write) -> CliResult {
    for_each_queue(
        a,
        out,
        |n| format!("Created {n} new queues"),
        |broker, name| {
            Ok(match broker.create_queue(name) {
                Ok(true) => QueueOutcome::Done(format!("Created new queue: {name}")),
                Ok(false) => QueueOutcome::Nothing(format!("Already existing: {name}")),
                // The original advised -f here, which cannot help (B17).
                Err(Error::NotAQueue(path)) => QueueOutcome::Notice(format!(
                    "A directory with the same name as the requested queue ({}) already exists but is not a ddmq queue \
                 (no ddmq.yaml or no work/ directory in it). Move it out of the way or choose another queue name.",
                    path.display()
                )),
                Err(e) => return Err(e),
            })
        },
    )
}

pub fn delete(a: &QueuesArgs, out: &mut dyn Write) -> CliResult {
    for_each_queue(
        a,
        out,
        |n| format!("Deleted {n} queues"),
        |broker, name| {
            Ok(match broker.delete_queue(name, false) {
                Ok(()) => QueueOutcome::Done(format!("Deleted queue: {name}")),
                Err(Error::NoSuchQueue(_)) | Err(Error::NotAQueue(_)) => {
                    QueueOutcome::Nothing(format!("Queue not existing: {name}"))
                }
                Err(e) => return Err(e),
            })
        },
    )
}

pub fn purge(a: &QueuesArgs, out: &mut dyn Write) -> CliResult {
    let root = a.root.root.clone();
    for_each_queue(
        a,
        out,
        |n| format!("Purged {n} queues"),
        move |broker, name| {
            Ok(match broker.queue(name).and_then(|q| q.purge()) {
                // The original's text, `1 messages` included: scripts may parse it.
                Ok((waiting, work)) => QueueOutcome::Done(format!(
                    "Purged queue: {name}\t({waiting} messages in queue, {work} messages in work)"
                )),
                // The original's text for purge and clean (delete says `Queue not existing`).
                Err(Error::NoSuchQueue(_)) | Err(Error::NotAQueue(_)) => QueueOutcome::Nothing(
                    format!("Queue does not exist: {}", root.join(name).display()),
                ),
                Err(e) => return Err(e),
            })
        },
    )
}

pub fn clean(a: &QueuesArgs, out: &mut dyn Write) -> CliResult {
    let root = a.root.root.clone();
    for_each_queue(
        a,
        out,
        |n| format!("Cleaned {n} queues"),
        move |broker, name| {
            Ok(match broker.queue(name).and_then(|q| q.clean()) {
                Ok(report) => {
                    log::info!("queue {name}: {report:?}");
                    QueueOutcome::Done(format!("Cleaned queue: {name}"))
                }
                // The original's text for purge and clean (delete says `Queue not existing`).
                Err(Error::NoSuchQueue(_)) | Err(Error::NotAQueue(_)) => QueueOutcome::Nothing(
                    format!("Queue does not exist: {}", root.join(name).display()),
                ),
                Err(e) => return Err(e),
            })
        },
    )
}

// ------------------------------------------------------------------------------------ publish

/// The `requeue` field a publish stores. Without a flag the engine takes the queue's `requeue`
/// setting (0.9.10 ignored that setting, B14). `--requeue_prio 0` stores `true`: in the file format an integer 0 means "drop".
fn requeue_choice(a: &PublishArgs) -> Option<Requeue> {
    if a.no_requeue {
        Some(Requeue::Drop)
    } else if let Some(prio) = a.requeue_prio {
        Some(if prio == 0 {
            Requeue::QueuePriority
        } else {
            Requeue::Priority(prio)
        })
    } else if a.requeue {
        Some(Requeue::QueuePriority)
    } else {
        None
    }
}

pub fn publish(a: &PublishArgs, out: &mut dyn Write) -> CliResult {
    let from_stdin = a.message == "-";
    if a.lines && !from_stdin {
        return Err(super::usage_error(
            "--lines reads the messages from stdin: give `-` as MESSAGE",
        ));
    }
    let broker = open_broker(&a.root.root, IfMissing::from(&a.force))?;
    let queue = queue_for(
        &broker,
        &a.queue,
        IfMissing::from(&a.force),
        (!a.silent.silent).then_some(&mut *out),
    )?;
    let mut opts = PublishOptions {
        priority: a.priority,
        timeout: a.timeout,
        requeue: requeue_choice(a),
        requeue_limit: a.requeue_limit,
        // Publish cleans by default (throttled), -C skips it (0.9.10 had it inverted, B8).
        clean: !a.skip_cleaning.skip_cleaning,
    };
    if !opts.clean {
        log::info!("Skipping queue cleaning.");
    }
    if a.lines {
        return publish_lines(&queue, &mut opts, a.silent.silent, out);
    }
    let body = if from_stdin {
        let mut bytes = Vec::new();
        io::stdin()
            .lock()
            .read_to_end(&mut bytes)
            .map_err(|source| CliError::Io {
                op: "reading stdin",
                source,
            })?;
        String::from_utf8(bytes)
            .map_err(|_| CliError::failed("the message on stdin is not valid UTF-8 text"))?
    } else {
        a.message.clone()
    };
    let msg = queue.publish(Value::String(body), &opts)?;
    if !a.silent.silent {
        let text = format!(
            "Successfully published message:\n\n{}",
            output::message_plain(&msg)
        );
        out.write_all(text.as_bytes()).map_err(CliError::stdout)?;
    }
    Ok(())
}

/// `publish --lines ROOT Q -`: every line of stdin (without its line ending) is one message.
fn publish_lines(
    queue: &Queue,
    opts: &mut PublishOptions,
    silent: bool,
    out: &mut dyn Write,
) -> CliResult {
    let mut input = io::stdin().lock();
    let mut line = Vec::new();
    let mut published = 0usize;
    let stopped = |published: usize, why: String| {
        CliError::failed(format!(
            "stopped after publishing {}: {why}",
            count(published, "message")
        ))
    };
    loop {
        line.clear();
        let n = input
            .read_until(b'\n', &mut line)
            .map_err(|e| stopped(published, format!("reading stdin: {e}")))?;
        if n == 0 {
            break;
        }
        if line.last() == Some(&b'\n') {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
        }
        let text = std::str::from_utf8(&line).map_err(|_| {
            stopped(
                published,
                format!("line {} is not valid UTF-8 text", published + 1),
            )
        })?;
        queue
            .publish(Value::String(text.to_string()), opts)
            .map_err(|e| stopped(published, e.to_string()))?;
        // Housekeeping once per run is enough.
        opts.clean = false;
        published += 1;
    }
    say!(
        out,
        silent,
        "Published {} to {}",
        count(published, "message"),
        queue.name()
    );
    Ok(())
}

// ------------------------------------------------------------------------------------ consume

pub fn consume(a: &ConsumeArgs, out: &mut dyn Write) -> CliResult {
    let broker = open_broker(&a.root.root, IfMissing::from(&a.force))?;
    let queue = queue_for(&broker, &a.queue, IfMissing::from(&a.force), None)?;
    // No -n takes one message, and -n 0 means 1, as in the original (where both crashed after
    // taking the message, B2).
    let n = usize::try_from(a.count.max(1)).unwrap_or(usize::MAX);
    let opts = ConsumeOptions {
        clean: !a.skip_cleaning.skip_cleaning,
    };
    let wait = a
        .wait
        .map(|seconds| Wait::uninterrupted(seconds, Duration::from_millis(a.poll_ms)));
    let deliveries = queue.consume_waiting(n, &opts, wait.as_ref())?;
    if deliveries.is_empty() {
        writeln!(out, "No more messages in {}", a.queue).map_err(CliError::stdout)?;
        return Ok(());
    }
    // Nobody has seen these messages until they are written out: if that fails, give them back.
    let shown = render_deliveries(&deliveries, a.format).and_then(|text| {
        out.write_all(text.as_bytes())
            .and_then(|_| out.flush())
            .map_err(CliError::stdout)
    });
    if let Err(e) = shown {
        for d in &deliveries {
            if let Err(back) = queue.give_back(&d.work_name) {
                log::warn!("could not give back {}: {back}", d.work_name);
            }
        }
        return Err(e);
    }
    if a.ack {
        let mut failed = 0;
        for d in &deliveries {
            match queue.ack(&d.work_name.to_string()) {
                Ok(AckOutcome::Acked(name)) => log::info!("acked {name}"),
                Ok(AckOutcome::NotFound) => {
                    failed += 1;
                    warn_line!(
                        "Warning: could not ack {}: it is no longer in work/ (expired and cleaned?)",
                        d.work_name
                    );
                }
                Err(e) => {
                    failed += 1;
                    warn_line!("Error: {e}");
                }
            }
        }
        return finish("acks", failed, deliveries.len());
    }
    Ok(())
}

fn render_deliveries(deliveries: &[Delivery], format: Format) -> CliResult<String> {
    Ok(match format {
        Format::Default | Format::Json => deliveries
            .iter()
            .map(|d| output::message_json_line(&d.message))
            .collect(),
        Format::Plain => deliveries
            .iter()
            .map(|d| output::message_plain(&d.message))
            .collect(),
        Format::Yaml => {
            let docs = deliveries
                .iter()
                .map(|d| output::message_yaml(&d.message))
                .collect::<Result<Vec<_>, _>>()?;
            output::yaml_stream(&docs)
        }
    })
}

// ------------------------------------------------------------------------------------ ack, nack, del_msg

/// A file name as the original prints it: `ROOT/QUEUE/work/NAME` (text only; never opened).
/// "1 message", "2 messages".
fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

fn work_path_text(root: &Path, queue: &str, name: &str) -> String {
    format!("{}/{queue}/work/{name}", root.display())
}

fn report_invalid_name(name: &str) {
    warn_line!(
        "Error: invalid message file name or id {name:?}: give a bare file name (no '/') as consume printed it, or the message id"
    );
}

/// Which of the two commands [`ack_or_nack`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settle {
    Ack,
    Nack,
}

/// `ack` and `nack`. ack deletes (0.9.10 requeued messages flagged
/// `requeue`, B1) unless -r, which requeues; nack honours the message's requeue flag and limit
/// (0.9.10's nack ignored them, B6), -r forces a requeue.
pub fn ack_or_nack(a: &AckArgs, settle: Settle, out: &mut dyn Write) -> CliResult {
    let nack = settle == Settle::Nack;
    let verb = if nack { "nack" } else { "ack" };
    let root = &a.root.root;
    let broker = open_broker(root, IfMissing::Fail)?;
    let queue = queue_for(&broker, &a.queue, IfMissing::Fail, None)?;
    let names = split_list(&a.files);
    let (mut done, mut missed, mut errors) = (Vec::new(), Vec::new(), 0);
    for name in &names {
        // The engine accepts only a parsed work/ name or an id; nothing else becomes a path
        // (0.9.10 joined any name to the path, so `ack R q /abs/file` deleted it, S1).
        let result = if nack || a.requeue {
            queue.nack(name, a.requeue).map(|outcome| {
                log::info!("{verb} {name}: {outcome:?}");
                (!matches!(outcome, RequeueOutcome::NotFound)).then(|| name.to_string())
            })
        } else {
            queue.ack(name).map(|outcome| match outcome {
                AckOutcome::Acked(actual) => Some(actual),
                AckOutcome::NotFound => None,
            })
        };
        match result {
            Ok(Some(actual)) => done.push(work_path_text(root, &a.queue, &actual)),
            Ok(None) => {
                let path = work_path_text(root, &a.queue, name);
                warn_line!("Warning: message file missing, {path}");
                missed.push(path);
            }
            Err(Error::InvalidMessageName(_)) => {
                errors += 1;
                report_invalid_name(name);
                missed.push(name.to_string());
            }
            Err(e) => {
                errors += 1;
                warn_line!("Error: {e}");
                missed.push(work_path_text(root, &a.queue, name));
            }
        }
    }
    for path in &done {
        writeln!(out, "{verb}ed {path}").map_err(CliError::stdout)?;
    }
    for path in &missed {
        writeln!(out, "failed {verb} {path}").map_err(CliError::stdout)?;
    }
    clean_after(&queue, &a.skip_cleaning);
    finish(if nack { "nacks" } else { "acks" }, errors, names.len())
}

pub fn del_msg(a: &DelMsgArgs, out: &mut dyn Write) -> CliResult {
    let root = &a.root.root;
    let silent = a.silent.silent;
    let broker = open_broker(root, IfMissing::Fail)?;
    let queue = queue_for(&broker, &a.queue, IfMissing::Fail, None)?;
    let names = split_list(&a.files);
    let path_of = |name: &str| {
        if WorkName::parse(name).is_some() {
            work_path_text(root, &a.queue, name)
        } else {
            format!("{}/{}/{name}", root.display(), a.queue)
        }
    };
    let (mut deleted, mut errors) = (0, 0);
    for name in &names {
        let outcome = if WorkName::parse(name).is_some() || WaitingName::parse(name).is_some() {
            queue
                .delete_message(name)
                .map(|found| found.then(|| name.to_string()))
        } else if is_valid_id(name) {
            delete_by_id(&queue, name)
        } else {
            Err(Error::InvalidMessageName(name.to_string()))
        };
        match outcome {
            Ok(Some(file)) => {
                deleted += 1;
                say!(out, silent, "Deleted {}", path_of(&file));
            }
            // The original's text, typo included: scripts written for it may look for it.
            Ok(None) if !is_valid_id(name) => {
                say!(
                    out,
                    silent,
                    "Skipping {}, file does not exists",
                    path_of(name)
                )
            }
            Ok(None) => say!(
                out,
                silent,
                "Skipping {name}, no message with this id in {}/{}",
                root.display(),
                a.queue
            ),
            Err(Error::InvalidMessageName(_)) => {
                errors += 1;
                report_invalid_name(name);
            }
            Err(e) => {
                errors += 1;
                warn_line!("Error: {e}");
            }
        }
    }
    if deleted > 1 {
        say!(out, silent, "Deleted {deleted} messages");
    }
    clean_after(&queue, &a.skip_cleaning);
    finish("deletions", errors, names.len())
}

/// Deletes the message with this id, waiting or in flight; returns the file name it had.
fn delete_by_id(queue: &Queue, id: &str) -> Result<Option<String>, Error> {
    // Looked up twice at most: a consumer may move it from waiting to work/ while we look.
    for _ in 0..2 {
        let name = match queue.waiting()?.into_iter().find(|w| w.id == *id) {
            Some(w) => w.to_string(),
            None => match queue.resolve_in_flight(id)? {
                Some(w) => w.to_string(),
                None => return Ok(None),
            },
        };
        if queue.delete_message(&name)? {
            return Ok(Some(name));
        }
    }
    Ok(None)
}
