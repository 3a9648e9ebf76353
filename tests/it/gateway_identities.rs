//! Runs every case of test-vectors/gateway-identities.json (spec/gateway.md
//! §4) through the Rust checker and through the Python check the spec
//! shows, and checks the committed file is the generated one.
#![cfg(feature = "testkit")]

use std::process::Command;

use keybound::Code;
use keybound::encoding::hex_decode;
use keybound::gateway::identity::Identity;
use serde_json::{Value, json};

use crate::common;

const VECTORS: &str = include_str!("../../test-vectors/gateway-identities.json");

fn file() -> Value {
    serde_json::from_str(VECTORS).expect("gateway-identities.json is JSON")
}

fn identity_json(id: &Identity) -> Value {
    json!({
        "subject": id.subject, "domain": id.domain, "project": id.project, "roles": id.roles,
        "trust": id.trust, "actors": id.actors, "issuer": id.issuer, "expires_at": id.expires_at,
        "key_thumbprint": id.key_thumbprint, "proven": id.proven,
    })
}

#[test]
fn the_committed_file_is_the_generated_one() {
    assert_eq!(
        VECTORS,
        keybound::vectors::gateway_identities(),
        "regenerate with `cargo run --example gen_vectors --features testkit`"
    );
}

#[test]
fn every_identity_case_gives_its_result_in_rust() {
    let file = file();
    let secret = hex_decode(file["secret_hex"].as_str().unwrap()).unwrap();
    let max_age = file["max_age"].as_u64().unwrap();
    let cases = file["cases"].as_array().unwrap();
    assert!(cases.len() >= 20);
    let (mut valid, mut invalid) = (0, 0);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let headers: Vec<(String, String)> = case["headers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p[0].as_str().unwrap().to_owned(), p[1].as_str().unwrap().to_owned()))
            .collect();
        let pairs: Vec<(&str, &[u8])> = headers.iter().map(|(n, v)| (n.as_str(), v.as_bytes())).collect();
        let outcome = Identity::check_fields(
            &pairs,
            &secret,
            case["method"].as_str().unwrap(),
            case["target"].as_str().unwrap(),
            case["now"].as_u64().unwrap(),
            max_age,
        );
        match (case["result"].as_str().unwrap(), outcome) {
            ("valid", Ok(id)) => {
                assert!(name.starts_with("valid/"), "{name}");
                assert_eq!(identity_json(&id), case["identity"], "{name}");
                valid += 1;
            }
            (code, Err(e)) => {
                assert!(name.starts_with("invalid/"), "{name}");
                assert_eq!(code, Code::GatewayBadIdentity.as_str(), "{name}");
                assert_eq!(e.code(), Code::GatewayBadIdentity, "{name}");
                invalid += 1;
            }
            (expected, Ok(_)) => panic!("{name}: accepted, expected {expected}"),
        }
    }
    assert!(valid >= 5 && invalid >= 15, "{valid} valid, {invalid} invalid");
}

/// The spec's Python (extracted from spec/gateway.md) decides every case's
/// `mac` outcome: a second implementation of §4.2 agrees with the vectors.
#[test]
fn the_documented_python_check_agrees_with_every_case() {
    let program = format!(
        r#"{check}
import json, sys, time
doc = json.load(open(sys.argv[1]))
secret = bytes.fromhex(doc["secret_hex"])
out = []
for case in doc["cases"]:
    environ = {{"REQUEST_METHOD": case["method"], "RAW_URI": case["target"], "PATH_INFO": "/"}}
    seen = set()
    for name, value in case["headers"]:
        key = "HTTP_" + name.upper().replace("-", "_")
        # a WSGI server joins a repeated header with a comma
        environ[key] = environ[key] + "," + value if key in environ else value
    time.time = lambda now=case["now"]: now
    out.append([case["name"], "ok" if keybound_identity(environ, secret, doc["max_age"]) is not None else "refused"])
print(json.dumps(out))
"#,
        check = common::documented_python_check()
    );
    let dir = tempfile::tempdir().unwrap();
    let vectors = dir.path().join("vectors.json");
    std::fs::write(&vectors, VECTORS).unwrap();
    let script = dir.path().join("check.py");
    std::fs::write(&script, program).unwrap();
    let output = match Command::new("python3").arg(&script).arg(&vectors).output() {
        Ok(o) => o,
        Err(e) if std::env::var_os("CI").is_some() => panic!("CI must have python3: {e}"),
        Err(e) => {
            eprintln!("skipped: no python3 ({e})");
            return;
        }
    };
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let decided: Vec<(String, String)> = serde_json::from_slice(&output.stdout).unwrap();
    let file = file();
    let cases = file["cases"].as_array().unwrap();
    assert_eq!(decided.len(), cases.len());
    for ((name, python), case) in decided.iter().zip(cases) {
        assert_eq!(
            python,
            case["mac"].as_str().unwrap(),
            "{name}: the spec's Python disagrees"
        );
    }
}
