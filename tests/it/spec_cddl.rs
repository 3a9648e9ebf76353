//! `spec/keybound.cddl` is valid CDDL (RFC 8610), the structures this crate
//! really encodes validate against its rules, and broken ones do not.
//!
//! Validation uses the `cddl` crate. It validates against the first rule of
//! a document, so each check prepends `root = <Rule>` to the spec file.
//! Known limitation of the crate (0.10.7): `.regexp` is matched unanchored,
//! so the `Method` rule only proves that *some* tchar is present; the exact
//! method rule is covered by the verifier's own tests (`proof.field_type`).

use ciborium::Value;
use keybound::cbor;
use keybound::encoding::hex_decode;
use keybound::key::{Algorithm, KeySet, SigningKey};
use keybound::proof::{ProofBuilder, body_sha256};
use keybound::token::{Actor, Token, TokenBuilder, TokenTagging};
use sha2::{Digest, Sha256};

const CDDL: &str = include_str!("../../spec/keybound.cddl");
const NOW: u64 = 1_763_800_000;

/// Validates `cbor` against `rule` of the spec.
fn check(rule: &str, cbor: &[u8]) -> Result<(), String> {
    let doc = format!("root = {rule}\n{CDDL}");
    cddl::validate_cbor_from_slice(&doc, cbor, None).map_err(|e| e.to_string())
}

fn assert_valid(rule: &str, cbor: &[u8], what: &str) {
    if let Err(e) = check(rule, cbor) {
        panic!("{what} does not validate against {rule}: {e}");
    }
}

fn assert_invalid(rule: &str, cbor: &[u8], what: &str) {
    assert!(
        check(rule, cbor).is_err(),
        "{what} validates against {rule} but must not"
    );
}

fn decode(bytes: &[u8]) -> Value {
    ciborium::from_reader(bytes).expect("test input is CBOR")
}

fn encode(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(value, &mut out).expect("encoding into a Vec");
    out
}

/// The payload bytes of a (possibly tagged) COSE_Sign1.
fn payload(sign1: &[u8]) -> Vec<u8> {
    let mut value = decode(sign1);
    while let Value::Tag(_, inner) = value {
        value = *inner;
    }
    match value {
        Value::Array(items) => items[2].as_bytes().expect("payload is a byte string").clone(),
        other => panic!("not a COSE_Sign1: {other:?}"),
    }
}

/// `map` with the entry under integer label `label` replaced by `value`.
fn replace(map: &Value, label: i64, value: Value) -> Value {
    let entries = map.as_map().expect("a map").iter().map(|(k, v)| {
        let is_label = k.as_integer().is_some_and(|i| i128::from(i) == i128::from(label));
        (k.clone(), if is_label { value.clone() } else { v.clone() })
    });
    Value::Map(entries.collect())
}

fn keys(alg: Algorithm) -> (SigningKey, SigningKey) {
    (
        SigningKey::derive(alg, b"spec", b"issuer").unwrap(),
        SigningKey::derive(alg, b"spec", b"client").unwrap(),
    )
}

fn service_token(issuer: &SigningKey, client: &SigningKey, tagging: TokenTagging) -> Token {
    TokenBuilder::service(
        "https://issuer.example",
        "ayoung@stoughton",
        "https://nova.example",
        client.public_key().clone(),
        NOW,
    )
    .scope("stoughton", "turing")
    .roles(["member", "reader"])
    .cti([7; 16])
    .tagging(tagging)
    .sign(issuer, &issuer.public_key().default_kid())
    .unwrap()
}

#[test]
fn spec_cddl_parses() {
    if let Err(e) = cddl::cddl_from_str(CDDL, true) {
        panic!("spec/keybound.cddl does not parse: {e}");
    }
}

