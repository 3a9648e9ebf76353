//! The built `keybound` binary driven as a user would: the README quick
//! start on loopback, the demo, and the refusals a user meets.
#![cfg(feature = "cli")]

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::{bin, free_port};
use keybound::http::KeyboundLayer;
use keybound::keyset::{HttpKeys, HttpKeysOptions};
use keybound::verify::{NonceService, TrustedIssuer, VerifiedRequest, Verifier};
use serde_json::Value;

/// Passwords the tests use: no output of any command, and no log line of
/// the issuer, may ever contain one.
const PASSWORDS: [&str; 3] = [
    "choose-a-long-admin-password",
    "correct horse battery staple",
    "wrong password!",
];

/// Runs `keybound args…` with `stdin`, in config dir `config`.
fn run(config: &Path, args: &[&str], stdin: &str) -> Output {
    run_with(config, args, stdin, &[])
}

/// [`run`] with extra environment variables.
fn run_with(config: &Path, args: &[&str], stdin: &str, env: &[(&str, &str)]) -> Output {
    let mut child = Command::new(bin())
        .args(args)
        .env("KEYBOUND_CONFIG_DIR", config)
        .env_remove("KEYBOUND_PASSWORD")
        .env_remove("KEYBOUND_ADMIN_PASSWORD")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A command that fails before it reads its input closes the pipe first:
    // that is its answer to check, not an error of the test.
    if let Err(e) = child.stdin.take().unwrap().write_all(stdin.as_bytes()) {
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "writing stdin: {e}");
    }
    let out = child.wait_with_output().unwrap();
    let shown = [
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    ]
    .concat();
    for password in PASSWORDS {
        assert!(
            !shown.contains(password),
            "keybound {args:?} echoed a password: {shown}"
        );
    }
    out
}

/// Asserts that no line of `log` contains a password or `secret` bytes
/// (as hex or base64url).
fn assert_no_secrets(log: &str, secrets: &[(&str, &[u8])]) {
    for password in PASSWORDS {
        assert!(!log.contains(password), "a log line contains a password");
    }
    for (what, bytes) in secrets {
        for encoded in [
            keybound::encoding::hex_encode(bytes),
            keybound::encoding::b64url_encode(bytes),
        ] {
            // Any 16-byte window would be a leak, not only the whole secret.
            let window = encoded.len().min(22);
            for start in 0..=encoded.len() - window {
                assert!(
                    !log.contains(&encoded[start..start + window]),
                    "a log line contains part of {what}"
                );
            }
        }
    }
}

/// `args` run as the quick start's user: `--profile ayoung args…`.
fn as_user<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut all = vec!["--profile", "ayoung"];
    all.extend_from_slice(args);
    all
}

fn ok(config: &Path, args: &[&str], stdin: &str) -> String {
    let out = run(config, args, stdin);
    assert!(
        out.status.success(),
        "keybound {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs a failing command; returns (exit code, the one stderr line).
fn fails(config: &Path, args: &[&str], stdin: &str) -> (i32, String) {
    let out = run(config, args, stdin);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(!out.status.success(), "keybound {args:?} should fail");
    assert_eq!(stderr.lines().count(), 1, "one line, no stack trace: {stderr:?}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
        "{stderr}"
    );
    (out.status.code().unwrap(), stderr.trim_end().to_owned())
}

struct Server {
    child: Child,
    url: String,
}

impl Server {
    /// Starts `keybound serve` logging everything (trace) to `log`.
    fn start(data: &Path, port: u16, log: &Path) -> Server {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
        let child = Command::new(bin())
            .args([
                "serve",
                "--data-dir",
                data.to_str().unwrap(),
                "--listen",
                &format!("127.0.0.1:{port}"),
            ])
            .env("RUST_LOG", "trace")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the issuer did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Server { child, url }
    }

    fn kill_9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, and the exit status of a graceful shutdown.
    fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.child.wait().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill_9();
    }
}

/// A protected service on loopback trusting the issuer's published keys.
fn service(rt: &tokio::runtime::Runtime, issuer: &str, nonces: bool) -> String {
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let keys = HttpKeys::start(
            &format!("{issuer}/.well-known/keybound/keys"),
            HttpKeysOptions::default(),
        )
        .await
        .unwrap();
        let mut builder = Verifier::builder(&url, TrustedIssuer::new(issuer, keys));
        if nonces {
            builder = builder.nonce_service(Arc::new(NonceService::new(&[3; 32], &url, 60).unwrap()));
        }
        let app = axum::Router::new()
            .route(
                "/v2/servers",
                axum::routing::get(|r: VerifiedRequest| async move {
                    format!("servers of {} for {}\n", r.project().unwrap_or("-"), r.subject())
                }),
            )
            .layer(KeyboundLayer::new(Arc::new(builder.build().unwrap()), &url).unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        url
    })
}

