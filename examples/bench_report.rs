//! Request-verification cost against baselines measured in the same run.
//!
//! `cargo run --release --example bench_report` prints one JSON object: the
//! median ns/op of each case over interleaved rounds, and paired ratios
//! (each round's ratio, then the median), which survive the machine's noise
//! far better than absolute times. `BENCH_ROUNDS` (default 31) and
//! `BENCH_BATCH_MS` (default 4) tune the run.
//!
//! Cases:
//! * `raw_ed25519_verify_ns`: ed25519-dalek `verify_strict` of distinct
//!   200-byte messages (the size of a proof's Sig_structure), key decoded.
//! * `request_verify_warm_ns`: token already in the verifier's cache; parse
//!   the proof, check it, verify its signature, record its jti.
//! * `request_verify_cold_ns`: a token never seen: verify token and proof.
//! * `es256_*`: the same with P-256 keys (`raw_es256_verify_ns` the baseline).
//! * `dpop_jwt_request_ns`: RFC 9449 with `jsonwebtoken` (EdDSA): decode the
//!   proof header, check typ/alg, build the key from its jwk, verify the
//!   proof, check htm/htu/iat/ath, verify the access token, compare
//!   cnf.jkt with the jwk thumbprint, record the jti.

use std::collections::HashSet;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use keybound::key::{Algorithm, KeySet, SigningKey};
use keybound::proof::{ProofBuilder, RequestInfo};
use keybound::token::TokenBuilder;
use keybound::verify::{ManualClock, MemoryReplayStore, TrustedIssuer, Verifier};
use serde_json::json;
use sha2::Digest;

const NOW: u64 = 1_763_800_000;
const ISSUER: &str = "https://issuer.example";
const AUDIENCE: &str = "https://nova.example";
const URI: &str = "https://nova.example/v2/servers";

struct Pair {
    token: Vec<u8>,
    proof: Vec<u8>,
}

struct Setup {
    issuer: SigningKey,
    client: SigningKey,
}

impl Setup {
    fn new(alg: Algorithm) -> Self {
        Setup {
            issuer: SigningKey::derive(alg, b"bench", b"issuer").unwrap(),
            client: SigningKey::derive(alg, b"bench", b"client").unwrap(),
        }
    }

    fn verifier(&self) -> Verifier {
        let keys = KeySet::new()
            .with(self.issuer.public_key().default_kid(), self.issuer.public_key().clone())
            .unwrap();
        Verifier::builder(AUDIENCE, TrustedIssuer::with_keys(ISSUER, keys))
            .clock(Arc::new(ManualClock::new(NOW)))
            .replay_store(Arc::new(MemoryReplayStore::with_budget(1 << 30).fenced_at(0)))
            .build()
            .unwrap()
    }

    fn token(&self) -> Vec<u8> {
        TokenBuilder::service(
            ISSUER,
            "ayoung@stoughton",
            AUDIENCE,
            self.client.public_key().clone(),
            NOW - 10,
        )
        .scope("stoughton", "turing")
        .roles(["member"])
        .sign(&self.issuer, &self.issuer.public_key().default_kid())
        .unwrap()
        .into_bytes()
    }

    fn proof(&self, token: &[u8]) -> Vec<u8> {
        ProofBuilder::new("GET", URI, token, b"", NOW - 1)
            .unwrap()
            .sign(&self.client)
            .unwrap()
            .into_bytes()
    }
}

/// A benchmark case: runs `n` operations, each with fresh input.
trait Case {
    fn name(&self) -> &'static str;
    fn prepare(&mut self, n: usize);
    fn run(&mut self, n: usize);
}

struct RawVerify {
    name: &'static str,
    key: SigningKey,
    message: Vec<u8>,
    signature: Vec<u8>,
}

impl Case for RawVerify {
    fn name(&self) -> &'static str {
        self.name
    }
    fn prepare(&mut self, _: usize) {}
    fn run(&mut self, n: usize) {
        let public = self.key.public_key();
        for _ in 0..n {
            assert!(black_box(public).verify(black_box(&self.message), black_box(&self.signature)));
        }
    }
}