#[test]
fn tokens_validate() {
    for alg in [Algorithm::EdDSA, Algorithm::ES256] {
        let (issuer, client) = keys(alg);
        for tagging in [TokenTagging::Untagged, TokenTagging::Sign1, TokenTagging::Cwt] {
            let token = service_token(&issuer, &client, tagging);
            let what = format!("{alg} {tagging:?} service token");
            assert_valid("KeyboundToken", token.as_bytes(), &what);
            assert_valid("Claims", &payload(token.as_bytes()), &what);
        }
        let session = TokenBuilder::session(
            "https://issuer.example",
            "ayoung@stoughton",
            client.public_key().clone(),
            NOW,
        )
        .sign(&issuer, b"k1")
        .unwrap();
        assert_valid("KeyboundToken", session.as_bytes(), "session token");
        assert_valid("Claims", &payload(session.as_bytes()), "session token");
        let delegated = TokenBuilder::service(
            "https://issuer.example",
            "ayoung@stoughton",
            "https://cinder.example",
            client.public_key().clone(),
            NOW,
        )
        .domain("stoughton")
        .not_before(NOW)
        .lifetime(120)
        .trust_id("trust-1")
        .actor_chain(vec![
            Actor {
                sub: "nova@service".into(),
                iss: None,
            },
            Actor {
                sub: "glance@service".into(),
                iss: Some("https://b.example".into()),
            },
        ])
        .origin_issuer("https://a.example")
        .instance("vm-7f3a@host-12")
        .sign(&issuer, b"k1")
        .unwrap();
        assert_valid("Claims", &payload(delegated.as_bytes()), "delegated token");
    }
}

#[test]
fn proofs_validate() {
    for alg in [Algorithm::EdDSA, Algorithm::ES256] {
        let (issuer, client) = keys(alg);
        let token = service_token(&issuer, &client, TokenTagging::Untagged);
        for (tagged, nonce) in [(false, None), (true, Some(b"n0nce".to_vec()))] {
            let mut builder = ProofBuilder::new(
                "POST",
                "https://nova.example/v2/servers?limit=10",
                token.as_bytes(),
                b"{}",
                NOW + 1,
            )
            .unwrap()
            .tagged(tagged);
            if let Some(nonce) = nonce {
                builder = builder.nonce(nonce);
            }
            let proof = builder.sign(&client).unwrap();
            let what = format!("{alg} proof, tagged {tagged}");
            assert_valid("KeyboundProof", proof.as_bytes(), &what);
            assert_valid("ProofPayload", &payload(proof.as_bytes()), &what);
        }
        // The external AAD, encoded as formats.md §4.4 says.
        let mut aad = Vec::new();
        cbor::write_array(&mut aad, 3);
        cbor::write_text(&mut aad, "keybound-proof-v1");
        cbor::write_bytes(&mut aad, &token.sha256());
        cbor::write_bytes(&mut aad, &body_sha256(b""));
        assert_eq!(aad.len(), 87);
        assert_valid("ProofAad", &aad, "external AAD");
    }
}

