//! Learning from decision records (spec/delegation.md §8.3, §9.5–9.7): two
//! permissive services on loopback (Glance and Cinder, each with its own
//! policy and record file) see one workflow run, and `keybound policy
//! report` and `keybound policy learn`, run as the built binary, read what
//! they wrote.
#![cfg(all(feature = "http", feature = "cli"))]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use keybound::delegation::workplan::Workplan;
use keybound::encoding::b64url_encode;
use keybound::http::KeyboundLayer;
use keybound::key::{Algorithm, KeySet, SigningKey};
use keybound::policy::{JsonLinesFile, Policy};
use keybound::proof::ProofBuilder;
use keybound::token::{Actor, Token, TokenBuilder};
use keybound::verify::{ManualClock, MemoryReplayStore, TrustedIssuer, Verifier};
use serde_json::{Value, json};

const ISSUER: &str = "https://issuer.example";
const GLANCE: &str = "https://glance.example";
const CINDER: &str = "https://cinder.example";
const NOW: u64 = 1_763_800_000;
const USER: &str = "ayoung@stoughton";
const NOVA: &str = "nova-compute@service";

/// The seed's split of Glance: `reader` reads, `writer` uploads, `admin` everything.
const GLANCE_POLICY: &str = r#"
mode = "permissive"
delegated = "allow"
[[rule]]
name = "read images"
method = "GET"
path = "/v2/images/**"
roles = ["reader", "admin"]
[[rule]]
name = "upload image"
method = "POST"
path = "/v2/images"
roles = ["writer", "admin"]
[[rule]]
name = "change image"
method = "PUT"
path = "/v2/images/**"
roles = ["writer", "admin"]
[[rule]]
name = "delete image"
method = "DELETE"
path = "/v2/images/**"
roles = ["writer", "admin"]
"#;

const CINDER_POLICY: &str = r#"
mode = "permissive"
[[rule]]
name = "create volume"
method = "POST"
path = "/volumes"
roles = ["member", "admin"]
delegated = "allow"
actors = ["nova-compute@service"]
[[rule]]
name = "list volumes"
method = "GET"
path = "/volumes"
roles = ["reader", "member", "admin"]
"#;

struct World {
    issuer: SigningKey,
    kid: Vec<u8>,
    client: SigningKey,
}

impl World {
    fn new() -> Self {
        let issuer = SigningKey::derive(Algorithm::EdDSA, b"policy learn", b"issuer").unwrap();
        World {
            kid: issuer.public_key().default_kid(),
            issuer,
            client: SigningKey::derive(Algorithm::EdDSA, b"policy learn", b"client").unwrap(),
        }
    }

    /// A token for `audience`; delegated (through nova-compute) when `delegated`.
    fn token(&self, audience: &str, roles: &[&str], delegated: bool) -> Token {
        let mut builder = TokenBuilder::service(ISSUER, USER, audience, self.client.public_key().clone(), NOW - 5)
            .scope("stoughton", "turing")
            .roles(roles.iter().copied());
        if delegated {
            builder = builder.trust_id("2Qf3mV0cZ8bq1Xo4yT6wUg").actor_chain(vec![Actor {
                sub: NOVA.to_owned(),
                iss: None,
            }]);
        }
        builder.sign(&self.issuer, &self.kid).unwrap()
    }

    /// A service at `audience` with `policy`, recording to `records`.
    async fn serve(&self, audience: &str, policy: &str, records: &Path) -> String {
        let keys = KeySet::new()
            .with(self.kid.clone(), self.issuer.public_key().clone())
            .unwrap();
        let verifier = Verifier::builder(audience, TrustedIssuer::with_keys(ISSUER, keys))
            .clock(Arc::new(ManualClock::new(NOW)))
            .replay_store(Arc::new(MemoryReplayStore::default().fenced_at(NOW - 3600)))
            .build()
            .unwrap();
        let layer = KeyboundLayer::new(Arc::new(verifier), audience)
            .unwrap()
            .policy(Arc::new(Policy::from_toml(policy).unwrap()))
            .records(Arc::new(JsonLinesFile::open(records).unwrap()));
        let ok = || async { "ok" };
        let app = Router::new()
            .route("/v2/images", get(ok).post(ok))
            .route("/v2/images/{id}", get(ok).put(ok))
            .route("/v2/images/{id}/file", get(ok))
            .route("/v2/secret", get(ok))
            .route("/volumes", get(ok).post(ok))
            .layer(layer);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("http://{addr}")
    }

