//! The seed's deploy-instance workflow end to end (issue 13, spec/delegation.md
//! §8–§11): `keybound demo workflow --json` runs the real issuer, four
//! services behind the keybound layer and the nova-compute worker on
//! loopback; these tests check what it found against the spec, not against
//! the demo's own expectations: the learned workplan, the roles each service
//! saw, the denial record of the broken plan, the rollout report, and the
//! worker outliving its tokens. Once with the in-process queue, once with
//! the work carried on a Redis list.
#![cfg(feature = "cli")]

use std::collections::BTreeMap;

use keybound::delegation::workplan::Workplan;
use serde_json::Value;

fn demo(extra: &[&str]) -> Value {
    let output = std::process::Command::new(assert_cmd::cargo::cargo_bin!("keybound"))
        .args(["demo", "workflow", "--json"])
        .args(extra)
        .env_remove("KEYBOUND_DEMO_QUEUE")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "demo workflow failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{stdout}"))
}

/// The service name of each audience URL.
fn names(found: &Value) -> BTreeMap<String, String> {
    found["services"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(name, url)| (url.as_str().unwrap().to_owned(), name.clone()))
        .collect()
}

fn step<'a>(found: &'a Value, what: &str) -> &'a Value {
    found["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["what"].as_str().unwrap().starts_with(what))
        .unwrap_or_else(|| panic!("no step {what:?} in {:#}", found["steps"]))
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect()
}

fn check(found: &Value) {
    let names = names(found);
    for s in found["steps"].as_array().unwrap() {
        assert_eq!(s["ok"], true, "{s:#}");
    }

    // 1. Learn: the least roles per hop; reader on glance, never writer.
    let plan = Workplan::parse(found["workplan"].as_str().unwrap()).unwrap();
    let hops: BTreeMap<&str, Vec<&str>> = plan
        .delegations
        .iter()
        .map(|d| {
            assert_eq!(d.trustee.to_string(), "nova-compute@service");
            (
                names[&d.audience].as_str(),
                d.roles.iter().map(|r| r.as_str()).collect(),
            )
        })
        .collect();
    assert_eq!(
        hops,
        BTreeMap::from([
            ("cinder", vec!["member"]),
            ("glance", vec!["reader"]),
            ("neutron", vec!["member", "reader"]),
        ])
    );
    let assignments = &found["learned"]["assignments"];
    assert_eq!(assignments[0]["subject"], "ayoung@stoughton");
    assert_eq!(strings(&assignments[0]["roles"]), ["member"], "{assignments:#}");
    assert_eq!(found["learned"]["unallowable"], Value::Array(vec![]));
    // The plan is one `keybound workplan check` accepts as a file.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("deploy-instance.toml");
    std::fs::write(&file, found["workplan"].as_str().unwrap()).unwrap();
    let checked = std::process::Command::new(assert_cmd::cargo::cargo_bin!("keybound"))
        .args(["workplan", "check"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(checked.status.success(), "{}", String::from_utf8_lossy(&checked.stderr));

    // 2. Run: enforced, on the learned roles only; the worker outlives its
    // 300 s tokens and a token it no longer uses is dead.
    assert_eq!(
        step(found, "the workflow, carrying the slip")["got"]["accepted"],
        "6 calls"
    );
    assert_eq!(step(found, "the roles glance saw")["got"]["accepted"], "reader");
    assert_eq!(
        step(found, "the glance token after the 400 s step")["got"]["accepted"],
        "minted 400 s later"
    );
    assert_eq!(step(found, "the first glance token")["got"]["refused"], "cwt.expired");
    assert_eq!(step(found, "nova-compute uploads")["got"]["refused"], "policy.denied");

    // 3. Break: refused at neutron, and the record names the missing role.
    let broken = step(found, "the workflow, on the broken workplan");
    assert_eq!(broken["got"]["refused"], "policy.denied");
    assert!(
        broken["got"]["message"].as_str().unwrap().contains("/v2.0/ports"),
        "{broken:#}"
    );
    let denial = &found["denial"];
    assert_eq!(names[denial["audience"].as_str().unwrap()], "neutron");
    assert_eq!(denial["outcome"], "deny");
    assert_eq!(denial["reason"], "missing_role");
    assert_eq!(denial["action"]["path"], "/v2.0/ports");
    assert_eq!(strings(&denial["roles_held"]), ["reader"]);
    assert_eq!(strings(&denial["roles_allowing"]), ["member"]);
    assert_eq!(strings(&denial["actors"]), ["nova-compute@service"]);
    assert_eq!(denial["subject"], "ayoung@stoughton");
    assert!(denial["workflow_id"].is_string(), "the denial names the slip's run");

    // 4. Phased rollout: the run completes; what enforcing would refuse is
    // exactly neutron's two calls made with the worker's own token.
    assert_eq!(
        step(found, "the workflow, lacking the neutron trust")["got"]["accepted"],
        "6 calls"
    );
    let mut would_deny = Vec::new();
    for audience in found["rollout_report"]["audiences"].as_array().unwrap() {
        for rule in audience["rules"].as_array().unwrap() {
            if rule["would_deny"].as_u64().unwrap() > 0 {
                would_deny.push((
                    names[audience["audience"].as_str().unwrap()].clone(),
                    rule["rule"].as_str().unwrap().to_owned(),
                    strings(&rule["missing_roles"]).join(" "),
                    strings(&rule["subjects"]).join(" "),
                ));
            }
        }
    }
    let worker = "nova-compute@service".to_owned();
    assert_eq!(
        would_deny,
        [
            ("neutron".into(), "create port".into(), "member".into(), worker.clone()),
            ("neutron".into(), "list networks".into(), "reader".into(), worker),
        ]
    );
}

#[test]
fn the_deploy_instance_workflow_learns_runs_breaks_and_rolls_out() {
    let found = demo(&[]);
    assert_eq!(found["queue"], "in-process queue");
    check(&found);
}

/// The same with the work carried from nova-api to nova-compute on a real
/// Redis list; the demo leaves no list behind.
#[test]
fn the_deploy_instance_workflow_carries_its_slip_through_a_redis_queue() {
    let Ok(url) = std::env::var("KEYBOUND_TEST_REDIS_URL") else {
        eprintln!("skipped: set KEYBOUND_TEST_REDIS_URL (redis://127.0.0.1:6379/) to run the workflow over Redis");
        return;
    };
    let found = demo(&["--queue", &url]);
    check(&found);
    let key = found["queue"].as_str().unwrap().strip_prefix("Redis list ").unwrap();
    let mut connection = redis::Client::open(url.as_str()).unwrap().get_connection().unwrap();
    let exists: u64 = redis::cmd("EXISTS").arg(key).query(&mut connection).unwrap();
    assert_eq!(exists, 0, "the demo removes its queue");
}
