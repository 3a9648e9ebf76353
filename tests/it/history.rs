//! The fault suite's offline checker (tests/it/common/history.rs) shown to
//! fail on doctored histories: a replay accepted at the other replica, a
//! lost acknowledged write, a 301 s token, a token past its expiry, a valid
//! request refused with a code the scenario does not allow. A checker that
//! cannot fail proves nothing about the runs it passes.

use serde_json::{Value, json};

use crate::common::history::{Model, Recorder, check, parse_json_lines};

fn proof(id: &str, replica: &str, status: u16, at: u64) -> Value {
    json!({"kind": "proof", "client": "c", "replica": replica, "proof": id, "start_ms": at, "end_ms": at + 5,
           "status": status, "valid": true, "token": {"cti": "t1", "iat": 1000, "exp": 1300, "aud": ["https://svc"]}})
}

fn write(name: &str, at: u64) -> Value {
    json!({"kind": "admin_write", "client": "admin", "name": name, "action": "role.create",
           "start_ms": at, "end_ms": at + 10, "status": 200})
}

fn readback(names: &[&str], at: u64) -> Value {
    json!({"kind": "readback", "client": "test", "source": "admin_api", "names": names, "start_ms": at, "end_ms": at})
}

fn audit(entries: &[(u64, &str)], at: u64) -> Value {
    let entries: Vec<Value> = entries
        .iter()
        .map(|(id, t)| json!({"id": id, "time": 0, "actor": "admin@default", "action": "role.create", "target": t, "outcome": "ok"}))
        .collect();
    json!({"kind": "audit", "client": "test", "entries": entries, "start_ms": at, "end_ms": at})
}

fn healthy() -> Vec<Value> {
    vec![
        proof("k:01", "gw-a", 200, 1_000_000),
        {
            let mut r = proof("k:01", "gw-b", 401, 1_000_010);
            r["kind"] = json!("replay");
            r["code"] = json!("replay.detected");
            r
        },
        write("r1", 1_000_000),
        write("r2", 1_000_020),
        json!({"kind": "mint", "client": "m", "start_ms": 1_000_000, "end_ms": 1_000_003, "status": 200,
               "token": {"cti": "t1", "iat": 1000, "exp": 1300, "aud": ["https://svc"]}}),
        readback(&["admin", "r1", "r2"], 1_000_100),
        {
            let mut a = audit(&[(1, "r1"), (2, "r2")], 1_000_100);
            a["entries"]
                .as_array_mut()
                .unwrap()
                .push(json!({"id": 3, "time": 960, "actor": "u", "action": "token.mint", "target": "https://svc", "outcome": "ok"}));
            a
        },
    ]
}

#[test]
fn a_healthy_history_passes() {
    let report = check(&healthy(), &Model::default());
    assert!(report.violations.is_empty(), "{}", report.summary());
    assert_eq!(report.figure("writes_acknowledged"), 2);
    assert_eq!(report.figure("replays_refused.401.replay.detected"), 1);
}

#[test]
fn a_replay_accepted_at_the_other_replica_fails_i1() {
    let mut h = healthy();
    h[1]["status"] = json!(200);
    h[1]["code"] = Value::Null;
    let report = check(&h, &Model::default());
    assert_eq!(report.figure("proofs_accepted_twice"), 1);
    assert!(
        report
            .violations
            .iter()
            .any(|v| v.starts_with("I1:") && v.contains("gw-a, gw-b")),
        "{}",
        report.summary()
    );
}

#[test]
fn a_lost_acknowledged_write_fails_i3() {
    let mut h = healthy();
    h[5] = readback(&["admin", "r1"], 1_000_100);
    let report = check(&h, &Model::default());
    assert_eq!(report.figure("writes_lost"), 1);
    assert!(
        report
            .violations
            .iter()
            .any(|v| v.starts_with("I3:") && v.contains("r2"))
    );
    // Without its audit entry, too.
    let mut h = healthy();
    h[6] = audit(&[(1, "r1")], 1_000_100);
    let report = check(&h, &Model::default());
    assert!(
        report.violations.iter().any(|v| v.contains("r2 has no audit entry")),
        "{}",
        report.summary()
    );
    // And with no readback at all.
    let mut h = healthy();
    h.remove(5);
    assert!(
        check(&h, &Model::default())
            .violations
            .iter()
            .any(|v| v.contains("no readback"))
    );
}

#[test]
fn audit_order_against_real_time_fails_i3() {
    let mut h = healthy();
    h[6] = audit(&[(2, "r1"), (1, "r2")], 1_000_100);
    let report = check(&h, &Model::default());
    assert!(
        report.violations.iter().any(|v| v.contains("is older than")),
        "{}",
        report.summary()
    );
}

#[test]
fn a_301_second_token_fails_i5() {
    let mut h = healthy();
    h[4]["token"]["exp"] = json!(1301);
    let report = check(&h, &Model::default());
    assert!(
        report
            .violations
            .iter()
            .any(|v| v.starts_with("I5:") && v.contains("301 s")),
        "{}",
        report.summary()
    );
    let mut h = healthy();
    h[4]["token"]["aud"] = json!(["https://svc", "https://other"]);
    assert!(
        check(&h, &Model::default())
            .violations
            .iter()
            .any(|v| v.contains("2 audiences"))
    );
}

#[test]
fn a_token_accepted_past_exp_and_leeway_fails_i2() {
    let mut h = healthy();
    h[0]["start_ms"] = json!(1_331_000);
    h[0]["end_ms"] = json!(1_331_005);
    let report = check(&h, &Model::default());
    assert!(
        report.violations.iter().any(|v| v.starts_with("I2:")),
        "{}",
        report.summary()
    );
    // At exp + leeway exactly, it may be accepted.
    h[0]["start_ms"] = json!(1_330_000);
    assert!(
        check(&h, &Model::default())
            .violations
            .iter()
            .all(|v| !v.starts_with("I2:"))
    );
}

#[test]
fn a_refused_valid_request_fails_unless_its_code_is_allowed() {
    let mut h = healthy();
    h[0]["status"] = json!(503);
    h[0]["code"] = json!("replay.store_unavailable");
    assert!(
        check(&h, &Model::default())
            .violations
            .iter()
            .any(|v| v.starts_with("I6:"))
    );
    let model = Model {
        allowed_refusals: vec!["replay.store_unavailable".into()],
        ..Model::default()
    };
    let report = check(&h, &model);
    assert!(report.violations.is_empty(), "{}", report.summary());
    assert_eq!(report.figure("valid_refused_allowed"), 1);
}

#[test]
fn an_unaudited_mint_fails_i3() {
    let mut h = healthy();
    h[4]["token"]["iat"] = json!(1200);
    h[4]["token"]["exp"] = json!(1500);
    let report = check(&h, &Model::default());
    assert!(
        report.violations.iter().any(|v| v.contains("no token.mint entry")),
        "{}",
        report.summary()
    );
}

#[test]
fn json_lines_round_trip() {
    let r = Recorder::new();
    for op in healthy() {
        r.record(op);
    }
    let back = parse_json_lines(&r.to_json_lines()).unwrap();
    assert_eq!(back, healthy());
    assert!(parse_json_lines("{\n").is_err());
}
