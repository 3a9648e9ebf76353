//! `keybound trust …` and `keybound token --trust` against a real issuer on
//! loopback: the trustor delegates, the trustee mints a delegated token,
//! the trustor deletes the trust and the next mint is refused.
#![cfg(all(feature = "cli", feature = "issuer"))]

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

use keybound::issuer::loopback::{LoopbackIssuer, World};
use keybound::verify::SystemClock;
use serde_json::{Value, json};

use crate::common;

const ADMIN_PASSWORD: &str = "bootstrap-password-1";
const PASSWORD: &str = "correct horse battery";

fn keybound(config: &Path, args: &[&str], stdin: &str) -> Output {
    use std::io::Write;
    let mut child = Command::new(assert_cmd::cargo::cargo_bin!("keybound"))
        .args(args)
        .env("KEYBOUND_CONFIG_DIR", config)
        .env_remove("KEYBOUND_PASSWORD")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    child.wait_with_output().unwrap()
}

async fn run(config: &Path, args: &[&str], stdin: &str) -> Output {
    let (config, args, stdin) = (
        config.to_owned(),
        args.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        stdin.to_owned(),
    );
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        keybound(&config, &args, &stdin)
    })
    .await
    .unwrap()
}

async fn ok_json(config: &Path, args: &[&str], stdin: &str) -> Value {
    let out = run(config, args, stdin).await;
    assert!(
        out.status.success(),
        "keybound {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// An issuer with ayoung@stoughton (member on turing) and heat@service,
/// both logged in through the CLI, each with a config directory.
async fn logged_in() -> (LoopbackIssuer, tempfile::TempDir, tempfile::TempDir, tempfile::TempDir) {
    let (issuer, _dir): (LoopbackIssuer, _) = common::start_issuer(ADMIN_PASSWORD, Arc::new(SystemClock), |_| {}).await;
    let admin = issuer.admin(ADMIN_PASSWORD).await.unwrap();
    issuer
        .create_world(
            &admin,
            &World {
                password: PASSWORD,
                services: &["https://nova.example"],
            },
        )
        .await
        .unwrap();
    for (path, body) in [
        ("/v1/admin/domains", json!({"name": "service"})),
        (
            "/v1/admin/users",
            json!({"user": "heat@service", "kind": "service", "password": PASSWORD}),
        ),
    ] {
        let response = admin
            .request(
                reqwest::Method::POST,
                &format!("{}{path}", issuer.url()),
                &issuer.admin_scope(),
            )
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{path}");
    }
    let (ayoung, heat) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let url = issuer.url().to_owned();
    for (dir, user) in [(&ayoung, "ayoung@stoughton"), (&heat, "heat@service")] {
        let out = run(
            dir.path(),
            &["login", "--issuer", &url, "--user", user, "--password-stdin"],
            &format!("{PASSWORD}\n"),
        )
        .await;
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    (issuer, _dir, ayoung, heat)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_commands_delegate_mint_and_delete() {
    let (_issuer, _dir, ayoung, heat) = logged_in().await;
    let trust = ok_json(
        ayoung.path(),
        &[
            "trust",
            "create",
            "--trustee",
            "heat@service",
            "--project",
            "turing",
            "--roles",
            "member",
            "--lifetime",
            "3600",
            "--uses",
            "5",
            "--audience",
            "https://nova.example",
            "--json",
        ],
        "",
    )
    .await;
    let id = trust["id"].as_str().unwrap().to_owned();
    assert_eq!(trust["remaining_uses"], 5);
    assert_eq!(trust["audiences"], json!(["https://nova.example"]));
    assert_eq!(
        ok_json(ayoung.path(), &["trust", "list", "--json"], "").await,
        json!([trust.clone()])
    );
    assert_eq!(ok_json(heat.path(), &["trust", "show", &id, "--json"], "").await, trust);
    // Without --json: text for people, times in UTC.
    let out = run(heat.path(), &["trust", "show", &id], "").await;
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("trustee       heat@service"), "{text}");
    assert!(text.contains("audiences     https://nova.example"), "{text}");
    assert!(text.contains("uses left     5"), "{text}");
    let expires = text.lines().find(|l| l.starts_with("expires")).unwrap();
    assert!(expires.ends_with('Z') && expires.contains('T'), "{expires}");
    let out = run(ayoung.path(), &["trust", "list"], "").await;
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.starts_with("ID") && table.contains(&id), "{table}");
    let token = ok_json(
        heat.path(),
        &["token", "--audience", "https://nova.example", "--trust", &id, "--json"],
        "",
    )
    .await;
    assert_eq!(token["subject"], "ayoung@stoughton");
    assert_eq!(token["trust"], id);
    assert_eq!(token["actors"], json!(["heat@service"]));
    assert_eq!(token["roles"], json!(["member"]));
    // The trustee cannot delete it; the trustor can.
    let out = run(heat.path(), &["trust", "delete", &id], "").await;
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("error: issuer.forbidden"));
    let deleted = ok_json(ayoung.path(), &["trust", "delete", &id, "--json"], "").await;
    assert_eq!(deleted, json!({"id": id, "deleted": true}));
    let out = run(
        heat.path(),
        &["token", "--audience", "https://nova.example", "--trust", &id],
        "",
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("error: trust.not_found"), "{stderr}");
    // --trust and --project do not go together.
    let out = run(
        heat.path(),
        &[
            "token",
            "--audience",
            "https://nova.example",
            "--trust",
            &id,
            "--project",
            "turing",
        ],
        "",
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn trust_help_explains_and_gives_examples() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["trust", "--help"][..],
        &["trust", "create", "--help"],
        &["trust", "list", "--help"],
        &["trust", "show", "--help"],
        &["trust", "delete", "--help"],
        &["token", "--help"],
    ] {
        let out = keybound(dir.path(), args, "");
        assert!(out.status.success(), "{args:?}");
        let help = String::from_utf8(out.stdout).unwrap();
        assert!(help.contains("Example"), "{args:?}: {help}");
        assert!(
            help.contains("keybound trust") || help.contains("--trust"),
            "{args:?}: {help}"
        );
    }
}

/// `keybound workplan run`: the user runs a plan file; every trust of it is
/// created (each for its hop's service) and the slip printed; a plan asking
/// for a role the user does not hold creates nothing and names the role.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workplan_run_creates_the_plans_trusts_and_prints_the_slip() {
    let (_issuer, _dir, ayoung, _heat) = logged_in().await;
    let plan = |roles: &str| {
        format!(
            "version = 1\nname = \"heat-stack\"\ndescription = \"Heat acts on nova\"\n\n\
             [[delegation]]\ntrustee = \"heat@service\"\naudience = \"https://nova.example\"\n\
             roles = [{roles}]\nlifetime = 3600\nuses = 5\n"
        )
    };
    let file = ayoung.path().join("plan.toml");
    std::fs::write(&file, plan("\"writer\"")).unwrap();
    let path = file.to_str().unwrap();
    let out = run(ayoung.path(), &["workplan", "run", path, "--project", "turing"], "").await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("error: issuer.role_not_held") && stderr.contains("writer"),
        "{stderr}"
    );
    assert_eq!(
        ok_json(ayoung.path(), &["trust", "list", "--json"], "").await,
        json!([])
    );
    std::fs::write(&file, plan("\"member\"")).unwrap();
    let ran = ok_json(
        ayoung.path(),
        &["workplan", "run", path, "--project", "turing@stoughton", "--json"],
        "",
    )
    .await;
    assert_eq!(ran["workflow"], "heat-stack");
    assert_eq!(ran["trusts"][0]["trustee"], "heat@service");
    assert_eq!(ran["trusts"][0]["audiences"], json!(["https://nova.example"]));
    assert_eq!(ran["trusts"][0]["remaining_uses"], 5);
    assert!(ran["slip"].as_str().unwrap().len() > 100);
    // Text for people ends with the header to send.
    let out = run(ayoung.path(), &["workplan", "run", path, "--project", "turing"], "").await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("ran workplan heat-stack on turing@stoughton"),
        "{text}"
    );
    assert!(text.lines().last().unwrap().starts_with("KB-Slip: "), "{text}");
}
