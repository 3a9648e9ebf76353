//! The `keybound keygen` and `keybound inspect` subcommands, run as the built binary.

#![cfg(feature = "cli")]

use std::path::Path;

use assert_cmd::Command;
use keybound::encoding::{b64url_decode, b64url_encode, hex_decode, hex_encode};
use keybound::key::{Algorithm, PublicKey, SigningKey, read_signing_key_file};
use keybound::proof::ProofBuilder;
use keybound::token::{Actor, Token, TokenBuilder, TokenTagging};
use predicates::prelude::*;
use serde_json::Value;

const NOW: u64 = 1_763_800_000;

fn keybound() -> Command {
    Command::cargo_bin("keybound").expect("the keybound binary is built")
}

struct Fixture {
    issuer: SigningKey,
    client: SigningKey,
}

impl Fixture {
    fn new(alg: Algorithm) -> Self {
        Fixture {
            issuer: SigningKey::derive(alg, b"cli tests", b"issuer").unwrap(),
            client: SigningKey::derive(alg, b"cli tests", b"client").unwrap(),
        }
    }

    fn token(&self, tagging: TokenTagging) -> Token {
        TokenBuilder::service(
            "https://issuer.example",
            "ayoung@stoughton",
            "https://nova.example",
            self.client.public_key().clone(),
            NOW,
        )
        .scope("stoughton", "turing")
        .roles(["member", "reader"])
        .trust_id("t-1")
        .actor_chain(vec![Actor {
            sub: "svc@ops".into(),
            iss: Some("https://other.example".into()),
        }])
        .origin_issuer("https://origin.example")
        .cti([7; 16])
        .tagging(tagging)
        .sign(&self.issuer, b"k1")
        .unwrap()
    }
}

/// Runs `keybound inspect [extra…] <file>` on `bytes` written to a temp file.
fn inspect_file(bytes: &[u8], extra: &[&str]) -> (i32, Value, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("input");
    std::fs::write(&path, bytes).unwrap();
    let output = keybound().arg("inspect").args(extra).arg(&path).output().unwrap();
    parse_output(output)
}

fn inspect_stdin(bytes: &[u8], extra: &[&str]) -> (i32, Value, String) {
    let output = keybound()
        .arg("inspect")
        .args(extra)
        .write_stdin(bytes.to_vec())
        .output()
        .unwrap();
    parse_output(output)
}

fn parse_output(output: std::process::Output) -> (i32, Value, String) {
    let stdout = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    let json =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {stdout:?} / {stderr}"));
    (output.status.code().expect("exited normally"), json, stderr)
}

