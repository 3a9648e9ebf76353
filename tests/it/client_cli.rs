//! The client commands as a user runs them: the real `keybound` binary
//! against a real issuer and a protected service on loopback. Profiles,
//! `status` and `logout`, service tokens cached between runs, `request -v`
//! and `headers` feeding `verify` and another HTTP client, and the errors
//! that say what to do.
#![cfg(feature = "cli")]

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;

use assert_cmd::Command;
use keybound::http::KeyboundLayer;
use keybound::issuer::loopback::{LoopbackIssuer, PROJECT, USER, World};
use keybound::keyset::{HttpKeys, HttpKeysOptions};
use keybound::policy::Policy;
use keybound::verify::{Clock, SystemClock, TrustedIssuer, VerifiedRequest, Verifier};
use serde_json::Value;

const ADMIN_PASSWORD: &str = "choose-a-long-admin-password";
const PASSWORD: &str = "correct horse battery staple";

/// The service's policy: reading servers needs `member`, creating them
/// `admin`; nothing else has a rule (and unmatched actions are denied).
const POLICY: &str = r#"
mode = "enforce"
[[rule]]
method = "GET"
path = "/v2/servers"
roles = ["member"]
[[rule]]
method = "POST"
path = "/v2/servers"
roles = ["admin"]
"#;