#[test]
fn readme_quick_start_and_the_refusals_users_meet() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    // One config directory, as in the README: the admin in the default
    // profile, the user in profile ayoung, both logged in at once.
    let config = tmp.path().join("config");
    let admin_cfg = config.clone();
    let user_dir = config.join("profiles").join("ayoung");
    let admin_pw = "choose-a-long-admin-password\n";

    // Bootstrap, once only, without a server.
    let out = ok(
        &admin_cfg,
        &["admin", "bootstrap", "--data-dir", data.to_str().unwrap()],
        admin_pw,
    );
    assert!(out.contains("\"bootstrapped\":true"), "{out}");
    let (_, again) = fails(
        &admin_cfg,
        &["admin", "bootstrap", "--data-dir", data.to_str().unwrap()],
        admin_pw,
    );
    assert!(again.starts_with("error: issuer.conflict:"), "{again}");

    let port = free_port();
    let server_log = tmp.path().join("server.log");
    let mut server = Server::start(&data, port, &server_log);
    let issuer = server.url.clone();
    let svc = service(&rt, &issuer, false);
    let nonce_svc = service(&rt, &issuer, true);

    ok(
        &admin_cfg,
        &[
            "login",
            "--issuer",
            &issuer,
            "--user",
            "admin@default",
            "--password-stdin",
        ],
        admin_pw,
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(admin_cfg.join("session.json"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "the stored session is private");
    }
    for args in [
        vec!["admin", "domain", "create", "stoughton"],
        vec!["admin", "project", "create", "turing", "--domain", "stoughton"],
        vec!["admin", "role", "create", "member"],
        vec!["admin", "grant", "ayoung@stoughton", "turing@stoughton", "member"],
        vec!["admin", "service", "create", &svc],
        vec!["admin", "service", "create", &nonce_svc],
    ] {
        if args[1] == "grant" {
            // KEYBOUND_ADMIN_PASSWORD (bootstrap's) is still set, as after
            // following the help: the user's password comes from stdin anyway.
            let created = run_with(
                &admin_cfg,
                &["admin", "user", "create", "ayoung@stoughton", "--password-stdin"],
                "correct horse battery staple\n",
                &[("KEYBOUND_ADMIN_PASSWORD", admin_pw.trim())],
            );
            assert!(created.status.success(), "{created:?}");
        }
        ok(&admin_cfg, &args, "");
    }
    let users: Value = serde_json::from_str(&ok(&admin_cfg, &["admin", "user", "list"], "")).unwrap();
    assert!(
        users
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["user"] == "ayoung@stoughton"),
        "{users}"
    );

    // Acknowledged writes survive a crash of the issuer (kill -9, restart).
    server.kill_9();
    let mut server = Server::start(&data, port, &server_log);
    let users: Value = serde_json::from_str(&ok(&admin_cfg, &["admin", "user", "list"], "")).unwrap();
    assert!(
        users
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["user"] == "ayoung@stoughton"),
        "after restart: {users}"
    );

    // The user logs in, calls the service, gets a token.
    let (code, wrong) = fails(
        &config,
        &as_user(&[
            "login",
            "--issuer",
            &issuer,
            "--user",
            "ayoung@stoughton",
            "--password-stdin",
        ]),
        "wrong password!\n",
    );
    assert_eq!(code, 1);
    assert!(wrong.starts_with("error: issuer.invalid_credentials:"), "{wrong}");
    assert!(!wrong.contains("wrong password!"), "no secret echoed");
    ok(
        &config,
        &as_user(&[
            "login",
            "--issuer",
            &issuer,
            "--user",
            "ayoung@stoughton",
            "--password-stdin",
        ]),
        "correct horse battery staple\n",
    );
    let body = ok(
        &config,
        &as_user(&[
            "request",
            &format!("{svc}/v2/servers"),
            "--audience",
            &svc,
            "--project",
            "turing",
        ]),
        "",
    );
    assert_eq!(body, "servers of turing for ayoung@stoughton\n");
    // A service that challenges with a nonce: one retry, transparently.
    let body = ok(
        &config,
        &as_user(&[
            "request",
            &format!("{nonce_svc}/v2/servers"),
            "--audience",
            &nonce_svc,
            "--project",
            "turing",
        ]),
        "",
    );
    assert_eq!(body, "servers of turing for ayoung@stoughton\n");
    // A service that refuses for another reason: the code, exit 1.
    let (code, refused) = fails(
        &config,
        &as_user(&[
            "request",
            &format!("{nonce_svc}/v2/servers"),
            "--audience",
            &svc,
            "--project",
            "turing",
        ]),
        "",
    );
    assert_eq!(code, 1);
    assert!(refused.starts_with("error: cwt.aud_mismatch:"), "{refused}");

    let token: Value = serde_json::from_str(&ok(
        &config,
        &as_user(&["token", "--audience", &svc, "--project", "turing", "--json"]),
        "",
    ))
    .unwrap();
    assert_eq!(token["roles"], serde_json::json!(["member"]));
    let token_b64 = token["token"].as_str().unwrap().to_owned();

    // Offline verification, valid and invalid, with the key set by URL.
    let key = keybound::key::read_signing_key_file(&user_dir.join("key.cbor")).unwrap();
    let now = keybound::verify::Clock::now(&keybound::verify::SystemClock);
    let uri = format!("{svc}/v2/servers");
    let proof = keybound::proof::ProofBuilder::new(
        "GET",
        &uri,
        &keybound::encoding::b64url_decode(&token_b64).unwrap(),
        b"",
        now,
    )
    .unwrap()
    .sign(&key)
    .unwrap();
    let keys_url = format!("{issuer}/.well-known/keybound/keys");
    let verify = |uri: &str| {
        run(
            &config,
            &as_user(&[
                "verify",
                "--keys",
                &keys_url,
                "--audience",
                &svc,
                "--issuer",
                &issuer,
                "--method",
                "GET",
                "--uri",
                uri,
                "--token",
                &token_b64,
                "--proof",
                &proof.to_base64url(),
            ]),
            "",
        )
    };
    let valid = verify(&uri);
    assert!(valid.status.success());
    let valid: Value = serde_json::from_slice(&valid.stdout).unwrap();
    assert_eq!(
        (valid["result"].as_str(), valid["sub"].as_str()),
        (Some("valid"), Some("ayoung@stoughton"))
    );
    let invalid = verify(&format!("{svc}/v2/other"));
    assert_eq!(invalid.status.code(), Some(1));
    let invalid: Value = serde_json::from_slice(&invalid.stdout).unwrap();
    assert_eq!(
        (invalid["result"].as_str(), invalid["error"].as_str()),
        (Some("invalid"), Some("proof.htu_mismatch"))
    );

    // `token --instance` binds the token to one instance of the service;
    // `verify --instance` checks it as that instance (or another) would.
    let bound: Value = serde_json::from_str(&ok(
        &config,
        &as_user(&[
            "token",
            "--audience",
            &svc,
            "--project",
            "turing",
            "--instance",
            "vm-a@host-1",
            "--json",
        ]),
        "",
    ))
    .unwrap();
    assert_eq!(bound["instance"], "vm-a@host-1");
    let bound_b64 = bound["token"].as_str().unwrap().to_owned();
    let verify_at = |instance: Option<&str>| {
        let mut args = vec![
            "verify",
            "--keys",
            &keys_url,
            "--audience",
            &svc,
            "--issuer",
            &issuer,
            "--method",
            "GET",
            "--uri",
            &uri,
            "--token",
            &bound_b64,
        ];
        if let Some(instance) = instance {
            args.extend(["--instance", instance]);
        }
        let out = run(&config, &as_user(&args), "");
        (out.status.code(), serde_json::from_slice::<Value>(&out.stdout).unwrap())
    };
    let (status, at_a) = verify_at(Some("vm-a@host-1"));
    assert_eq!(
        (status, at_a["instance"].as_str()),
        (Some(0), Some("vm-a@host-1")),
        "{at_a}"
    );
    for other in [Some("vm-b@host-2"), None] {
        let (status, refused) = verify_at(other);
        assert_eq!(
            (status, refused["error"].as_str()),
            (Some(1), Some("cwt.instance")),
            "{other:?}"
        );
    }
    let (code, line) = fails(
        &config,
        &as_user(&["token", "--audience", &svc, "--project", "turing", "--instance", "vm a"]),
        "",
    );
    assert_eq!(code, 1);
    assert!(line.starts_with("error: issuer.bad_request:"), "{line}");

    // Malformed token files, an expired session, an unreachable issuer, an unwritable config dir.
    let garbage = tmp.path().join("garbage.txt");
    std::fs::write(&garbage, "this is not a token").unwrap();
    let (code, line) = fails(&config, &as_user(&["inspect", garbage.to_str().unwrap()]), "");
    assert_eq!(code, 2);
    assert!(
        line.starts_with("error: input.malformed:") || line.starts_with("error: cbor."),
        "{line}"
    );
    let session_file = user_dir.join("session.json");
    let mut session: Value = serde_json::from_str(&std::fs::read_to_string(&session_file).unwrap()).unwrap();
    session["expires_at"] = 1.into();
    std::fs::write(&session_file, session.to_string()).unwrap();
    let (_, line) = fails(&config, &as_user(&["token", "--audience", &svc]), "");
    assert!(line.starts_with("error: client.session_expired:"), "{line}");
    let closed = format!("http://127.0.0.1:{}", free_port());
    let (_, line) = fails(
        &config,
        &as_user(&[
            "login",
            "--issuer",
            &closed,
            "--user",
            "ayoung@stoughton",
            "--password-stdin",
        ]),
        "x\n",
    );
    assert!(line.starts_with("error: client.unreachable:"), "{line}");
    let (_, line) = fails(
        Path::new("/proc/keybound-cannot-write-here"),
        &[
            "login",
            "--issuer",
            &issuer,
            "--user",
            "ayoung@stoughton",
            "--password-stdin",
        ],
        "x\n",
    );
    assert!(line.starts_with("error: client.storage:"), "{line}");

    // Graceful shutdown on SIGTERM.
    let status = server.terminate();
    assert!(status.success(), "{status:?}");

    // Nothing the issuer logged, at trace level, through logins (good and
    // bad), mints, admin calls and a crash, holds a password, the client's
    // private key or the issuer's root secret.
    let log = std::fs::read_to_string(&server_log).unwrap();
    assert!(log.lines().count() > 20, "the issuer logged at trace level: {log}");
    let client_key = key.to_cose_key(None);
    let d = &client_key[client_key.len() - 32..];
    let root = std::fs::read(data.join("root.key")).unwrap();
    assert_no_secrets(&log, &[("the client's private key", d), ("the root secret", &root)]);
}