fn public_key_file(dir: &Path, name: &str, key: &PublicKey) -> String {
    let path = dir.join(name);
    std::fs::write(&path, key.to_cose_key(None)).unwrap();
    path.to_str().unwrap().to_owned()
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

// ---------------------------------------------------------------- keygen

#[test]
fn keygen_writes_0600_key_and_prints_matching_thumbprint() {
    for alg in ["ed25519", "es256"] {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("client.key");
        let output = keybound()
            .args(["keygen", "--alg", alg, "--json", "--out"])
            .arg(&out)
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        #[cfg(unix)]
        assert_eq!(mode(&out), 0o600);

        let json: Value = serde_json::from_slice(&output.stdout).unwrap();
        let key = read_signing_key_file(&out).unwrap();
        let expected = Algorithm::from_name(alg).unwrap();
        assert_eq!(key.algorithm(), expected);
        assert_eq!(json["alg"], expected.name());
        let thumbprint = key.public_key().thumbprint();
        assert_eq!(json["thumbprint"], thumbprint.to_string());
        assert_eq!(json["thumbprint_hex"], hex_encode(thumbprint.as_bytes()));
        assert_eq!(json["out"], out.to_str().unwrap());
        // The printed public key is the key's public COSE_Key.
        let public = PublicKey::from_cose_key(&hex_decode(json["public_key_hex"].as_str().unwrap()).unwrap()).unwrap();
        assert_eq!(&public, key.public_key());
        assert_eq!(json["public_key_b64url"], b64url_encode(&public.to_cose_key(None)));
        // Nothing secret on stdout.
        let secret = key.to_cose_key(None);
        let d = hex_encode(&secret[secret.len() - 32..]);
        assert!(!String::from_utf8_lossy(&output.stdout).contains(&d));
    }
}

#[test]
fn keygen_human_output_kid_and_public_out() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("issuer.key");
    let public_out = dir.path().join("issuer.pub");
    let assert = keybound()
        .args(["keygen", "--alg", "es256", "--kid", "6B31", "--out"])
        .arg(&out)
        .arg("--public-out")
        .arg(&public_out)
        .assert()
        .success();
    let stdout = String::from_utf8(assert.get_output().stdout.clone()).unwrap();
    let key = read_signing_key_file(&out).unwrap();
    assert!(stdout.contains(&key.public_key().thumbprint().to_string()), "{stdout}");
    assert!(
        stdout.contains(&hex_encode(key.public_key().thumbprint().as_bytes())),
        "{stdout}"
    );
    assert!(stdout.contains("6b31"), "{stdout}");
    // The key file and the public file carry the kid.
    let private = std::fs::read(&out).unwrap();
    let parsed = <coset::CoseKey as coset::CborSerializable>::from_slice(&private).unwrap();
    assert_eq!(parsed.key_id, b"k1".to_vec());
    let public = std::fs::read(&public_out).unwrap();
    assert_eq!(public, key.public_key().to_cose_key(Some(b"k1")));
    assert_eq!(&PublicKey::from_cose_key(&public).unwrap(), key.public_key());
}

#[test]
fn keygen_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("client.key");
    std::fs::write(&out, b"precious").unwrap();
    keybound()
        .args(["keygen", "--out"])
        .arg(&out)
        .assert()
        .code(1)
        .stdout(predicate::str::is_empty())
        .stderr(predicate::str::starts_with("error: key.io: ").and(predicate::str::contains("already exists")));
    assert_eq!(std::fs::read(&out).unwrap(), b"precious");

    // An existing --public-out is refused before the private key is written.
    let fresh = dir.path().join("fresh.key");
    keybound()
        .args(["keygen", "--out"])
        .arg(&fresh)
        .arg("--public-out")
        .arg(&out)
        .assert()
        .code(1)
        .stderr(predicate::str::starts_with("error: key.io: "));
    assert!(!fresh.exists());
}

#[test]
fn keygen_usage_errors_are_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("k");
    for args in [
        vec!["keygen", "--alg", "rsa", "--out"],
        vec!["keygen", "--kid", "xyz", "--out"],
        vec!["keygen", "--kid", "", "--out"],
    ] {
        let output = keybound().args(&args).arg(&out).output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert!(stderr.starts_with("error: cli.usage: "), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(!out.exists());
    }
}

// ---------------------------------------------------------------- inspect

fn assert_token_claims(json: &Value, f: &Fixture) {
    assert_eq!(json["type"], "token", "{json:#}");
    assert_eq!(json["profile"], "ok", "{json:#}");
    assert_eq!(json["signature_check"], "unchecked");
    let alg = f.issuer.algorithm().to_string();
    assert_eq!(json["protected"]["alg"], alg);
    assert_eq!(json["protected"]["kid"], hex_encode(b"k1"));
    assert_eq!(json["unprotected"], serde_json::json!({}));
    assert_eq!(json["signature"].as_str().unwrap().len(), 128);
    let c = &json["claims"];
    assert_eq!(c["iss"], "https://issuer.example");
    assert_eq!(c["sub"], "ayoung@stoughton");
    assert_eq!(c["aud"], "https://nova.example");
    assert_eq!(c["iat"], NOW);
    assert_eq!(c["exp"], NOW + 300);
    assert_eq!(c["cti"], hex_encode(&[7; 16]));
    let cnf = &c["cnf"];
    let client = f.client.public_key();
    assert_eq!(cnf["thumbprint"], client.thumbprint().to_string());
    match client.algorithm() {
        Algorithm::EdDSA => {
            assert_eq!(cnf["kty"], "OKP");
            assert_eq!(cnf["crv"], "Ed25519");
            assert!(cnf.get("y").is_none());
        }
        Algorithm::ES256 => {
            assert_eq!(cnf["kty"], "EC2");
            assert_eq!(cnf["crv"], "P-256");
            assert_eq!(cnf["y"].as_str().unwrap().len(), 64);
        }
        other => panic!("no key type is known for {other}"),
    }
    assert_eq!(cnf["x"].as_str().unwrap().len(), 64);
    let kb = &c["keybound"];
    assert_eq!(kb["kind"], "service");
    assert_eq!(kb["domain"], "stoughton");
    assert_eq!(kb["project"], "turing");
    assert_eq!(kb["roles"], serde_json::json!(["member", "reader"]));
    assert_eq!(kb["trust_id"], "t-1");
    assert_eq!(
        kb["actor_chain"],
        serde_json::json!([{"sub": "svc@ops", "iss": "https://other.example"}])
    );
    assert_eq!(kb["origin_issuer"], "https://origin.example");
}

