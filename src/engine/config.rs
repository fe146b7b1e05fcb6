//! `ddmq.yaml`: the one module that reads and writes the settings files.
//!
//! serde_yaml is deprecated upstream; keeping every YAML call here means a maintained fork
//! replaces it in one place. Files are written the way PyYAML writes them (block style, sorted
//! keys) so the original can read them, and always through a unique temporary name and a rename
//! (0.9.10 shared one temporary name between writers, R4), so a reader sees the old file or the new one, never a torn one.

use super::error::{Error, Result, io_err};
use serde_yaml::{Mapping, Value};
use std::path::Path;
use std::time::Duration;

pub use super::names::CONFIG_FILE;
/// Settings files larger than this are refused before parsing (hostile input).
const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// Deepest nesting of `[` and `{` accepted in a settings file (hostile input).
const MAX_FLOW_DEPTH: usize = 64;

/// Effective settings of a queue: defaults, then ROOT/ddmq.yaml, then QUEUE/ddmq.yaml.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Epoch seconds of the last housekeeping run of the queue (throttles `clean` to once a minute).
    pub cleaned: u64,
    /// Seconds a consumed message may stay in `work/` before it expires.
    pub message_timeout: u64,
    /// Priority of messages published without one (0 is the most urgent).
    pub priority: u64,
    /// Whether messages published without `-r` are requeued on nack and expiry (0.9.10 ignored this key, B14).
    pub requeue: bool,
    /// Priority of requeued messages whose `requeue` field is `true` (0 is honoured; 0.9.10 turned it into the default, B4).
    pub requeue_prio: u64,
    /// Addition: at the requeue limit, move the message to `QUEUE/dead/` instead of deleting it.
    pub dead_letter: bool,
    /// Addition: fsync each message file and its directory on publish and requeue.
    pub durable: bool,
    /// Addition: largest message body accepted by publish, in bytes.
    pub max_message_bytes: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            cleaned: 0,
            message_timeout: 600,
            priority: 999,
            requeue: true,
            requeue_prio: 0,
            dead_letter: false,
            durable: false,
            max_message_bytes: 16 << 20,
        }
    }
}

impl Settings {
    /// Every setting as a mapping of its YAML key to its value.
    pub fn to_mapping(&self) -> Mapping {
        let u = |n: u64| Value::Number(n.into());
        [
            ("cleaned", u(self.cleaned)),
            ("message_timeout", u(self.message_timeout)),
            ("priority", u(self.priority)),
            ("requeue", Value::Bool(self.requeue)),
            ("requeue_prio", u(self.requeue_prio)),
            ("dead_letter", Value::Bool(self.dead_letter)),
            ("durable", Value::Bool(self.durable)),
            ("max_message_bytes", u(self.max_message_bytes)),
        ]
        .into_iter()
        .map(|(k, v)| (Value::String(k.to_string()), v))
        .collect()
    }

    /// `ddmq.yaml.example`, written when a root is initialised: every key with its default, in
    /// PyYAML's style. The original writes this file with its five keys and never reads it, so
    /// the keys ddmq added (dead_letter, durable, max_message_bytes) can be listed too.
    pub fn example_yaml() -> String {
        render(&Settings::default().to_mapping())
    }

    /// Applies the layers in order (later wins) over the defaults, checking each known key's type.
    pub fn resolve(layers: &[(&Path, &Mapping)]) -> Result<Settings> {
        let mut s = Settings::default();
        for (path, map) in layers {
            for (key, value) in map.iter() {
                let Some(key) = key.as_str() else { continue };
                let bad = |what: &str| Error::Config {
                    path: path.to_path_buf(),
                    reason: format!("{key}: expected {what}, got {}", describe(value)),
                };
                match key {
                    "cleaned" => {
                        s.cleaned = as_uint(value).ok_or_else(|| bad("a non-negative integer"))?
                    }
                    "message_timeout" => {
                        s.message_timeout =
                            as_uint(value).ok_or_else(|| bad("a non-negative integer"))?
                    }
                    "priority" => {
                        s.priority = as_uint(value).ok_or_else(|| bad("a non-negative integer"))?
                    }
                    "requeue_prio" => {
                        s.requeue_prio =
                            as_uint(value).ok_or_else(|| bad("a non-negative integer"))?
                    }
                    "max_message_bytes" => {
                        s.max_message_bytes =
                            as_uint(value).ok_or_else(|| bad("a non-negative integer"))?
                    }
                    "requeue" => s.requeue = as_bool(value).ok_or_else(|| bad("true or false"))?,
                    "dead_letter" => {
                        s.dead_letter = as_bool(value).ok_or_else(|| bad("true or false"))?
                    }
                    "durable" => s.durable = as_bool(value).ok_or_else(|| bad("true or false"))?,
                    _ => {} // unknown keys are kept in the file and ignored
                }
            }
        }
        Ok(s)
    }
}

