//! Every name the engine gives to or reads from the disk: message file names (parsing, formatting
//! and the delivery order), the numbers in them, and the reserved names that are not messages.
//!
//! A waiting message is `<priority>.<queue_number>.ddmq<id>`; in flight it is
//! `work/<expiry>.<waiting name>`. Both numbers are plain decimal with no padding, as the
//! original writes them, so order is decided here numerically, never by the string (0.9.10
//! sorted the strings, so priority 10 came before 9: B3).
//!
//! The reserved names ([`ReservedName`]) never contain `.ddmq`, so the original, which takes every
//! `*.ddmq*` entry for a message, never mistakes them for one; the tests below check that for each.

use std::cmp::Ordering;
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// Marks a byte that is not a lowercase hex digit in [`HEX_DIGIT`].
const NOT_HEX: u8 = 0x10;

/// Each byte's value as a lowercase hex digit, or [`NOT_HEX`].
const HEX_DIGIT: [u8; 256] = {
    let mut table = [NOT_HEX; 256];
    let mut i = 0;
    while i < 10 {
        table[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        table[b'a' as usize + i] = 10 + i as u8;
        i += 1;
    }
    table
};

/// A message id: the 32 lowercase hex digits of a uuid, as everyone writes them, kept inline
/// (a 100k-message listing makes no allocation for them); any other ASCII alphanumeric run, as
/// the original's own regex accepts, kept as text.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum MessageId {
    Hex(u128),
    Other(Box<str>),
}

impl MessageId {
    pub fn parse(id: &str) -> Option<MessageId> {
        Self::parse_bytes(id.as_bytes())
    }

    fn parse_bytes(id: &[u8]) -> Option<MessageId> {
        // The usual 32 lowercase hex digits, without a branch per digit: this runs for every
        // entry of a listing (a status of 100,000 waiting spent a third of its time here).
        if let Ok(digits) = <&[u8; 32]>::try_from(id) {
            let (mut high, mut low, mut bad) = (0u64, 0u64, 0u8);
            for (half, acc) in [(&digits[..16], &mut high), (&digits[16..], &mut low)] {
                for &b in half {
                    let nibble = HEX_DIGIT[b as usize];
                    bad |= nibble;
                    *acc = *acc << 4 | u64::from(nibble & 0xf);
                }
            }
            if bad & NOT_HEX == 0 {
                return Some(MessageId::Hex(u128::from(high) << 64 | u128::from(low)));
            }
        }
        if !is_valid_id_bytes(id) {
            return None;
        }
        Some(MessageId::Other(std::str::from_utf8(id).ok()?.into()))
    }

    /// A new random id (uuid v4).
    pub fn new_random() -> MessageId {
        MessageId::Hex(uuid::Uuid::new_v4().as_u128())
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MessageId::Hex(v) => write!(f, "{v:032x}"),
            MessageId::Other(s) => f.write_str(s),
        }
    }
}

impl PartialEq<str> for MessageId {
    fn eq(&self, other: &str) -> bool {
        match self {
            MessageId::Hex(v) => MessageId::parse(other) == Some(MessageId::Hex(*v)),
            MessageId::Other(s) => &**s == other,
        }
    }
}

impl PartialEq<String> for MessageId {
    fn eq(&self, other: &String) -> bool {
        self == other.as_str()
    }
}

impl Ord for MessageId {
    // The order of the texts: for two hex ids of one width, the order of their numbers.
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (MessageId::Hex(a), MessageId::Hex(b)) => a.cmp(b),
            _ => self.to_string().cmp(&other.to_string()),
        }
    }
}

impl PartialOrd for MessageId {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The name of a waiting message file, parsed. Ordered for delivery: priority ascending
/// (0 first), then queue_number ascending (FIFO), then id to break ties deterministically.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct WaitingName {
    pub priority: u64,
    pub queue_number: u64,
    pub id: MessageId,
}