/// ed25519-dalek directly, not through keybound's key type, over distinct
/// messages and signatures: a verifier never checks the same signature twice,
/// and repeating one lets caches and branch predictors learn it.
struct DalekVerify {
    key: ed25519_dalek::SigningKey,
    pool: Vec<(Vec<u8>, ed25519_dalek::Signature)>,
}

impl Case for DalekVerify {
    fn name(&self) -> &'static str {
        "raw_ed25519_verify_ns"
    }
    fn prepare(&mut self, n: usize) {
        self.pool = (0..n)
            .map(|i| {
                let message: Vec<u8> = (0..200).map(|j| (i * 31 + j) as u8).collect();
                let signature = ed25519_dalek::Signer::sign(&self.key, &message);
                (message, signature)
            })
            .collect();
    }
    fn run(&mut self, n: usize) {
        let key = self.key.verifying_key();
        for (message, signature) in self.pool.drain(..n) {
            key.verify_strict(black_box(&message), black_box(&signature)).unwrap();
        }
    }
}

struct Requests {
    name: &'static str,
    setup: Setup,
    verifier: Verifier,
    warm_token: Vec<u8>,
    cold: bool,
    pool: Vec<Pair>,
}

impl Case for Requests {
    fn name(&self) -> &'static str {
        self.name
    }
    fn prepare(&mut self, n: usize) {
        self.pool = (0..n)
            .map(|_| {
                let token = if self.cold {
                    self.setup.token()
                } else {
                    self.warm_token.clone()
                };
                let proof = self.setup.proof(&token);
                Pair { token, proof }
            })
            .collect();
    }
    fn run(&mut self, n: usize) {
        let request = RequestInfo::new("GET", URI, b"");
        for pair in self.pool.drain(..n) {
            black_box(
                self.verifier
                    .verify_request(&pair.token, &pair.proof, &request)
                    .unwrap(),
            );
        }
    }
}