/// An issuer with the demo world, and one protected service registered at it.
struct Setup {
    rt: tokio::runtime::Runtime,
    issuer: LoopbackIssuer,
    service: String,
    _data: tempfile::TempDir,
    config: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let (issuer, data) = rt.block_on(crate::common::start_issuer(
            ADMIN_PASSWORD,
            Arc::new(SystemClock),
            |_| {},
        ));
        let service = rt.block_on(service(issuer.url()));
        rt.block_on(async {
            let admin = issuer.admin(ADMIN_PASSWORD).await.unwrap();
            issuer
                .create_world(
                    &admin,
                    &World {
                        password: PASSWORD,
                        services: &[&service],
                    },
                )
                .await
                .unwrap();
        });
        Setup {
            rt,
            issuer,
            service,
            _data: data,
            config: tempfile::tempdir().unwrap(),
        }
    }

    fn dir(&self) -> &Path {
        self.config.path()
    }

    /// `keybound args…` with `stdin`, in this setup's config directory.
    fn run(&self, args: &[&str], stdin: &str) -> Output {
        self.run_env(args, stdin, &[])
    }

    fn run_env(&self, args: &[&str], stdin: &str, env: &[(&str, &str)]) -> Output {
        let out = Command::cargo_bin("keybound")
            .unwrap()
            .args(args)
            .env("KEYBOUND_CONFIG_DIR", self.dir())
            .env_remove("KEYBOUND_PROFILE")
            .env_remove("KEYBOUND_PASSWORD")
            .envs(env.iter().copied())
            .write_stdin(stdin.to_owned())
            .output()
            .unwrap();
        let shown = [
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        ]
        .concat();
        assert!(
            !shown.contains(PASSWORD) && !shown.contains(ADMIN_PASSWORD),
            "a password echoed: {shown}"
        );
        assert!(!shown.contains("panicked"), "{shown}");
        out
    }

    /// Runs a command that must succeed; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args, "");
        assert!(
            out.status.success(),
            "keybound {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs a command that must fail: (exit status, its one stderr line).
    fn fails(&self, args: &[&str], stdin: &str) -> (i32, String) {
        let out = self.run(args, stdin);
        assert!(!out.status.success(), "keybound {args:?} should fail");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr:?}");
        (out.status.code().unwrap(), stderr.trim_end().to_owned())
    }

    /// Logs `user` in (in `profile`, if given) with `password`.
    fn login(&self, profile: Option<&str>, user: &str, password: &str) -> String {
        let mut args = Vec::new();
        if let Some(profile) = profile {
            args.extend(["--profile", profile]);
        }
        let issuer = self.issuer.url().to_owned();
        args.extend(["login", "--issuer", &issuer, "--user", user, "--password-stdin"]);
        let out = self.run(&args, &format!("{password}\n"));
        assert!(out.status.success(), "login: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    /// Service tokens the issuer has minted so far (its metrics).
    fn minted(&self) -> u64 {
        self.issuer
            .state()
            .metrics
            .render()
            .lines()
            .find_map(|l| l.strip_prefix("keybound_tokens_minted_total "))
            .and_then(|n| n.trim().parse().ok())
            .expect("the mint counter")
    }

    fn servers(&self) -> String {
        format!("{}/v2/servers", self.service)
    }
}

/// A protected service on loopback trusting the issuer's published keys,
/// with [`POLICY`]. Its audience is its origin.
async fn service(issuer: &str) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let keys = HttpKeys::start(
        &format!("{issuer}/.well-known/keybound/keys"),
        HttpKeysOptions::default(),
    )
    .await
    .unwrap();
    let verifier = Verifier::builder(&url, TrustedIssuer::new(issuer, keys))
        .build()
        .unwrap();
    let layer = KeyboundLayer::new(Arc::new(verifier), &url)
        .unwrap()
        .policy(Arc::new(Policy::from_toml(POLICY).unwrap()));
    let app = axum::Router::new()
        .route(
            "/v2/servers",
            axum::routing::get(|r: VerifiedRequest| async move {
                format!("servers of {} for {}\n", r.project().unwrap_or("-"), r.subject())
            })
            .post(|body: String| async move { body }),
        )
        .route("/v2/server", axum::routing::get(|| async { "unreachable" }))
        .layer(layer);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn thumbprint(key_file: &Path) -> String {
    keybound::key::read_signing_key_file(key_file)
        .unwrap()
        .public_key()
        .thumbprint()
        .to_string()
}

fn utc(unix: u64) -> String {
    // The CLI's rendering (UTC, ISO 8601), recomputed independently.
    let days = unix / 86_400;
    let (mut year, mut day) = (1970u64, days);
    let leap = |y: u64| (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400);
    while day >= if leap(year) { 366 } else { 365 } {
        day -= if leap(year) { 366 } else { 365 };
        year += 1;
    }
    let lengths = [
        31,
        if leap(year) { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    let mut month = 0;
    while day >= lengths[month] {
        day -= lengths[month];
        month += 1;
    }
    let secs = unix % 86_400;
    format!(
        "{year:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        month + 1,
        day + 1,
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

fn token_files(profile: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(profile.join("tokens"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    files
}

/// Two identities side by side: the user in the default profile (the
/// layout of sessions stored before profiles), the admin in `--profile
/// admin`, `KEYBOUND_PROFILE` choosing one too; `status` says who, where,
/// until when (UTC) and with which key; `logout` forgets.
#[test]
fn profiles_status_and_logout() {
    let s = Setup::new();
    let said = s.login(None, USER, PASSWORD);
    assert!(said.contains("profile default"), "{said}");
    s.login(Some("admin"), "admin@default", ADMIN_PASSWORD);

    // The default profile is the config directory itself, as before.
    let (user_dir, admin_dir) = (s.dir().to_owned(), s.dir().join("profiles").join("admin"));
    for dir in [&user_dir, &admin_dir] {
        assert!(dir.join("session.json").is_file(), "{}", dir.display());
        #[cfg(unix)]
        {
            assert_eq!(mode(&dir.join("session.json")), 0o600);
            assert_eq!(mode(&dir.join("key.cbor")), 0o600);
        }
    }
    #[cfg(unix)]
    {
        assert_eq!(mode(&admin_dir), 0o700, "a profile's directory is private");
        assert_eq!(mode(&s.dir().join("profiles")), 0o700);
    }
    let (user_key, admin_key) = (
        thumbprint(&user_dir.join("key.cbor")),
        thumbprint(&admin_dir.join("key.cbor")),
    );
    assert_ne!(user_key, admin_key, "each profile has its own key");

    let status: Value = serde_json::from_str(&s.ok(&["status", "--json"])).unwrap();
    assert_eq!(status["profile"], "default");
    assert_eq!(status["subject"], USER);
    assert_eq!(status["issuer"], s.issuer.url());
    assert_eq!(status["key_thumbprint"], user_key.as_str());
    assert_eq!(status["valid"], true);
    let expires = status["expires_at"].as_u64().unwrap();
    assert!(expires > SystemClock.now(), "{status}");
    assert_eq!(status["tokens"], serde_json::json!([]));

    // Text: human time, not Unix seconds.
    let text = s.ok(&["--profile", "admin", "status"]);
    assert!(text.contains("user:     admin@default"), "{text}");
    assert!(text.contains(&format!("issuer:   {}", s.issuer.url())), "{text}");
    assert!(text.contains(&admin_key), "{text}");
    let admin_status: Value = serde_json::from_str(&s.ok(&["status", "--json", "--profile", "admin"])).unwrap();
    let admin_expires = admin_status["expires_at"].as_u64().unwrap();
    assert!(
        text.contains(&format!("session:  valid until {} (in ", utc(admin_expires))),
        "{text}"
    );
    assert!(!text.contains(&admin_expires.to_string()), "{text}");

    // KEYBOUND_PROFILE chooses the profile too; both sessions work at once.
    let by_env = s.run_env(&["status", "--json"], "", &[("KEYBOUND_PROFILE", "admin")]);
    assert_eq!(
        serde_json::from_slice::<Value>(&by_env.stdout).unwrap()["subject"],
        "admin@default"
    );
    let users: Value = serde_json::from_str(&s.ok(&["--profile", "admin", "admin", "user", "list"])).unwrap();
    assert!(users.as_array().unwrap().iter().any(|u| u["user"] == USER), "{users}");
    assert_eq!(
        s.ok(&["request", &s.servers(), "--project", PROJECT]),
        format!("servers of {PROJECT} for {USER}\n")
    );
    let (code, line) = s.fails(&["admin", "user", "list"], "");
    assert_eq!(code, 1, "the user is no admin: {line}");

    let all: Value = serde_json::from_str(&s.ok(&["status", "--all", "--json"])).unwrap();
    let names: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["profile"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["default", "admin"]);
    let table = s.ok(&["status", "--all"]);
    assert!(table.contains("admin@default") && table.contains(USER), "{table}");

    // A profile name is a plain directory name.
    let (code, line) = s.fails(&["--profile", "../elsewhere", "status"], "");
    assert_eq!(code, 2);
    assert!(line.starts_with("error: cli.usage: "), "{line}");

    // A profile without a session says how to log in to it.
    let (code, line) = s.fails(&["--profile", "nobody", "status"], "");
    assert_eq!(code, 1);
    assert!(
        line.starts_with(
            "error: client.no_session: not logged in (profile nobody): run `keybound --profile nobody login"
        ),
        "{line}"
    );

    // Logout forgets the session (and the tokens), keeps the key...
    let out = s.ok(&["logout"]);
    assert!(
        out.contains(&format!("logged out of profile default ({USER} at {})", s.issuer.url())),
        "{out}"
    );
    assert!(!user_dir.join("session.json").exists());
    assert!(!user_dir.join("tokens").exists());
    assert!(user_dir.join("key.cbor").exists(), "logout alone keeps the key");
    let (code, line) = s.fails(&["status"], "");
    assert_eq!(code, 1);
    assert!(
        line.starts_with("error: client.no_session: not logged in: run `keybound login"),
        "{line}"
    );
    let (_, line) = s.fails(&["request", &s.servers()], "");
    assert!(line.starts_with("error: client.no_session:"), "{line}");
    // ... the admin's session is untouched ...
    assert!(s.ok(&["--profile", "admin", "status"]).contains("admin@default"));
    // ... and --forget-key deletes the profile's key, and the emptied profile.
    let out: Value = serde_json::from_str(&s.ok(&["--profile", "admin", "logout", "--forget-key", "--json"])).unwrap();
    assert_eq!(
        (out["logged_out"].as_bool(), out["key_deleted"].as_bool()),
        (Some(true), Some(true)),
        "{out}"
    );
    assert!(!admin_dir.exists(), "the empty profile directory is gone");
    assert!(s.ok(&["--profile", "admin", "logout"]).contains("had no session"));
    let all: Value = serde_json::from_str(&s.ok(&["status", "--all", "--json"])).unwrap();
    assert_eq!(all, serde_json::json!([]));
}

/// Two requests, one mint: the token is kept in the profile (0600) and
/// reused by the next run; it is only a cache, dropped when it is damaged,
/// for another key or another scope, and emptied by a new login.
#[test]
fn service_tokens_are_cached_between_runs() {
    let s = Setup::new();
    s.login(None, USER, PASSWORD);
    let expected = format!("servers of {PROJECT} for {USER}\n");
    let before = s.minted();
    for _ in 0..2 {
        assert_eq!(s.ok(&["request", &s.servers(), "--project", PROJECT]), expected);
    }
    assert_eq!(s.minted(), before + 1, "two requests, one mint");
    let files = token_files(s.dir());
    assert_eq!(files.len(), 1, "{files:?}");
    #[cfg(unix)]
    {
        assert_eq!(mode(&files[0]), 0o600);
        assert_eq!(mode(&s.dir().join("tokens")), 0o700);
    }
    let cached: Value = serde_json::from_str(&std::fs::read_to_string(&files[0]).unwrap()).unwrap();
    assert_eq!(cached["scope"]["audience"], s.service.as_str());

    // `token --cached` and `headers` share the cache (same scope: same token).
    let token: Value = serde_json::from_str(&s.ok(&[
        "token",
        "--audience",
        &s.service,
        "--project",
        PROJECT,
        "--json",
        "--cached",
    ]))
    .unwrap();
    assert_eq!(
        (token["cached"].as_bool(), token["token"].as_str()),
        (Some(true), cached["token"].as_str())
    );
    let headers = s.ok(&["headers", &s.servers(), "--project", PROJECT]);
    assert!(
        headers.contains(&format!("KB {}", cached["token"].as_str().unwrap())),
        "{headers}"
    );
    assert_eq!(s.minted(), before + 1);

    // `status` lists it, with its scope and human expiry.
    let status = s.ok(&["status"]);
    let expires = cached["expires_at"].as_u64().unwrap();
    assert!(
        status.contains(&utc(expires)) && status.contains(&s.service),
        "{status}"
    );
    assert!(status.contains(&format!("project {PROJECT}")), "{status}");

    // Another scope is another token.
    assert_eq!(
        s.ok(&["request", &s.servers(), "--project", PROJECT, "--roles", "member"]),
        expected
    );
    assert_eq!(s.minted(), before + 2);
    assert_eq!(token_files(s.dir()).len(), 2);

    // A damaged file is dropped and replaced.
    std::fs::write(&files[0], "{ not json").unwrap();
    assert_eq!(s.ok(&["request", &s.servers(), "--project", PROJECT]), expected);
    assert_eq!(s.minted(), before + 3);
    let replaced: Value = serde_json::from_str(&std::fs::read_to_string(&files[0]).unwrap()).unwrap();
    assert_ne!(replaced["token"], cached["token"]);

    // A file that claims a later expiry than its token is not believed.
    let mut stretched = replaced.clone();
    stretched["expires_at"] = (expires + 3600).into();
    std::fs::write(&files[0], stretched.to_string()).unwrap();
    s.ok(&["request", &s.servers(), "--project", PROJECT]);
    assert_eq!(s.minted(), before + 4);

    // A token for another key (the same user in another profile) is not used.
    s.login(Some("laptop"), USER, PASSWORD);
    let laptop = s.dir().join("profiles").join("laptop");
    std::fs::create_dir_all(laptop.join("tokens")).unwrap();
    let name = files[0].file_name().unwrap();
    std::fs::copy(&files[0], laptop.join("tokens").join(name)).unwrap();
    assert_eq!(
        s.ok(&["--profile", "laptop", "request", &s.servers(), "--project", PROJECT]),
        expected
    );
    assert_eq!(s.minted(), before + 5, "the copied token is bound to another key");
    let kept: Value =
        serde_json::from_str(&std::fs::read_to_string(laptop.join("tokens").join(name)).unwrap()).unwrap();
    assert_eq!(kept["key_thumbprint"], thumbprint(&laptop.join("key.cbor")).as_str());

    // `token` itself always asks the issuer (a trust deleted or a role
    // revoked shows at once), and keeps what it got for the requests.
    let fresh: Value =
        serde_json::from_str(&s.ok(&["token", "--audience", &s.service, "--project", PROJECT, "--json"])).unwrap();
    assert_eq!(fresh["cached"], false);
    assert_eq!(s.minted(), before + 6);
    let on_disk: Value = serde_json::from_str(&std::fs::read_to_string(&files[0]).unwrap()).unwrap();
    assert_eq!(on_disk["token"], fresh["token"]);
    s.ok(&["request", &s.servers(), "--project", PROJECT]);
    assert_eq!(s.minted(), before + 6);

    // A new login forgets the tokens of the session it replaces.
    s.login(None, USER, PASSWORD);
    assert!(token_files(s.dir()).is_empty());
}

/// `request -v` shows the credentials it sent, which `keybound verify`
/// accepts as they are, and the answer's head; a refusal's problem details
/// go to stdout, like curl -i.
#[test]
fn request_verbose_feeds_verify() {
    let s = Setup::new();
    s.login(None, USER, PASSWORD);
    let out = s.run(&["request", "-v", &s.servers(), "--project", PROJECT], "");
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("servers of {PROJECT} for {USER}\n")
    );
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.starts_with(&format!("> GET {}\n", s.servers())), "{stderr}");
    assert!(stderr.contains("< HTTP/1.1 200 OK\n"), "{stderr}");
    let value = |prefix: &str| {
        stderr
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no {prefix}: {stderr}"))
            .to_owned()
    };
    let token = value("> Authorization: KB ");
    let proof = value("> KB-Proof: ");
    let keys = format!("{}/.well-known/keybound/keys", s.issuer.url());
    let verify = |uri: &str| {
        let out = s.run(
            &[
                "verify",
                "--keys",
                &keys,
                "--audience",
                &s.service,
                "--issuer",
                s.issuer.url(),
                "--method",
                "GET",
                "--uri",
                uri,
                "--token",
                &token,
                "--proof",
                &proof,
            ],
            "",
        );
        (out.status.code(), serde_json::from_slice::<Value>(&out.stdout).unwrap())
    };
    let (code, valid) = verify(&s.servers());
    assert_eq!(
        (code, valid["result"].as_str(), valid["sub"].as_str()),
        (Some(0), Some("valid"), Some(USER))
    );
    let (code, invalid) = verify(&format!("{}/v2/other", s.service));
    assert_eq!((code, invalid["error"].as_str()), (Some(1), Some("proof.htu_mismatch")));

    // A refusal: the problem details on stdout, the code on the last line.
    let out = s.run(
        &[
            "request",
            "-v",
            &format!("{}/v2/server", s.service),
            "--project",
            PROJECT,
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let problem: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(problem["code"], "policy.denied");
    assert_eq!(problem["status"], 403);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("< HTTP/1.1 403 Forbidden\n"), "{stderr}");
    assert!(
        stderr.contains("< www-authenticate: KB error=\"policy.denied\"\n"),
        "{stderr}"
    );
    assert_eq!(
        stderr.lines().last(),
        Some("error: policy.denied: no rule for GET /v2/server")
    );
}

/// `keybound headers` prints the two header lines of spec/http.md §3 for
/// another HTTP client (curl, here reqwest): they work for exactly the
/// method, URL and body they were made for, and the audience defaults to
/// the URL's origin.
#[test]
fn headers_serve_another_http_client() {
    let s = Setup::new();
    s.login(None, USER, PASSWORD);
    let send = |method: reqwest::Method, url: &str, body: &'static str, headers: &str| {
        let request = headers.lines().fold(
            reqwest::Client::new().request(method, url).body(body),
            |request, line| {
                let (name, value) = line.split_once(": ").unwrap();
                request.header(name, value)
            },
        );
        s.rt.block_on(async {
            let response = request.send().await.unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        })
    };
    let printed = s.ok(&["headers", &s.servers(), "--project", PROJECT]);
    let lines: Vec<&str> = printed.lines().collect();
    assert_eq!(lines.len(), 2, "{printed}");
    assert!(lines[0].starts_with("Authorization: KB "), "{printed}");
    assert!(lines[1].starts_with("KB-Proof: "), "{printed}");
    let token = keybound::encoding::b64url_decode(lines[0].strip_prefix("Authorization: KB ").unwrap()).unwrap();
    let claims = keybound::danger::insecure_decode_token(&token).unwrap().claims;
    assert_eq!(claims.aud, s.service, "the audience is the URL's origin");
    assert_eq!(
        send(reqwest::Method::GET, &s.servers(), "", &printed),
        (200, format!("servers of {PROJECT} for {USER}\n"))
    );
    // A proof is for one request: sent again, it is a replay.
    let (status, again) = send(reqwest::Method::GET, &s.servers(), "", &printed);
    assert_eq!(status, 401, "{again}");
    assert!(again.contains("replay.detected"), "{again}");

    // With a body: the proof covers it, so only that body goes.
    let body = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(body.path(), "{\"name\":\"vm1\"}").unwrap();
    let data = format!("@{}", body.path().display());
    let printed = s.ok(&["headers", "-X", "POST", "-d", &data, &s.servers(), "--project", PROJECT]);
    let (status, answer) = send(reqwest::Method::POST, &s.servers(), "{\"name\":\"vm2\"}", &printed);
    assert_eq!(status, 401, "{answer}");
    assert!(answer.contains("proof.body_mismatch"), "{answer}");
    let printed = s.ok(&["headers", "-X", "POST", "-d", &data, &s.servers(), "--project", PROJECT]);
    let (status, answer) = send(reqwest::Method::POST, &s.servers(), "{\"name\":\"vm1\"}", &printed);
    // Creating servers needs `admin`: refused by the policy, after the proof passed.
    assert_eq!(status, 403, "{answer}");
    assert!(answer.contains("for the roles in your token"), "{answer}");
}

/// The errors users meet, each saying what to do instead.
#[test]
fn errors_say_what_to_do() {
    let s = Setup::new();
    // localhost typed for an issuer whose id is 127.0.0.1: the message names the id.
    let id = s.issuer.url().to_owned();
    let localhost = id.replace("127.0.0.1", "localhost");
    let (code, line) = s.fails(
        &["login", "--issuer", &localhost, "--user", USER, "--password-stdin"],
        &format!("{PASSWORD}\n"),
    );
    assert_eq!(code, 1);
    assert!(line.starts_with("error: proof.htu_mismatch: "), "{line}");
    assert!(line.contains(&format!("signed for {localhost}/v1/login")), "{line}");
    assert!(line.contains(&format!("the issuer's id is {id}")), "{line}");
    assert!(line.contains(&format!("use {id} as the issuer URL")), "{line}");
    assert!(!s.dir().join("session.json").exists());

    // URLs without a scheme are usage errors, before anything is sent.
    for args in [
        vec!["login", "--issuer", "127.0.0.1:8080", "--user", USER],
        vec!["login", "--issuer", "localhost:8080", "--user", USER],
        vec!["request", "127.0.0.1:8081/v2/servers"],
        vec!["headers", "nova.example/v2/servers"],
        vec![
            "verify",
            "--keys",
            "k",
            "--audience",
            "a",
            "--issuer",
            "i",
            "--method",
            "GET",
            "--uri",
            "x/y",
            "--token",
            "t",
        ],
    ] {
        let (code, line) = s.fails(&args, "");
        assert_eq!(code, 2, "{args:?}: {line}");
        assert!(line.starts_with("error: cli.usage: "), "{args:?}: {line}");
        assert!(line.contains("http://"), "says what to write: {line}");
    }

    // A file argument that does not exist is a missing file, not a token.
    let missing = s.dir().join("token.b64");
    let keys = format!("{id}/.well-known/keybound/keys");
    let (code, line) = s.fails(
        &[
            "verify",
            "--keys",
            &keys,
            "--audience",
            "https://nova.example",
            "--issuer",
            &id,
            "--method",
            "GET",
            "--uri",
            "https://nova.example/",
            "--token",
            missing.to_str().unwrap(),
        ],
        "",
    );
    assert_eq!(code, 2);
    assert_eq!(
        line,
        format!("error: cli.io: --token: file not found: {}", missing.display())
    );
    let (code, line) = s.fails(&["inspect", missing.to_str().unwrap()], "");
    assert_eq!(
        (code, line),
        (2, format!("error: cli.io: file not found: {}", missing.display()))
    );

    // A policy with no rule for the action says so; a missing role says that.
    s.login(None, USER, PASSWORD);
    let (code, line) = s.fails(
        &["request", &format!("{}/v2/server", s.service), "--project", PROJECT],
        "",
    );
    assert_eq!(
        (code, line.as_str()),
        (1, "error: policy.denied: no rule for GET /v2/server")
    );
    let (code, line) = s.fails(&["request", "-X", "POST", &s.servers(), "--project", PROJECT], "");
    assert_eq!(code, 1);
    assert_eq!(
        line,
        "error: policy.denied: the service's policy does not allow this action for the roles in your token"
    );
    let (_, line) = s.fails(
        &[
            "request",
            &s.servers(),
            "--project",
            PROJECT,
            "-d",
            "@/no/such/body.json",
        ],
        "",
    );
    assert_eq!(line, "error: cli.io: --data: file not found: /no/such/body.json");
}