/// The name of an in-flight message file in `work/`, parsed.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct WorkName {
    /// Epoch seconds after which the message counts as expired.
    pub expiry: u64,
    pub waiting: WaitingName,
}

/// Reads a run of decimal digits (at most 20, no sign) up to `stop`; returns it and the rest.
fn take_number(s: &[u8]) -> Option<(u64, &[u8])> {
    let mut value: u64 = 0;
    for (i, &b) in s.iter().enumerate() {
        match b {
            b'0'..=b'9' if i < 20 => {
                value = value.checked_mul(10)?.checked_add(u64::from(b - b'0'))?
            }
            b'.' if i > 0 => return Some((value, &s[i + 1..])),
            _ => return None,
        }
    }
    None
}

fn is_valid_id_bytes(id: &[u8]) -> bool {
    !id.is_empty() && id.len() <= 128 && id.iter().all(|b| b.is_ascii_alphanumeric())
}

/// Ids are the 32-hex uuid the original writes; any ASCII alphanumeric run is accepted,
/// as the original's own regex does, but nothing that could name another path.
pub fn is_valid_id(id: &str) -> bool {
    is_valid_id_bytes(id.as_bytes())
}

impl WaitingName {
    pub fn parse(name: &str) -> Option<WaitingName> {
        Self::parse_bytes(name.as_bytes())
    }

    /// Parses a directory entry's name in one pass, without allocating for uuid ids.
    pub fn parse_bytes(name: &[u8]) -> Option<WaitingName> {
        let (priority, rest) = take_number(name)?;
        let (queue_number, rest) = take_number(rest)?;
        let id = rest.strip_prefix(b"ddmq")?;
        Some(WaitingName {
            priority,
            queue_number,
            id: MessageId::parse_bytes(id)?,
        })
    }
}

impl fmt::Display for WaitingName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.ddmq{}", self.priority, self.queue_number, self.id)
    }
}

impl Ord for WaitingName {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.priority, self.queue_number, &self.id).cmp(&(
            other.priority,
            other.queue_number,
            &other.id,
        ))
    }
}

impl PartialOrd for WaitingName {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl WorkName {
    pub fn parse(name: &str) -> Option<WorkName> {
        Self::parse_bytes(name.as_bytes())
    }

    pub fn parse_bytes(name: &[u8]) -> Option<WorkName> {
        let (expiry, rest) = take_number(name)?;
        Some(WorkName {
            expiry,
            waiting: WaitingName::parse_bytes(rest)?,
        })
    }
}

impl fmt::Display for WorkName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.expiry, self.waiting)
    }
}

/// Seconds since the epoch on this host's clock.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A new queue number: the time in microseconds, strictly increasing within this process.
pub fn next_queue_number() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0);
    let mut last = LAST.load(Ordering::Relaxed);
    loop {
        let next = now.max(last + 1);
        match LAST.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(seen) => last = seen,
        }
    }
}

/// The settings file of the root and of each queue.
pub const CONFIG_FILE: &str = "ddmq.yaml";
/// A queue's directory of in-flight messages.
pub const WORK_DIR: &str = "work";
/// A queue's directory of messages past their requeue limit (with `dead_letter`).
pub const DEAD_DIR: &str = "dead";
/// A queue's directory of unreadable message files, set aside.
pub const QUARANTINE_DIR: &str = "quarantine";
const TEMP_PREFIX: &str = ".tmp-";
pub(crate) const CLAIM_PREFIX: &str = ".claim-";
const TAKE_PREFIX: &str = ".take-";
const HELD_PREFIX: &str = ".held-";