mod dpop {
    use super::*;
    use jsonwebtoken::jwk::{
        AlgorithmParameters, CommonParameters, EllipticCurve, Jwk, OctetKeyPairParameters, OctetKeyPairType,
        ThumbprintHash,
    };
    use jsonwebtoken::{
        Algorithm as JwtAlg, DecodingKey, EncodingKey, Header, Validation, decode, decode_header, encode,
    };
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize)]
    struct Cnf {
        jkt: String,
    }
    #[derive(Serialize, Deserialize)]
    struct AccessClaims {
        iss: String,
        sub: String,
        aud: String,
        exp: u64,
        iat: u64,
        jti: String,
        scope: String,
        cnf: Cnf,
    }
    #[derive(Serialize, Deserialize)]
    struct ProofClaims {
        jti: String,
        htm: String,
        htu: String,
        iat: u64,
        ath: String,
    }

    fn pkcs8(seed: &[u8; 32]) -> Vec<u8> {
        let mut der = hex_prefix();
        der.extend_from_slice(seed);
        der
    }
    fn hex_prefix() -> Vec<u8> {
        vec![
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
        ]
    }

    pub struct Dpop {
        issuer_key: DecodingKey,
        client_seed: [u8; 32],
        client_jwk: Jwk,
        issuer_enc: EncodingKey,
        client_enc: EncodingKey,
        seen: HashSet<String>,
        pool: Vec<(String, String)>,
        counter: u64,
    }

    impl Dpop {
        pub fn new() -> Self {
            let issuer_seed = [1u8; 32];
            let client_seed = [2u8; 32];
            let issuer_pub = ed25519_dalek::SigningKey::from_bytes(&issuer_seed).verifying_key();
            let client_pub = ed25519_dalek::SigningKey::from_bytes(&client_seed).verifying_key();
            let client_jwk = Jwk {
                common: CommonParameters::default(),
                algorithm: AlgorithmParameters::OctetKeyPair(OctetKeyPairParameters {
                    key_type: OctetKeyPairType::OctetKeyPair,
                    curve: EllipticCurve::Ed25519,
                    x: URL_SAFE_NO_PAD.encode(client_pub.as_bytes()),
                }),
            };
            Dpop {
                issuer_key: DecodingKey::from_ed_components(&URL_SAFE_NO_PAD.encode(issuer_pub.as_bytes())).unwrap(),
                client_seed,
                client_jwk,
                issuer_enc: EncodingKey::from_ed_der(&pkcs8(&issuer_seed)),
                client_enc: EncodingKey::from_ed_der(&pkcs8(&client_seed)),
                seen: HashSet::new(),
                pool: Vec::new(),
                counter: 0,
            }
        }

        /// One access token (cnf.jkt) and its proof, as a client sends them.
        pub fn make(&mut self) -> (String, String) {
            let _ = self.client_seed;
            self.counter += 1;
            let jkt = self.client_jwk.thumbprint(ThumbprintHash::SHA256).unwrap();
            let mut header = Header::new(JwtAlg::EdDSA);
            header.typ = Some("at+jwt".into());
            header.kid = Some("key-2026-01".into());
            let at = encode(
                &header,
                &AccessClaims {
                    iss: ISSUER.into(),
                    sub: "ayoung@stoughton".into(),
                    aud: AUDIENCE.into(),
                    exp: NOW + 290,
                    iat: NOW - 10,
                    jti: format!("at-{}", self.counter),
                    scope: "project:turing role:member".into(),
                    cnf: Cnf { jkt },
                },
                &self.issuer_enc,
            )
            .unwrap();
            let mut header = Header::new(JwtAlg::EdDSA);
            header.typ = Some("dpop+jwt".into());
            header.jwk = Some(self.client_jwk.clone());
            let ath = URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(at.as_bytes()));
            let proof = encode(
                &header,
                &ProofClaims {
                    jti: format!("proof-{:016}", self.counter),
                    htm: "GET".into(),
                    htu: URI.into(),
                    iat: NOW - 1,
                    ath,
                },
                &self.client_enc,
            )
            .unwrap();
            (at, proof)
        }

        /// The checks RFC 9449 §4.3 and §7 require of a resource server.
        fn check(&mut self, access_token: &str, proof: &str) {
            let header = decode_header(proof).unwrap();
            assert_eq!(header.typ.as_deref(), Some("dpop+jwt"));
            assert_eq!(header.alg, JwtAlg::EdDSA);
            let jwk = header.jwk.as_ref().unwrap();
            let proof_key = DecodingKey::from_jwk(jwk).unwrap();
            let mut v = Validation::new(JwtAlg::EdDSA);
            v.validate_exp = false;
            v.validate_aud = false;
            v.set_required_spec_claims::<&str>(&[]);
            let claims = decode::<ProofClaims>(proof, &proof_key, &v).unwrap().claims;
            assert_eq!(claims.htm, "GET");
            assert_eq!(claims.htu, URI);
            assert!(claims.iat + 60 >= NOW && claims.iat <= NOW + 30);
            assert_eq!(
                claims.ath,
                URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(access_token.as_bytes()))
            );
            let mut v = Validation::new(JwtAlg::EdDSA);
            v.set_audience(&[AUDIENCE]);
            v.set_issuer(&[ISSUER]);
            v.validate_exp = false; // fixed clock; exp compared below
            let at = decode::<AccessClaims>(access_token, &self.issuer_key, &v)
                .unwrap()
                .claims;
            assert!(at.exp + 30 >= NOW);
            assert_eq!(at.cnf.jkt, jwk.thumbprint(ThumbprintHash::SHA256).unwrap());
            assert!(self.seen.insert(claims.jti));
        }
    }

    impl Case for Dpop {
        fn name(&self) -> &'static str {
            "dpop_jwt_request_ns"
        }
        fn prepare(&mut self, n: usize) {
            self.pool = (0..n).map(|_| self.make()).collect();
        }
        fn run(&mut self, n: usize) {
            let pool: Vec<_> = self.pool.drain(..n).collect();
            for (at, proof) in pool {
                self.check(black_box(&at), black_box(&proof));
            }
        }
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

