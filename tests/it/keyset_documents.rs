//! Runs every scenario of test-vectors/keyset-documents.json (spec/formats.md
//! §6.1, verification.md K3 step 6) through the decoder and the sequence
//! rule, and through a real `HttpKeys` fetching each document in turn from a
//! loopback server; and checks the committed file is the generated one.
#![cfg(feature = "testkit")]

use std::sync::{Arc, Mutex};

use keybound::encoding::{hex_decode, hex_encode};
use keybound::key::KeySet;
use keybound::keyset::{HttpKeys, HttpKeysOptions, KeySource};
use serde_json::Value;

const VECTORS: &str = include_str!("../../test-vectors/keyset-documents.json");

fn scenarios() -> Vec<Value> {
    let file: Value = serde_json::from_str(VECTORS).expect("keyset-documents.json is JSON");
    file["scenarios"].as_array().unwrap().clone()
}

fn held_of(set: &KeySet) -> (u64, Vec<String>) {
    let mut kids: Vec<String> = set.iter().map(|(kid, _)| hex_encode(kid)).collect();
    kids.sort();
    (set.sequence(), kids)
}

fn expected_held(step: &Value) -> (u64, Vec<String>) {
    let kids = step["kids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_owned())
        .collect();
    (step["sequence"].as_u64().unwrap(), kids)
}

#[test]
fn the_committed_file_is_the_generated_one() {
    assert_eq!(
        VECTORS,
        keybound::vectors::keyset_documents(),
        "regenerate with `cargo run --example gen_vectors --features testkit`"
    );
}

#[test]
fn every_keyset_document_scenario_holds_what_it_says() {
    let scenarios = scenarios();
    assert!(scenarios.len() >= 10);
    for s in &scenarios {
        let name = s["name"].as_str().unwrap();
        let mut held = KeySet::new();
        for step in s["steps"].as_array().unwrap() {
            let document = hex_decode(step["document"].as_str().unwrap()).unwrap();
            let result = match KeySet::from_cbor(&document).and_then(|next| next.may_replace(&held).map(|()| next)) {
                Ok(next) => {
                    held = next;
                    "installed".to_owned()
                }
                Err(e) => e.code().as_str().to_owned(),
            };
            assert_eq!(result, step["result"].as_str().unwrap(), "{name}");
            assert_eq!(held_of(&held), expected_held(step), "{name}");
        }
        let last = s["steps"].as_array().unwrap().last().unwrap()["result"]
            .as_str()
            .unwrap();
        assert_eq!(
            name.starts_with("valid/"),
            last == "installed",
            "{name}: its name says how it ends"
        );
    }
}

/// The same scenarios through `HttpKeys`: each document served in turn and
/// refetched; what it holds after each is what the vector says (a refused
/// document keeps the last good set; a first document refused fails start).
fn source_code(result: &str) -> &str {
    match result {
        "installed" | "keyset.rollback" => result,
        _ => "keyset.invalid",
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_keys_hold_what_every_scenario_says() {
    for s in scenarios() {
        let name = s["name"].as_str().unwrap().to_owned();
        let steps = s["steps"].as_array().unwrap().clone();
        let document = Arc::new(Mutex::new(hex_decode(steps[0]["document"].as_str().unwrap()).unwrap()));
        let served = document.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/keys", listener.local_addr().unwrap());
        let app = axum::Router::new().route(
            "/keys",
            axum::routing::get(move || {
                let body = served.lock().unwrap().clone();
                async move { axum::body::Bytes::from(body) }
            }),
        );
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let keys = match HttpKeys::start(&url, HttpKeysOptions::default()).await {
            Ok(keys) => keys,
            Err(e) => {
                // Nothing held yet: the first document must be a refused one.
                assert_eq!(steps.len(), 1, "{name}: start failed: {e}");
                assert_eq!(
                    e.code().as_str(),
                    source_code(steps[0]["result"].as_str().unwrap()),
                    "{name}"
                );
                server.abort();
                continue;
            }
        };
        assert_eq!(held_of(&keys.key_set()), expected_held(&steps[0]), "{name}");
        for step in &steps[1..] {
            *document.lock().unwrap() = hex_decode(step["document"].as_str().unwrap()).unwrap();
            let refreshed = keys.refresh().await;
            match source_code(step["result"].as_str().unwrap()) {
                "installed" => refreshed.unwrap(),
                code => assert_eq!(refreshed.unwrap_err().code().as_str(), code, "{name}"),
            }
            assert_eq!(held_of(&keys.key_set()), expected_held(step), "{name}");
        }
        server.abort();
    }
}
