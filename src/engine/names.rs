//! Message file names: parsing, formatting and the delivery order.
//!
//! A waiting message is `<priority>.<queue_number>.ddmq<id>`; in flight it is
//! `work/<expiry>.<waiting name>`. Both numbers are plain decimal with no padding, as the
//! original writes them, so order is decided here numerically (B3) and never by the string.

use std::cmp::Ordering;
use std::fmt;

/// The name of a waiting message file, parsed. Ordered for delivery: priority ascending
/// (0 first), then queue_number ascending (FIFO), then id to break ties deterministically.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct WaitingName {
    pub priority: u64,
    pub queue_number: u64,
    pub id: String,
}

/// The name of an in-flight message file in `work/`, parsed.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct WorkName {
    /// Epoch seconds after which the message counts as expired.
    pub expiry: u64,
    pub waiting: WaitingName,
}

fn parse_number(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Ids are the 32-hex uuid the original writes; any ASCII alphanumeric run is accepted,
/// as the original's own regex does, but nothing that could name another path.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

impl WaitingName {
    pub fn parse(name: &str) -> Option<WaitingName> {
        let (priority, rest) = name.split_once('.')?;
        let (queue_number, rest) = rest.split_once('.')?;
        let id = rest.strip_prefix("ddmq")?;
        if !is_valid_id(id) {
            return None;
        }
        Some(WaitingName {
            priority: parse_number(priority)?,
            queue_number: parse_number(queue_number)?,
            id: id.to_string(),
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
        let (expiry, rest) = name.split_once('.')?;
        Some(WorkName { expiry: parse_number(expiry)?, waiting: WaitingName::parse(rest)? })
    }
}

impl fmt::Display for WorkName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.expiry, self.waiting)
    }
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
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats_round_trip() {
        let w = WaitingName::parse("999.12.ddmqabc123").unwrap();
        assert_eq!((w.priority, w.queue_number, w.id.as_str()), (999, 12, "abc123"));
        assert_eq!(w.to_string(), "999.12.ddmqabc123");
        let k = WorkName::parse("1700000000.0.3.ddmqff").unwrap();
        assert_eq!(k.expiry, 1_700_000_000);
        assert_eq!(k.to_string(), "1700000000.0.3.ddmqff");
    }

    #[test]
    fn rejects_junk_and_paths() {
        for bad in ["", "ddmq.yaml", "1.2.ddmq", "a.2.ddmqff", "1.2.ddmqf/f", "1.2.ddmq..", "../1.2.ddmqff", "1.2.ddmqff.bak", "-1.2.ddmqff"] {
            assert!(WaitingName::parse(bad).is_none(), "{bad}");
        }
        assert!(WorkName::parse("1.2.ddmqff").is_none());
    }

    #[test]
    fn b3_order_is_numeric_not_lexicographic() {
        let mut names: Vec<WaitingName> = ["999.10.ddmqa", "999.2.ddmqa", "5.100.ddmqa", "10.1.ddmqa", "0.7.ddmqa", "1000.1.ddmqa"]
            .iter()
            .map(|n| WaitingName::parse(n).unwrap())
            .collect();
        names.sort();
        let order: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        assert_eq!(order, ["0.7.ddmqa", "5.100.ddmqa", "10.1.ddmqa", "999.2.ddmqa", "999.10.ddmqa", "1000.1.ddmqa"]);
    }
}