fn describe(v: &Value) -> String {
    let s = serde_yaml::to_string(v).unwrap_or_default();
    let s = s.trim();
    if s.len() > 40 {
        format!(
            "{}…",
            &s[..s.char_indices().nth(40).map(|(i, _)| i).unwrap_or(s.len())]
        )
    } else {
        s.to_string()
    }
}

fn as_uint(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| *f >= 0.0 && f.is_finite() && *f < 1.8e19)
                .map(|f| f as u64)
        }),
        Value::Null => Some(0),
        _ => None,
    }
}

fn as_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => n.as_i64().map(|i| i != 0),
        Value::Null => Some(false),
        _ => None,
    }
}

/// Parses settings text: empty or `null` is `{}`; anything but a mapping is an error naming `path`.
pub fn parse_mapping(path: &Path, text: &[u8]) -> Result<Mapping> {
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(Error::Config {
            path: path.into(),
            reason: format!("larger than {MAX_CONFIG_BYTES} bytes"),
        });
    }
    let text = std::str::from_utf8(text).map_err(|_| Error::Config {
        path: path.into(),
        reason: "not UTF-8".into(),
    })?;
    let depth = flow_nesting_depth(text);
    if depth > MAX_FLOW_DEPTH {
        // The YAML parser takes time quadratic in this depth (minutes for 100k brackets) before
        // its own recursion limit applies; settings are flat, so refuse at once.
        return Err(Error::Config {
            path: path.into(),
            reason: format!("nested {depth} levels deep (at most {MAX_FLOW_DEPTH})"),
        });
    }
    if text.trim().is_empty() {
        return Ok(Mapping::new());
    }
    let value: Value = serde_yaml::from_str(text).map_err(|e| Error::Config {
        path: path.into(),
        reason: format!("not valid YAML: {e}"),
    })?;
    match value {
        Value::Null => Ok(Mapping::new()),
        Value::Mapping(m) => Ok(m),
        other => Err(Error::Config {
            path: path.into(),
            reason: format!("expected a mapping of settings, got {}", describe(&other)),
        }),
    }
}