/// A name ddmq uses that is not a message. [`ReservedName::parse`] is the one parser; the one
/// builder of each is its constant above, [`temp_name`] or [`claim_name`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReservedName {
    /// `ddmq.yaml`, in the root and in each queue.
    Config,
    /// `work/`, `dead/` and `quarantine/` in a queue.
    Work,
    Dead,
    Quarantine,
    /// `.tmp-<kind>-<pid>-<random>`: a file or directory being written, renamed into place when
    /// complete; left behind only by a writer that died.
    Temp,
    /// `work/.claim-<epoch>-<random>`: a message being requeued, dropped or dead-lettered by the
    /// one client that renamed it there, at `claimed_at` (0 if unreadable: stale at once).
    Claim {
        claimed_at: u64,
    },
    /// `work/.take-…` or `work/.held-…`: a waiting message one consumer has taken ([`TakeName`]).
    Take(TakeKind),
}

impl ReservedName {
    pub fn parse(name: &str) -> Option<ReservedName> {
        Some(match name {
            CONFIG_FILE => ReservedName::Config,
            WORK_DIR => ReservedName::Work,
            DEAD_DIR => ReservedName::Dead,
            QUARANTINE_DIR => ReservedName::Quarantine,
            _ if name.starts_with(TEMP_PREFIX) => ReservedName::Temp,
            _ if name.starts_with(TAKE_PREFIX) => ReservedName::Take(TakeKind::Take),
            _ if name.starts_with(HELD_PREFIX) => ReservedName::Take(TakeKind::Held),
            _ => {
                let rest = name.strip_prefix(CLAIM_PREFIX)?;
                let claimed_at = rest
                    .split('-')
                    .next()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                ReservedName::Claim { claimed_at }
            }
        })
    }
}

/// A unique temporary name (`kind` says what is being written) that the original never mistakes
/// for a message.
pub fn temp_name(kind: &str) -> String {
    format!(
        "{TEMP_PREFIX}{kind}-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    )
}

/// A unique claim name in `work/`, stamped with the time of the claim.
pub fn claim_name(now: u64) -> String {
    format!("{CLAIM_PREFIX}{now}-{}", uuid::Uuid::new_v4().simple())
}

/// What a consumer means to do with a message it takes, said by its take name's prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TakeKind {
    /// `.take-`: renamed to its `work/` name (its lease) as soon as it is read, before anyone
    /// uses it. One left behind was never delivered: it is given back at its place, uncounted.
    Take,
    /// `.held-`: delivered under this name, which is a lease of the queue's `message_timeout`
    /// for its first moments (a `ddmq work` task shorter than a second is acked without a
    /// second rename). Once it expires it is requeued, counted, as an expired lease is.
    Held,
}

/// `work/.take-<epoch>-<P>-<N>-<ID>-<random>` (or `.held-…`, see [`TakeKind`]): the private name
/// under which one consumer takes the waiting message `P.N.ddmqID`; `epoch` is, by its estimate
/// of the filesystem's clock, when a `.take-` was taken and when a `.held-` one's lease ends.
/// Unique to this consumer, so that of two consumers on two hosts
/// exactly one rename succeeds. (With a name that both could compute, such as the `work/` name,
/// a host that still caches the source finds the destination to be the very file the other
/// host just moved there, and by POSIX that rename succeeds without doing anything: both would
/// win.) Dashes, not dots: never `.ddmq` in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TakeName {
    pub kind: TakeKind,
    /// Epoch seconds: taken at (`.take-`), or lease ends at (`.held-`).
    pub time: u64,
    pub waiting: WaitingName,
    random: String,
}

impl TakeName {
    pub fn new(kind: TakeKind, waiting: &WaitingName, time: u64) -> TakeName {
        TakeName {
            kind,
            time,
            waiting: waiting.clone(),
            random: uuid::Uuid::new_v4().simple().to_string(),
        }
    }