#[test]
fn inspect_decodes_every_encoding_and_tag_form() {
    for alg in [Algorithm::EdDSA, Algorithm::ES256] {
        let f = Fixture::new(alg);
        for (tagging, tags) in [
            (TokenTagging::Untagged, serde_json::json!([])),
            (TokenTagging::Sign1, serde_json::json!([18])),
            (TokenTagging::Cwt, serde_json::json!([61, 18])),
        ] {
            let token = f.token(tagging);
            let encodings: [(&str, Vec<u8>); 3] = [
                ("binary", token.as_bytes().to_vec()),
                ("hex", format!("{}\n", hex_encode(token.as_bytes())).into_bytes()),
                ("base64url", format!("{}\n", token.to_base64url()).into_bytes()),
            ];
            for (encoding, input) in encodings {
                for via_stdin in [false, true] {
                    let (code, json, stderr) = if via_stdin {
                        inspect_stdin(&input, &[])
                    } else {
                        inspect_file(&input, &[])
                    };
                    assert_eq!(code, 0, "{alg} {tagging:?} {encoding}: {stderr}");
                    assert!(stderr.is_empty(), "{stderr}");
                    assert_eq!(json["tags"], tags, "{tagging:?}");
                    assert_eq!(json["input"]["encoding"], encoding);
                    assert_eq!(json["input"]["bytes"], token.as_bytes().len());
                    assert_token_claims(&json, &f);
                }
            }
        }
    }
}

#[test]
fn inspect_accepts_tag_61_alone() {
    let f = Fixture::new(Algorithm::EdDSA);
    let token = f.token(TokenTagging::Untagged);
    let tagged = [&[0xd8, 61][..], token.as_bytes()].concat();
    let (code, json, _) = inspect_file(&tagged, &[]);
    assert_eq!(code, 0);
    assert_eq!(json["tags"], serde_json::json!([61]));
    assert_token_claims(&json, &f);
}

#[test]
fn inspect_checks_the_signature_with_key() {
    let dir = tempfile::tempdir().unwrap();
    for alg in [Algorithm::EdDSA, Algorithm::ES256] {
        let f = Fixture::new(alg);
        let token = f.token(TokenTagging::Cwt);
        let issuer_file = public_key_file(dir.path(), &format!("issuer-{alg}.pub"), f.issuer.public_key());
        let (code, json, stderr) = inspect_file(token.as_bytes(), &["--key", &issuer_file]);
        assert_eq!(code, 0, "{stderr}");
        assert_eq!(json["signature_check"], "valid");

        // The key given literally, in hex and in base64url.
        let cose = f.issuer.public_key().to_cose_key(Some(b"k1"));
        for literal in [hex_encode(&cose), b64url_encode(&cose)] {
            let (code, json, _) = inspect_stdin(token.to_base64url().as_bytes(), &["--key", &literal]);
            assert_eq!(code, 0);
            assert_eq!(json["signature_check"], "valid");
        }

        // The client key (same algorithm) is the wrong key.
        let wrong = public_key_file(dir.path(), &format!("client-{alg}.pub"), f.client.public_key());
        let (code, json, _) = inspect_file(token.as_bytes(), &["--key", &wrong]);
        assert_eq!(code, 1);
        assert_eq!(json["signature_check"], "invalid");
        assert_eq!(json["signature_error"]["error"], "cose.bad_signature");
        assert_eq!(json["claims"]["sub"], "ayoung@stoughton");
    }
    // A key of the other algorithm: invalid too.
    let ed = Fixture::new(Algorithm::EdDSA);
    let es = Fixture::new(Algorithm::ES256);
    let es_file = public_key_file(dir.path(), "es.pub", es.issuer.public_key());
    let (code, json, _) = inspect_file(ed.token(TokenTagging::Untagged).as_bytes(), &["--key", &es_file]);
    assert_eq!(code, 1);
    assert_eq!(json["signature_check"], "invalid");
    assert_eq!(json["signature_error"]["error"], "cose.alg_mismatch");
}