/// The deepest nesting of `[`/`{`, counting every bracket, quoted or not: exact enough to
/// refuse a bomb, and no quoting trick can hide nesting from it. (Settings are flat; a value
/// holding 64 unbalanced brackets is refused too, with this error.)
fn flow_nesting_depth(text: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    for b in text.bytes() {
        match b {
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// Reads a settings file once; a missing file is `None`.
pub fn read_mapping(path: &Path) -> Result<Option<Mapping>> {
    read_bytes(path).and_then(|bytes| bytes.map(|b| parse_mapping(path, &b)).transpose())
}

fn read_bytes(path: &Path) -> Result<Option<Vec<u8>>> {
    // ESTALE: another host replaced the file (every rewrite is a rename); look it up again. EIO
    // and the like from a network filesystem: try again a few times.
    match super::files::retry_transient(|| std::fs::read(path)) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("read settings", path, e)),
    }
}

/// How many more times a settings file that fails to parse is read before the failure counts.
const TORN_READ_RETRIES: u32 = 10;
/// Pause between those reads: long enough for another host's rename to become visible.
const TORN_READ_PAUSE: Duration = Duration::from_millis(10);

/// Reads a settings file that another host may be replacing right now. Over a network
/// filesystem (sshfs, NFS with attribute caching) a file replaced by rename can read torn: the
/// new size over the old cached pages, or empty. Our own writers never leave a file torn, so a
/// parse failure is read again a few times before it is reported; a broken file still fails,
/// about 0.1 s later.
pub fn read_mapping_settled(path: &Path) -> Result<Option<Mapping>> {
    let mut attempt = 0;
    loop {
        match read_mapping(path) {
            Err(e @ Error::Config { .. }) if attempt < TORN_READ_RETRIES => {
                log::debug!("{e}; reading it again (another client may be replacing it)");
                attempt += 1;
                std::thread::sleep(TORN_READ_PAUSE);
            }
            other => return other,
        }
    }
}

/// Reads a settings file for a read-modify-write: it must parse and read the same twice in a
/// row, so that a torn read (which may parse, but lack keys) is never written back as the whole
/// file. A file that is not stable after the retries is an error naming it.
fn read_mapping_stable(path: &Path) -> Result<Option<Mapping>> {
    let mut attempt = 0;
    loop {
        let first = read_bytes(path)?;
        let second = read_bytes(path)?;
        let parsed = match (&first, &second) {
            (Some(a), Some(b)) if a == b => parse_mapping(path, a).map(Some),
            (None, None) => Ok(None),
            _ => Err(Error::Config {
                path: path.into(),
                reason: "changed while being read".into(),
            }),
        };
        match parsed {
            Err(e @ Error::Config { .. }) if attempt < TORN_READ_RETRIES => {
                log::debug!("{e}; reading it again (another client may be replacing it)");
                attempt += 1;
                std::thread::sleep(TORN_READ_PAUSE);
            }
            other => return other,
        }
    }
}

/// The keys ddmq reads from a settings file (others are kept in the file and ignored).
pub const KNOWN_KEYS: [&str; 8] = [
    "cleaned",
    "dead_letter",
    "durable",
    "max_message_bytes",
    "message_timeout",
    "priority",
    "requeue",
    "requeue_prio",
];

/// The keys of `map` that ddmq does not know.
pub fn unknown_keys(map: &Mapping) -> Vec<String> {
    map.keys()
        .map(|k| {
            k.as_str()
                .map(str::to_string)
                .unwrap_or_else(|| format!("{k:?}"))
        })
        .filter(|k| !KNOWN_KEYS.contains(&k.as_str()))
        .collect()
}

/// Checks that `text` is a settings file we would accept for a queue; returns the mapping.
pub fn validate(path: &Path, text: &[u8]) -> Result<Mapping> {
    let map = parse_mapping(path, text)?;
    Settings::resolve(&[(path, &map)])?;
    Ok(map)
}

/// Renders a mapping the way PyYAML's `yaml.dump(d, default_flow_style=False)` does: sorted keys, block style.
pub fn render(map: &Mapping) -> String {
    let mut entries: Vec<(&Value, &Value)> = map.iter().collect();
    entries.sort_by_key(|(k, _)| k.as_str().map(str::to_string).unwrap_or_default());
    let sorted: Mapping = entries
        .into_iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if sorted.is_empty() {
        return "{}\n".to_string();
    }
    serde_yaml::to_string(&sorted).expect("a mapping of plain values always renders")
}

/// Renders any value as one YAML document, block style with the keys in the value's own order
/// (what PyYAML >= 5.1's `yaml.dump` prints for sorted input). Used by the CLI's `--format yaml`.
pub fn to_yaml_document<T: serde::Serialize + ?Sized>(value: &T) -> Result<String> {
    serde_yaml::to_string(value).map_err(|e| Error::Invalid(format!("cannot render as YAML: {e}")))
}

/// Replaces a settings file atomically with `map`, through a unique temporary name that the
/// original does not mistake for a message (no `.ddmq` in it), keeping the old file's mode,
/// group and (where permitted) owner.
pub fn write_mapping(path: &Path, map: &Mapping) -> Result<()> {
    super::files::replace_atomically(path, render(map).as_bytes())
}

/// Sets one key of a settings file (read, update, atomic replace).
pub fn set_key(path: &Path, key: &str, value: serde_json::Value) -> Result<()> {
    let changes = serde_json::Map::from_iter([(key.to_string(), value)]);
    let mut map = read_mapping_stable(path)?.unwrap_or_default();
    merge(path, &mut map, changes)?;
    write_mapping(path, &map)
}

/// Sets keys of a settings file: the file as it reads now (stably, see
/// `read_mapping_stable`) with `changes` over it, checked as a whole as [`validate`] does,
/// then replaced atomically. A refused change writes nothing.
pub fn update_file(path: &Path, changes: serde_json::Map<String, serde_json::Value>) -> Result<()> {
    let mut map = read_mapping_stable(path)?.unwrap_or_default();
    merge(path, &mut map, changes)?;
    validate(path, render(&map).as_bytes())?;
    write_mapping(path, &map)
}

fn merge(
    path: &Path,
    map: &mut Mapping,
    changes: serde_json::Map<String, serde_json::Value>,
) -> Result<()> {
    for (key, value) in changes {
        let value = serde_yaml::to_value(value).map_err(|e| Error::Config {
            path: path.to_path_buf(),
            reason: format!("{key}: {e}"),
        })?;
        map.insert(Value::String(key), value);
    }
    Ok(())
}

/// The keys written in a settings file, as JSON: a key that is not a string is written as its
/// YAML text, as is a value JSON cannot hold (a tagged value). A missing file is empty.
pub fn read_file_as_json(path: &Path) -> Result<serde_json::Map<String, serde_json::Value>> {
    let map = read_mapping(path)?.unwrap_or_default();
    let text_of = |v: &Value| match v.as_str() {
        Some(s) => s.to_string(),
        None => serde_yaml::to_string(v)
            .unwrap_or_default()
            .trim()
            .to_string(),
    };
    Ok(map
        .iter()
        .map(|(k, v)| {
            let value =
                serde_json::to_value(v).unwrap_or_else(|_| serde_json::Value::String(text_of(v)));
            (text_of(k), value)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_override_in_order_and_zero_is_kept() {
        let p = Path::new("x/ddmq.yaml");
        let root = parse_mapping(p, b"priority: 5\nrequeue_prio: 3\n").unwrap();
        let queue = parse_mapping(p, b"requeue_prio: 0\ncleaned: 12\n").unwrap();
        let s = Settings::resolve(&[(p, &root), (p, &queue)]).unwrap();
        assert_eq!(
            (s.priority, s.requeue_prio, s.cleaned, s.message_timeout),
            (5, 0, 12, 600)
        );
    }

    #[test]
    fn empty_is_empty_and_broken_names_the_file() {
        let p = Path::new("/r/q/ddmq.yaml");
        assert!(parse_mapping(p, b"").unwrap().is_empty());
        assert!(parse_mapping(p, b"~\n").unwrap().is_empty());
        let e = parse_mapping(p, b"a: [1\n").unwrap_err().to_string();
        assert!(e.contains("/r/q/ddmq.yaml"), "{e}");
        let e = validate(p, b"message_timeout: soon\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("message_timeout"), "{e}");
        assert!(parse_mapping(p, b"- 1\n").is_err());
    }

    #[test]
    fn renders_sorted_block_style() {
        let p = Path::new("x");
        let m = parse_mapping(p, b"requeue: true\ncleaned: 3\npriority: 9\n").unwrap();
        assert_eq!(render(&m), "cleaned: 3\npriority: 9\nrequeue: true\n");
    }

    #[test]
    fn deep_flow_nesting_is_refused_before_parsing() {
        let deep = format!("a: {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
        let e = parse_mapping(Path::new("deep"), deep.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(e.contains("nested 100000 levels deep"), "{e}");
        // No quoting hides it; shallow flow collections are fine.
        let quoted = format!("a: [x, \"#\", {}]\n", "[".repeat(100));
        assert!(
            parse_mapping(Path::new("q"), quoted.as_bytes())
                .unwrap_err()
                .to_string()
                .contains("levels deep")
        );
        let ok = "a: '[[['\nc: [1, {d: [2]}]\n";
        assert_eq!(
            parse_mapping(Path::new("ok"), ok.as_bytes()).unwrap().len(),
            2
        );
    }

    #[test]
    fn yaml_document_is_block_style_and_reads_back() {
        let v = serde_json::json!({"a": [5, 0], "b": null, "m": "hello: world"});
        let text = to_yaml_document(&v).unwrap();
        assert_eq!(text, "a:\n- 5\n- 0\nb: null\nm: 'hello: world'\n");
        let back: serde_json::Value = serde_yaml::from_str(&text).unwrap();
        assert_eq!(back, v);
    }

    #[test]
    fn update_file_merges_checks_and_keeps_other_keys() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(CONFIG_FILE);
        std::fs::write(&p, "legacy: [1, 2]\npriority: 4\n").unwrap();
        let changes = |v: serde_json::Value| v.as_object().unwrap().clone();
        update_file(
            &p,
            changes(serde_json::json!({"priority": 7, "durable": true})),
        )
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "durable: true\nlegacy:\n- 1\n- 2\npriority: 7\n"
        );
        // A value of the wrong type is refused as a whole, naming the key; nothing is written.
        let e = update_file(
            &p,
            changes(serde_json::json!({"priority": "high", "requeue": false})),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("priority") && e.contains(&p.display().to_string()),
            "{e}"
        );
        let back = read_file_as_json(&p).unwrap();
        assert_eq!(
            serde_json::Value::Object(back),
            serde_json::json!({"durable": true, "legacy": [1, 2], "priority": 7})
        );
        set_key(&p, "cleaned", 12.into()).unwrap();
        assert_eq!(read_file_as_json(&p).unwrap()["cleaned"], 12);
        assert!(
            read_file_as_json(&dir.path().join("none"))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn billion_laughs_is_refused_naming_the_file() {
        let bomb = b"a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\ng: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\nh: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]\ni: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]\n";
        // 9^9 "lol"s once expanded: the YAML parser's alias expansion limit refuses it before
        // it takes the memory, and the error names the file like any broken settings file.
        match parse_mapping(Path::new("/r/q/ddmq.yaml"), bomb) {
            Err(Error::Config { path, reason }) => {
                assert_eq!(path, Path::new("/r/q/ddmq.yaml"));
                assert!(reason.contains("not valid YAML"), "{reason}");
            }
            other => panic!(
                "a billion laughs was not refused: {:?}",
                other.map(|m| m.len())
            ),
        }
    }
}