    pub fn parse(name: &str) -> Option<TakeName> {
        let (kind, rest) = if let Some(rest) = name.strip_prefix(TAKE_PREFIX) {
            (TakeKind::Take, rest)
        } else {
            (TakeKind::Held, name.strip_prefix(HELD_PREFIX)?)
        };
        let mut parts = rest.split('-');
        let time = parts.next()?.parse().ok()?;
        let (p, n, id) = (parts.next()?, parts.next()?, parts.next()?);
        let random = parts.next()?;
        if parts.next().is_some() || random.is_empty() {
            return None;
        }
        Some(TakeName {
            kind,
            time,
            waiting: WaitingName::parse(&format!("{p}.{n}.ddmq{id}"))?,
            random: random.to_string(),
        })
    }
}

impl fmt::Display for TakeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let prefix = match self.kind {
            TakeKind::Take => TAKE_PREFIX,
            TakeKind::Held => HELD_PREFIX,
        };
        let w = &self.waiting;
        write!(
            f,
            "{prefix}{}-{}-{}-{}-{}",
            self.time, w.priority, w.queue_number, w.id, self.random
        )
    }
}

/// The waiting name of a message in flight under any of its `work/` names: its lease's, or a
/// take name (taken a moment ago, or held by a consumer using it).
pub fn in_flight_waiting_bytes(name: &[u8]) -> Option<WaitingName> {
    if let Some(w) = WorkName::parse_bytes(name) {
        return Some(w.waiting);
    }
    if name.starts_with(TAKE_PREFIX.as_bytes()) || name.starts_with(HELD_PREFIX.as_bytes()) {
        return TakeName::parse(std::str::from_utf8(name).ok()?).map(|t| t.waiting);
    }
    None
}

/// True for every name the original 0.9.10 treats as a message (`fnmatch('*.ddmq*')`).
/// Our temporary and bookkeeping names must never satisfy this.
pub fn original_sees_as_message(name: &str) -> bool {
    name.contains(".ddmq")
}

