//! `ddmq json '<object>'`: a command packaged as a JSON object. The object is turned into the
//! command line it stands for and parsed by the same clap definitions, so it runs the same code
//! with the same checks: every subcommand, named by `cmd` or `command` (0.9.10's worked for `view`
//! only, B10). Nothing in the payload is ever evaluated (0.9.10 ran `eval` on it, S2): the command must be one of the subcommand names, and values are
//! only ever arguments.

use super::error::{CliError, CliResult};
use super::{Cli, Command, usage_error};
use clap::{CommandFactory, Parser};
use serde_json::{Map, Value};

/// The subcommands a payload may name (not `json` itself, nor `mount`/`umount`).
const COMMANDS: [&str; 10] = [
    "view", "create", "delete", "publish", "consume", "ack", "nack", "del_msg", "purge", "clean",
];

/// Payload keys naming positionals, and the positional argument ids they may fill, in order of preference.
const POSITIONAL_KEYS: &[(&str, &[&str])] = &[
    ("root", &["root"]),
    ("queue", &["queue", "queues"]),
    ("message", &["message", "files"]),
    ("msg_files", &["files"]),
    ("files", &["files"]),
];

/// Payload keys naming options (short keys of the original, and long names), and the argument ids.
const FLAG_KEYS: &[(&str, &[&str])] = &[
    ("f", &["force"]),
    ("force", &["force"]),
    ("v", &["verbose"]),
    ("verbose", &["verbose"]),
    ("d", &["debug"]),
    ("debug", &["debug"]),
    ("s", &["silent"]),
    ("silent", &["silent"]),
    ("n", &["names_only", "count"]),
    ("number", &["count"]),
    ("names_only", &["names_only"]),
    ("format", &["format"]),
    ("p", &["priority"]),
    ("priority", &["priority"]),
    ("t", &["timeout"]),
    ("timeout", &["timeout"]),
    ("r", &["requeue"]),
    ("requeue", &["requeue"]),
    ("no_requeue", &["no_requeue"]),
    ("l", &["requeue_limit"]),
    ("requeue_limit", &["requeue_limit"]),
    ("requeue_prio", &["requeue_prio"]),
    ("C", &["skip_cleaning"]),
    ("skip_cleaning", &["skip_cleaning"]),
    ("lines", &["lines"]),
    ("ack", &["ack"]),
    ("wait", &["wait"]),
    ("poll_ms", &["poll_ms"]),
];

/// Every key with its default, as printed when the payload is not JSON.
const EXAMPLE: &str = r#"{"cmd": null, "root": null, "queue": null, "message": null, "msg_files": null, "f": false, "v": false, "d": false, "n": false, "format": "plain", "s": false, "priority": null, "timeout": null, "requeue": false, "no_requeue": false, "requeue_limit": null, "requeue_prio": null, "skip_cleaning": false, "lines": false, "ack": false, "wait": null, "poll_ms": null}"#;

/// The command a payload stands for, parsed exactly as the command line would be, and that
/// command line (for the debug log).
pub fn command_from_payload(payload: &str) -> CliResult<(Command, Vec<String>)> {
    let not_json = || {
        CliError::failed(format!(
            "unable to load the JSON object (wrong format or missing single quotes?)\n\nExample of structure and all the options that can be set:\n\n'{EXAMPLE}'"
        ))
    };
    let Ok(Value::Object(map)) = serde_json::from_str::<Value>(payload) else {
        return Err(not_json());
    };
    let argv = to_argv(&map)?;
    match Cli::try_parse_from(&argv)?.command {
        Some(command) if is_runnable(&command) => Ok((command, argv)),
        Some(_) => Err(usage_error(
            "the json command runs only the subcommands of the original ddmq",
        )),
        None => Err(usage_error("the JSON object names no command")),
    }
}

fn is_runnable(command: &Command) -> bool {
    !matches!(
        command,
        Command::Mount(_)
            | Command::Umount(_)
            | Command::Json(_)
            | Command::Work(_)
            | Command::Top(_)
            | Command::Unknown(_)
    )
}

/// The command name: `cmd` (documented by the original) or `command` (what it actually read).
fn command_name(map: &Map<String, Value>) -> CliResult<&str> {
    let given: Vec<&Value> = ["cmd", "command"]
        .iter()
        .filter_map(|k| map.get(*k))
        .filter(|v| !v.is_null())
        .collect();
    let name = match given.as_slice() {
        [] => {
            return Err(usage_error(
                "the JSON object needs a \"cmd\" (or \"command\") key naming the subcommand",
            ));
        }
        [one] => *one,
        [a, b] if a == b => *a,
        _ => {
            return Err(usage_error(
                "\"cmd\" and \"command\" name different subcommands",
            ));
        }
    };
    match name.as_str() {
        Some(n) if COMMANDS.contains(&n) => Ok(n),
        Some(n) => Err(CliError::failed(format!("Unrecognized command: {n}"))),
        None => Err(CliError::failed(format!("Unrecognized command: {name}"))),
    }
}

