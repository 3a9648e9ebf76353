//! Builds the seed corpora in `fuzz/corpus/<target>/` from the test vectors.
//!
//!     cd fuzz && cargo run --example seed
//!
//! Reads `../test-vectors/vectors.json` and writes, for each target, the
//! inputs it understands: whole tokens and proofs, their claims payloads and
//! protected headers, COSE_Keys and key sets, target URIs, and framed
//! requests for `proof_verify`; and the bodies of
//! `../test-vectors/trust-requests.json` for `trust_request` and of
//! `../test-vectors/exchange-requests.json` for `exchange_request`. File
//! names are the vector names, so a seed says where it comes from. Earlier
//! seeds are replaced, except the `regress…` files and what the fuzzer
//! found (40-hex-digit names); the output is deterministic.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use keybound::cbor::{self, Label, Reader};
use keybound::encoding::hex_decode;
use keybound::fuzzing::{FLAG_REQUIRE_NONCE, frame_request};
use keybound::key::{Algorithm, KeySet, SigningKey};
use serde_json::Value;

/// Most seeds per target: enough to start from every structure, small
/// enough to keep the repository light.
const MAX_PER_TARGET: usize = 64;

/// Seeds of one target: content → name (deduplicated by content).
#[derive(Default)]
struct Seeds(BTreeMap<Vec<u8>, String>);

impl Seeds {
    fn add(&mut self, name: &str, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let name: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.0.entry(bytes.to_vec()).or_insert(name);
    }

    fn write(&self, dir: &Path) {
        // Replace earlier seeds but keep `regress…` files (inputs that once
        // crashed a target) and what the fuzzer found (libFuzzer names its
        // finds by their SHA-1: 40 hex digits).
        std::fs::create_dir_all(dir).unwrap();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let found = name.len() == 40 && name.bytes().all(|b| b.is_ascii_hexdigit());
            if !name.starts_with("regress") && !found {
                std::fs::remove_file(path).unwrap();
            }
        }
        // When there are too many, keep an evenly spread selection by name,
        // so every layer of the vectors stays represented.
        let mut by_name: Vec<(&String, &Vec<u8>)> = self.0.iter().map(|(b, n)| (n, b)).collect();
        by_name.sort();
        let n = by_name.len().min(MAX_PER_TARGET);
        let total = by_name.len();
        let mut used = std::collections::BTreeSet::new();
        for (name, bytes) in (0..n).map(|i| by_name[i * total / n]) {
            let mut unique = name.clone();
            let mut i = 2;
            while !used.insert(unique.clone()) {
                unique = format!("{name}-{i}");
                i += 1;
            }
            std::fs::write(dir.join(unique), bytes).unwrap();
        }
    }
}

fn hex(v: &Value) -> Vec<u8> {
    hex_decode(v.as_str().expect("hex")).expect("valid hex")
}

/// Parts of a COSE_Sign1 (tags stripped): protected bytes and payload.
fn sign1_parts(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let (_, body) = cbor::strip_tags(bytes, 3).ok()?;
    cbor::validate(body).ok()?;
    let mut r = Reader::new(body);
    (r.array()? == 4).then_some(())?;
    let protected = r.bytes()?;
    r.raw_item()?;
    let payload = r.bytes()?;
    Some((protected, payload))
}