#[test]
fn keys_and_key_sets_validate() {
    for alg in [Algorithm::EdDSA, Algorithm::ES256] {
        let (issuer, client) = keys(alg);
        let public = client.public_key();
        assert_valid("COSE_Key_Public", &public.to_cose_key(None), "public key");
        assert_valid(
            "COSE_Key_Public",
            &public.to_cose_key(Some(b"k1")),
            "public key with kid",
        );
        assert_valid("COSE_Key_Private", &client.to_cose_key(None), "private key");
        assert_valid(
            "COSE_Key_Private",
            &client.to_cose_key(Some(b"k1")),
            "private key with kid",
        );
        // The cnf key inside a token is a COSE_Key_Public too.
        let claims = decode(&payload(
            service_token(&issuer, &client, TokenTagging::Untagged).as_bytes(),
        ));
        let cnf = claims
            .as_map()
            .unwrap()
            .iter()
            .find(|(k, _)| k.as_integer() == Some(8.into()))
            .unwrap()
            .1
            .clone();
        assert_valid("Cnf", &encode(&cnf), "cnf claim");
        // The thumbprint input: the public key without alg, and its hash is the thumbprint.
        let Value::Map(entries) = decode(&public.to_cose_key(None)) else {
            unreachable!()
        };
        let required = entries
            .into_iter()
            .filter(|(k, _)| k.as_integer() != Some(3.into()))
            .collect();
        let input = encode(&Value::Map(required));
        assert_valid("ThumbprintInput", &input, "thumbprint input");
        assert_eq!(
            <[u8; 32]>::from(Sha256::digest(&input)),
            *public.thumbprint().as_bytes()
        );

        let set = KeySet::new()
            .with(issuer.public_key().default_kid(), issuer.public_key().clone())
            .unwrap()
            .with(b"previous".to_vec(), client.public_key().clone())
            .unwrap();
        assert_valid("COSE_KeySet", &set.to_cbor(), "key set");
        assert_valid("KeySetDocument", &set.to_cbor(), "bare key-set document");
        let sequenced = set.clone().with_sequence(1_763_800_000).to_cbor();
        assert_valid("SequencedKeySet", &sequenced, "sequenced key set");
        assert_valid("KeySetDocument", &sequenced, "sequenced key-set document");
        assert_invalid("COSE_KeySet", &sequenced, "a sequenced set is not a bare COSE_KeySet");
        let withdrawn = KeySet::new().with_sequence(5).to_cbor();
        assert!(KeySet::from_cbor(&withdrawn).is_ok_and(|s| s.is_withdrawn()));
        assert_valid("KeySetDocument", &withdrawn, "a withdrawal");
        assert_invalid("SequencedKeySet", &[0xa2, 0x01, 0x00, 0x02, 0x80], "sequence 0");
    }
    // An entry of an unsupported type (OKP/X25519) that verifiers skip.
    let (issuer, _) = keys(Algorithm::EdDSA);
    let mut set = Vec::new();
    cbor::write_array(&mut set, 2);
    set.extend_from_slice(&[0xa4, 0x01, 0x01, 0x02, 0x41, b'x', 0x20, 0x04, 0x21]);
    cbor::write_bytes(&mut set, &[9; 32]);
    set.extend_from_slice(&issuer.public_key().to_cose_key(Some(b"k1")));
    assert!(KeySet::from_cbor(&set).is_ok_and(|s| s.len() == 1));
    assert_valid("COSE_KeySet", &set, "key set with a skipped entry");
    // Entries of another key type, and a compressed EC2 point: skipped too.
    let rsa = "a40103024372736120430100012143010001";
    let symmetric = "a30104024373796d2050000102030405060708090a0b0c0d0e0f";
    let mut compressed = hex_decode("a601020241630326200121").unwrap();
    cbor::write_bytes(&mut compressed, &[7; 32]);
    compressed.extend_from_slice(&[0x22, 0xf5]);
    for (entry, what) in [
        (hex_decode(rsa).unwrap(), "an RSA entry"),
        (hex_decode(symmetric).unwrap(), "a symmetric entry"),
        (compressed, "a compressed EC2 entry"),
    ] {
        let mut set = Vec::new();
        cbor::write_array(&mut set, 2);
        set.extend_from_slice(&entry);
        set.extend_from_slice(&issuer.public_key().to_cose_key(Some(b"k1")));
        assert!(KeySet::from_cbor(&set).is_ok_and(|s| s.len() == 1), "{what}");
        assert_valid("COSE_KeySet", &set, &format!("key set with {what}"));
    }
}

/// The rules are not vacuous: structures the verifier refuses do not validate.
#[test]
fn broken_structures_do_not_validate() {
    let (issuer, client) = keys(Algorithm::EdDSA);
    let token = service_token(&issuer, &client, TokenTagging::Untagged);
    let claims = decode(&payload(token.as_bytes()));

    let aud_array = replace(
        &claims,
        3,
        Value::Array(vec![Value::Text("https://nova.example".into())]),
    );
    assert_invalid("Claims", &encode(&aud_array), "aud as an array");
    let short_cti = replace(&claims, 7, Value::Bytes(vec![0; 15]));
    assert_invalid("Claims", &encode(&short_cti), "a 15-byte cti");
    let negative_exp = replace(&claims, 4, Value::Integer((-1).into()));
    assert_invalid("Claims", &encode(&negative_exp), "a negative exp");
    let private_cnf = Value::Map(vec![(Value::Integer(1.into()), decode(&client.to_cose_key(None)))]);
    assert_invalid(
        "Claims",
        &encode(&replace(&claims, 8, private_cnf)),
        "a private key in cnf",
    );
    let kb = claims
        .as_map()
        .unwrap()
        .iter()
        .find(|(k, _)| k.as_integer() == Some((-65537).into()))
        .unwrap()
        .1
        .clone();
    assert_invalid(
        "Claims",
        &encode(&replace(&claims, -65537, replace(&kb, 1, Value::Integer(3.into())))),
        "kind 3",
    );
    let without_kb = Value::Map(
        claims
            .as_map()
            .unwrap()
            .iter()
            .filter(|(k, _)| k.as_integer() != Some((-65537).into()))
            .cloned()
            .collect(),
    );
    assert_invalid("Claims", &encode(&without_kb), "claims without the keybound map");
    assert_invalid(
        "KeyboundToken",
        &[[0xd2, 0xd8, 0x3d].as_slice(), token.as_bytes()].concat(),
        "a token tagged 18(61(...))",
    );

    let proof = ProofBuilder::new("GET", "https://nova.example/", token.as_bytes(), b"", NOW)
        .unwrap()
        .sign(&client)
        .unwrap();
    let proof_payload = decode(&payload(proof.as_bytes()));
    assert_invalid(
        "ProofPayload",
        &encode(&replace(&proof_payload, 4, Value::Bytes(vec![0; 15]))),
        "a 15-byte jti",
    );
    assert_invalid(
        "ProofPayload",
        &encode(&replace(&proof_payload, 5, Value::Bytes(vec![0; 32]))),
        "a full token hash in tkh",
    );
    assert_invalid(
        "KeyboundProof",
        &[[0xd8, 0x3d].as_slice(), proof.as_bytes()].concat(),
        "a proof tagged 61",
    );
    assert_invalid("KeyboundProof", token.as_bytes(), "a token as a proof");
    assert_invalid("KeyboundToken", proof.as_bytes(), "a proof as a token");
    assert_invalid("Claims", &payload(proof.as_bytes()), "a proof payload as claims");

    assert_invalid("COSE_Key_Public", &client.to_cose_key(None), "a private key");
    assert_invalid(
        "COSE_Key_Private",
        &client.public_key().to_cose_key(None),
        "a public key",
    );
    assert_invalid("COSE_KeySet", &[0x80], "an empty key set");
    let mut no_kid = Vec::new();
    cbor::write_array(&mut no_kid, 1);
    no_kid.extend_from_slice(&issuer.public_key().to_cose_key(None));
    assert_invalid("COSE_KeySet", &no_kid, "a key set entry without kid");
}

