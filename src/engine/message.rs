//! The message record stored in each message file, and its JSON encoding.
//!
//! Files are written the way Python's `json.dumps` writes them (`", "` and `": "` separators,
//! non-ASCII and DEL escaped as `\uXXXX`, fields in the order 0.9.10 uses on Python 3), so a file we write
//! is indistinguishable from one the original wrote. Reading is lenient: any key order, extra keys
//! (kept and written back), `requeue` as bool or int, nulls, and numbers written as floats.

use serde::de::{self, Deserializer};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::io;

/// What happens to a message that is nacked or expires (the `requeue` field).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Requeue {
    /// `false` (or null): delete it.
    #[default]
    Drop,
    /// `true`: requeue at the queue's `requeue_prio`.
    QueuePriority,
    /// an integer N: requeue at priority N.
    Priority(u64),
}

impl Requeue {
    pub fn is_requeue(self) -> bool {
        self != Requeue::Drop
    }
}

impl Serialize for Requeue {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Requeue::Drop => s.serialize_bool(false),
            Requeue::QueuePriority => s.serialize_bool(true),
            Requeue::Priority(p) => s.serialize_u64(*p),
        }
    }
}

impl<'de> Deserialize<'de> for Requeue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match Value::deserialize(d)? {
            Value::Null | Value::Bool(false) => Requeue::Drop,
            Value::Bool(true) => Requeue::QueuePriority,
            // Python's truthiness: 0 means "do not requeue".
            Value::Number(n) => match n.as_f64() {
                Some(f) if f >= 1.0 => Requeue::Priority(f as u64),
                Some(f) if f != 0.0 => {
                    return Err(de::Error::custom("requeue must not be negative"));
                }
                _ => Requeue::Drop,
            },
            Value::String(s) if s.is_empty() => Requeue::Drop,
            other => {
                return Err(de::Error::custom(format!(
                    "requeue must be a bool or an integer, not {other}"
                )));
            }
        })
    }
}

/// Accepts an integer, an integral float, or null; negative numbers are refused.
fn lenient_opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        Value::Bool(b) => Ok(Some(b as u64)),
        Value::Number(n) => match n.as_u64() {
            Some(v) => Ok(Some(v)),
            None => match n.as_f64() {
                Some(f) if f >= 0.0 && f.is_finite() => Ok(Some(f as u64)),
                _ => Err(de::Error::custom(format!(
                    "expected a non-negative integer, got {n}"
                ))),
            },
        },
        other => Err(de::Error::custom(format!(
            "expected an integer, got {other}"
        ))),
    }
}

fn lenient_u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    Ok(lenient_opt_u64(d)?.unwrap_or(0))
}

fn lenient_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Null => String::new(),
        Value::String(s) => s,
        other => other.to_string(),
    })
}

