//! `keybound admin` as an operator runs it: the built binary against a real
//! issuer on loopback (in this process, so the test can also fill its
//! database), and `keybound serve` for what its log says of a refused login.
#![cfg(feature = "cli")]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keybound::issuer::store::{Audit, Origin};
use keybound::verify::SystemClock;
use serde_json::Value;

use crate::common;
use crate::common::bin;

const ADMIN_PASSWORD: &str = "bootstrap-password-1";
const PASSWORD: &str = "correct horse battery";

/// `keybound args…` with `stdin`, in config dir `config`, stdout a pipe.
fn run(config: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(bin())
        .args(args)
        .env("KEYBOUND_CONFIG_DIR", config)
        .env_remove("KEYBOUND_OUTPUT")
        .env_remove("KEYBOUND_ADMIN_PASSWORD")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Err(e) = child.stdin.take().unwrap().write_all(stdin.as_bytes()) {
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "writing stdin: {e}");
    }
    child.wait_with_output().unwrap()
}

/// Stdout of a command that must succeed.
fn ok(config: &Path, args: &[&str]) -> String {
    let out = run(config, args, "");
    assert!(
        out.status.success(),
        "keybound {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Exit status and the one stderr line of a command that must fail.
fn fails(config: &Path, args: &[&str]) -> (i32, String) {
    let out = run(config, args, "");
    assert!(!out.status.success(), "keybound {args:?} succeeded");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    (out.status.code().unwrap(), stderr.trim_end().to_owned())
}

/// Lists, shows, deletes and exports through the CLI: JSON when stdout is
/// not a terminal (as before), tables with UTC times and values on request,
/// refusals as one `error: code: message` line, and an export of every
/// audit entry past any page size, newest first.
#[test]
fn admin_commands_print_tables_values_json_and_export_the_audit_log() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (issuer, _dir) = rt.block_on(common::start_issuer(ADMIN_PASSWORD, Arc::new(SystemClock), |_| {}));
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("admin");
    let login = run(
        &cfg,
        &[
            "login",
            "--issuer",
            issuer.url(),
            "--user",
            "admin@default",
            "--password-stdin",
        ],
        &format!("{ADMIN_PASSWORD}\n"),
    );
    assert!(login.status.success(), "{}", String::from_utf8_lossy(&login.stderr));
    for args in [
        vec!["admin", "domain", "create", "stoughton"],
        vec!["admin", "project", "create", "turing", "--domain", "stoughton"],
        vec!["admin", "role", "create", "member"],
        vec!["admin", "role", "create", "unused"],
        vec!["admin", "user", "create", "nova@stoughton", "--service"],
    ] {
        ok(&cfg, &args);
    }
    let created = run(
        &cfg,
        &["admin", "user", "create", "ayoung@stoughton", "--password-stdin"],
        &format!("{PASSWORD}\n"),
    );
    assert!(created.status.success());
    ok(
        &cfg,
        &["admin", "grant", "ayoung@stoughton", "turing@stoughton", "member"],
    );

    // JSON by default into a pipe: scripts keep reading what they read.
    let users: Value = serde_json::from_str(&ok(&cfg, &["admin", "user", "list"])).unwrap();
    assert_eq!(users.as_array().unwrap().len(), 3);
    let table = ok(&cfg, &["admin", "user", "list", "--output", "table"]);
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("USER ") && lines[0].contains("HAS PASSWORD"),
        "{table}"
    );
    assert!(lines[2].starts_with("ayoung@stoughton  person"), "{table}");
    assert_eq!(
        ok(
            &cfg,
            &["admin", "user", "list", "-o", "value", "-c", "user", "-c", "kind"]
        ),
        "admin@default person\nayoung@stoughton person\nnova@stoughton service\n"
    );
    assert_eq!(
        ok(&cfg, &["admin", "role", "list", "-o", "value"]),
        "admin\nmember\nunused\n"
    );
    assert_eq!(
        ok(
            &cfg,
            &["admin", "grants", "--role", "member", "-o", "value", "-c", "user"]
        ),
        "ayoung@stoughton\n"
    );
    let grants: Value = serde_json::from_str(&ok(&cfg, &["admin", "grants", "--user", "admin@default"])).unwrap();
    assert_eq!(grants[0]["role"], "admin");
    // One user: fields, then its grants; times in UTC.
    let shown = ok(&cfg, &["admin", "user", "show", "ayoung@stoughton", "-o", "table"]);
    let created_at = shown.lines().find(|l| l.starts_with("created_at")).unwrap();
    let stamp = created_at.split_whitespace().nth(1).unwrap();
    assert!(
        stamp.len() == 20 && stamp.ends_with('Z') && stamp.as_bytes()[10] == b'T',
        "{shown}"
    );
    assert!(
        shown.contains("lockout.locked  ") && shown.contains("grants:\nPROJECT"),
        "{shown}"
    );
    let shown: Value = serde_json::from_str(&ok(&cfg, &["admin", "user", "show", "ayoung@stoughton"])).unwrap();
    assert!(
        shown["created_at"].as_i64().unwrap() > 1_700_000_000,
        "JSON keeps Unix seconds"
    );

    // Refusals: one line, the code, exit 1; a bad column is a usage error.
    let (status, line) = fails(&cfg, &["admin", "domain", "delete", "stoughton"]);
    assert_eq!(status, 1);
    assert!(
        line.starts_with("error: issuer.in_use: domain stoughton still has 1 project and 2 users"),
        "{line}"
    );
    let (_, line) = fails(&cfg, &["admin", "role", "delete", "admin"]);
    assert!(line.starts_with("error: issuer.protected: "), "{line}");
    let (_, line) = fails(&cfg, &["admin", "role", "create", "member"]);
    assert!(line.starts_with("error: issuer.conflict: "), "{line}");
    let (status, line) = fails(&cfg, &["admin", "user", "list", "-o", "table", "-c", "nope"]);
    assert_eq!(status, 2);
    assert!(
        line.starts_with("error: cli.usage: --column nope: no such column"),
        "{line}"
    );
    let (status, line) = fails(&cfg, &["admin", "audit", "--since", "yesterday"]);
    assert_eq!(status, 2, "{line}");
    // Deletes.
    let gone: Value = serde_json::from_str(&ok(&cfg, &["admin", "role", "delete", "unused"])).unwrap();
    assert_eq!(gone["deleted"], true);
    let gone: Value = serde_json::from_str(&ok(&cfg, &["admin", "user", "delete", "ayoung@stoughton"])).unwrap();
    assert_eq!(
        (&gone["grants"], &gone["deleted"]),
        (&Value::from(1), &Value::from(true))
    );
    ok(&cfg, &["admin", "user", "unlock", "nova@stoughton"]);
    assert_eq!(
        ok(&cfg, &["admin", "user", "keys", "nova@stoughton", "-o", "value"]),
        ""
    );
    assert_eq!(
        ok(&cfg, &["admin", "user", "keys", "nova@stoughton", "-o", "table"]),
        "(none)\n"
    );

    // 2,345 entries more, then the whole log as JSON lines, newest first.
    rt.block_on(async {
        let mut tx = issuer.state().store.begin().await.unwrap();
        let origin = Origin {
            client: "192.0.2.1".into(),
            key_thumbprint: "-".into(),
        };
        for i in 0..2345_i64 {
            tx.record_from(&origin, 1_000_000 + i, "bulk@stoughton", "test.bulk", "x y&z=1", "ok")
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
    });
    let all = ok(&cfg, &["admin", "audit", "export"]);
    let entries: Vec<Value> = all.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(entries.len() > 2345 + 10, "{}", entries.len());
    let ids: Vec<i64> = entries.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first, each once");
    assert_eq!(ids.last(), Some(&1), "down to the bootstrap");
    let bulk = ok(
        &cfg,
        &[
            "admin",
            "audit",
            "export",
            "--action",
            "test.bulk",
            "--target",
            "x y&z=1",
            "--since",
            "1001000",
        ],
    );
    assert_eq!(bulk.lines().count(), 1345);
    let page = ok(
        &cfg,
        &["admin", "audit", "--limit", "3", "--action", "test.bulk", "-o", "table"],
    );
    let rows: Vec<&str> = page.lines().collect();
    assert_eq!(rows.len(), 4, "{page}");
    assert!(
        rows[0].starts_with("ID ") && rows[1].contains("  1970-01-12T14:25:44Z  "),
        "{page}"
    );
    let oldest = ok(
        &cfg,
        &[
            "admin", "audit", "list", "--limit", "1", "--before", "2", "-o", "value", "-c", "action",
        ],
    );
    assert_eq!(oldest, "bootstrap\n");
}

/// `keybound serve` logs every refused login once, with the user name
/// tried and the client address.
#[test]
fn the_refused_login_log_line_names_the_user_and_the_client() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let boot = run(
        tmp.path(),
        &["admin", "bootstrap", "--data-dir", data.to_str().unwrap()],
        &format!("{ADMIN_PASSWORD}\n"),
    );
    assert!(boot.status.success(), "{}", String::from_utf8_lossy(&boot.stderr));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let mut server = Command::new(bin())
        .args([
            "serve",
            "--data-dir",
            data.to_str().unwrap(),
            "--listen",
            &listen,
            "--log-format",
            "json",
        ])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = server.stderr.take().unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                return;
            }
        }
    });
    let url = format!("http://{listen}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(&listen).is_err() {
        assert!(Instant::now() < deadline, "the issuer did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let cfg = tmp.path().join("user");
    let refused = run(
        &cfg,
        &["login", "--issuer", &url, "--user", "admin@default", "--password-stdin"],
        "not the password\n",
    );
    assert!(!refused.status.success());
    let found = loop {
        let line = lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("a log line for the refused login");
        let Ok(record) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        if record["fields"]["message"] == "login refused" {
            break record;
        }
    };
    let fields = &found["fields"];
    assert_eq!(fields["code"], "issuer.invalid_credentials", "{found}");
    assert_eq!(fields["user"], "admin@default", "{found}");
    assert_eq!(fields["client"], "127.0.0.1", "{found}");
    assert!(!found.to_string().contains("not the password"));
    let _ = server.kill();
    let _ = server.wait();
}

/// The subcommands a `--help` text lists under `Commands:` (without `help`).
fn subcommands(help: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in help.lines() {
        if line == "Commands:" {
            inside = true;
        } else if inside && line.starts_with("  ") && !line.starts_with("   ") {
            let name = line.split_whitespace().next().unwrap_or_default();
            if name != "help" {
                out.push(name.to_owned());
            }
        } else if inside && !line.starts_with(' ') {
            inside = false;
        }
    }
    out
}

/// Every `keybound admin` subcommand, at every depth, says what it does;
/// every argument has help; every leaf has an `Examples:` block whose lines
/// are whole `keybound` commands, not wrapped at an 80-column terminal.
#[test]
fn every_admin_command_has_help_and_examples() {
    let mut todo = vec![vec!["admin".to_owned()]];
    let mut leaves = 0;
    while let Some(path) = todo.pop() {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        let out = Command::new(bin()).args(&args).env("COLUMNS", "80").output().unwrap();
        assert!(out.status.success(), "{path:?}");
        let help = String::from_utf8(out.stdout).unwrap();
        let about = help.lines().next().unwrap_or_default();
        assert!(
            !about.trim().is_empty() && !about.starts_with("Usage:"),
            "{path:?} has no about: {help}"
        );
        let children = subcommands(&help);
        for child in &children {
            let mut next = path.clone();
            next.push(child.clone());
            todo.push(next);
        }
        // Every argument and option line carries its help text (on the
        // same line or, for long ones, the next).
        let lines: Vec<&str> = help.lines().collect();
        let mut section = "";
        for (i, line) in lines.iter().enumerate() {
            if !line.starts_with(' ') && line.ends_with(':') {
                section = line;
                continue;
            }
            if !matches!(section, "Arguments:" | "Options:") {
                continue;
            }
            let spec = line.trim_start();
            if line.len() - spec.len() != 2
                || !(spec.starts_with('-') || spec.starts_with('<') || spec.starts_with('['))
            {
                continue;
            }
            let described = spec.split_once("  ").is_some_and(|(_, text)| !text.trim().is_empty())
                || lines
                    .get(i + 1)
                    .is_some_and(|next| next.starts_with("          ") && !next.trim().is_empty());
            assert!(described, "{path:?}: `{spec}` has no help");
        }
        if children.is_empty() {
            leaves += 1;
            let examples: Vec<&str> = help
                .split("\nExamples:\n")
                .nth(1)
                .unwrap_or_else(|| panic!("{path:?} has no Examples: block"))
                .lines()
                .take_while(|l| !l.trim().is_empty())
                .collect();
            assert!(!examples.is_empty(), "{path:?}");
            for example in examples {
                assert!(
                    example.starts_with("  keybound admin "),
                    "{path:?}: {example:?} is not a whole command"
                );
                assert!(
                    example.chars().count() < 80,
                    "{path:?}: {example:?} would wrap at 80 columns"
                );
            }
        }
    }
    assert!(leaves >= 37, "{leaves} leaves");
}
