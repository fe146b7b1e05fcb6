//! What the CLI prints: messages as Python-style `key = value` lines, JSON (`json.dumps` style)
//! or YAML, and the `view` listing as a beautifultable-like table, plain rows, JSON or YAML.
//! Pure functions from data to text, so the commands only decide what to print.

use crate::engine::config;
use crate::engine::message::{Message, to_python_json};
use serde_json::{Map, Value};

/// Python's `str()` of a JSON value: strings bare, `None`/`True`/`False`, containers as repr.
pub fn py_str(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => py_repr(other),
    }
}

/// Python's `repr()` of a JSON value (as the value would look once loaded by `json.loads`).
pub fn py_repr(value: &Value) -> String {
    match value {
        Value::Null => "None".to_string(),
        Value::Bool(true) => "True".to_string(),
        Value::Bool(false) => "False".to_string(),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => i.to_string(),
            (_, Some(u), _) => u.to_string(),
            (_, _, Some(f)) if f.is_finite() && f == f.trunc() && f.abs() < 1e16 => {
                format!("{f:.1}")
            }
            (_, _, Some(f)) => f.to_string(),
            _ => n.to_string(),
        },
        Value::String(s) => py_repr_str(s),
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(py_repr).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(map) => format!(
            "{{{}}}",
            map.iter()
                .map(|(k, v)| format!("{}: {}", py_repr_str(k), py_repr(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Python 3's `repr(str)`: single quotes unless the text holds one and no double quote.
fn py_repr_str(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// The message's fields as a JSON object with sorted keys (serde_json's map is ordered by key).
fn fields(msg: &Message) -> Map<String, Value> {
    match serde_json::to_value(msg) {
        Ok(Value::Object(map)) => map,
        _ => unreachable!("a Message always serialises to a JSON object"),
    }
}

/// `repr(message)` of the original: `key = value` lines sorted by key, Python `str()` values,
/// each line ending in a newline.
pub fn message_plain(msg: &Message) -> String {
    let mut out = String::new();
    for (key, value) in fields(msg) {
        out.push_str(&key);
        out.push_str(" = ");
        out.push_str(&py_str(&value));
        out.push('\n');
    }
    out
}

/// One message as one line of Python-style JSON (fields in the order the files use).
pub fn message_json_line(msg: &Message) -> String {
    let mut line = to_python_json(msg);
    line.push('\n');
    line
}

/// One message as one YAML document (keys sorted, block style, as PyYAML's `yaml.dump`).
pub fn message_yaml(msg: &Message) -> crate::engine::Result<String> {
    config::to_yaml_document(&Value::Object(fields(msg)))
}

/// Several YAML documents as one valid YAML stream: `---` between documents.
pub fn yaml_stream(documents: &[String]) -> String {
    documents.join("---\n")
}

/// One row of `view`: a queue and, unless only names were asked for, its counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ViewRow {
    pub queue: String,
    /// (waiting, in flight)
    pub counts: Option<(usize, usize)>,
}

const HEADERS: [&str; 3] = ["queue", "msg in queue", "msg at work"];

fn row_cells(row: &ViewRow) -> Vec<String> {
    match row.counts {
        Some((waiting, work)) => vec![row.queue.clone(), waiting.to_string(), work.to_string()],
        None => vec![row.queue.clone()],
    }
}

/// The default `view` output: a table drawn as beautifultable draws it (cells centred, a rule
/// under every row). With no queues one empty row is drawn, so the header still shows.
pub fn view_table(rows: &[ViewRow], names_only: bool) -> String {
    let columns = if names_only { 1 } else { 3 };
    let mut cells: Vec<Vec<String>> = rows.iter().map(row_cells).collect();
    if cells.is_empty() {
        cells.push(vec![String::new(); columns]);
    }
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            cells
                .iter()
                .map(|r| r[c].chars().count())
                .chain([HEADERS[c].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let rule = format!(
        "+{}+\n",
        widths
            .iter()
            .map(|w| "-".repeat(w + 2))
            .collect::<Vec<_>>()
            .join("+")
    );
    let line = |texts: &[String]| {
        let centred: Vec<String> = texts
            .iter()
            .zip(&widths)
            .map(|(t, w)| {
                let pad = w - t.chars().count();
                format!(
                    " {}{}{} ",
                    " ".repeat(pad / 2),
                    t,
                    " ".repeat(pad - pad / 2)
                )
            })
            .collect();
        format!("|{}|\n", centred.join("|"))
    };
    let mut out = rule.clone();
    out.push_str(&line(
        &HEADERS[..columns]
            .iter()
            .map(|h| h.to_string())
            .collect::<Vec<_>>(),
    ));
    out.push_str(&rule);
    for r in &cells {
        out.push_str(&line(r));
        out.push_str(&rule);
    }
    out
}

/// `view --format plain`: `| name | waiting | work |` rows under a `*starred*` header, left
/// aligned, trailing blanks stripped; with names only, one name per line.
pub fn view_plain(rows: &[ViewRow], names_only: bool) -> String {
    if names_only {
        return rows.iter().map(|r| format!("{}\n", r.queue)).collect();
    }
    let header: Vec<String> = HEADERS.iter().map(|h| format!("*{h}*")).collect();
    let mut table = vec![header];
    table.extend(rows.iter().map(row_cells));
    let widths: Vec<usize> = (0..3)
        .map(|c| {
            table
                .iter()
                .map(|r| r[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in &table {
        let cells: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(t, w)| format!("{t:<w$}"))
            .collect();
        out.push_str(format!("| {} |", cells.join(" | ")).trim_end());
        out.push('\n');
    }
    out
}

/// The structure `view --format json|yaml` prints: `{queue: [waiting, work]}`, or a list of names.
pub fn view_value(rows: &[ViewRow], names_only: bool) -> Value {
    if names_only {
        return Value::Array(
            rows.iter()
                .map(|r| Value::String(r.queue.clone()))
                .collect(),
        );
    }
    let mut map = Map::new();
    for r in rows {
        let (waiting, work) = r.counts.unwrap_or((0, 0));
        map.insert(
            r.queue.clone(),
            Value::Array(vec![waiting.into(), work.into()]),
        );
    }
    Value::Object(map)
}

pub fn view_json(rows: &[ViewRow], names_only: bool) -> String {
    let mut out = to_python_json(&view_value(rows, names_only));
    out.push('\n');
    out
}

pub fn view_yaml(rows: &[ViewRow], names_only: bool) -> crate::engine::Result<String> {
    config::to_yaml_document(&view_value(rows, names_only))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn python_str_and_repr() {
        assert_eq!(py_str(&json!("a b")), "a b");
        assert_eq!(py_str(&Value::Null), "None");
        assert_eq!(py_str(&json!(false)), "False");
        assert_eq!(py_str(&json!(7)), "7");
        assert_eq!(py_str(&json!(2.0)), "2.0");
        assert_eq!(py_str(&json!(["x", 1, null])), "['x', 1, None]");
        assert_eq!(py_str(&json!({"k": "it's"})), "{'k': \"it's\"}");
        assert_eq!(py_repr(&json!("a\nb\\")), "'a\\nb\\\\'");
    }

    #[test]
    fn table_matches_beautifultable_transcript() {
        let rows = vec![
            ViewRow {
                queue: "newq".into(),
                counts: Some((1, 0)),
            },
            ViewRow {
                queue: "q1".into(),
                counts: Some((5, 0)),
            },
        ];
        let expected = "\
+-------+--------------+-------------+
| queue | msg in queue | msg at work |
+-------+--------------+-------------+
| newq  |      1       |      0      |
+-------+--------------+-------------+
|  q1   |      5       |      0      |
+-------+--------------+-------------+
";
        assert_eq!(view_table(&rows, false), expected);
        let expected_plain = "\
| *queue* | *msg in queue* | *msg at work* |
| newq    | 1              | 0             |
| q1      | 5              | 0             |
";
        assert_eq!(view_plain(&rows, false), expected_plain);
        assert_eq!(
            view_json(&rows, false),
            "{\"newq\": [1, 0], \"q1\": [5, 0]}\n"
        );
        assert_eq!(view_json(&rows, true), "[\"newq\", \"q1\"]\n");
    }

    #[test]
    fn empty_table_still_shows_the_header() {
        let t = view_table(&[], true);
        assert_eq!(t, "+-------+\n| queue |\n+-------+\n|       |\n+-------+\n");
    }
}
