//! The queue protocol on disk: no FUSE, no CLI. This doc is the protocol's specification.
//!
//! # Layout (interchangeable with ddmq 0.9.10 in both directions)
//!
//! ```text
//! ROOT/ddmq.yaml                      root settings (may be empty)
//! ROOT/<queue>/ddmq.yaml              queue settings; a new queue gets only `cleaned: 0`, so root
//!                                     settings are not shadowed (0.9.10 copied every default
//!                                     there, B15)
//! ROOT/<queue>/<P>.<N>.ddmq<ID>       a waiting message: priority P, queue number N, id ID
//! ROOT/<queue>/work/<E>.<P>.<N>.ddmq<ID>  the same message in flight, expiring at epoch second E
//! ROOT/<queue>/dead/<P>.<N>.ddmq<ID>  additions, invisible to the original, which only lists
//! ROOT/<queue>/quarantine/<name>      `*.ddmq*` entries of the queue and work directories
//! ```
//!
//! A queue is a directory (not a symlink) holding `ddmq.yaml` and a `work/` directory, named
//! `^[A-Za-z0-9_-]+$`. Message content is one JSON object (see [`message`]). Delivery order is
//! P ascending, then N ascending, compared as numbers (0.9.10 compared the strings, B3); 0 is the
//! most urgent priority (0.9.10 turned 0 into the default, B4).
//! N is the publish time in microseconds, made strictly increasing within a process, so it is
//! FIFO for one publisher and time-ordered across publishers and hosts (as 0.9.14 moved to).
//!
//! Temporary names never contain `.ddmq`, so the original never takes them for messages:
//! `.tmp-*` (a message or settings file being written), `work/.take-<T>-<P>-<N>-<ID>-<random>` (a
//! message one consumer has just taken, before it has its `work/` name),
//! `work/.held-<E>-<P>-<N>-<ID>-<random>` (a message a consumer that stays alive uses before it
//! has its `work/` name: a private lease to E) and
//! `work/.claim-<epoch>-*` (a message being requeued or dropped by exactly one client). [`names`]
//! builds and parses every such name.
//!
//! # Where each part lives
//!
//! [`names`] the names on disk; [`config`] `ddmq.yaml` (the only user of serde_yaml);
//! [`message`] the JSON record; `broker` the root, its queues and settings writes; `queue`
//! publish, consume, ack, nack, touch, requeue; `waiting` a consume that waits for its first
//! message; `prepared` a publish whose body arrives in pieces; `listing` the sorted listing
//! consume works from; `lease` requeueing expired leases for a long-running consumer;
//! `housekeeping` clean, quarantine; `inspect` views, status, deletion; `survey` a queue as
//! `ddmq top` sees it, from listings only; `files` raw file operations; `error` the one error
//! type.
//!
//! # State changes, each one atomic filesystem call
//!
//! | change | the call | who loses a race sees |
//! |---|---|---|
//! | publish | `rename(.tmp-X, P.N.ddmqID)` after the full write (and fsync if `durable`) | — (names are unique) |
//! | consume (claim) | `rename(P.N.ddmqID, work/.take-T-P-N-ID-R)` (T: the time, R: random, this claimer's own); then, once read, `rename(work/.take-…, work/E.P.N.ddmqID)` | ENOENT or ESTALE: take the next one |
//! | consume held (`ddmq work`) | `rename(P.N.ddmqID, work/.held-E-P-N-ID-R)`, E the end of a lease of the queue's `message_timeout`; once the task outlives a second (sooner for short timeouts), `rename(work/.held-…, work/E2.P.N.ddmqID)`; a message whose own timeout is shorter gets that second rename at once | ENOENT or ESTALE: take the next one |
//! | ack | `unlink(work/E.…)` (or of its `.held-` name) | ENOENT: already acked or expired |
//! | give back (reader left early) | `rename(work/E.P.N.ddmqID, P.N.ddmqID)`: keeps its place | ENOENT |
//! | extend lease (touch) | `rename(work/E.…, work/E2.…)` | ENOENT |
//! | nack / expiry | `rename(work/E.…, work/.claim-T-R)`; then the claimer alone publishes the requeued copy (or deletes it, or moves it to `dead/`) and unlinks the claim | ENOENT: someone else handles it |
//! | quarantine | `rename(<file>, quarantine/<name>)` | ENOENT |
//!
//! Every rename goes from a name one client holds, or to a name no other client can compute. A
//! destination another client can compute is not exclusive across hosts: a host that still caches
//! the source entry after another host renamed it finds that destination to be the very file, and
//! by POSIX its rename then "succeeds" without reaching the server (see doc/RELIABILITY.md).
//!
//! A claim file left by a client that died mid-requeue is re-claimed (renamed again) by a cleaner
//! after five minutes, so nothing is lost; at worst one duplicate per crash. A take left by a
//! consumer that died between its two renames is given back at its place, uncounted, after a
//! minute (by the time in its name, on the filesystem's clock). A held message whose E has
//! passed is requeued, counted, as an expired lease is (its consumer may have used it); nack,
//! give back and renewal of a held message are the same calls from its `.held-` name.
//!
//! ESTALE (a cached name another host replaced or moved) is looked up again for up to 4 s.
//!
//! A publish whose body arrives in pieces (the mount's `in`: [`PreparedMessage`]) writes its
//! `.tmp-in-…` file as the pieces arrive: the record's first field is the body, so each piece is
//! escaped into the file, and the other fields (queue number and id assigned then) are appended
//! when the body is complete. The rename is still the one state change.
//!
//! # Housekeeping
//!
//! `clean` requeues or drops expired messages (`E < now`), recovers stale claims and removes
//! temporary files not modified for ten minutes (a publish in pieces whose writer stayed idle
//! that long finds its file gone and publishes a copy of it). Callers run it at most once a minute per queue, judged by `cleaned` in the
//! queue's `ddmq.yaml`, read fresh (0.9.10 read settings once per process, B7) and rewritten
//! atomically under a unique temporary name (0.9.10 shared one temporary name between writers,
//! R4). Expiry uses the cleaner's clock against the consumer's; see doc/RELIABILITY.md on clock
//! skew.
//!
//! # Cost
//!
//! Publish writes one file: no listing. Consume works from a sorted in-memory listing of the queue
//! directory, refreshed when it runs out, or, once it is older than 50 ms and four times what a
//! listing costs, when the directory's signature differs from the one it was listed under (our
//! own changes included: a signature is never recorded without a listing, so other clients'
//! changes in between are never swallowed), when a claim was lost since, or when that signature
//! had been seen for less than 2 s (mtimes to the second, cached directory attributes). So each
//! message costs O(log n) amortized whatever the depth, a long-lived caller sees a more urgent
//! message from another client within that bound (at once when its listing runs out), and an
//! empty answer is only given by a listing made during that call. Consumers that keep losing
//! claims keep to lanes of their own (a hash of the queue number) among the head's messages of
//! the most urgent priority, drawing another lane after a loss in theirs, so they stop colliding
//! on the same messages (each lost claim costs a network filesystem's server lookups) and never
//! pass a more urgent one. A message file's type and size are taken from the client's cached
//! attributes; its times, which cost the server a request, only to learn the clock or to judge
//! an unreadable file.

pub mod config;
pub mod message;
pub mod names;

mod broker;
mod clock;
mod error;
mod files;
mod housekeeping;
mod inspect;
mod lease;
mod listing;
mod prepared;
mod queue;
mod survey;
mod waiting;
mod watch;

pub use broker::Broker;
pub use config::Settings;
pub(crate) use error::io_err;
pub use error::{Error, Result};
pub use message::{Message, Requeue};
pub use names::{WaitingName, WorkName, is_valid_queue_name, next_queue_number, now_secs};
pub use prepared::PreparedMessage;
pub use queue::{
    AckOutcome, CleanReport, ConsumeOptions, Delivery, HOLD_FOR, HeldDelivery, InFlight,
    PublishOptions, Queue, QueueStatus, RequeueOutcome,
};
pub use survey::Survey;
pub use waiting::{LONGEST_WAIT, Wait};
pub use watch::{DirWatch, IDLE_AFTER, IDLE_POLL};
