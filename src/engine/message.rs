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
    /// Decodes a message file's bytes.
    pub fn from_json(bytes: &[u8]) -> Result<Message, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// Encodes as Python's `json.dumps` would.
    pub fn to_json(&self) -> String {
        to_python_json(self)
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
    let hex4 = |at: usize| -> Option<u32> {
        let digits = std::str::from_utf8(input.get(at..at + 4)?).ok()?;
        u32::from_str_radix(digits, 16).ok()
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