    /// `method path` at the service `base` (audience `audience`), with a
    /// proof and, if given, a `KB-Workflow` header; permissive services
    /// answer 200 whatever the policy says.
    async fn send(&self, base: &str, audience: &str, method: &str, path: &str, token: &Token, workflow: Option<&str>) {
        let proof = ProofBuilder::new(method, &format!("{audience}{path}"), token.as_bytes(), b"", NOW - 1)
            .unwrap()
            .sign(&self.client)
            .unwrap();
        let mut request = reqwest::Client::new()
            .request(method.parse().unwrap(), format!("{base}{path}"))
            .header("authorization", format!("KB {}", token.to_base64url()))
            .header("kb-proof", b64url_encode(proof.as_bytes()));
        if let Some(workflow) = workflow {
            request = request.header("kb-workflow", workflow);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200, "{method} {path}");
    }
}

/// Waits until the writer thread has written `lines` lines to `path`.
async fn wait_for_lines(path: &Path, lines: usize) {
    for _ in 0..200 {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.lines().count() >= lines {
            assert_eq!(text.lines().count(), lines, "{text}");
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("{} never got {lines} records", path.display());
}

/// One run of workflow `deploy-1` and some noise, on Glance and Cinder.
/// Returns the two record files.
async fn record_a_run(dir: &Path) -> (PathBuf, PathBuf) {
    let world = World::new();
    let (glance_records, cinder_records) = (dir.join("glance.jsonl"), dir.join("cinder.jsonl"));
    let glance = world.serve(GLANCE, GLANCE_POLICY, &glance_records).await;
    let cinder = world.serve(CINDER, CINDER_POLICY, &cinder_records).await;
    let run = Some("deploy-1");
    // The user's own request: list images.
    let own = world.token(GLANCE, &["member", "reader"], false);
    world.send(&glance, GLANCE, "GET", "/v2/images", &own, run).await;
    // nova-compute, with a broad trust, reads the image (and never writes)…
    let broad = ["admin", "member", "reader", "writer"];
    let nova_glance = world.token(GLANCE, &broad, true);
    world
        .send(&glance, GLANCE, "GET", "/v2/images/42", &nova_glance, run)
        .await;
    world
        .send(&glance, GLANCE, "GET", "/v2/images/42/file", &nova_glance, run)
        .await;
    // …asks for something no rule names…
    world
        .send(&glance, GLANCE, "GET", "/v2/secret", &nova_glance, run)
        .await;
    // …and creates a volume.
    let nova_cinder = world.token(CINDER, &broad, true);
    world.send(&cinder, CINDER, "POST", "/volumes", &nova_cinder, run).await;
    // Another workflow: the user tries an upload without `writer`.
    world
        .send(&glance, GLANCE, "POST", "/v2/images", &own, Some("other"))
        .await;
    // No workflow at all, and a header that is not a workflow id.
    let own_cinder = world.token(CINDER, &["member", "reader"], false);
    world.send(&cinder, CINDER, "GET", "/volumes", &own_cinder, None).await;
    world
        .send(&cinder, CINDER, "GET", "/volumes", &own_cinder, Some("a b"))
        .await;
    wait_for_lines(&glance_records, 5).await;
    wait_for_lines(&cinder_records, 3).await;
    (glance_records, cinder_records)
}

fn keybound(args: &[&str]) -> std::process::Output {
    std::process::Command::new(assert_cmd::cargo::cargo_bin!("keybound"))
        .args(args)
        .output()
        .unwrap()
}

fn ok_json(args: &[&str]) -> Value {
    let out = keybound(args);
    assert!(
        out.status.success(),
        "keybound {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn policy_files(dir: &Path) -> (String, String) {
    std::fs::write(dir.join("glance.toml"), GLANCE_POLICY).unwrap();
    std::fs::write(dir.join("cinder.toml"), CINDER_POLICY).unwrap();
    (
        format!("{GLANCE}={}", dir.join("glance.toml").display()),
        format!("{CINDER}={}", dir.join("cinder.toml").display()),
    )
}

/// The records a permissive service writes: every decision, with the
/// workflow of its KB-Workflow header (or null), the rule, the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permissive_services_record_every_decision_with_its_workflow() {
    let dir = tempfile::tempdir().unwrap();
    let (glance, cinder) = record_a_run(dir.path()).await;
    let read = |path: &Path| -> Vec<Value> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let glance = read(&glance);
    let outcomes: Vec<(&str, &str, &Value)> = glance
        .iter()
        .map(|r| {
            (
                r["outcome"].as_str().unwrap(),
                r["workflow"].as_str().unwrap(),
                &r["reason"],
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            ("allow", "deploy-1", &Value::Null),
            ("allow", "deploy-1", &Value::Null),
            ("allow", "deploy-1", &Value::Null),
            ("would_deny", "deploy-1", &json!("no_rule_matched")),
            ("would_deny", "other", &json!("missing_role")),
        ]
    );
    let nova = &glance[1];
    assert_eq!(nova["event"], "policy_decision");
    assert_eq!(nova["mode"], "permissive");
    assert_eq!(nova["audience"], GLANCE);
    assert_eq!(nova["subject"], USER);
    assert_eq!(nova["actors"], json!([NOVA]));
    assert_eq!(nova["trust_id"], "2Qf3mV0cZ8bq1Xo4yT6wUg");
    assert_eq!(nova["rule"], "read images");
    assert_eq!(nova["roles_allowing"], json!(["reader", "admin"]));
    assert_eq!(nova["action"], json!({"method": "GET", "path": "/v2/images/42"}));
    assert_eq!(
        (nova["domain"].as_str(), nova["project"].as_str()),
        (Some("stoughton"), Some("turing"))
    );
    let cinder = read(&cinder);
    let workflows: Vec<&Value> = cinder.iter().map(|r| &r["workflow"]).collect();
    assert_eq!(workflows, [&json!("deploy-1"), &Value::Null, &Value::Null]);
}

/// The seed's case: nova-compute only read from Glance, so the workplan
/// gives it `reader` there — not `writer`, not `admin` (which also allows
/// every read: the tie-break by rules opened) — and `member` on Cinder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learn_gives_nova_compute_reader_on_glance_never_writer() {
    let dir = tempfile::tempdir().unwrap();
    let (glance, cinder) = record_a_run(dir.path()).await;
    let (glance_policy, cinder_policy) = policy_files(dir.path());
    let (g, c) = (glance.to_str().unwrap(), cinder.to_str().unwrap());
    let learned = ok_json(&[
        "policy",
        "learn",
        g,
        c,
        "--workflow",
        "deploy-1",
        "--policy",
        &glance_policy,
        "--policy",
        &cinder_policy,
        "--json",
    ]);
    assert_eq!(learned["decisions"], 5);
    assert_eq!(
        learned["hops"],
        json!([
            {"trustee": NOVA, "audience": CINDER, "project": "turing@stoughton", "roles": ["member"], "requests": 1},
            {"trustee": NOVA, "audience": GLANCE, "project": "turing@stoughton", "roles": ["reader"], "requests": 2},
        ])
    );
    assert_eq!(
        learned["assignments"],
        json!([{"subject": USER, "project": "turing@stoughton", "roles": ["reader"], "requests": 1}])
    );
    // Reported, not dropped: no role would allow GET /v2/secret.
    assert_eq!(
        learned["unallowable"],
        json!([{"audience": GLANCE, "action": {"method": "GET", "path": "/v2/secret"}, "subject": USER,
                "actor": NOVA, "rule": null, "reason": "no_rule_matched", "requests": 1}])
    );
    let plan = Workplan::parse(learned["workplan"].as_str().unwrap()).unwrap();
    assert_eq!(plan.name.as_str(), "deploy-1");
    let hops: Vec<(String, &str, Vec<&str>)> = plan
        .delegations
        .iter()
        .map(|d| {
            (
                d.trustee.to_string(),
                d.audience.as_str(),
                d.roles.iter().map(|r| r.as_str()).collect(),
            )
        })
        .collect();
    assert_eq!(
        hops,
        [
            (NOVA.to_owned(), CINDER, vec!["member"]),
            (NOVA.to_owned(), GLANCE, vec!["reader"])
        ]
    );

    // For people: the plan on stdout (or --out), the summary on stderr;
    // the plan passes `workplan check`.
    let out_file = dir.path().join("plan.toml");
    let out = keybound(&[
        "policy",
        "learn",
        g,
        c,
        "--workflow",
        "deploy-1",
        "--policy",
        &glance_policy,
        "--policy",
        &cinder_policy,
        "--name",
        "deploy-instance",
        "--out",
        out_file.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0));
    let summary = String::from_utf8(out.stderr).unwrap();
    assert!(
        summary.contains(&format!("{NOVA} at {GLANCE} on turing@stoughton: reader (2 requests)")),
        "{summary}"
    );
    assert!(summary.contains("requests no role would allow"), "{summary}");
    assert!(
        summary.contains("GET /v2/secret by ayoung@stoughton via nova-compute@service: no_rule_matched"),
        "{summary}"
    );
    let check = keybound(&["workplan", "check", out_file.to_str().unwrap()]);
    assert_eq!(
        check.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(
        String::from_utf8(check.stdout)
            .unwrap()
            .contains("valid workplan deploy-instance with 2 delegations")
    );
}

/// `policy report`: per audience and rule; the no-rule row apart from the
/// missing-role one; only real would-denies counted as such.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_tells_no_rule_matched_from_missing_roles() {
    let dir = tempfile::tempdir().unwrap();
    let (glance, cinder) = record_a_run(dir.path()).await;
    let (g, c) = (glance.to_str().unwrap(), cinder.to_str().unwrap());
    let report = ok_json(&["policy", "report", "--json", g, c]);
    assert_eq!(report["decisions"], 8);
    let audiences: Vec<&str> = report["audiences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["audience"].as_str().unwrap())
        .collect();
    assert_eq!(audiences, [CINDER, GLANCE]);
    let rules = &report["audiences"][1]["rules"];
    let row = |name: Value| {
        rules
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["rule"] == name)
            .unwrap()
            .clone()
    };
    let read = row(json!("read images"));
    assert_eq!(
        (
            read["requests"].as_u64(),
            read["allowed"].as_u64(),
            read["would_deny"].as_u64()
        ),
        (Some(3), Some(3), Some(0))
    );
    assert_eq!(read["missing_roles"], json!([]));
    assert_eq!(read["actors"], json!([NOVA]));
    assert_eq!(
        read["roles"]["reader"],
        json!({"requests": 3, "would_deny": 0, "denied": 0})
    );
    let upload = row(json!("upload image"));
    assert_eq!(
        (upload["would_deny"].as_u64(), upload["denied"].as_u64()),
        (Some(1), Some(0))
    );
    assert_eq!(upload["reasons"], json!({"missing_role": 1}));
    assert_eq!(upload["missing_roles"], json!(["admin", "writer"]));
    assert_eq!(upload["subjects"], json!([USER]));
    let unmatched = row(Value::Null);
    assert_eq!(unmatched["reasons"], json!({"no_rule_matched": 1}));
    assert_eq!(unmatched["missing_roles"], json!([]));
    // The requests no rule matched come last, after the rules.
    assert!(rules.as_array().unwrap().last().unwrap()["rule"].is_null());

    // One workflow only.
    let one = ok_json(&["policy", "report", "--json", "--workflow", "other", g, c]);
    assert_eq!(one["decisions"], 1);

    // The table for people.
    let out = keybound(&["policy", "report", g, c]);
    assert_eq!(out.status.code(), Some(0));
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(
        table.starts_with("8 decision records (0 other events, 0 malformed lines skipped)"),
        "{table}"
    );
    assert!(table.contains("WOULD DENY"), "{table}");
    let line = |rule: &str| {
        table
            .lines()
            .find(|l| l.trim_start().starts_with(rule))
            .unwrap()
            .to_owned()
    };
    assert!(line("(no rule matched)").contains("no_rule_matched 1"), "{table}");
    assert!(line("upload image").contains("missing_role 1"), "{table}");
    assert!(line("upload image").contains("admin, writer"), "{table}");
    // Allowed rows carry no would-deny label or reason.
    assert!(!line("read images").contains("missing_role"), "{table}");
}

/// A malformed line stops report and learn with its file and line, or is
/// counted with --skip-bad; a missing --policy or workflow is a usage error;
/// an unknown workflow is policy.learn_empty, and so is a label given as a
/// slip's workflow id (labels never match ids).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_records_missing_policies_and_unknown_workflows_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (glance, cinder) = record_a_run(dir.path()).await;
    let (glance_policy, cinder_policy) = policy_files(dir.path());
    let mut text = std::fs::read_to_string(&glance).unwrap();
    text.push_str("{\"event\": \"policy_decision\", \"time\": \"yesterday\"}\nnot json at all\n");
    std::fs::write(&glance, text).unwrap();
    let (g, c) = (glance.to_str().unwrap(), cinder.to_str().unwrap());
    for args in [
        vec!["policy", "report", g, c],
        vec![
            "policy",
            "learn",
            g,
            c,
            "--workflow",
            "deploy-1",
            "--policy",
            &glance_policy,
            "--policy",
            &cinder_policy,
        ],
    ] {
        let out = keybound(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(
            stderr.starts_with(&format!(
                "error: policy.record_invalid: {g} line 6: not a decision record"
            )),
            "{stderr}"
        );
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        let mut skipping = args.clone();
        skipping.extend(["--skip-bad", "--json"]);
        let json = ok_json(&skipping);
        assert_eq!(json["skipped"], 2, "{args:?}");
    }
    let out = keybound(&[
        "policy",
        "learn",
        g,
        c,
        "--workflow",
        "deploy-1",
        "--skip-bad",
        "--policy",
        &glance_policy,
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.starts_with("error: cli.usage: no policy for audience https://cinder.example"),
        "{stderr}"
    );
    let out = keybound(&[
        "policy",
        "learn",
        g,
        "--workflow",
        "nope",
        "--skip-bad",
        "--policy",
        &glance_policy,
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .starts_with("error: policy.learn_empty: ")
    );
    let learn = |workflow: &[&str]| {
        let mut args = vec![
            "policy",
            "learn",
            g,
            c,
            "--skip-bad",
            "--policy",
            &glance_policy,
            "--policy",
            &cinder_policy,
        ];
        args.extend(workflow);
        keybound(&args)
    };
    let by_id = learn(&["--workflow-id", "deploy-1"]);
    assert_eq!(by_id.status.code(), Some(1));
    let stderr = String::from_utf8(by_id.stderr).unwrap();
    assert!(
        stderr.starts_with("error: policy.learn_empty: no decision record of workflow id deploy-1"),
        "{stderr}"
    );
    let neither = learn(&[]);
    assert_eq!(neither.status.code(), Some(2));
    let stderr = String::from_utf8(neither.stderr).unwrap();
    assert!(stderr.contains("--workflow LABEL or --workflow-id ID"), "{stderr}");
    assert_eq!(
        learn(&["--workflow", "deploy-1", "--workflow-id", "x"]).status.code(),
        Some(2)
    );
}