/// The value of integer `label` in a CBOR map, raw.
fn map_value(map: &[u8], label: i64) -> Option<&[u8]> {
    let mut r = Reader::new(map);
    for _ in 0..r.map()? {
        let key = r.label();
        let value = r.raw_item()?;
        if key == Some(Label::Int(label)) {
            return Some(value);
        }
    }
    None
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("../test-vectors/vectors.json")).expect("test-vectors/vectors.json");
    let doc: Value = serde_json::from_str(&text).unwrap();
    let vectors = doc["vectors"].as_array().unwrap();

    let mut cbor_items = Seeds::default();
    let mut tokens = Seeds::default();
    let mut proofs = Seeds::default();
    let mut requests = Seeds::default();
    let mut keys = Seeds::default();
    let mut keysets = Seeds::default();
    let mut uris = Seeds::default();
    let mut slips = Seeds::default();

    for v in vectors {
        let name = v["name"].as_str().unwrap();
        let token = hex(&v["token"]);
        let proof = if v["proof"].is_null() {
            Vec::new()
        } else {
            hex(&v["proof"])
        };
        let req = &v["request"];
        let (method, uri, body) = (
            req["method"].as_str().unwrap(),
            req["uri"].as_str().unwrap(),
            hex(&req["body"]),
        );
        tokens.add(name, &token);
        proofs.add(name, &proof);
        if let Some(slip) = v.get("slip") {
            slips.add(name, &hex(slip));
            cbor_items.add(&format!("{name}-slip"), &hex(slip));
        }
        if name.starts_with("invalid/slip/") || name.starts_with("valid/slip/") {
            // Tokens of slip vectors, and the slip sent as a token.
            slips.add(&format!("{name}-token"), &token);
        }
        uris.add(name, uri.as_bytes());
        let flags = if v["verifier"].get("nonces").is_some() {
            FLAG_REQUIRE_NONCE
        } else {
            0
        };
        requests.add(name, &frame_request(flags, &token, &proof, method, uri, &body));

        cbor_items.add(&format!("{name}-token"), &token);
        if let Some((protected, payload)) = sign1_parts(&token) {
            cbor_items.add(&format!("{name}-token-protected"), protected);
            cbor_items.add(&format!("{name}-claims"), payload);
            if let Some(cnf) = map_value(payload, 8).and_then(|cnf| map_value(cnf, 1)) {
                keys.add(&format!("{name}-cnf"), cnf);
            }
        }
        if let Some((_, payload)) = sign1_parts(&proof) {
            cbor_items.add(&format!("{name}-proof"), &proof);
            cbor_items.add(&format!("{name}-proof-payload"), payload);
            if let Some(htu) = map_value(payload, 2) {
                let mut r = Reader::new(htu);
                if let Some(htu) = r.text() {
                    uris.add(&format!("{name}-htu"), htu.as_bytes());
                }
            }
        }
        let issuer_keys: Vec<Vec<u8>> = v["issuer_keys"].as_array().unwrap().iter().map(hex).collect();
        let mut set = Vec::new();
        cbor::write_array(&mut set, issuer_keys.len());
        for (i, key) in issuer_keys.iter().enumerate() {
            keys.add(&format!("issuer-key-{i}"), key);
            set.extend_from_slice(key);
            let mut single = Vec::new();
            cbor::write_array(&mut single, 1);
            single.extend_from_slice(key);
            keysets.add(&format!("issuer-key-{i}-alone"), &single);
        }
        keysets.add("vector-issuer-keys", &set);
    }

    // Private keys (key files) and a mixed set, from fixed seeds.
    let mut mixed = KeySet::new();
    for (alg, name) in [(Algorithm::EdDSA, "ed25519"), (Algorithm::ES256, "es256")] {
        let key = SigningKey::derive(alg, b"keybound fuzz seeds", name.as_bytes()).unwrap();
        keys.add(&format!("private-{name}"), &key.to_cose_key(None));
        keys.add(&format!("private-{name}-kid"), &key.to_cose_key(Some(b"k1")));
        keys.add(
            &format!("public-{name}-kid"),
            &key.public_key().to_cose_key(Some(b"k1")),
        );
        mixed
            .insert(name.as_bytes().to_vec(), key.public_key().clone())
            .unwrap();
    }
    keysets.add("mixed-ed25519-es256", &mixed.to_cbor());
    for key in keys.0.keys() {
        cbor_items.add("cose-key", key);
    }

    for uri in [
        "HTTPS://Nova.Example.COM:443/a/./b/../c?q=%7e%2f#frag",
        "http://[2001:DB8::1]:8080/%7Euser/x/",
        "https://nova.example:08443/",
        "https://nova.example?",
    ] {
        uris.add("crafted", uri.as_bytes());
    }

    // Trust request bodies (JSON), from their own vectors.
    let mut trust_requests = Seeds::default();
    let text = std::fs::read_to_string(root.join("../test-vectors/trust-requests.json"))
        .expect("test-vectors/trust-requests.json");
    let doc: Value = serde_json::from_str(&text).unwrap();
    for v in doc["vectors"].as_array().unwrap() {
        trust_requests.add(v["name"].as_str().unwrap(), v["body"].as_str().unwrap().as_bytes());
    }

    // Exchange request bodies (JSON), from their own vectors.
    let mut exchange_requests = Seeds::default();
    let text = std::fs::read_to_string(root.join("../test-vectors/exchange-requests.json"))
        .expect("test-vectors/exchange-requests.json");
    let doc: Value = serde_json::from_str(&text).unwrap();
    for v in doc["vectors"].as_array().unwrap() {
        exchange_requests.add(v["name"].as_str().unwrap(), v["body"].as_str().unwrap().as_bytes());
    }

    // Gateway identity assertions, as the header lines identity_check reads.
    let mut identities = Seeds::default();
    let text = std::fs::read_to_string(root.join("../test-vectors/gateway-identities.json"))
        .expect("test-vectors/gateway-identities.json");
    let doc: Value = serde_json::from_str(&text).unwrap();
    for v in doc["cases"].as_array().unwrap() {
        let mut lines = String::new();
        for pair in v["headers"].as_array().unwrap() {
            lines.push_str(&format!("{}:{}\n", pair[0].as_str().unwrap(), pair[1].as_str().unwrap()));
        }
        identities.add(v["name"].as_str().unwrap(), lines.as_bytes());
    }

    let corpus = root.join("corpus");
    identities.write(&corpus.join("identity_check"));
    trust_requests.write(&corpus.join("trust_request"));
    exchange_requests.write(&corpus.join("exchange_request"));
    cbor_items.write(&corpus.join("cbor_validate"));
    cbor_items.write(&corpus.join("cbor_roundtrip"));
    tokens.write(&corpus.join("token_parse"));
    tokens.write(&corpus.join("token_roundtrip"));
    proofs.write(&corpus.join("proof_parse"));
    requests.write(&corpus.join("proof_verify"));
    keys.write(&corpus.join("cose_key_parse"));
    keysets.write(&corpus.join("keyset_parse"));
    uris.write(&corpus.join("uri_normalize"));
    uris.write(&corpus.join("uri_differential"));
    slips.write(&corpus.join("slip_parse"));
    for (dir, seeds) in [
        ("cbor_*", &cbor_items),
        ("token_*", &tokens),
        ("proof_parse", &proofs),
        ("proof_verify", &requests),
        ("cose_key_parse", &keys),
        ("keyset_parse", &keysets),
        ("uri_*", &uris),
        ("trust_request", &trust_requests),
        ("exchange_request", &exchange_requests),
        ("slip_parse", &slips),
        ("identity_check", &identities),
    ] {
        println!("{dir}: {} seeds", seeds.0.len().min(MAX_PER_TARGET));
    }
}