#[test]
fn slips_validate_and_are_neither_tokens_nor_proofs() {
    use keybound::delegation::slip::{SLIP_AAD, SlipBuilder};
    for alg in [Algorithm::EdDSA, Algorithm::ES256] {
        let (issuer, client) = keys(alg);
        let slip = SlipBuilder::new(
            "https://issuer.example",
            "deploy-instance",
            "ayoung@stoughton",
            NOW,
            NOW + 3600,
        )
        .hop(
            "nova-compute@service",
            "https://glance.example",
            "2Qf3mV0cZ8bq1Xo4yT6wUg",
        )
        .hop(
            "nova-compute@service",
            "https://neutron.example",
            "nEuTrOnTrUsT0123456789",
        )
        .sign(&issuer, b"k1")
        .unwrap();
        assert_valid("KeyboundSlip", slip.as_bytes(), "slip");
        assert_valid("SlipPayload", &payload(slip.as_bytes()), "slip payload");
        assert_valid("SlipAad", SLIP_AAD, "slip AAD");
        assert_invalid("Claims", &payload(slip.as_bytes()), "a slip payload");
        assert_invalid("ProofPayload", &payload(slip.as_bytes()), "a slip payload");
        let token = service_token(&issuer, &client, TokenTagging::Untagged);
        assert_invalid("SlipPayload", &payload(token.as_bytes()), "token claims");
        let proof = ProofBuilder::new("GET", "https://nova.example/", token.as_bytes(), b"", NOW)
            .unwrap()
            .sign(&client)
            .unwrap();
        assert_invalid("SlipPayload", &payload(proof.as_bytes()), "a proof payload");
    }
}

/// spec/errors.md has one row for every code of `Code::ALL`, in that order,
/// with the step, HTTP status and problem title of the code table in
/// src/error.rs: adding a code without documenting it, or changing a status
/// or title in one place only, fails here.
#[test]
fn errors_md_rows_match_the_code_table() {
    let errors_md = include_str!("../../spec/errors.md");
    // `| `code` | step | status | title | meaning | what to do |` rows; the
    // command-line table has an exit status in its second column instead.
    let rows: Vec<(&str, &str, &str, &str)> = errors_md
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let code = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
            let status = cells.get(3)?.trim_end_matches('†');
            status.parse::<u16>().ok()?;
            Some((code, *cells.get(2)?, status, *cells.get(4)?))
        })
        .collect();
    let documented: Vec<&str> = rows.iter().map(|row| row.0).collect();
    let table: Vec<&str> = keybound::Code::ALL.iter().map(|code| code.as_str()).collect();
    assert_eq!(
        documented, table,
        "spec/errors.md rows are not the codes of Code::ALL in order"
    );
    for (code, (name, step, status, title)) in keybound::Code::ALL.iter().zip(&rows) {
        let expected = (code.step(), code.http_status().to_string(), code.title());
        assert_eq!(
            (*step, status.to_string(), *title),
            expected,
            "spec/errors.md row of {name}"
        );
    }
}
