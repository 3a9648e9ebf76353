//! Runs every exchange-request vector of test-vectors/exchange-requests.json
//! (spec/federation.md §4.1) through the decoder and the checks that need no
//! database, and every lifetime vector through step F8; and checks that
//! spec/federation.cddl agrees with the decoder.
#![cfg(feature = "policy")]

use keybound::federation::{ExchangeRequest, exchanged_lifetime};
use serde_json::{Value, json};

const VECTORS: &str = include_str!("../../test-vectors/exchange-requests.json");
const CDDL: &str = include_str!("../../spec/federation.cddl");

fn file() -> Value {
    serde_json::from_str(VECTORS).expect("exchange-requests.json is JSON")
}

fn cddl_accepts(rule: &str, json: &str) -> bool {
    let doc = format!("root = {rule}\n{CDDL}");
    cddl::validate_json_from_str(&doc, json, None).is_ok()
}

#[test]
fn every_exchange_request_vector_gives_its_expected_result() {
    let file = file();
    let service_lifetime = file["service_lifetime"].as_u64().unwrap();
    let vectors = file["vectors"].as_array().unwrap();
    assert!(vectors.len() >= 25);
    for v in vectors {
        let name = v["name"].as_str().unwrap();
        let outcome =
            ExchangeRequest::from_json(v["body"].as_str().unwrap().as_bytes()).and_then(|r| r.check(service_lifetime));
        match (v["expected"].as_str().unwrap(), outcome) {
            ("valid", Ok(draft)) => {
                let got = json!({
                    "audience": draft.audience,
                    "project": draft.project.to_string(),
                    "roles": draft.roles,
                    "lifetime": draft.lifetime,
                    "instance": draft.instance,
                });
                assert_eq!(got, v["draft"], "{name}");
            }
            ("valid", Err(e)) => panic!("{name}: refused {}: {}", e.code(), e.message()),
            (code, Ok(draft)) => panic!("{name}: expected {code}, accepted {draft:?}"),
            (code, Err(e)) => assert_eq!(e.code().as_str(), code, "{name}: {}", e.message()),
        }
    }
}

#[test]
fn every_lifetime_vector_gives_its_expected_lifetime() {
    for v in file()["lifetimes"].as_array().unwrap() {
        let name = v["name"].as_str().unwrap();
        let got = exchanged_lifetime(
            v["asked"].as_u64(),
            v["service_lifetime"].as_u64().unwrap(),
            v["peer_max_lifetime"].as_u64(),
            v["foreign_exp"].as_u64().unwrap(),
            v["now"].as_u64().unwrap(),
        );
        match (&v["expected"], got) {
            (Value::Number(n), Ok(lifetime)) => assert_eq!(Some(lifetime), n.as_u64(), "{name}"),
            (Value::String(code), Err(e)) => assert_eq!(e.code().as_str(), code, "{name}"),
            (expected, got) => panic!("{name}: expected {expected}, got {got:?}"),
        }
    }
}

/// Every valid vector matches rule `ExchangeRequest`, and every body the
/// decoder refuses as malformed does not — except what the JSON data model
/// cannot show (a repeated member; text that is no JSON), and the instance
/// rules, which the decoder leaves to the checks.
#[test]
fn the_cddl_of_exchange_requests_agrees_with_the_decoder() {
    for v in file()["vectors"].as_array().unwrap() {
        let (name, body) = (v["name"].as_str().unwrap(), v["body"].as_str().unwrap());
        if name == "invalid/duplicate-member" || serde_json::from_str::<Value>(body).is_err() {
            continue;
        }
        let accepted = cddl_accepts("ExchangeRequest", body);
        match v["expected"].as_str().unwrap() {
            "valid" => assert!(accepted, "{name}: valid but does not match the CDDL"),
            "issuer.bad_request" | "issuer.lifetime_exceeded" => {
                assert!(!accepted, "{name}: refused but matches the CDDL")
            }
            _ => {}
        }
    }
    let answer = json!({
        "token": "0oRDoQEn", "expires_at": 1800000300, "audience": "https://nova.canton.example",
        "project": "turing", "domain": "canton", "roles": ["member"], "subject": "ayoung@stoughton",
        "origin": "https://stoughton.example", "instance": null
    });
    assert!(cddl_accepts("ExchangeAnswer", &answer.to_string()));
    let peer = json!({"issuer": "https://stoughton.example", "keys_url": "https://stoughton.example/.well-known/keybound/keys", "domains": ["stoughton"]});
    assert!(cddl_accepts("PeerInput", &peer.to_string()));
    assert!(!cddl_accepts(
        "PeerInput",
        &json!({"issuer": "https://s.example", "keys_url": "https://s.example/k", "domains": []}).to_string()
    ));
}