/// One message, as stored in its file. Field order is the order written.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// The payload: any JSON value (the CLI and the mount publish strings).
    #[serde(default)]
    pub message: Value,
    #[serde(default, deserialize_with = "lenient_string")]
    pub queue: String,
    /// Seconds in flight before expiry; None or 0 means the queue's `message_timeout`.
    #[serde(default, deserialize_with = "lenient_opt_u64")]
    pub timeout: Option<u64>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub id: String,
    #[serde(default, deserialize_with = "lenient_u64")]
    pub priority: u64,
    #[serde(default, deserialize_with = "lenient_u64")]
    pub queue_number: u64,
    /// The file name: the waiting name on disk; the `work/` name in what consume returns.
    #[serde(default, deserialize_with = "lenient_string")]
    pub filename: String,
    #[serde(default)]
    pub requeue: Requeue,
    #[serde(default, deserialize_with = "lenient_u64")]
    pub requeue_counter: u64,
    /// Requeues allowed; None or 0 means unlimited.
    #[serde(default, deserialize_with = "lenient_opt_u64")]
    pub requeue_limit: Option<u64>,
    /// Keys written by other tools, kept as they are.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Message {
    /// Decodes a message file's bytes. A record laid out as [`Message::to_json`] (and 0.9.10)
    /// writes it is read directly; anything else goes through the lenient reader.
    pub fn from_json(bytes: &[u8]) -> Result<Message, serde_json::Error> {
        match fast::parse(bytes) {
            Some(m) => Ok(m),
            None => serde_json::from_slice(bytes),
        }
    }

    /// Encodes as Python's `json.dumps` would.
    pub fn to_json(&self) -> String {
        // The fields' names and numbers, and the strings unescaped: one allocation, mostly.
        let strings = self.queue.len() + self.id.len() + self.filename.len();
        let body = self.message.as_str().map_or(0, str::len);
        let mut out = Vec::with_capacity(256 + strings + body + body / 8);
        fast::write(&mut out, self);
        String::from_utf8(out).expect("the record is written as ASCII")
    }

    /// The effective timeout, given the queue's default.
    pub fn timeout_or(&self, default: u64) -> u64 {
        match self.timeout {
            Some(t) if t > 0 => t,
            _ => default,
        }
    }

    /// True when another requeue is allowed by `requeue_limit`.
    pub fn may_requeue_again(&self) -> bool {
        match self.requeue_limit {
            Some(limit) if limit > 0 => self.requeue_counter < limit,
            _ => true,
        }
    }

    /// The body as text: strings as they are, other JSON values encoded.
    pub fn body_text(&self) -> String {
        match &self.message {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        }
    }
}

/// serde_json formatter that reproduces Python's `json.dumps` defaults.
struct PythonFormatter;

impl serde_json::ser::Formatter for PythonFormatter {
    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }
    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }
    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        // serde_json escapes quotes, backslashes and controls itself; the rest is ensure_ascii.
        if fragment.is_ascii() && !fragment.as_bytes().contains(&0x7f) {
            return w.write_all(fragment.as_bytes()); // the common case, checked a word at a time
        }
        let mut out = Vec::with_capacity(fragment.len() + 16);
        escape_str_into(&mut out, fragment);
        w.write_all(&out)
    }
}

/// How every message file starts: the body's string is the first field written, so a body can
/// be written to its file as it arrives (see `prepared`) and the other fields follow at the end.
pub(crate) const MESSAGE_HEAD: &str = "{\"message\": \"";

/// Bytes Python's `json.dumps` writes as they are inside a string: printable ASCII except the
/// quote and the backslash (DEL included in what it escapes).
fn is_plain_ascii(b: u8) -> bool {
    (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\'
}

/// Appends `text` as the inside of a JSON string, escaped exactly as Python's `json.dumps`
/// (ensure_ascii) does: short escapes for `"`, `\`, `\b`, `\f`, `\n`, `\r`, `\t`; `\u00XX` for other
/// controls and DEL; everything outside ASCII as `\uXXXX`, astral planes as surrogate pairs.
pub(crate) fn escape_str_into(out: &mut Vec<u8>, text: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = text.as_bytes();
    let unit = |out: &mut Vec<u8>, u: u16| {
        out.extend_from_slice(b"\\u");
        for shift in [12, 8, 4, 0] {
            out.push(HEX[usize::from((u >> shift) & 0xf)]);
        }
    };
    let (mut start, mut i) = (0, 0);
    while i < bytes.len() {
        let b = bytes[i];
        if is_plain_ascii(b) {
            i += 1;
            continue;
        }
        out.extend_from_slice(&bytes[start..i]);
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0..0x80 => unit(out, u16::from(b)),
            _ => {
                let c = text[i..].chars().next().expect("i is at a char boundary");
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    unit(out, *u);
                }
                i += c.len_utf8();
                start = i;
                continue;
            }
        }
        i += 1;
        start = i;
    }
    out.extend_from_slice(&bytes[start..]);
}