fn main() {
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(31);
    let batch_ms: f64 = std::env::var("BENCH_BATCH_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4.0);

    let ed = Setup::new(Algorithm::EdDSA);
    let es = Setup::new(Algorithm::ES256);
    let message = vec![0x5a; 200];
    let dalek_key = ed25519_dalek::SigningKey::from_bytes(&[3u8; 32]);
    let sizes_token = ed.token();
    let sizes_proof = ed.proof(&sizes_token);

    let mut cases: Vec<Box<dyn Case>> = vec![
        Box::new(DalekVerify {
            key: dalek_key,
            pool: Vec::new(),
        }),
        {
            let key = SigningKey::derive(Algorithm::ES256, b"bench", b"raw").unwrap();
            let signature = key.sign(&message);
            Box::new(RawVerify {
                name: "raw_es256_verify_ns",
                key,
                message: message.clone(),
                signature,
            })
        },
    ];
    for (setup, warm, cold) in [
        (ed, "request_verify_warm_ns", "request_verify_cold_ns"),
        (es, "es256_request_verify_warm_ns", "es256_request_verify_cold_ns"),
    ] {
        let setup_cold = Setup::new(setup.issuer.algorithm());
        let warm_token = setup.token();
        let verifier = setup.verifier();
        // Put the warm token into the cache.
        let first = setup.proof(&warm_token);
        verifier
            .verify_request(&warm_token, &first, &RequestInfo::new("GET", URI, b""))
            .unwrap();
        let verifier_cold = setup_cold.verifier();
        cases.push(Box::new(Requests {
            name: warm,
            setup,
            verifier,
            warm_token,
            cold: false,
            pool: Vec::new(),
        }));
        cases.push(Box::new(Requests {
            name: cold,
            verifier: verifier_cold,
            setup: setup_cold,
            warm_token: Vec::new(),
            cold: true,
            pool: Vec::new(),
        }));
    }
    cases.push(Box::new(dpop::Dpop::new()));

    // Calibrate each case to about `batch_ms` per sample.
    let mut batch = Vec::new();
    for case in cases.iter_mut() {
        let mut n = 4;
        loop {
            case.prepare(n);
            let start = Instant::now();
            case.run(n);
            let ms = start.elapsed().as_secs_f64() * 1e3;
            if ms > batch_ms / 4.0 || n > 1 << 20 {
                batch.push(((batch_ms / ms) * n as f64).ceil().max(2.0) as usize);
                break;
            }
            n *= 4;
        }
    }
    let mut samples: Vec<Vec<f64>> = vec![Vec::with_capacity(rounds); cases.len()];
    for (case, n) in cases.iter_mut().zip(&batch) {
        case.prepare(n * rounds);
    }
    for round in 0..rounds {
        // Rotate the order so that no case always runs first or last.
        for k in 0..cases.len() {
            let i = (k + round) % cases.len();
            let start = Instant::now();
            cases[i].run(batch[i]);
            samples[i].push(start.elapsed().as_nanos() as f64 / batch[i] as f64);
        }
    }
    let index = |name: &str| cases.iter().position(|c| c.name() == name).unwrap();
    let paired = |a: &str, b: &str| {
        let (a, b) = (index(a), index(b));
        let mut r: Vec<f64> = (0..rounds).map(|i| samples[a][i] / samples[b][i]).collect();
        (median(&mut r) * 1000.0).round() / 1000.0
    };
    let mut report = serde_json::Map::new();
    for (i, case) in cases.iter().enumerate() {
        let mut s = samples[i].clone();
        report.insert(case.name().into(), json!(median(&mut s).round() as u64));
    }
    report.insert("token_bytes".into(), json!(sizes_token.len()));
    report.insert("proof_bytes".into(), json!(sizes_proof.len()));
    report.insert(
        "ratios".into(),
        json!({
            "warm_over_raw": paired("request_verify_warm_ns", "raw_ed25519_verify_ns"),
            "cold_over_raw": paired("request_verify_cold_ns", "raw_ed25519_verify_ns"),
            "dpop_over_warm": paired("dpop_jwt_request_ns", "request_verify_warm_ns"),
            "dpop_over_cold": paired("dpop_jwt_request_ns", "request_verify_cold_ns"),
            "es256_warm_over_raw_es256": paired("es256_request_verify_warm_ns", "raw_es256_verify_ns"),
            "es256_cold_over_raw_es256": paired("es256_request_verify_cold_ns", "raw_es256_verify_ns"),
        }),
    );
    report.insert(
        "targets".into(),
        json!({"warm_over_raw": "<= 1.25", "cold_over_raw": "<= 2.3", "dpop_over_warm": ">= 2.2"}),
    );
    report.insert("rounds".into(), json!(rounds));
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::Value::Object(report)).unwrap()
    );
}