/// Queue names: `^[A-Za-z0-9_-]+$`, at most 255 bytes (a file name's limit).
pub fn is_valid_queue_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// "Our names never look like messages to the original", checked for every reserved name,
    /// each read back by the one parser as what it was built as.
    #[test]
    fn reserved_names_are_never_messages_to_the_original() {
        let waiting = WaitingName::parse("3.17.ddmqddmq0ab").unwrap();
        let built = [
            (CONFIG_FILE.to_string(), ReservedName::Config),
            (WORK_DIR.to_string(), ReservedName::Work),
            (DEAD_DIR.to_string(), ReservedName::Dead),
            (QUARANTINE_DIR.to_string(), ReservedName::Quarantine),
            (temp_name("msg"), ReservedName::Temp),
            (temp_name("queue"), ReservedName::Temp),
            (
                TakeName::new(TakeKind::Take, &waiting, 1_700_000_000).to_string(),
                ReservedName::Take(TakeKind::Take),
            ),
            (
                TakeName::new(TakeKind::Held, &waiting, 1_700_000_000).to_string(),
                ReservedName::Take(TakeKind::Held),
            ),
            (
                claim_name(1_700_000_000),
                ReservedName::Claim {
                    claimed_at: 1_700_000_000,
                },
            ),
        ];
        for (name, kind) in built {
            assert!(!original_sees_as_message(&name), "{name}");
            assert!(WaitingName::parse(&name).is_none(), "{name}");
            assert!(WorkName::parse(&name).is_none(), "{name}");
            assert_eq!(ReservedName::parse(&name), Some(kind), "{name}");
        }
        assert_eq!(
            ReservedName::parse(".claim-junk"),
            Some(ReservedName::Claim { claimed_at: 0 })
        );
        for message in ["1.2.ddmqff", "3.1.2.ddmqff", "x.ddmq"] {
            assert!(original_sees_as_message(message));
            assert_eq!(ReservedName::parse(message), None);
        }
        assert_ne!(temp_name("w"), temp_name("w"), "unique");
        assert_ne!(claim_name(1), claim_name(1), "unique");
        let w = WaitingName::parse("3.17.ddmq0123456789abcdef0123456789abcdef").unwrap();
        for kind in [TakeKind::Take, TakeKind::Held] {
            let take = TakeName::new(kind, &w, 5);
            assert_ne!(take, TakeName::new(kind, &w, 5), "unique");
            assert_eq!(TakeName::parse(&take.to_string()), Some(take.clone()));
            assert_eq!((take.kind, take.time, &take.waiting), (kind, 5, &w));
        }
        assert_eq!(TakeName::parse(".take-1-3-17-ab"), None);
        assert_eq!(TakeName::parse(".held-1-3-17-ab-"), None);
        assert_eq!(TakeName::parse(".take-1-3-17-a.b-cd"), None);
    }

    #[test]
    fn parses_and_formats_round_trip() {
        let w = WaitingName::parse("999.12.ddmqabc123").unwrap();
        assert_eq!(
            (w.priority, w.queue_number, w.id.to_string().as_str()),
            (999, 12, "abc123")
        );
        assert_eq!(w.to_string(), "999.12.ddmqabc123");
        let k = WorkName::parse("1700000000.0.3.ddmqff").unwrap();
        assert_eq!(k.expiry, 1_700_000_000);
        assert_eq!(k.to_string(), "1700000000.0.3.ddmqff");
    }

    #[test]
    fn rejects_junk_and_paths() {
        for bad in [
            "",
            "ddmq.yaml",
            "1.2.ddmq",
            "a.2.ddmqff",
            "1.2.ddmqf/f",
            "1.2.ddmq..",
            "../1.2.ddmqff",
            "1.2.ddmqff.bak",
            "-1.2.ddmqff",
        ] {
            assert!(WaitingName::parse(bad).is_none(), "{bad}");
        }
        assert!(WorkName::parse("1.2.ddmqff").is_none());
    }

    #[test]
    fn uuid_ids_are_kept_inline_and_print_back() {
        let hex = "0123456789abcdef0123456789abcdef";
        let w = WaitingName::parse(&format!("1.2.ddmq{hex}")).unwrap();
        assert!(matches!(w.id, MessageId::Hex(_)));
        assert_eq!(w.id.to_string(), hex);
        assert!(w.id == *hex);
        let upper = WaitingName::parse("1.2.ddmqABC").unwrap();
        assert!(matches!(upper.id, MessageId::Other(_)));
        // 32 characters that are not all lowercase hex stay as written.
        for other in [
            hex.to_uppercase(),
            format!("{}g", &hex[..31]),
            format!("x{}", &hex[1..]),
        ] {
            let id = MessageId::parse(&other).unwrap();
            assert!(matches!(id, MessageId::Other(_)), "{other}");
            assert_eq!(id.to_string(), other);
        }
        for _ in 0..100 {
            let id = MessageId::new_random();
            assert_eq!(MessageId::parse(&id.to_string()), Some(id));
        }
        assert!(WaitingName::parse("1.99999999999999999999999.ddmqab").is_none());
        let mut ids = [
            MessageId::parse("b").unwrap(),
            MessageId::parse(hex).unwrap(),
            MessageId::parse("A").unwrap(),
        ];
        ids.sort();
        assert_eq!(
            ids.iter().map(|i| i.to_string()).collect::<Vec<_>>(),
            [hex, "A", "b"]
        );
    }

    #[test]
    fn b3_order_is_numeric_not_lexicographic() {
        let mut names: Vec<WaitingName> = [
            "999.10.ddmqa",
            "999.2.ddmqa",
            "5.100.ddmqa",
            "10.1.ddmqa",
            "0.7.ddmqa",
            "1000.1.ddmqa",
        ]
        .iter()
        .map(|n| WaitingName::parse(n).unwrap())
        .collect();
        names.sort();
        let order: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        assert_eq!(
            order,
            [
                "0.7.ddmqa",
                "5.100.ddmqa",
                "10.1.ddmqa",
                "999.2.ddmqa",
                "999.10.ddmqa",
                "1000.1.ddmqa"
            ]
        );
    }
}