/// Decodes what [`escape_str_into`] wrote, as far as `input` holds whole escapes (a pair of
/// surrogates is one): returns how many bytes of `input` it used, or None for text that
/// `escape_str_into` does not write.
pub(crate) fn unescape_into(out: &mut Vec<u8>, input: &[u8]) -> Option<usize> {
    // Four hex digits exactly (from_str_radix alone would take a sign).
    let hex4 = |at: usize| -> Option<u32> {
        let digits = input.get(at..at + 4)?;
        if !digits.iter().all(u8::is_ascii_hexdigit) {
            return None;
        }
        u32::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()
    };
    let mut i = 0;
    while i < input.len() {
        if input[i] != b'\\' {
            let run = input[i..]
                .iter()
                .position(|&b| b == b'\\')
                .map_or(input.len(), |p| i + p);
            out.extend_from_slice(&input[i..run]);
            i = run;
            continue;
        }
        let Some(&kind) = input.get(i + 1) else {
            break;
        };
        let short = match kind {
            b'"' => b'"',
            b'\\' => b'\\',
            b'b' => 0x08,
            b'f' => 0x0c,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'u' => 0,
            _ => return None,
        };
        if kind != b'u' {
            out.push(short);
            i += 2;
            continue;
        }
        if i + 6 > input.len() {
            break;
        }
        let unit = hex4(i + 2)?;
        let (c, used) = if (0xd800..0xdc00).contains(&unit) {
            if i + 12 > input.len() {
                break;
            }
            if &input[i + 6..i + 8] != b"\\u" {
                return None;
            }
            let low = hex4(i + 8)?;
            if !(0xdc00..0xe000).contains(&low) {
                return None;
            }
            (0x10000 + ((unit - 0xd800) << 10) + (low - 0xdc00), 12)
        } else {
            (unit, 6)
        };
        let c = char::from_u32(c)?;
        out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
        i += used;
    }
    Some(i)
}

/// Encodes any value as Python's `json.dumps(value)` would.
pub fn to_python_json<T: Serialize + ?Sized>(value: &T) -> String {
    let mut out = Vec::with_capacity(256);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, PythonFormatter);
    value
        .serialize(&mut ser)
        .expect("serialising to memory cannot fail");
    String::from_utf8(out).expect("the formatter writes ASCII")
}

/// The record as ddmq and 0.9.10 lay it out, written and read without serde's generic
/// machinery (a publish and a consume each handle one; through serde they cost a Value per
/// field and a buffer per flattened key). Writing gives exactly what serialising [`Message`]
/// with [`PythonFormatter`] gives; reading takes only that layout, with nothing the lenient
/// reader would decode otherwise (and returns None for everything else, which it reads).
mod fast {
    use super::{Message, PythonFormatter, Requeue, escape_str_into, unescape_into};
    use serde::Serialize;
    use serde_json::Value;

    fn value(out: &mut Vec<u8>, v: &impl Serialize) {
        let mut ser = serde_json::Serializer::with_formatter(&mut *out, PythonFormatter);
        v.serialize(&mut ser)
            .expect("serialising to memory cannot fail");
    }

    fn string(out: &mut Vec<u8>, s: &str) {
        out.push(b'"');
        escape_str_into(out, s);
        out.push(b'"');
    }

    fn number(out: &mut Vec<u8>, mut n: u64) {
        let mut digits = [0u8; 20];
        let mut at = digits.len();
        loop {
            at -= 1;
            digits[at] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        out.extend_from_slice(&digits[at..]);
    }

    fn optional(out: &mut Vec<u8>, n: Option<u64>) {
        match n {
            Some(n) => number(out, n),
            None => out.extend_from_slice(b"null"),
        }
    }

    /// Appends `m` as Python's `json.dumps` writes it.
    pub(super) fn write(out: &mut Vec<u8>, m: &Message) {
        out.extend_from_slice(b"{\"message\": ");
        match &m.message {
            Value::String(body) => string(out, body),
            other => value(out, other),
        }
        out.extend_from_slice(b", \"queue\": ");
        string(out, &m.queue);
        out.extend_from_slice(b", \"timeout\": ");
        optional(out, m.timeout);
        out.extend_from_slice(b", \"id\": ");
        string(out, &m.id);
        out.extend_from_slice(b", \"priority\": ");
        number(out, m.priority);
        out.extend_from_slice(b", \"queue_number\": ");
        number(out, m.queue_number);
        out.extend_from_slice(b", \"filename\": ");
        string(out, &m.filename);
        out.extend_from_slice(b", \"requeue\": ");
        match m.requeue {
            Requeue::Drop => out.extend_from_slice(b"false"),
            Requeue::QueuePriority => out.extend_from_slice(b"true"),
            Requeue::Priority(p) => number(out, p),
        }
        out.extend_from_slice(b", \"requeue_counter\": ");
        number(out, m.requeue_counter);
        out.extend_from_slice(b", \"requeue_limit\": ");
        optional(out, m.requeue_limit);
        for (key, v) in &m.extra {
            out.extend_from_slice(b", ");
            string(out, key);
            out.extend_from_slice(b": ");
            value(out, v);
        }
        out.push(b'}');
    }

    /// A reader of the one layout [`write`] gives.
    struct Cursor<'a> {
        bytes: &'a [u8],
        at: usize,
    }