#[test]
fn demo_walks_the_whole_story() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run(tmp.path(), &["demo"], "");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("every step behaved as expected"), "{stdout}");
    assert_eq!(
        stdout.matches("\nok ").count() + usize::from(stdout.starts_with("ok ")),
        9,
        "{stdout}"
    );
    assert!(!stdout.contains("FAIL"));
}

/// `keybound demo delegation`: every step of the Heat story, in order, with
/// the outcome it expected and the one it got.
#[test]
fn demo_delegation_walks_the_heat_story() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run(tmp.path(), &["demo", "delegation"], "");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("every step behaved as expected"), "{stdout}");
    // (mark and title, "expected …, got …") per step.
    let lines: Vec<&str> = stdout.lines().collect();
    let steps: Vec<(&str, &str)> = lines
        .windows(2)
        .filter(|w| w[0].starts_with("ok ") || w[0].starts_with("FAIL"))
        .map(|w| (w[0], w[1].trim()))
        .collect();
    let trust = steps[2]
        .1
        .strip_prefix("expected accepted, accepted (trust ")
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert_eq!(trust.len(), 22, "a 128-bit trust id: {trust}");
    let heat_at_nova = format!(
        "expected accepted (nova: servers of project turing for ayoung@stoughton, acting through heat@service (trust {trust})), accepted (that answer)"
    );
    let expected: [(&str, &str); 11] = [
        (
            "1. ayoung logs in with her key",
            "expected accepted, accepted (session for ayoung@stoughton)",
        ),
        (
            "2. heat@service logs in with its own key",
            "expected accepted, accepted (session for heat@service bound to key ",
        ),
        (
            "3. ayoung trusts heat@service with member on turing, for 1 h, no redelegation",
            "expected accepted, accepted (trust ",
        ),
        (
            "4. heat@service gets a token for nova from the trust",
            "expected accepted, accepted (",
        ),
        ("5. heat@service calls nova, signed with its key", &heat_at_nova),
        (
            "6. ayoung asks for a token from the trust herself",
            "expected trust.not_trustee, refused: trust.not_trustee",
        ),
        (
            "7. the admin revokes ayoung's member role; heat@service asks for a new token",
            "expected trust.unusable, refused: trust.unusable",
        ),
        (
            "8. the admin grants it again; heat@service asks again",
            "expected accepted, accepted (",
        ),
        ("9. ayoung deletes the trust", "expected accepted, accepted (deleted)"),
        (
            "10. heat@service asks for a new token",
            "expected trust.not_found, refused: trust.not_found",
        ),
        (
            "11. the token heat@service got before the delete, at nova (it dies within 300 s)",
            &heat_at_nova,
        ),
    ];
    assert_eq!(steps.len(), expected.len(), "{stdout}");
    for ((title, outcome), (want_title, want_outcome)) in steps.iter().zip(expected) {
        assert!(title.starts_with("ok "), "{title}\n{stdout}");
        assert_eq!(title[4..].trim_start(), want_title, "{stdout}");
        assert!(
            outcome.starts_with(want_outcome),
            "{outcome}\nnot {want_outcome}\n{stdout}"
        );
    }
    assert!(!stdout.contains("FAIL"));
}

#[test]
fn help_says_what_each_command_does_with_an_example() {
    let tmp = tempfile::tempdir().unwrap();
    let top = ok(tmp.path(), &["--help"], "");
    for command in [
        "serve",
        "admin",
        "login",
        "token",
        "request",
        "verify",
        "inspect",
        "keygen",
        "demo",
        "completions",
    ] {
        assert!(top.contains(command), "{command} missing from --help");
        let help = ok(tmp.path(), &[command, "--help"], "");
        assert!(help.contains("Example"), "{command} --help has no example");
    }
    let demo = ok(tmp.path(), &["demo", "--help"], "");
    assert!(demo.contains("delegation"), "{demo}");
    let delegation = ok(tmp.path(), &["demo", "delegation", "--help"], "");
    assert!(
        delegation.contains("Examples:\n  keybound demo delegation"),
        "{delegation}"
    );
    assert!(ok(tmp.path(), &["completions", "bash"], "").contains("keybound"));
    let token = ok(tmp.path(), &["token", "--help"], "");
    assert!(token.contains("--instance <ID>"), "{token}");
    assert!(token.contains("--instance vm-7f3a@host-12"), "{token}");
    assert!(ok(tmp.path(), &["verify", "--help"], "").contains("--instance <ID>"));
}