/// A value the original's example structure holds by default: ignored where it does not apply.
fn is_default(key: &str, value: &Value) -> bool {
    match value {
        Value::Null | Value::Bool(false) => true,
        Value::String(s) => s.is_empty() || (key == "format" && s == "plain"),
        Value::Array(items) => items.is_empty(),
        _ => false,
    }
}

/// Text of a positional: a string, a number, or a list of them joined by commas (queue lists, file lists).
fn positional_text(key: &str, value: &Value) -> CliResult<String> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::String(s) => Ok(s.clone()),
                Value::Number(n) => Ok(n.to_string()),
                _ => Err(usage_error(&format!(
                    "\"{key}\": list items must be strings"
                ))),
            })
            .collect::<CliResult<Vec<_>>>()
            .map(|items| items.join(",")),
        _ => Err(usage_error(&format!("\"{key}\" must be a string"))),
    }
}

fn to_argv(map: &Map<String, Value>) -> CliResult<Vec<String>> {
    let name = command_name(map)?;
    let app = Cli::command();
    let sub = app
        .find_subcommand(name)
        .expect("every name in COMMANDS is a subcommand");
    let find = |ids: &[&str]| {
        ids.iter()
            .find_map(|id| sub.get_arguments().find(|a| a.get_id().as_str() == *id))
    };
    let mut options = Vec::new();
    let mut positionals: Vec<(String, String)> = Vec::new();
    for (key, value) in map {
        if key == "cmd" || key == "command" {
            continue;
        }
        if let Some((_, ids)) = POSITIONAL_KEYS.iter().find(|(k, _)| k == key) {
            match find(ids).filter(|a| a.is_positional()) {
                Some(arg) if !value.is_null() => {
                    let id = arg.get_id().to_string();
                    if positionals.iter().any(|(have, _)| *have == id) {
                        return Err(usage_error(&format!("\"{key}\" gives {id} a second time")));
                    }
                    positionals.push((id, positional_text(key, value)?));
                }
                Some(_) => {}
                None if is_default(key, value) => {}
                None => return Err(usage_error(&format!("\"{key}\" does not apply to {name}"))),
            }
            continue;
        }
        let Some((_, ids)) = FLAG_KEYS.iter().find(|(k, _)| k == key) else {
            return Err(usage_error(&format!(
                "unknown key \"{key}\"; the keys are those of: '{EXAMPLE}'"
            )));
        };
        let Some(arg) = find(ids) else {
            if is_default(key, value) {
                continue;
            }
            return Err(usage_error(&format!("\"{key}\" does not apply to {name}")));
        };
        let long = format!(
            "--{}",
            arg.get_long()
                .expect("every option of the CLI has a long name")
        );
        let takes_value = arg.get_action().takes_values();
        match value {
            Value::Null | Value::Bool(false) => {}
            Value::Bool(true) if !takes_value => options.push(long),
            Value::String(s) if takes_value => options.push(format!("{long}={s}")),
            Value::Number(n) if takes_value => options.push(format!("{long}={n}")),
            _ if takes_value => {
                return Err(usage_error(&format!(
                    "\"{key}\" needs a value (a number or a string)"
                )));
            }
            _ => return Err(usage_error(&format!("\"{key}\" must be true or false"))),
        }
    }
    // The original's json mode defaults to plain output.
    if !map.contains_key("format") && sub.get_arguments().any(|a| a.get_id().as_str() == "format") {
        options.push("--format=plain".to_string());
    }
    let mut argv = vec!["ddmq".to_string(), name.to_string()];
    argv.extend(options);
    argv.push("--".to_string());
    let mut missing: Option<String> = None;
    for arg in sub.get_positionals() {
        let id = arg.get_id().as_str();
        match positionals.iter().find(|(have, _)| have == id) {
            Some((_, text)) if missing.is_none() => argv.push(text.clone()),
            Some(_) => {
                return Err(usage_error(&format!(
                    "the JSON object gives {id} but no {}",
                    missing.unwrap_or_default()
                )));
            }
            None => missing = missing.or_else(|| Some(id.to_string())),
        }
    }
    Ok(argv)
}