    impl<'a> Cursor<'a> {
        fn expect(&mut self, text: &[u8]) -> Option<()> {
            let end = self.at + text.len();
            (self.bytes.get(self.at..end)? == text).then(|| self.at = end)
        }

        /// A string's inside, up to its closing quote (passed over); escapes left as written.
        fn raw_string(&mut self) -> Option<&'a [u8]> {
            let start = self.at;
            let mut i = start;
            loop {
                match *self.bytes.get(i)? {
                    b'"' => break,
                    b'\\' => i += 2,
                    // Raw controls are not JSON: the lenient reader gives the error.
                    0..0x20 => return None,
                    _ => i += 1,
                }
            }
            self.at = i + 1;
            Some(&self.bytes[start..i])
        }

        fn string(&mut self) -> Option<String> {
            self.expect(b"\"")?;
            let raw = self.raw_string()?;
            if !raw.contains(&b'\\') {
                return String::from_utf8(raw.to_vec()).ok();
            }
            let mut text = Vec::with_capacity(raw.len());
            if unescape_into(&mut text, raw)? != raw.len() {
                return None;
            }
            String::from_utf8(text).ok()
        }

        /// An integer as JSON writes one (no sign, fraction, exponent or leading zero) that
        /// fits in a u64.
        fn number(&mut self) -> Option<u64> {
            let digits = self.bytes[self.at..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count();
            let text = &self.bytes[self.at..self.at + digits];
            if digits == 0 || (digits > 1 && text[0] == b'0') {
                return None;
            }
            if matches!(self.bytes.get(self.at + digits), Some(b'.' | b'e' | b'E')) {
                return None;
            }
            let mut n: u64 = 0;
            for d in text {
                n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
            }
            self.at += digits;
            Some(n)
        }

        fn optional(&mut self) -> Option<Option<u64>> {
            if self.expect(b"null").is_some() {
                return Some(None);
            }
            self.number().map(Some)
        }
    }