#[test]
fn inspect_bad_key_option_is_a_usage_error() {
    let f = Fixture::new(Algorithm::EdDSA);
    let token = f.token(TokenTagging::Untagged);
    let output = keybound()
        .args(["inspect", "--key", "no-such-file-or-key!"])
        .write_stdin(token.to_base64url())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    // Not hex or base64url, so a file name: a missing file, not a key to decode.
    assert!(stderr.starts_with("error: cli.io: --key: file not found"), "{stderr}");
    assert!(
        !stderr.contains("no-such-file-or-key!"),
        "the argument is never echoed: {stderr}"
    );
    assert_eq!(stderr.lines().count(), 1);
}

#[test]
fn inspect_garbage_exits_2_with_an_error_code() {
    let cases: [(&[u8], &str); 5] = [
        (b"this is not a token!", "input.malformed"),
        (b"", "input.malformed"),
        (&[0xff, 0x00, 0x13], "cbor.malformed"),
        (b"a1010203", "cose.structure"),
        (&[0x84, 0x40, 0xa0, 0x41, 0x00, 0x01], "cose.structure"),
    ];
    for (input, code) in cases {
        let output = keybound().arg("inspect").write_stdin(input.to_vec()).output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{input:?}");
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert!(stderr.starts_with(&format!("error: {code}: ")), "{input:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        let json: Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(json["error"], code);
        assert!(json["message"].is_string());
    }
}

#[test]
fn inspect_refuses_oversized_input() {
    let big = vec![b'a'; 64 * 1024 + 2];
    let output = keybound().arg("inspect").write_stdin(big).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.starts_with("error: cbor.too_large: "), "{stderr}");
}

#[test]
fn inspect_missing_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let output = keybound()
        .arg("inspect")
        .arg(dir.path().join("missing"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.starts_with("error: cli.io: file not found: "), "{stderr}");
}

#[test]
fn inspect_bit_flipped_tokens_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let f = Fixture::new(Algorithm::EdDSA);
    let key = public_key_file(dir.path(), "issuer.pub", f.issuer.public_key());
    let token = f.token(TokenTagging::Cwt).into_bytes();
    // A spread of positions through tags, headers, claims and signature, and every bit of one byte.
    let mut flips: Vec<(usize, u8)> = (0..token.len()).step_by(7).map(|i| (i, 1 << (i % 8))).collect();
    flips.extend((0..8).map(|bit| (token.len() / 2, 1 << bit)));
    for (i, mask) in flips {
        let mut flipped = token.clone();
        flipped[i] ^= mask;
        let output = keybound()
            .args(["inspect", "--compact", "--key", &key])
            .write_stdin(flipped)
            .output()
            .unwrap();
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert!(
            !stderr.contains("panicked") && !stderr.contains("cli.internal"),
            "byte {i}: {stderr}"
        );
        let json: Value = serde_json::from_slice(&output.stdout).unwrap();
        match output.status.code() {
            Some(2) => assert!(json["error"].is_string(), "byte {i}"),
            Some(code @ (0 | 1)) => {
                let profile_error = json["profile"].get("error").is_some();
                let invalid = json["signature_check"] == "invalid";
                assert!(
                    profile_error || invalid,
                    "byte {i} mask {mask:#x}: undetected flip: {json:#}"
                );
                assert_eq!(code == 1, invalid, "byte {i}");
            }
            other => panic!("byte {i}: exit status {other:?}: {stderr}"),
        }
    }
}

