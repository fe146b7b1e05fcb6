//! `ddmq json '<object>'`: a command packaged as a JSON object. The object is turned into the
//! command line it stands for and parsed by the same clap definitions, so it runs the same code
//! with the same checks: every subcommand, named by `cmd` or `command` (0.9.10's worked for `view`
//! only, B10). Nothing in the payload is ever evaluated (0.9.10 ran `eval` on it, S2): the
//! command must be one of the subcommand names, and values are only ever arguments (fuzzed by
//! the tests below).

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

#[cfg(test)]
mod tests {
    //! The json command's payload parser, fuzzed: any object is a runnable command or an error,
    //! never a panic, and values only ever become the arguments they name.
    use super::*;
    use proptest::prelude::*;

    /// Strings a hostile payload might hold: flags, shell syntax, Python code, any text.
    fn hostile_text() -> impl Strategy<Value = String> {
        prop_oneof![
            ".{0,16}",
            "-{1,2}[a-z_]{0,10}(=[a-z0-9]{0,4})?",
            Just("$(touch /tmp/pwned)".to_string()),
            Just("view; rm -rf /".to_string()),
            Just("__import__('os').system('id')".to_string()),
            Just("--".to_string()),
        ]
    }

    fn any_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            hostile_text().prop_map(Value::String),
            proptest::sample::select(COMMANDS.to_vec()).prop_map(Value::from),
        ];
        leaf.prop_recursive(2, 8, 3, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
                proptest::collection::btree_map("[a-z]{1,4}", inner, 0..3)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// Keys of the real payload format mostly, sometimes unknown ones.
    fn any_key() -> impl Strategy<Value = String> {
        let mut known: Vec<String> = ["cmd", "command"].iter().map(|k| k.to_string()).collect();
        known.extend(POSITIONAL_KEYS.iter().map(|(k, _)| k.to_string()));
        known.extend(FLAG_KEYS.iter().map(|(k, _)| k.to_string()));
        prop_oneof![9 => proptest::sample::select(known), 1 => "[a-z_]{1,8}"]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1000, failure_persistence: None, ..ProptestConfig::default() })]

        /// Objects of real keys with any values (a command name in most): a command of the
        /// original or an error, never a panic, and never mount, umount or json itself.
        #[test]
        fn any_payload_is_a_command_of_the_original_or_an_error(
            cmd in proptest::sample::select(COMMANDS.to_vec()),
            entries in proptest::collection::vec((any_key(), any_value()), 0..8),
        ) {
            let mut map = Map::new();
            map.insert("cmd".into(), Value::from(cmd));
            for (k, v) in entries {
                map.insert(k, v);
            }
            let payload = Value::Object(map).to_string();
            if let Ok((command, argv)) = command_from_payload(&payload) {
                prop_assert!(is_runnable(&command));
                prop_assert!(COMMANDS.contains(&argv[1].as_str()), "{:?}", argv);
                prop_assert!(argv.contains(&"--".to_string()), "{:?}", argv);
            }
        }

        /// Whatever text a payload holds arrives as exactly that argument: a value that looks
        /// like a flag or like code sets no flag and runs nothing.
        #[test]
        fn publish_values_arrive_verbatim(
            // clap refuses an empty path, as it does on the command line.
            root in hostile_text().prop_filter("a path", |r| !r.is_empty()),
            queue in hostile_text(),
            message in hostile_text(),
            force in any::<bool>(),
            requeue in any::<bool>(),
            priority in proptest::option::of(any::<u64>()),
        ) {
            let mut map = Map::new();
            map.insert("command".into(), Value::from("publish"));
            map.insert("root".into(), Value::from(root.clone()));
            map.insert("queue".into(), Value::from(queue.clone()));
            map.insert("message".into(), Value::from(message.clone()));
            map.insert("f".into(), Value::from(force));
            map.insert("r".into(), Value::from(requeue));
            if let Some(p) = priority {
                map.insert("priority".into(), Value::from(p));
            }
            let payload = Value::Object(map).to_string();
            let parsed = command_from_payload(&payload);
            prop_assert!(parsed.is_ok(), "{} refused: {}", payload, parsed.err().map(|e| e.to_string()).unwrap_or_default());
            let (command, _) = parsed.unwrap();
            let Command::Publish(a) = command else {
                return Err(TestCaseError::fail("not a publish"));
            };
            prop_assert_eq!(a.root.root, std::path::PathBuf::from(root));
            prop_assert_eq!(a.queue, queue);
            prop_assert_eq!(a.message, message);
            prop_assert_eq!(a.force.force, force);
            prop_assert_eq!(a.requeue, requeue);
            prop_assert_eq!(a.priority, priority);
            prop_assert!(!a.no_requeue && !a.lines && !a.skip_cleaning.skip_cleaning && !a.silent.silent);
        }

        /// ack's files given as a list arrive as the one comma-separated argument the command
        /// line takes; `cmd` and `command` naming different commands is refused.
        #[test]
        fn ack_file_lists_and_conflicting_names(
            files in proptest::collection::vec("[0-9a-z.]{1,12}", 1..4),
            other in proptest::sample::select(COMMANDS.to_vec()),
        ) {
            let payload = serde_json::json!({"cmd": "ack", "root": "/r", "queue": "q", "msg_files": files}).to_string();
            let (command, _) = command_from_payload(&payload).expect("a valid ack payload");
            let Command::Ack(a) = command else {
                return Err(TestCaseError::fail("not an ack"));
            };
            prop_assert_eq!(a.files, files.join(","));
            let both = serde_json::json!({"cmd": "ack", "command": other, "root": "/r", "queue": "q", "msg_files": files}).to_string();
            prop_assert_eq!(command_from_payload(&both).is_ok(), other == "ack");
        }
    }
}