    /// The record in `bytes` if it is laid out as [`write`] lays out one with a string body
    /// and no extra keys.
    pub(super) fn parse(bytes: &[u8]) -> Option<Message> {
        let mut c = Cursor { bytes, at: 0 };
        c.expect(b"{\"message\": ")?;
        let message = Value::String(c.string()?);
        c.expect(b", \"queue\": ")?;
        let queue = c.string()?;
        c.expect(b", \"timeout\": ")?;
        let timeout = c.optional()?;
        c.expect(b", \"id\": ")?;
        let id = c.string()?;
        c.expect(b", \"priority\": ")?;
        let priority = c.number()?;
        c.expect(b", \"queue_number\": ")?;
        let queue_number = c.number()?;
        c.expect(b", \"filename\": ")?;
        let filename = c.string()?;
        c.expect(b", \"requeue\": ")?;
        let requeue = if c.expect(b"false").is_some() {
            Requeue::Drop
        } else if c.expect(b"true").is_some() {
            Requeue::QueuePriority
        } else {
            // The lenient reader goes through a float: only what a float holds exactly.
            match c.number()? {
                0 => Requeue::Drop,
                p if p <= 1 << 53 => Requeue::Priority(p),
                _ => return None,
            }
        };
        c.expect(b", \"requeue_counter\": ")?;
        let requeue_counter = c.number()?;
        c.expect(b", \"requeue_limit\": ")?;
        let requeue_limit = c.optional()?;
        c.expect(b"}")?;
        if c.at != bytes.len() {
            return None;
        }
        Some(Message {
            message,
            queue,
            timeout,
            id,
            priority,
            queue_number,
            filename,
            requeue,
            requeue_counter,
            requeue_limit,
            extra: Default::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_python_written_file_and_writes_it_back_identically() {
        let py = r#"{"message": "hello", "queue": "q", "timeout": null, "id": "c1c05212dc524a309be1016431c4fb4c", "priority": 999, "queue_number": 1, "filename": "999.1.ddmqc1c05212dc524a309be1016431c4fb4c", "requeue": false, "requeue_counter": 0, "requeue_limit": null}"#;
        let m = Message::from_json(py.as_bytes()).unwrap();
        assert_eq!(m.to_json(), py);
    }

    #[test]
    fn any_key_order_extra_keys_int_requeue_and_unicode() {
        let py = r#"{"requeue": 7, "extra_key": [1, 2], "message": "h\u00e9 \ud83d\ude00", "id": "ab", "priority": 5.0}"#;
        let m = Message::from_json(py.as_bytes()).unwrap();
        assert_eq!(m.requeue, Requeue::Priority(7));
        assert_eq!(m.priority, 5);
        assert_eq!(m.message, Value::String("hé 😀".into()));
        assert_eq!(m.extra["extra_key"], serde_json::json!([1, 2]));
        let back = m.to_json();
        assert!(
            back.contains(r#""message": "h\u00e9 \ud83d\ude00""#),
            "{back}"
        );
        assert!(back.ends_with(r#""extra_key": [1, 2]}"#), "{back}");
    }

    /// What Python 3's `json.dumps` printed for this string (DEL escaped, astral as a pair).
    #[test]
    fn strings_are_escaped_as_python_escapes_them() {
        let text = "a\u{7f}b\u{0}\u{1f}\"\\\u{8}\u{c}\n\r\t/\u{e9}\u{2028}\u{1f600}";
        let python = r#""a\u007fb\u0000\u001f\"\\\b\f\n\r\t/\u00e9\u2028\ud83d\ude00""#;
        assert_eq!(to_python_json(text), python);
        let mut escaped = Vec::new();
        escape_str_into(&mut escaped, text);
        assert_eq!(escaped, python.as_bytes()[1..python.len() - 1]);
        let mut back = Vec::new();
        assert_eq!(unescape_into(&mut back, &escaped), Some(escaped.len()));
        assert_eq!(back, text.as_bytes());
        // An escape cut by the end is left for the next piece.
        let mut back = Vec::new();
        assert_eq!(unescape_into(&mut back, br"ab\ud83d\ude0"), Some(2));
        assert_eq!(unescape_into(&mut back, br"\"), Some(0));
        assert_eq!(unescape_into(&mut back, br"\q"), None);
    }

    /// The direct writer and reader agree with serde's: the same bytes out, the same record
    /// (or the same error) in, whatever the record holds.
    mod direct_as_serde {
        use super::*;
        use proptest::prelude::*;

        fn text() -> impl Strategy<Value = String> {
            prop_oneof![
                "[ -~]{0,12}",
                any::<String>(),
                Just("a\u{7f}\"\\\n\u{0}\u{e9}\u{1f600}".to_string()),
            ]
        }

        fn body() -> impl Strategy<Value = Value> {
            prop_oneof![
                6 => text().prop_map(Value::String),
                1 => Just(Value::Null),
                1 => any::<i64>().prop_map(Value::from),
                1 => proptest::collection::vec(text().prop_map(Value::String), 0..3)
                    .prop_map(Value::Array),
            ]
        }

        fn number() -> impl Strategy<Value = u64> {
            prop_oneof![0..1000u64, any::<u64>()]
        }

        const FIELDS: [&str; 10] = [
            "message",
            "queue",
            "timeout",
            "id",
            "priority",
            "queue_number",
            "filename",
            "requeue",
            "requeue_counter",
            "requeue_limit",
        ];

        prop_compose! {
            fn message()(
                message in body(),
                queue in text(),
                timeout in proptest::option::of(number()),
                id in text(),
                priority in number(),
                queue_number in number(),
                filename in text(),
                requeue in prop_oneof![
                    Just(Requeue::Drop),
                    Just(Requeue::QueuePriority),
                    (1..1u64 << 53).prop_map(Requeue::Priority),
                ],
                requeue_counter in number(),
                requeue_limit in proptest::option::of(number()),
                extra in proptest::collection::btree_map("[a-z_]{1,6}", body(), 0..2),
            ) -> Message {
                let extra = extra
                    .into_iter()
                    .filter(|(k, _)| !FIELDS.contains(&k.as_str()))
                    .collect();
                Message {
                    message,
                    queue,
                    timeout,
                    id,
                    priority,
                    queue_number,
                    filename,
                    requeue,
                    requeue_counter,
                    requeue_limit,
                    extra,
                }
            }
        }

        proptest! {
            #[test]
            fn written_as_serde_writes_and_read_back_as_serde_reads(m in message()) {
                let json = m.to_json();
                prop_assert_eq!(&json, &to_python_json(&m));
                let direct = Message::from_json(json.as_bytes()).unwrap();
                let lenient: Message = serde_json::from_slice(json.as_bytes()).unwrap();
                prop_assert_eq!(&direct, &lenient);
            }

            /// A record changed by a byte reads as serde reads it, or fails as it does.
            #[test]
            fn a_changed_record_reads_as_serde_reads_it(
                m in message(),
                at in any::<prop::sample::Index>(),
                byte in prop_oneof![
                    Just(b'\\'), Just(b'"'), Just(b'0'), Just(b'9'), Just(b'.'), Just(b'-'),
                    Just(b' '), Just(b'u'), Just(b'+'), Just(0u8), Just(0x7f), Just(0xc3),
                    any::<u8>(),
                ],
                insert in any::<bool>(),
            ) {
                let mut bytes = m.to_json().into_bytes();
                let i = at.index(bytes.len());
                if insert {
                    bytes.insert(i, byte)
                } else {
                    bytes[i] = byte
                }
                let direct = Message::from_json(&bytes).ok();
                let lenient = serde_json::from_slice::<Message>(&bytes).ok();
                prop_assert_eq!(direct, lenient);
            }
        }

        #[test]
        fn numbers_and_escapes_at_their_edges() {
            let base = r#"{"message": "M", "queue": "q", "timeout": T, "id": "ab", "priority": 1, "queue_number": 2, "filename": "f", "requeue": R, "requeue_counter": 0, "requeue_limit": null}"#;
            let record =
                |m: &str, t: &str, r: &str| base.replace('M', m).replace('T', t).replace('R', r);
            for (m, t, r) in [
                ("x", "null", "false"),
                (r#"\u00e9\ud83d\ude00\"\\\/\n"#, "0", "true"),
                (r"\u00E9", "18446744073709551615", "9007199254740993"),
                (r"\u+0e9", "18446744073709551616", "7"),
                (r"\ud83d", "01", "0"),
                ("\u{e9}\u{7f}", "1.0", "1e3"),
                ("a\tb", "-1", "null"),
            ] {
                let json = record(m, t, r);
                let direct = Message::from_json(json.as_bytes()).ok();
                let lenient = serde_json::from_slice::<Message>(json.as_bytes()).ok();
                assert_eq!(direct, lenient, "{json}");
            }
            let own = record(r"a\u00e9", "5", "3");
            assert!(fast::parse(own.as_bytes()).is_some(), "read directly");
            assert!(fast::parse(format!("{own}\n").as_bytes()).is_none());
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bad in [
            "",
            "{",
            "[]",
            "{\"requeue\": \"x\"}",
            "{\"priority\": -1}",
            "\u{0}",
        ] {
            assert!(Message::from_json(bad.as_bytes()).is_err(), "{bad:?}");
        }
    }
}