#[test]
fn inspect_shows_profile_errors_of_foreign_tokens() {
    // A CWT keybound does not accept: no kid, and a claim label outside the profile.
    let issuer = SigningKey::derive(Algorithm::EdDSA, b"cli tests", b"foreign").unwrap();
    let claims = coset::cwt::ClaimsSetBuilder::new()
        .issuer("https://foreign.example".into())
        .private_claim(
            -70000,
            ciborium::Value::Tag(1, Box::new(ciborium::Value::Integer(5.into()))),
        )
        .build();
    let payload = coset::CborSerializable::to_vec(claims).unwrap();
    let sign1 = coset::CoseSign1Builder::new()
        .protected(
            coset::HeaderBuilder::new()
                .algorithm(coset::iana::Algorithm::EdDSA)
                .build(),
        )
        .unprotected(
            coset::HeaderBuilder::new()
                .content_type("application/cwt".into())
                .build(),
        )
        .payload(payload)
        .create_signature(&[], |tbs| issuer.sign(tbs))
        .build();
    let bytes = coset::CborSerializable::to_vec(sign1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key = public_key_file(dir.path(), "foreign.pub", issuer.public_key());
    let (code, json, _) = inspect_file(&bytes, &["--key", &key]);
    assert_eq!(code, 0, "{json:#}");
    assert_eq!(json["type"], "token");
    assert!(
        json["profile"]["error"].as_str().unwrap().starts_with("cose."),
        "{json:#}"
    );
    assert_eq!(json["protected"]["alg"], "EdDSA");
    assert_eq!(json["unprotected"]["content_type"], "application/cwt");
    assert_eq!(json["claims"]["iss"], "https://foreign.example");
    assert_eq!(json["claims"]["-70000"], serde_json::json!({"tag": 1, "value": 5}));
    // Checked over the received bytes although keybound would not parse it.
    assert_eq!(json["signature_check"], "valid");
}

#[test]
fn inspect_shows_proofs_as_proofs() {
    let dir = tempfile::tempdir().unwrap();
    let f = Fixture::new(Algorithm::ES256);
    let token = f.token(TokenTagging::Untagged);
    let proof = ProofBuilder::new(
        "POST",
        "https://nova.example/v2/servers?x=1",
        token.as_bytes(),
        b"{}",
        NOW + 1,
    )
    .unwrap()
    .nonce(b"n0nce".to_vec())
    .jti([9; 16])
    .tagged(true)
    .sign(&f.client)
    .unwrap();
    let key = public_key_file(dir.path(), "client.pub", f.client.public_key());
    for extra in [&[][..], &["--key", key.as_str()][..]] {
        let (code, json, _) = inspect_stdin(proof.to_base64url().as_bytes(), extra);
        assert_eq!(code, 0);
        assert_eq!(json["type"], "proof", "{json:#}");
        assert_eq!(json["tags"], serde_json::json!([18]));
        assert_eq!(json["protected"]["alg"], "ES256");
        let c = &json["claims"];
        assert_eq!(c["htm"], "POST");
        assert_eq!(c["htu"], "https://nova.example/v2/servers?x=1");
        assert_eq!(c["iat"], NOW + 1);
        assert_eq!(c["jti"], hex_encode(&[9; 16]));
        assert_eq!(c["tkh"], hex_encode(&token.sha256()[..4]));
        assert_eq!(c["bdh"], hex_encode(&keybound::proof::body_sha256(b"{}")[..4]));
        assert_eq!(c["nonce"], hex_encode(b"n0nce"));
        assert_eq!(json["signature_check"], "unchecked");
        if !extra.is_empty() {
            let notes = json["notes"].to_string();
            assert!(notes.contains("keybound verify"), "{notes}");
        }
    }
    // The base64url round trip of the proof itself is exact.
    assert_eq!(b64url_decode(&proof.to_base64url()).unwrap(), proof.as_bytes());
}

// ---------------------------------------------------------------- help

#[test]
fn help_texts_explain_and_give_examples() {
    let top = keybound().arg("--help").assert().success();
    let text = String::from_utf8(top.get_output().stdout.clone()).unwrap();
    assert!(text.contains("holder-of-key"), "{text}");
    assert!(text.contains("Example"), "{text}");
    for sub in ["keygen", "inspect"] {
        assert!(text.contains(sub), "{text}");
        for flag in ["--help", "-h"] {
            let out = keybound().args([sub, flag]).assert().success();
            let help = String::from_utf8(out.get_output().stdout.clone()).unwrap();
            assert!(help.contains("Example"), "{sub} {flag}: {help}");
            assert!(help.contains(&format!("keybound {sub}")), "{help}");
        }
    }
}

#[test]
fn unknown_arguments_are_one_line_usage_errors() {
    let output = keybound().args(["inspect", "--frobnicate"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.starts_with("error: cli.usage: "), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

// ---------------------------------------------------------------- the command tree

/// `keybound <path…> --help` as printed to a pipe at 100 columns.
fn help_of(path: &[String]) -> String {
    let out = keybound()
        .args(path)
        .arg("--help")
        .env("COLUMNS", "100")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{path:?} --help: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The lines of section `title` ("Commands:", "Options:", …) of a help text.
fn section<'a>(help: &'a str, title: &str) -> Vec<&'a str> {
    help.lines()
        .skip_while(|l| *l != title)
        .skip(1)
        .take_while(|l| l.is_empty() || l.starts_with(' '))
        .collect()
}

/// The subcommands a help text lists (clap's own `help` aside).
fn subcommands(help: &str) -> Vec<String> {
    section(help, "Commands:")
        .iter()
        .filter(|l| l.starts_with("  ") && !l[2..].starts_with(' '))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect()
}

/// The arguments of a help text that have no help: an entry (a line
/// indented by two to six, starting with `-`, `<` or `[`) with no text on its line
/// after the two spaces that end its spec, nor below it (other than
/// `[default: …]`-style notes).
fn arguments_without_help(help: &str) -> Vec<String> {
    let mut missing = Vec::new();
    for title in ["Arguments:", "Options:"] {
        let lines = section(help, title);
        // Entries are indented by 2 (`  -X, --request`) or 6 (`      --data`),
        // their help texts by 10 or more.
        let is_entry = |l: &str| {
            let text = l.trim_start();
            (2..=6).contains(&(l.len() - text.len())) && text.starts_with(['-', '<', '['])
        };
        for (i, line) in lines.iter().enumerate().filter(|(_, l)| is_entry(l)) {
            let inline = line.trim().split_once("  ").is_some_and(|(_, h)| !h.trim().is_empty());
            let below = lines[i + 1..]
                .iter()
                .take_while(|l| !is_entry(l))
                .any(|l| !l.trim().is_empty() && !l.trim().starts_with('['));
            if !(inline || below) {
                missing.push(line.trim().to_owned());
            }
        }
    }
    missing
}

/// The problems of a help text's "Examples:" block: every line a whole
/// command (`keybound …`), a continuation of the line before (which ends in
/// `\`), or a pipeline or substitution feeding `keybound`. A line clap
/// wrapped at the help width is none of these.
fn example_problems(path: &str, help: &str) -> Vec<String> {
    let Some((_, block)) = help.split_once("\nExamples:\n") else {
        return vec![format!("{path}: no \"Examples:\" block")];
    };
    let lines: Vec<&str> = block.lines().take_while(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return vec![format!("{path}: an empty \"Examples:\" block")];
    }
    let mut problems = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let text = line.trim();
        let continued = i > 0 && lines[i - 1].trim_end().ends_with('\\');
        let fed = ["| keybound ", "$(keybound ", "<(keybound "]
            .iter()
            .any(|p| text.contains(p));
        // `NAME=value keybound …`: one command with its environment.
        let with_env = text.split_once('=').is_some_and(|(name, _)| {
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
        }) && text.contains(" keybound ");
        if !(text.starts_with("keybound ") || continued || fed || with_env) {
            problems.push(format!("{path}: example line is not a whole command: {text:?}"));
        }
    }
    problems
}

/// Every command path of the tree, the root first, as the binary shows it.
fn command_tree() -> Vec<(Vec<String>, String)> {
    let mut found = Vec::new();
    let mut pending = vec![Vec::<String>::new()];
    while let Some(path) = pending.pop() {
        let help = help_of(&path);
        for sub in subcommands(&help).into_iter().rev() {
            let mut next = path.clone();
            next.push(sub);
            pending.push(next);
        }
        found.push((path, help));
    }
    found
}

/// The whole tree, every subcommand at every depth, as the real binary
/// prints it: each command has about text, each argument help, and each
/// leaf an "Examples:" block with one whole command per line at 100
/// columns.
#[test]
fn every_command_is_documented_with_unwrapped_examples() {
    let tree = command_tree();
    let mut problems = Vec::new();
    let mut leaves = 0;
    for (path, help) in &tree {
        let name = format!("keybound {}", path.join(" "));
        let first = help.lines().next().unwrap_or_default();
        if first.trim().is_empty() || first.starts_with("Usage:") {
            problems.push(format!("{name}: no about"));
        }
        for arg in arguments_without_help(help) {
            problems.push(format!("{name}: argument {arg} has no help"));
        }
        if subcommands(help).is_empty() {
            leaves += 1;
            problems.extend(example_problems(&name, help));
        }
    }
    assert!(leaves > 40, "the walk found only {leaves} leaves");
    for expected in [
        "login", "logout", "status", "request", "headers", "token", "man", "verify",
    ] {
        assert!(
            tree.iter().any(|(p, _)| p == &[expected.to_owned()]),
            "{expected} missing"
        );
    }
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn the_example_checker_catches_wrapped_lines() {
    let good = "About\n\nExamples:\n  keybound a \\\n      --b c\n  echo x | keybound d\n\nmore";
    assert!(example_problems("t", good).is_empty());
    let wrapped = "About\n\nExamples:\n  keybound a --b\n  c\n";
    assert_eq!(example_problems("t", wrapped).len(), 1);
    assert_eq!(example_problems("t", "About\n\nExample:\n  keybound a\n").len(), 1);
    let options = "Options:\n      --a <A>  Help of a\n      --b <B>\n          \n          [default: 1]\n  -c\n          Help of c\n";
    assert_eq!(arguments_without_help(options), ["--b <B>"]);
}

/// `keybound man --dir DIR`: one page per command at every depth, each a
/// roff page of that command, named after its path.
#[test]
fn man_pages_cover_the_whole_tree() {
    let dir = tempfile::tempdir().unwrap();
    let pages = dir.path().join("man1");
    let out = keybound()
        .args(["man", "--json", "--dir"])
        .arg(&pages)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let written: Value = serde_json::from_slice(&out.stdout).unwrap();
    let tree = command_tree();
    assert_eq!(written["pages"].as_array().unwrap().len(), tree.len(), "{written}");
    let mut leaves = 0;
    for (path, help) in &tree {
        let name = std::iter::once("keybound".to_owned())
            .chain(path.iter().cloned())
            .collect::<Vec<_>>()
            .join("-");
        let page = std::fs::read_to_string(pages.join(format!("{name}.1")))
            .unwrap_or_else(|e| panic!("no page {name}.1: {e}"));
        assert!(page.contains(&format!("\n.TH {name} 1 ")), "{name}: {page}");
        if subcommands(help).is_empty() {
            // A leaf's page says what its --help says, examples included.
            let about = help
                .lines()
                .next()
                .unwrap_or_default()
                .replace('-', "\\-")
                .replace('\'', "\\*(Aq");
            // (A command without about text is the docs test's to report.)
            assert!(
                about.starts_with("Usage:") || page.contains(about.trim_end_matches('.')),
                "{name}: {about:?} not in {page}"
            );
            assert_eq!(
                page.contains("Examples:"),
                help.contains("\nExamples:\n"),
                "{name}: {page}"
            );
            leaves += 1;
        }
    }
    assert!(leaves > 40, "{leaves} leaves");
}
