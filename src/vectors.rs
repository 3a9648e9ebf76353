//! Deterministic test-vector generation (see test-vectors/README.md).
//!
//! Every key is derived from a fixed seed, every cti/jti is fixed, Ed25519
//! and RFC 6979 ES256 signatures are deterministic: the same code always
//! writes the same bytes. `cargo run --example gen_vectors` writes
//! test-vectors/; a test regenerates them and compares.

use ciborium::Value;

use crate::cbor;
use crate::cose;
use crate::encoding::hex_encode;
use crate::key::{Algorithm, KeySet, SigningKey};
use crate::proof::{self, AAD_CONTEXT, label as pl};
use crate::token::{self, Actor, Claims, TokenKind};

/// Verification time of every vector.
pub const NOW: u64 = 1_763_800_000;
const ISSUER: &str = "https://issuer.example";
const AUDIENCE: &str = "https://nova.example";
const URI: &str = "https://nova.example/v2/servers";
const LEEWAY: u64 = 30;
const MAX_AGE: u64 = 60;

/// One vector.
#[derive(Clone, Debug)]
pub struct Vector {
    /// Unique name.
    pub name: String,
    /// What it tests.
    pub description: String,
    /// The issuer's public keys (COSE_Keys with kid).
    pub issuer_keys: Vec<Vec<u8>>,
    /// Token bytes.
    pub token: Vec<u8>,
    /// Proof bytes, or none for a token-only vector.
    pub proof: Option<Vec<u8>>,
    /// Request method.
    pub method: String,
    /// Request target URI.
    pub uri: String,
    /// Request body.
    pub body: Vec<u8>,
    /// Verifier audience.
    pub audience: String,
    /// Trusted issuer id.
    pub issuer: String,
    /// Verification time.
    pub now: u64,
    /// Nonces the verifier accepts; `Some` means nonces are required.
    pub nonces: Option<Vec<Vec<u8>>>,
    /// How many times the same request is submitted (2 tests replay).
    pub submissions: u32,
    /// The service's policy (TOML), applied (A1) to the request's method
    /// and path after every other step; `None`: no policy.
    pub policy: Option<String>,
    /// A routing slip the request carries (`KB-Slip`), verified (S1–S6)
    /// and bound to the verified request (S7–S8); `None`: no slip.
    pub slip: Option<Vec<u8>>,
    /// The verifier's instance id (T9.2); `None`: it has none.
    pub instance: Option<String>,
    /// `"valid"` or the expected error code of the last submission.
    pub expected: String,
}

struct Keys {
    issuer_ed: SigningKey,
    issuer_es: SigningKey,
    issuer_ed_2: SigningKey,
    client_ed: SigningKey,
    client_es: SigningKey,
    attacker_ed: SigningKey,
}

fn derive(alg: Algorithm, name: &str) -> SigningKey {
    SigningKey::derive(alg, VECTOR_SEED.as_bytes(), name.as_bytes()).expect("derivation succeeds")
}

fn kid(key: &SigningKey) -> Vec<u8> {
    key.public_key().default_kid()
}

fn int(i: i64) -> Value {
    Value::Integer(i.into())
}
fn text(s: &str) -> Value {
    Value::Text(s.to_owned())
}
fn bytes(b: &[u8]) -> Value {
    Value::Bytes(b.to_vec())
}
fn enc(v: &Value) -> Vec<u8> {
    cbor::to_vec(v)
}
fn map(entries: Vec<(Value, Value)>) -> Value {
    Value::Map(entries)
}

/// Builds a COSE_Sign1 from raw parts, signing the Sig_structure.
fn sign1_raw(protected: &[u8], unprotected: &[u8], payload: &[u8], key: &SigningKey, aad: &[u8]) -> Vec<u8> {
    let signature = key.sign(&cose::sig_structure(protected, aad, payload));
    assemble(protected, unprotected, payload, &signature)
}

fn assemble(protected: &[u8], unprotected: &[u8], payload: &[u8], signature: &[u8]) -> Vec<u8> {
    let mut out = vec![0x84];
    cbor::write_bytes(&mut out, protected);
    out.extend_from_slice(unprotected);
    cbor::write_bytes(&mut out, payload);
    cbor::write_bytes(&mut out, signature);
    out
}

fn protected_header(alg: i64, kid: Option<&[u8]>) -> Vec<u8> {
    let mut m = vec![(int(1), int(alg))];
    if let Some(kid) = kid {
        m.push((int(4), bytes(kid)));
    }
    enc(&map(m))
}

/// The base claims of a service token for `client`.
fn base_claims(client: &SigningKey) -> Claims {
    Claims {
        iss: ISSUER.into(),
        sub: "ayoung@stoughton".into(),
        aud: AUDIENCE.into(),
        exp: NOW - 10 + 300,
        nbf: None,
        iat: NOW - 10,
        cti: *b"cti-0123456789ab",
        cnf: client.public_key().clone(),
        kind: TokenKind::Service,
        domain: Some("stoughton".into()),
        project: Some("turing".into()),
        roles: vec!["member".into()],
        trust_id: None,
        actor_chain: Vec::new(),
        origin_issuer: None,
        instance: None,
    }
}

/// Token bytes for `claims` signed by `issuer` under its default kid.
fn token_for(claims: &Claims, issuer: &SigningKey) -> Vec<u8> {
    token_with_payload(&token::issue::encode_claims(claims), issuer)
}

fn token_with_payload(payload: &[u8], issuer: &SigningKey) -> Vec<u8> {
    let protected = protected_header(issuer.algorithm().cose_id(), Some(&kid(issuer)));
    sign1_raw(&protected, &[0xa0], payload, issuer, &[])
}

/// The fields of a proof payload, editable before encoding.
#[derive(Clone)]
struct ProofFields {
    entries: Vec<(Value, Value)>,
}

impl ProofFields {
    fn new(method: &str, uri: &str, token: &[u8], body: &[u8], iat: u64) -> Self {
        let token_hash = crate::sha256(token);
        let body_hash = crate::sha256(body);
        ProofFields {
            entries: vec![
                (int(pl::HTM), text(method)),
                (
                    int(pl::HTU),
                    text(&proof::normalize_uri(uri).unwrap_or_else(|_| uri.to_owned())),
                ),
                (int(pl::IAT), Value::Integer(iat.into())),
                (int(pl::JTI), bytes(b"jti-0123456789ab")),
                (int(pl::TKH), bytes(&token_hash[..4])),
                (int(pl::BDH), bytes(&body_hash[..4])),
            ],
        }
    }

    fn set(mut self, label: i64, value: Value) -> Self {
        match self.entries.iter_mut().find(|(k, _)| *k == int(label)) {
            Some(entry) => entry.1 = value,
            None => {
                self.entries.push((int(label), value));
                self.entries.sort_by_key(|(k, _)| enc(k));
            }
        }
        self
    }

    fn remove(mut self, label: i64) -> Self {
        self.entries.retain(|(k, _)| *k != int(label));
        self
    }

    fn payload(&self) -> Vec<u8> {
        enc(&map(self.entries.clone()))
    }
}

fn aad(token: &[u8], body: &[u8]) -> Vec<u8> {
    proof::external_aad(&crate::sha256(token), &crate::sha256(body))
}

/// Signs proof fields with `key`, binding `token` and `body`.
fn proof_from(fields: &ProofFields, key: &SigningKey, token: &[u8], body: &[u8]) -> Vec<u8> {
    let protected = protected_header(key.algorithm().cose_id(), None);
    sign1_raw(&protected, &[0xa0], &fields.payload(), key, &aad(token, body))
}

struct Gen {
    keys: Keys,
    out: Vec<Vector>,
}

/// The request a vector submits.
#[derive(Clone)]
struct Req {
    method: &'static str,
    uri: String,
    body: Vec<u8>,
}

impl Req {
    fn get() -> Self {
        Req {
            method: "GET",
            uri: URI.into(),
            body: Vec::new(),
        }
    }
}

impl Gen {
    fn issuer_keys(&self) -> Vec<Vec<u8>> {
        let mut set = KeySet::new();
        for key in [&self.keys.issuer_ed, &self.keys.issuer_es, &self.keys.issuer_ed_2] {
            set.insert(kid(key), key.public_key().clone()).expect("distinct kids");
        }
        set.iter().map(|(kid, key)| key.to_cose_key(Some(kid))).collect()
    }

    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        name: &str,
        description: &str,
        token: Vec<u8>,
        proof: Option<Vec<u8>>,
        req: &Req,
        expected: &str,
    ) {
        self.push_full(name, description, token, proof, req, None, 1, expected);
    }

    #[allow(clippy::too_many_arguments)]
    fn push_full(
        &mut self,
        name: &str,
        description: &str,
        token: Vec<u8>,
        proof: Option<Vec<u8>>,
        req: &Req,
        nonces: Option<Vec<Vec<u8>>>,
        submissions: u32,
        expected: &str,
    ) {
        assert!(!self.out.iter().any(|v| v.name == name), "duplicate vector name {name}");
        self.out.push(Vector {
            name: name.into(),
            description: description.into(),
            issuer_keys: self.issuer_keys(),
            token,
            proof,
            method: req.method.into(),
            uri: req.uri.clone(),
            body: req.body.clone(),
            audience: AUDIENCE.into(),
            issuer: ISSUER.into(),
            now: NOW,
            nonces,
            submissions,
            policy: None,
            slip: None,
            instance: None,
            expected: expected.into(),
        });
    }

    /// The default client key for an issuer algorithm.
    fn client(&self, alg: Algorithm) -> &SigningKey {
        match alg {
            Algorithm::EdDSA => &self.keys.client_ed,
            Algorithm::ES256 => &self.keys.client_es,
        }
    }

    fn issuer(&self, alg: Algorithm) -> &SigningKey {
        match alg {
            Algorithm::EdDSA => &self.keys.issuer_ed,
            Algorithm::ES256 => &self.keys.issuer_es,
        }
    }

    /// A valid token (Ed25519 issuer and client) and a valid proof for `req`.
    fn good(&self, req: &Req) -> (Vec<u8>, Vec<u8>) {
        let token = token_for(&base_claims(&self.keys.client_ed), &self.keys.issuer_ed);
        let proof = proof_from(
            &ProofFields::new(req.method, &req.uri, &token, &req.body, NOW - 1),
            &self.keys.client_ed,
            &token,
            &req.body,
        );
        (token, proof)
    }

    /// Token from `claims` plus a valid proof for `req` by `client`.
    fn with_claims(&self, claims: &Claims, client: &SigningKey, req: &Req) -> (Vec<u8>, Vec<u8>) {
        let token = token_for(claims, &self.keys.issuer_ed);
        let proof = proof_from(
            &ProofFields::new(req.method, &req.uri, &token, &req.body, NOW - 1),
            client,
            &token,
            &req.body,
        );
        (token, proof)
    }

    /// A proof with edited fields for a valid token.
    fn edited_proof(&self, req: &Req, edit: impl FnOnce(ProofFields) -> ProofFields) -> (Vec<u8>, Vec<u8>) {
        let (token, _) = self.good(req);
        let fields = edit(ProofFields::new(req.method, &req.uri, &token, &req.body, NOW - 1));
        let proof = proof_from(&fields, &self.keys.client_ed, &token, &req.body);
        (token, proof)
    }

    /// A token whose claims payload is given raw, with a valid proof.
    fn raw_payload_token(&mut self, name: &str, description: &str, payload: Vec<u8>, expected: &str) {
        let req = Req::get();
        let token = token_with_payload(&payload, &self.keys.issuer_ed);
        let proof = proof_from(
            &ProofFields::new(req.method, &req.uri, &token, &req.body, NOW - 1),
            &self.keys.client_ed,
            &token,
            &req.body,
        );
        self.push(name, description, token, Some(proof), &req, expected);
    }

    /// A token with a raw protected and unprotected header, valid claims.
    fn raw_header_token(
        &mut self,
        name: &str,
        description: &str,
        protected: Vec<u8>,
        unprotected: Vec<u8>,
        expected: &str,
    ) {
        let req = Req::get();
        let payload = token::issue::encode_claims(&base_claims(&self.keys.client_ed));
        let token = sign1_raw(&protected, &unprotected, &payload, &self.keys.issuer_ed, &[]);
        let proof = proof_from(
            &ProofFields::new(req.method, &req.uri, &token, &req.body, NOW - 1),
            &self.keys.client_ed,
            &token,
            &req.body,
        );
        self.push(name, description, token, Some(proof), &req, expected);
    }

    /// A valid token with a proof whose payload is given raw.
    fn raw_proof_payload(&mut self, name: &str, description: &str, payload: Vec<u8>, expected: &str) {
        let req = Req::get();
        let (token, _) = self.good(&req);
        let protected = protected_header(-8, None);
        let proof = sign1_raw(
            &protected,
            &[0xa0],
            &payload,
            &self.keys.client_ed,
            &aad(&token, &req.body),
        );
        self.push(name, description, token, Some(proof), &req, expected);
    }
}

/// Claims payload with one claim replaced by raw bytes (label as CBOR int).
fn claims_with_raw(claims: &Claims, label: i64, raw_value: &[u8]) -> Vec<u8> {
    splice_map(&token::issue::encode_claims(claims), label, Some(raw_value))
}

/// Re-encodes a deterministic map, replacing (or with `None` removing) the
/// value of `label`, or appending it in order if absent.
fn splice_map(encoded: &[u8], label: i64, raw_value: Option<&[u8]>) -> Vec<u8> {
    let mut r = cbor::Reader::new(encoded);
    let n = r.map().expect("a map");
    let mut entries: Vec<(Vec<u8>, Vec<u8>)> = (0..n)
        .map(|_| {
            (
                r.raw_item().expect("key").to_vec(),
                r.raw_item().expect("value").to_vec(),
            )
        })
        .collect();
    let key = enc(&int(label));
    entries.retain(|(k, _)| *k != key);
    if let Some(v) = raw_value {
        entries.push((key, v.to_vec()));
        entries.sort();
    }
    let mut out = Vec::new();
    cbor::write_head(&mut out, 5, entries.len() as u64);
    for (k, v) in entries {
        out.extend_from_slice(&k);
        out.extend_from_slice(&v);
    }
    out
}

/// All vectors, in a stable order.
pub fn generate() -> Vec<Vector> {
    let keys = Keys {
        issuer_ed: derive(Algorithm::EdDSA, "issuer-ed25519"),
        issuer_es: derive(Algorithm::ES256, "issuer-es256"),
        issuer_ed_2: derive(Algorithm::EdDSA, "issuer-ed25519-next"),
        client_ed: derive(Algorithm::EdDSA, "client-ed25519"),
        client_es: derive(Algorithm::ES256, "client-es256"),
        attacker_ed: derive(Algorithm::EdDSA, "attacker-ed25519"),
    };
    let mut g = Gen { keys, out: Vec::new() };
    valid(&mut g);
    invalid_cbor(&mut g);
    invalid_cose(&mut g);
    invalid_claims(&mut g);
    invalid_proof(&mut g);
    key_sets(&mut g);
    map_counts(&mut g);
    derived_issuer_key(&mut g);
    delegated(&mut g);
    slips(&mut g);
    instances(&mut g);
    g.out
}

fn valid(g: &mut Gen) {
    let get = Req::get();
    let tagged = |bytes: &[u8], prefix: &[u8]| [prefix, bytes].concat();
    // Both algorithms, every tag form.
    for (alg, name) in [(Algorithm::EdDSA, "ed25519"), (Algorithm::ES256, "es256")] {
        let client = g.client(alg);
        let token = token_for(&base_claims(client), g.issuer(alg));
        let forms: Vec<(&str, Vec<u8>, Vec<u8>)> = [
            ("untagged", &[][..]),
            ("tag18", &[0xd2][..]),
            ("tag61", &[0xd8, 0x3d][..]),
            ("tag61-18", &[0xd8, 0x3d, 0xd2][..]),
        ]
        .into_iter()
        .map(|(form, prefix)| {
            let token = tagged(&token, prefix);
            let proof = proof_from(&ProofFields::new("GET", URI, &token, b"", NOW - 1), client, &token, b"");
            (form, token, proof)
        })
        .collect();
        for (form, token, proof) in forms {
            g.push(
                &format!("valid/{name}/token-{form}"),
                &format!("{name} issuer and client key; token {form}; GET without body"),
                token,
                Some(proof),
                &get,
                "valid",
            );
        }
    }
    // Bodies, methods, queries, normalisation.
    let cases: Vec<(&str, &str, Req)> = vec![
        (
            "post-json-body",
            "POST with a JSON body",
            Req {
                method: "POST",
                uri: "https://nova.example/v2/servers".into(),
                body: br#"{"server":{"name":"vm1","flavorRef":"1"}}"#.to_vec(),
            },
        ),
        (
            "put-binary-body",
            "PUT with a binary body",
            Req {
                method: "PUT",
                uri: "https://nova.example/v2/images/1/file".into(),
                body: (0u8..=255).collect(),
            },
        ),
        (
            "delete-no-body",
            "DELETE without body",
            Req {
                method: "DELETE",
                uri: "https://nova.example/v2/servers/42".into(),
                body: Vec::new(),
            },
        ),
        (
            "query-string",
            "the query is covered by the proof",
            Req {
                method: "GET",
                uri: "https://nova.example/v2/servers?limit=10&marker=abc".into(),
                body: Vec::new(),
            },
        ),
        (
            "ipv6-host",
            "an IPv6 literal host with a port",
            Req {
                method: "GET",
                uri: "https://[2001:db8::1]:8443/v2/servers".into(),
                body: Vec::new(),
            },
        ),
    ];
    for (name, description, req) in cases {
        let (token, proof) = g.with_claims(&base_claims(&g.keys.client_ed), &g.keys.client_ed, &req);
        g.push(&format!("valid/{name}"), description, token, Some(proof), &req, "valid");
    }
    // ES256 client with a body.
    {
        let req = Req {
            method: "POST",
            uri: URI.into(),
            body: b"hello".to_vec(),
        };
        let token = token_for(&base_claims(&g.keys.client_es), &g.keys.issuer_es);
        let proof = proof_from(
            &ProofFields::new("POST", URI, &token, &req.body, NOW - 1),
            &g.keys.client_es,
            &token,
            &req.body,
        );
        g.push(
            "valid/es256/post-body",
            "ES256 issuer and client; POST with a body",
            token,
            Some(proof),
            &req,
            "valid",
        );
    }
    // The request URI needs normalisation to match the proof's htu.
    for (name, request_uri) in [
        ("normalise/case-and-port", "HTTPS://Nova.Example:443/v2/servers"),
        ("normalise/dot-segments", "https://nova.example/v2/./images/../servers"),
        ("normalise/percent-encoding", "https://nova.example/v2/%73ervers"),
        ("normalise/fragment-dropped", "https://nova.example/v2/servers#top"),
    ] {
        let req = Req {
            method: "GET",
            uri: request_uri.into(),
            body: Vec::new(),
        };
        let (token, proof) = g.with_claims(&base_claims(&g.keys.client_ed), &g.keys.client_ed, &Req::get());
        g.push(
            &format!("valid/{name}"),
            &format!("request URI {request_uri} normalises to the proof's htu"),
            token,
            Some(proof),
            &req,
            "valid",
        );
    }
    // A proof whose htu is not in normal form is normalised too.
    {
        let (token, _) = g.good(&get);
        let fields = ProofFields::new("GET", URI, &token, b"", NOW - 1)
            .set(pl::HTU, text("HTTPS://NOVA.example:443/v2/%7Eusers/../servers"));
        let proof = proof_from(&fields, &g.keys.client_ed, &token, b"");
        g.push(
            "valid/normalise/proof-htu",
            "the proof's htu is normalised before comparison",
            token,
            Some(proof),
            &get,
            "valid",
        );
    }
    // Claims variants.
    {
        let mut claims = base_claims(&g.keys.client_ed);
        claims.nbf = Some(NOW - 10);
        claims.trust_id = Some("trust-7f3a".into());
        claims.actor_chain = vec![Actor {
            sub: "nova-compute@service".into(),
            iss: None,
        }];
        let (token, proof) = g.with_claims(&claims, &g.keys.client_ed, &get);
        g.push(
            "valid/claims/delegated",
            "nbf, trust id and an actor chain",
            token,
            Some(proof),
            &get,
            "valid",
        );
        let mut claims = base_claims(&g.keys.client_ed);
        claims.origin_issuer = Some("https://stoughton.example".into());
        claims.sub = "ayoung@stoughton".into();
        let (token, proof) = g.with_claims(&claims, &g.keys.client_ed, &get);
        g.push(
            "valid/claims/federated",
            "origin issuer set (a federated token)",
            token,
            Some(proof),
            &get,
            "valid",
        );
        let mut claims = base_claims(&g.keys.client_ed);
        claims.project = None;
        claims.domain = None;
        claims.roles = Vec::new();
        let (token, proof) = g.with_claims(&claims, &g.keys.client_ed, &get);
        g.push(
            "valid/claims/unscoped",
            "no domain, project or roles",
            token,
            Some(proof),
            &get,
            "valid",
        );
    }
    // Edges of the time windows.
    {
        let mut claims = base_claims(&g.keys.client_ed);
        claims.iat = NOW - 300 - LEEWAY;
        claims.exp = NOW - LEEWAY;
        let (token, proof) = g.with_claims(&claims, &g.keys.client_ed, &get);
        g.push(
            "valid/edge/exp-plus-leeway-is-now",
            "exp + leeway == now is still accepted",
            token,
            Some(proof),
            &get,
            "valid",
        );
        let mut claims = base_claims(&g.keys.client_ed);
        claims.iat = NOW + LEEWAY;
        claims.exp = NOW + LEEWAY + 300;
        let (token, proof) = g.with_claims(&claims, &g.keys.client_ed, &get);
        g.push(
            "valid/edge/iat-at-leeway",
            "iat == now + leeway is accepted",
            token,
            Some(proof),
            &get,
            "valid",
        );
        let (token, proof) = g.edited_proof(&get, |f| f.set(pl::IAT, int((NOW - MAX_AGE) as i64)));
        g.push(
            "valid/edge/proof-at-max-age",
            "proof iat == now − max_age is accepted",
            token,
            Some(proof),
            &get,
            "valid",
        );
        let (token, proof) = g.edited_proof(&get, |f| f.set(pl::IAT, int((NOW + LEEWAY) as i64)));
        g.push(
            "valid/edge/proof-at-leeway",
            "proof iat == now + leeway is accepted",
            token,
            Some(proof),
            &get,
            "valid",
        );
    }
    // Header variants, key-set selection, tagged proof, nonce.
    {
        let issuer = &g.keys.issuer_ed_2;
        let token = token_for(&base_claims(&g.keys.client_ed), issuer);
        let proof = proof_from(
            &ProofFields::new("GET", URI, &token, b"", NOW - 1),
            &g.keys.client_ed,
            &token,
            b"",
        );
        g.push(
            "valid/keyset/second-ed25519-key",
            "token signed by another key of the issuer's set (rotation)",
            token,
            Some(proof),
            &get,
            "valid",
        );
        let mut unprotected = vec![0xa1, 0x04];
        cbor::write_bytes(&mut unprotected, &kid(&g.keys.issuer_ed));
        g.raw_header_token(
            "valid/header/kid-unprotected",
            "kid in the unprotected bucket",
            protected_header(-8, None),
            unprotected,
            "valid",
        );
        let (token, proof) = g.good(&get);
        g.push(
            "valid/proof/tag18",
            "proof tagged 18",
            token,
            Some([&[0xd2][..], &proof].concat()),
            &get,
            "valid",
        );
        let (token, proof) = g.edited_proof(&get, |f| f.set(pl::NONCE, bytes(b"nonce-epoch-1")));
        g.push_full(
            "valid/proof/nonce",
            "the service requires a nonce and the proof carries one it issued",
            token,
            Some(proof),
            &get,
            Some(vec![b"nonce-epoch-0".to_vec(), b"nonce-epoch-1".to_vec()]),
            1,
            "valid",
        );
        let (token, _) = g.good(&get);
        g.push(
            "valid/token-only",
            "a token verified without a proof (token layer only)",
            token,
            None,
            &get,
            "valid",
        );
    }
}

fn invalid_cbor(g: &mut Gen) {
    let get = Req::get();
    let (token, proof) = g.good(&get);
    let push_token = |g: &mut Gen, name: &str, description: &str, t: Vec<u8>, code: &str| {
        let p = proof_from(
            &ProofFields::new("GET", URI, &t, b"", NOW - 1),
            &g.keys.client_ed,
            &t,
            b"",
        );
        g.push(
            &format!("invalid/cbor/token-{name}"),
            description,
            t,
            Some(p),
            &get,
            code,
        );
    };
    push_token(
        g,
        "trailing-byte",
        "a zero byte after the token",
        [&token[..], &[0]].concat(),
        "cbor.trailing_data",
    );
    push_token(
        g,
        "second-token",
        "two tokens concatenated",
        [&token[..], &token[..]].concat(),
        "cbor.trailing_data",
    );
    push_token(
        g,
        "truncated",
        "the last signature byte is missing",
        token[..token.len() - 1].to_vec(),
        "cbor.malformed",
    );
    push_token(
        g,
        "truncated-head",
        "input ends inside an 8-byte argument",
        vec![0xd8, 0x3d, 0xd2, 0x84, 0x1b, 0x01, 0x02, 0x03],
        "cbor.malformed",
    );
    push_token(
        g,
        "reserved-ai",
        "reserved additional information 0x1c",
        vec![0x1c],
        "cbor.malformed",
    );
    push_token(
        g,
        "stray-break",
        "a break code outside an indefinite item",
        vec![0x84, 0xff],
        "cbor.malformed",
    );
    push_token(
        g,
        "huge-length",
        "a byte string declaring 4 GiB",
        vec![0x84, 0x5a, 0xff, 0xff, 0xff, 0xff, 0x00],
        "cbor.malformed",
    );
    push_token(
        g,
        "huge-count",
        "an array declaring 2^32 items",
        vec![0x9b, 0, 0, 0, 1, 0, 0, 0, 0],
        "cbor.malformed",
    );
    {
        let mut t = vec![0x9f];
        t.extend_from_slice(&token[1..]);
        t.push(0xff);
        push_token(
            g,
            "indefinite-array",
            "the COSE_Sign1 array has indefinite length",
            t,
            "cbor.not_deterministic",
        );
        let mut t = vec![0x98, 0x04];
        t.extend_from_slice(&token[1..]);
        push_token(
            g,
            "non-minimal-head",
            "array length 4 encoded as 98 04",
            t,
            "cbor.not_deterministic",
        );
    }
    {
        let big = vec![0u8; 4097];
        push_token(
            g,
            "over-size-limit",
            "a 4097-byte input is refused before parsing",
            big,
            "cbor.too_large",
        );
    }
    // Inside the claims payload (each signed correctly, so only the profile refuses it).
    let claims = base_claims(&g.keys.client_ed);
    let payload = token::issue::encode_claims(&claims);
    {
        // Duplicate aud: append a second aud entry after the first.
        let mut r = cbor::Reader::new(&payload);
        let n = r.map().unwrap();
        let mut out = Vec::new();
        cbor::write_head(&mut out, 5, (n + 1) as u64);
        for _ in 0..n {
            let k = r.raw_item().unwrap();
            let v = r.raw_item().unwrap();
            out.extend_from_slice(k);
            out.extend_from_slice(v);
            if k == [0x03] {
                out.push(0x03);
                cbor::write_text(&mut out, "https://evil.example");
            }
        }
        g.raw_payload_token(
            "invalid/cbor/claims-duplicate-aud",
            "aud (3) twice with different values",
            out,
            "cbor.duplicate_key",
        );
    }
    {
        let mut r = cbor::Reader::new(&payload);
        let n = r.map().unwrap();
        let mut entries: Vec<(Vec<u8>, Vec<u8>)> = (0..n)
            .map(|_| (r.raw_item().unwrap().to_vec(), r.raw_item().unwrap().to_vec()))
            .collect();
        entries.swap(0, 1);
        let mut out = Vec::new();
        cbor::write_head(&mut out, 5, n as u64);
        for (k, v) in entries {
            out.extend(k);
            out.extend(v);
        }
        g.raw_payload_token(
            "invalid/cbor/claims-unsorted",
            "sub (2) before iss (1)",
            out,
            "cbor.not_deterministic",
        );
    }
    g.raw_payload_token(
        "invalid/cbor/claims-float-exp",
        "exp as a float",
        claims_with_raw(&claims, 4, &[0xfb, 0x41, 0xda, 0x48, 0x3f, 0x00, 0x00, 0x00, 0x00]),
        "cbor.unsupported_type",
    );
    g.raw_payload_token(
        "invalid/cbor/claims-tagged-exp",
        "exp as tag 1 (epoch date)",
        claims_with_raw(&claims, 4, &[0xc1, 0x1a, 0x69, 0x22, 0x40, 0x00]),
        "cbor.unexpected_tag",
    );
    g.raw_payload_token(
        "invalid/cbor/claims-non-minimal-exp",
        "exp with an 8-byte head",
        claims_with_raw(&claims, 4, &[0x1b, 0, 0, 0, 0, 0x69, 0x22, 0x40, 0x00]),
        "cbor.not_deterministic",
    );
    g.raw_payload_token(
        "invalid/cbor/claims-invalid-utf8",
        "sub is not UTF-8",
        claims_with_raw(&claims, 2, &[0x62, 0xc3, 0x28]),
        "cbor.invalid_utf8",
    );
    g.raw_payload_token(
        "invalid/cbor/claims-undefined",
        "nbf is undefined",
        claims_with_raw(&claims, 5, &[0xf7]),
        "cbor.unsupported_type",
    );
    {
        let deep = [vec![0x81; 20], vec![0x00]].concat();
        g.raw_payload_token(
            "invalid/cbor/claims-too-deep",
            "a claim nested 20 arrays deep",
            claims_with_raw(&claims, 5, &deep),
            "cbor.too_deep",
        );
        let mut long = Vec::new();
        cbor::write_text(&mut long, &"a".repeat(3000));
        g.raw_payload_token(
            "invalid/cbor/claims-long-string",
            "a 3000-byte sub",
            claims_with_raw(&claims, 2, &long),
            "cbor.too_large",
        );
        let mut key_float = payload.clone();
        // Replace the map head n with n+1 and append a float-keyed entry.
        key_float[0] += 1;
        key_float.extend_from_slice(&[0xf9, 0x00, 0x00, 0x00]);
        g.raw_payload_token(
            "invalid/cbor/claims-float-key",
            "a map key that is a float",
            key_float,
            "cbor.key_type",
        );
    }
    // Proof-side CBOR.
    let push_proof = |g: &mut Gen, name: &str, description: &str, p: Vec<u8>, code: &str| {
        g.push(
            &format!("invalid/cbor/proof-{name}"),
            description,
            token.clone(),
            Some(p),
            &get,
            code,
        );
    };
    push_proof(
        g,
        "trailing-byte",
        "a zero byte after the proof",
        [&proof[..], &[0]].concat(),
        "cbor.trailing_data",
    );
    push_proof(
        g,
        "truncated",
        "the proof is cut short",
        proof[..proof.len() - 3].to_vec(),
        "cbor.malformed",
    );
    push_proof(
        g,
        "over-size-limit",
        "a 4097-byte proof is refused before parsing",
        vec![0; 4097],
        "cbor.too_large",
    );
    {
        let mut p = vec![0x9f];
        p.extend_from_slice(&proof[1..]);
        p.push(0xff);
        push_proof(
            g,
            "indefinite-array",
            "the proof array has indefinite length",
            p,
            "cbor.not_deterministic",
        );
    }
    let fields = ProofFields::new("GET", URI, &token, b"", NOW - 1);
    {
        let mut payload = fields.payload();
        payload[0] += 1;
        payload.push(0x01);
        cbor::write_text(&mut payload, "POST");
        g.raw_proof_payload(
            "invalid/cbor/proof-duplicate-htm",
            "htm (1) twice",
            payload,
            "cbor.duplicate_key",
        );
        let mut payload = fields.payload();
        payload[0] += 1;
        payload.extend_from_slice(&[0x00, 0x00]);
        g.raw_proof_payload(
            "invalid/cbor/proof-unsorted",
            "label 0 after label 6",
            payload,
            "cbor.not_deterministic",
        );
        let float_iat = splice_map(&fields.payload(), 3, Some(&[0xfa, 0x4e, 0xd2, 0x46, 0x40]));
        g.raw_proof_payload(
            "invalid/cbor/proof-float-iat",
            "iat as a float",
            float_iat,
            "cbor.unsupported_type",
        );
    }
}

fn invalid_cose(g: &mut Gen) {
    let get = Req::get();
    let (token, proof) = g.good(&get);
    let payload = token::issue::encode_claims(&base_claims(&g.keys.client_ed));
    let ed_kid = kid(&g.keys.issuer_ed);
    let push_token = |g: &mut Gen, name: &str, description: &str, t: Vec<u8>, code: &str| {
        let p = proof_from(
            &ProofFields::new("GET", URI, &t, b"", NOW - 1),
            &g.keys.client_ed,
            &t,
            b"",
        );
        g.push(&format!("invalid/cose/{name}"), description, t, Some(p), &get, code);
    };
    push_token(
        g,
        "tag-998",
        "outer tag 998",
        [&[0xd9, 0x03, 0xe6][..], &token].concat(),
        "cose.structure",
    );
    push_token(
        g,
        "tag-17-mac0",
        "outer tag 17 (COSE_Mac0)",
        [&[0xd1][..], &token].concat(),
        "cose.structure",
    );
    push_token(
        g,
        "tag-18-61",
        "tags in the wrong order: 18(61(…))",
        [&[0xd2, 0xd8, 0x3d][..], &token].concat(),
        "cose.structure",
    );
    {
        let mut t = token.clone();
        t[0] = 0x83;
        push_token(
            g,
            "array-of-3",
            "a three-item array",
            t[..t.len() - 66].to_vec(),
            "cose.structure",
        );
    }
    {
        let protected = protected_header(-8, Some(&ed_kid));
        let mut t = vec![0x84];
        t.extend_from_slice(&protected); // the map itself, not wrapped in a bstr
        t.push(0xa0);
        cbor::write_bytes(&mut t, &payload);
        cbor::write_bytes(&mut t, &[0; 64]);
        push_token(
            g,
            "protected-not-bstr",
            "the protected header is a map, not a byte string",
            t,
            "cose.structure",
        );
        let mut t = vec![0x84];
        cbor::write_bytes(&mut t, &protected);
        t.push(0xa0);
        t.push(0xf6);
        cbor::write_bytes(&mut t, &g.keys.issuer_ed.sign(b"x"));
        push_token(g, "nil-payload", "a detached (nil) payload", t, "cose.structure");
        let t = sign1_raw(&protected, &[0xa0], &[], &g.keys.issuer_ed, &[]);
        push_token(g, "empty-payload", "an empty payload", t, "cose.structure");
        let t = sign1_raw(&enc(&text("hi")), &[0xa0], &payload, &g.keys.issuer_ed, &[]);
        push_token(
            g,
            "protected-not-map",
            "the protected bstr wraps a text string",
            t,
            "cose.structure",
        );
        let t = sign1_raw(&protected, &[0x40], &payload, &g.keys.issuer_ed, &[]);
        push_token(
            g,
            "unprotected-bstr",
            "the unprotected header is a byte string",
            t,
            "cose.structure",
        );
    }
    let hdr = |entries: Vec<(Value, Value)>| enc(&map(entries));
    let kid_v = bytes(&ed_kid);
    let mut unprot_kid = vec![0xa1, 0x04];
    cbor::write_bytes(&mut unprot_kid, &ed_kid);
    g.raw_header_token(
        "invalid/cose/alg-missing",
        "no alg anywhere",
        hdr(vec![(int(4), kid_v.clone())]),
        vec![0xa0],
        "cose.alg_missing",
    );
    g.raw_header_token(
        "invalid/cose/alg-unprotected",
        "alg only in the unprotected bucket",
        hdr(vec![(int(4), kid_v.clone())]),
        enc(&map(vec![(int(1), int(-8))])),
        "cose.alg_unprotected",
    );
    g.raw_header_token(
        "invalid/cose/alg-unsupported",
        "alg -999",
        hdr(vec![(int(1), int(-999)), (int(4), kid_v.clone())]),
        vec![0xa0],
        "cose.alg_unsupported",
    );
    g.raw_header_token(
        "invalid/cose/alg-text",
        "alg as the text \"EdDSA\"",
        hdr(vec![(int(1), text("EdDSA")), (int(4), kid_v.clone())]),
        vec![0xa0],
        "cose.alg_unsupported",
    );
    g.raw_header_token(
        "invalid/cose/alg-hmac",
        "alg HMAC 256/256 (5): no symmetric algorithms",
        hdr(vec![(int(1), int(5)), (int(4), kid_v.clone())]),
        vec![0xa0],
        "cose.alg_unsupported",
    );
    g.raw_header_token(
        "invalid/cose/alg-bytes",
        "alg as a byte string",
        hdr(vec![(int(1), bytes(b"\xf8")), (int(4), kid_v.clone())]),
        vec![0xa0],
        "cose.header_type",
    );
    g.raw_header_token(
        "invalid/cose/alg-both-buckets",
        "alg -8 protected and -7 unprotected",
        protected_header(-8, Some(&ed_kid)),
        enc(&map(vec![(int(1), int(-7))])),
        "cose.header_conflict",
    );
    g.raw_header_token(
        "invalid/cose/kid-both-buckets",
        "kid in both buckets",
        protected_header(-8, Some(&ed_kid)),
        unprot_kid.clone(),
        "cose.header_conflict",
    );
    g.raw_header_token(
        "invalid/cose/kid-int",
        "kid as an integer",
        hdr(vec![(int(1), int(-8)), (int(4), int(7))]),
        vec![0xa0],
        "cose.header_type",
    );
    g.raw_header_token(
        "invalid/cose/kid-empty",
        "kid as an empty byte string",
        hdr(vec![(int(1), int(-8)), (int(4), bytes(b""))]),
        vec![0xa0],
        "cose.header_type",
    );
    g.raw_header_token(
        "invalid/cose/kid-missing",
        "no kid",
        protected_header(-8, None),
        vec![0xa0],
        "cose.kid_missing",
    );
    g.raw_header_token(
        "invalid/cose/crit-unprotected",
        "crit in the unprotected bucket",
        protected_header(-8, Some(&ed_kid)),
        enc(&map(vec![(int(2), Value::Array(vec![int(1)]))])),
        "cose.crit_misplaced",
    );
    g.raw_header_token(
        "invalid/cose/crit-empty",
        "crit is an empty array",
        hdr(vec![
            (int(1), int(-8)),
            (int(2), Value::Array(vec![])),
            (int(4), kid_v.clone()),
        ]),
        vec![0xa0],
        "cose.crit_invalid",
    );
    g.raw_header_token(
        "invalid/cose/crit-not-array",
        "crit is an integer",
        hdr(vec![(int(1), int(-8)), (int(2), int(1)), (int(4), kid_v.clone())]),
        vec![0xa0],
        "cose.crit_invalid",
    );
    g.raw_header_token(
        "invalid/cose/crit-absent-label",
        "crit names label 99, which is not present",
        hdr(vec![
            (int(1), int(-8)),
            (int(2), Value::Array(vec![int(99)])),
            (int(4), kid_v.clone()),
        ]),
        vec![0xa0],
        "cose.crit_invalid",
    );
    g.raw_header_token(
        "invalid/cose/crit-unknown",
        "crit names private label -65537, present but not understood",
        hdr(vec![
            (int(1), int(-8)),
            (int(2), Value::Array(vec![int(-65537)])),
            (int(4), kid_v.clone()),
            (int(-65537), int(1)),
        ]),
        vec![0xa0],
        "cose.crit_unknown",
    );
    g.raw_header_token(
        "invalid/cose/crit-duplicate",
        "crit lists alg twice",
        hdr(vec![
            (int(1), int(-8)),
            (int(2), Value::Array(vec![int(1), int(1)])),
            (int(4), kid_v.clone()),
        ]),
        vec![0xa0],
        "cose.crit_invalid",
    );
    g.raw_header_token(
        "invalid/cose/go-cose-tob-1-crit-tagged",
        "TOB-GOCOSE-1 analogue: a tagged crit element",
        hdr(vec![(int(1), int(-8)), (int(4), kid_v.clone())]),
        vec![0xa1, 0x02, 0x81, 0xc2, 0x40],
        "cbor.unexpected_tag",
    );
    g.raw_header_token(
        "invalid/cose/content-type",
        "content type (3) is not part of the profile",
        hdr(vec![(int(1), int(-8)), (int(3), int(61)), (int(4), kid_v.clone())]),
        vec![0xa0],
        "cose.header_unsupported",
    );
    g.raw_header_token(
        "invalid/cose/x5chain-unprotected",
        "an x5chain (33) key embedded in the unprotected bucket",
        protected_header(-8, Some(&ed_kid)),
        enc(&map(vec![(int(33), bytes(&[0x30; 8]))])),
        "cose.header_unsupported",
    );
    g.raw_header_token(
        "invalid/cose/countersignature",
        "a countersignature (11) in the unprotected bucket",
        protected_header(-8, Some(&ed_kid)),
        enc(&map(vec![(int(11), bytes(&[0; 64]))])),
        "cose.header_unsupported",
    );
    g.raw_header_token(
        "invalid/cose/kid-unknown",
        "kid names no key of the issuer",
        protected_header(-8, Some(b"nope")),
        vec![0xa0],
        "cose.key_unknown",
    );
    g.raw_header_token(
        "invalid/cose/kid-injection",
        "kid with a path traversal",
        protected_header(-8, Some(b"../../../../dev/null")),
        vec![0xa0],
        "cose.key_unknown",
    );
    g.raw_header_token(
        "invalid/cose/alg-mismatch",
        "header says ES256, the kid is an Ed25519 key",
        protected_header(-7, Some(&ed_kid)),
        vec![0xa0],
        "cose.alg_mismatch",
    );
    g.raw_header_token(
        "invalid/cose/alg-mismatch-es256-key",
        "header says EdDSA, the kid is an ES256 key",
        protected_header(-8, Some(&kid(&g.keys.issuer_es))),
        vec![0xa0],
        "cose.alg_mismatch",
    );
    // Signatures.
    let protected = protected_header(-8, Some(&ed_kid));
    let good_sig = g.keys.issuer_ed.sign(&cose::sig_structure(&protected, &[], &payload));
    let mut flipped = good_sig.clone();
    flipped[10] ^= 0x01;
    push_token(
        g,
        "signature-bit-flip",
        "one bit of the signature flipped",
        assemble(&protected, &[0xa0], &payload, &flipped),
        "cose.bad_signature",
    );
    push_token(
        g,
        "signature-63-bytes",
        "a 63-byte signature",
        assemble(&protected, &[0xa0], &payload, &good_sig[..63]),
        "cose.bad_signature",
    );
    push_token(
        g,
        "signature-empty",
        "an empty signature (alg none analogue)",
        assemble(&protected, &[0xa0], &payload, &[]),
        "cose.bad_signature",
    );
    {
        let mut claims = base_claims(&g.keys.client_ed);
        claims.roles = vec!["admin".into()];
        let forged_payload = token::issue::encode_claims(&claims);
        push_token(
            g,
            "payload-swapped",
            "roles changed to admin after signing",
            assemble(&protected, &[0xa0], &forged_payload, &good_sig),
            "cose.bad_signature",
        );
        let by_attacker = sign1_raw(&protected, &[0xa0], &forged_payload, &g.keys.attacker_ed, &[]);
        push_token(
            g,
            "signed-by-attacker",
            "signed by a key outside the set, claiming the issuer's kid",
            by_attacker,
            "cose.bad_signature",
        );
        let mut s = good_sig.clone();
        // S + L for Ed25519: a malleated S must be refused.
        let l: [u8; 32] = [
            0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14, 0, 0, 0, 0,
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ];
        let mut carry = 0u16;
        for i in 0..32 {
            let sum = u16::from(s[32 + i]) + u16::from(l[i]) + carry;
            s[32 + i] = sum as u8;
            carry = sum >> 8;
        }
        push_token(
            g,
            "signature-s-plus-l",
            "Ed25519 S replaced by S + L (malleability)",
            assemble(&protected, &[0xa0], &payload, &s),
            "cose.bad_signature",
        );
        let with_aad = sign1_raw(&protected, &[0xa0], &payload, &g.keys.issuer_ed, b"other context");
        push_token(
            g,
            "signed-with-aad",
            "signed with a non-empty external AAD",
            with_aad,
            "cose.bad_signature",
        );
    }
    // Type confusion.
    g.push(
        "invalid/cose/proof-as-token",
        "a proof presented as the token",
        proof.clone(),
        Some(proof.clone()),
        &get,
        "cose.kid_missing",
    );
    g.push(
        "invalid/cose/token-as-proof",
        "the token presented as the proof",
        token.clone(),
        Some(token.clone()),
        &get,
        "proof.field_type",
    );
    g.push(
        "invalid/cose/proof-tag-61",
        "a proof tagged as a CWT",
        token.clone(),
        Some([&[0xd8, 0x3d][..], &proof].concat()),
        &get,
        "cose.structure",
    );
}

fn invalid_claims(g: &mut Gen) {
    let get = Req::get();
    let base = base_claims(&g.keys.client_ed);
    let payload = token::issue::encode_claims(&base);
    g.raw_payload_token(
        "invalid/cwt/payload-array",
        "the payload is an array",
        vec![0x81, 0x01],
        "cwt.structure",
    );
    for (label, name) in [(1, "iss"), (2, "sub"), (3, "aud"), (4, "exp"), (6, "iat"), (7, "cti")] {
        g.raw_payload_token(
            &format!("invalid/cwt/missing-{name}"),
            &format!("{name} ({label}) is absent"),
            splice_map(&payload, label, None),
            "cwt.missing_claim",
        );
    }
    g.raw_payload_token(
        "invalid/cwt/missing-keybound",
        "the keybound claims map is absent",
        splice_map(&payload, token::LABEL_KEYBOUND, None),
        "cwt.missing_claim",
    );
    g.raw_payload_token(
        "invalid/cwt/missing-cnf",
        "cnf (8) is absent: no bearer fallback",
        splice_map(&payload, 8, None),
        "cwt.cnf_missing",
    );
    let mut s = Vec::new();
    cbor::write_text(&mut s, "99999999999");
    g.raw_payload_token(
        "invalid/cwt/exp-text",
        "CVE-2026-25537 analogue: exp as a text string is not 'absent'",
        claims_with_raw(&base, 4, &s),
        "cwt.claim_type",
    );
    g.raw_payload_token(
        "invalid/cwt/exp-negative",
        "exp = -1",
        claims_with_raw(&base, 4, &[0x20]),
        "cwt.claim_type",
    );
    g.raw_payload_token(
        "invalid/cwt/exp-huge",
        "exp = 2^64 − 1",
        claims_with_raw(&base, 4, &[0x1b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
        "cwt.claim_type",
    );
    g.raw_payload_token(
        "invalid/cwt/nbf-bool",
        "nbf = true",
        claims_with_raw(&base, 5, &[0xf5]),
        "cwt.claim_type",
    );
    {
        let mut aud = vec![0x82];
        cbor::write_text(&mut aud, AUDIENCE);
        cbor::write_text(&mut aud, "https://glance.example");
        g.raw_payload_token(
            "invalid/cwt/aud-array",
            "aud as an array containing ours",
            claims_with_raw(&base, 3, &aud),
            "cwt.claim_type",
        );
    }
    g.raw_payload_token(
        "invalid/cwt/unknown-claim",
        "an unknown claim 99",
        claims_with_raw(&base, 99, &[0x01]),
        "cwt.unknown_claim",
    );
    {
        let mut p = payload.clone();
        p[0] += 1;
        cbor::write_text(&mut p, "exp");
        p.extend_from_slice(&[0x1a, 0xff, 0xff, 0xff, 0xff]);
        g.raw_payload_token(
            "invalid/cwt/text-exp-claim",
            "a text-labelled \"exp\" next to exp (4)",
            p,
            "cwt.unknown_claim",
        );
    }
    g.raw_payload_token(
        "invalid/cwt/cti-short",
        "cti of 15 bytes",
        claims_with_raw(&base, 7, &enc(&bytes(&[7; 15]))),
        "cwt.cti_invalid",
    );
    {
        let weak = weak_cnf();
        g.raw_payload_token(
            "invalid/cwt/cnf-weak-key",
            "cnf holds a small-order Ed25519 key",
            claims_with_raw(&base, 8, &weak),
            "cwt.cnf_invalid",
        );
        let priv_key = g.keys.client_ed.to_cose_key(None);
        let mut cnf = vec![0xa1, 0x01];
        cnf.extend_from_slice(&priv_key);
        g.raw_payload_token(
            "invalid/cwt/cnf-private-key",
            "cnf holds the private key (d)",
            claims_with_raw(&base, 8, &cnf),
            "cwt.cnf_invalid",
        );
        let x25519 = enc(&map(vec![(
            int(1),
            map(vec![(int(1), int(1)), (int(-1), int(4)), (int(-2), bytes(&[9; 32]))]),
        )]));
        g.raw_payload_token(
            "invalid/cwt/cnf-x25519",
            "cnf holds an X25519 key",
            claims_with_raw(&base, 8, &x25519),
            "cwt.cnf_invalid",
        );
        let kid_only = enc(&map(vec![(int(3), bytes(b"kid"))]));
        g.raw_payload_token(
            "invalid/cwt/cnf-kid-only",
            "cnf names a key by kid only",
            claims_with_raw(&base, 8, &kid_only),
            "cwt.cnf_invalid",
        );
        let ec_off_curve = enc(&map(vec![(
            int(1),
            map(vec![
                (int(1), int(2)),
                (int(-1), int(1)),
                (int(-2), bytes(&[1; 32])),
                (int(-3), bytes(&[2; 32])),
            ]),
        )]));
        g.raw_payload_token(
            "invalid/cwt/cnf-off-curve",
            "cnf holds a P-256 point not on the curve",
            claims_with_raw(&base, 8, &ec_off_curve),
            "cwt.cnf_invalid",
        );
    }
    {
        let kb = |entries: Vec<(Value, Value)>| enc(&map(entries));
        g.raw_payload_token(
            "invalid/cwt/kind-3",
            "kind 3 is neither session nor service",
            claims_with_raw(&base, token::LABEL_KEYBOUND, &kb(vec![(int(1), int(3))])),
            "cwt.claim_type",
        );
        g.raw_payload_token(
            "invalid/cwt/kind-missing",
            "no kind in the keybound claims",
            claims_with_raw(&base, token::LABEL_KEYBOUND, &kb(vec![(int(3), text("turing"))])),
            "cwt.missing_claim",
        );
        g.raw_payload_token(
            "invalid/cwt/keybound-unknown",
            "unknown keybound claim 42",
            claims_with_raw(
                &base,
                token::LABEL_KEYBOUND,
                &kb(vec![(int(1), int(2)), (int(42), int(1))]),
            ),
            "cwt.unknown_claim",
        );
        g.raw_payload_token(
            "invalid/cwt/roles-duplicate",
            "a role listed twice",
            claims_with_raw(
                &base,
                token::LABEL_KEYBOUND,
                &kb(vec![
                    (int(1), int(2)),
                    (int(4), Value::Array(vec![text("member"), text("member")])),
                ]),
            ),
            "cwt.claim_type",
        );
    }
    let claims_case = |g: &mut Gen, name: &str, description: &str, edit: &dyn Fn(&mut Claims), code: &str| {
        let mut claims = base_claims(&g.keys.client_ed);
        edit(&mut claims);
        let (token, proof) = g.with_claims(&claims, &g.keys.client_ed, &get);
        g.push(
            &format!("invalid/cwt/{name}"),
            description,
            token,
            Some(proof),
            &get,
            code,
        );
    };
    claims_case(
        g,
        "iss-unknown",
        "iss is not a trusted issuer",
        &|c| c.iss = "https://evil.example".into(),
        "cwt.iss_unknown",
    );
    claims_case(
        g,
        "aud-other-service",
        "a token for glance sent to nova",
        &|c| c.aud = "https://glance.example".into(),
        "cwt.aud_mismatch",
    );
    claims_case(
        g,
        "aud-case",
        "aud differs only by case",
        &|c| c.aud = "https://Nova.example".into(),
        "cwt.aud_mismatch",
    );
    claims_case(
        g,
        "aud-trailing-slash",
        "aud with a trailing slash",
        &|c| c.aud = "https://nova.example/".into(),
        "cwt.aud_mismatch",
    );
    claims_case(
        g,
        "aud-empty",
        "an empty aud",
        &|c| c.aud = String::new(),
        "cwt.aud_mismatch",
    );
    claims_case(
        g,
        "session-token-at-service",
        "a session token whose aud is the service",
        &|c| c.kind = TokenKind::Session,
        "cwt.kind_mismatch",
    );
    claims_case(
        g,
        "expired",
        "exp + leeway is one second before now",
        &|c| {
            c.iat = NOW - 300 - LEEWAY - 1;
            c.exp = NOW - LEEWAY - 1;
        },
        "cwt.expired",
    );
    claims_case(
        g,
        "not-yet-valid",
        "nbf = now + leeway + 1",
        &|c| c.nbf = Some(NOW + LEEWAY + 1),
        "cwt.not_yet_valid",
    );
    claims_case(
        g,
        "iat-future",
        "iat = now + leeway + 1",
        &|c| {
            c.iat = NOW + LEEWAY + 1;
            c.exp = c.iat + 300;
        },
        "cwt.iat_future",
    );
    claims_case(
        g,
        "lifetime-301",
        "exp − iat = 301 s",
        &|c| c.exp = c.iat + 301,
        "cwt.lifetime_exceeded",
    );
    claims_case(
        g,
        "lifetime-one-day",
        "exp − iat = 86400 s",
        &|c| c.exp = c.iat + 86_400,
        "cwt.lifetime_exceeded",
    );
    claims_case(
        g,
        "exp-before-iat",
        "exp earlier than iat",
        &|c| c.exp = c.iat - 1,
        "cwt.lifetime_exceeded",
    );
    {
        // FD-01: iss names the trusted issuer but the kid is only in another set.
        let mut claims = base_claims(&g.keys.client_ed);
        claims.iss = "https://canton.example".into();
        let token = token_for(&claims, &g.keys.issuer_ed);
        let proof = proof_from(
            &ProofFields::new("GET", URI, &token, b"", NOW - 1),
            &g.keys.client_ed,
            &token,
            b"",
        );
        g.push(
            "invalid/cwt/storm-0558-foreign-iss",
            "Storm-0558 analogue: a token claiming another issuer, signed with a key of the trusted one",
            token,
            Some(proof),
            &get,
            "cwt.iss_unknown",
        );
    }
}

/// Tokens bound to one instance of the audience (T9.2), and the verifier's
/// instance id that accepts or refuses them.
fn instances(g: &mut Gen) {
    let get = Req::get();
    let bound = |g: &Gen, instance: &str| {
        let mut claims = base_claims(&g.keys.client_ed);
        claims.instance = Some(instance.into());
        g.with_claims(&claims, &g.keys.client_ed, &get)
    };
    let cases: [(&str, &str, &str, Option<&str>, &str); 4] = [
        (
            "valid/instance/same-instance",
            "a token bound to instance vm-7f3a@host-12, at the verifier of that instance",
            "vm-7f3a@host-12",
            Some("vm-7f3a@host-12"),
            "valid",
        ),
        (
            "invalid/cwt/instance-other",
            "a token bound to instance vm-7f3a@host-12, at the verifier of instance vm-0001@host-03",
            "vm-7f3a@host-12",
            Some("vm-0001@host-03"),
            "cwt.instance",
        ),
        (
            "invalid/cwt/instance-case",
            "the token's instance differs from the verifier's only by case: compared byte for byte",
            "VM-7f3a@host-12",
            Some("vm-7f3a@host-12"),
            "cwt.instance",
        ),
        (
            "invalid/cwt/instance-at-unbound-verifier",
            "a token bound to an instance, at a verifier configured with no instance id",
            "vm-7f3a@host-12",
            None,
            "cwt.instance",
        ),
    ];
    for (name, description, claim, verifier_instance, expected) in cases {
        let (token, proof) = bound(g, claim);
        g.push(name, description, token, Some(proof), &get, expected);
        g.out.last_mut().expect("just pushed").instance = verifier_instance.map(str::to_owned);
    }
    // The longest id, and every visible ASCII character in one.
    for (name, description, instance) in [
        (
            "valid/instance/255-bytes",
            "an instance of 255 bytes (the longest), at the verifier of that instance",
            "i".repeat(255),
        ),
        (
            "valid/instance/every-visible-ascii",
            "an instance holding every visible ASCII character 0x21-0x7E, at the verifier of that instance",
            (0x21u8..=0x7e).map(char::from).collect(),
        ),
    ] {
        let (token, proof) = bound(g, &instance);
        g.push(name, description, token, Some(proof), &get, "valid");
        g.out.last_mut().expect("just pushed").instance = Some(instance);
    }
    // A token without the claim is for every instance.
    let (token, proof) = g.good(&get);
    g.push(
        "valid/instance/unbound-token",
        "a token without an instance claim, at the verifier of instance vm-7f3a@host-12",
        token,
        Some(proof),
        &get,
        "valid",
    );
    g.out.last_mut().expect("just pushed").instance = Some("vm-7f3a@host-12".into());
    // Malformed values: T4 refuses them before any instance is compared.
    let base = base_claims(&g.keys.client_ed);
    let kb_with_instance = |instance: Value| {
        enc(&map(vec![
            (int(1), int(2)),
            (int(2), text("stoughton")),
            (int(3), text("turing")),
            (int(4), Value::Array(vec![text("member")])),
            (int(8), instance),
        ]))
    };
    for (name, description, value) in [
        ("instance-empty", "an empty instance claim", text("")),
        ("instance-space", "an instance claim with a space", text("vm 7f3a")),
        (
            "instance-non-ascii",
            "an instance claim with a non-ASCII character",
            text("vm-7f3a\u{00e9}"),
        ),
        (
            "instance-256-bytes",
            "an instance claim of 256 bytes (at most 255)",
            text(&"i".repeat(256)),
        ),
        (
            "instance-bytes",
            "an instance claim as a byte string",
            bytes(b"vm-7f3a"),
        ),
    ] {
        g.raw_payload_token(
            &format!("invalid/cwt/{name}"),
            description,
            claims_with_raw(&base, token::LABEL_KEYBOUND, &kb_with_instance(value)),
            "cwt.claim_type",
        );
        g.out.last_mut().expect("just pushed").instance = Some("vm-7f3a@host-12".into());
    }
}

/// A cnf map holding an OKP key whose x is the weak identity point.
fn weak_cnf() -> Vec<u8> {
    let mut x = [0u8; 32];
    x[0] = 1;
    enc(&map(vec![(
        int(1),
        map(vec![(int(1), int(1)), (int(-1), int(6)), (int(-2), bytes(&x))]),
    )]))
}

/// An edit applied to a valid proof's fields.
type ProofEdit = Box<dyn Fn(ProofFields) -> ProofFields>;

fn invalid_proof(g: &mut Gen) {
    let get = Req::get();
    let (token, _) = g.good(&get);
    g.push(
        "invalid/cwt/token-only-expired",
        "a token-only check of an expired token",
        {
            let mut c = base_claims(&g.keys.client_ed);
            c.iat = NOW - 1000;
            c.exp = NOW - 700;
            token_for(&c, &g.keys.issuer_ed)
        },
        None,
        &get,
        "cwt.expired",
    );
    for (label, name) in [(1, "htm"), (2, "htu"), (3, "iat"), (4, "jti"), (5, "tkh"), (6, "bdh")] {
        let (t, p) = g.edited_proof(&get, |f| f.remove(label));
        g.push(
            &format!("invalid/proof/missing-{name}"),
            &format!("the proof has no {name} ({label})"),
            t,
            Some(p),
            &get,
            "proof.missing_field",
        );
    }
    let cases: Vec<(&str, &str, ProofEdit, &str)> = vec![
        (
            "unknown-field",
            "an unknown field 99",
            Box::new(|f| f.set(99, int(1))),
            "proof.unknown_field",
        ),
        (
            "jti-short",
            "a jti of 8 bytes",
            Box::new(|f| f.set(pl::JTI, bytes(&[1; 8]))),
            "proof.jti_invalid",
        ),
        (
            "jti-long",
            "a jti of 65 bytes",
            Box::new(|f| f.set(pl::JTI, bytes(&[1; 65]))),
            "proof.jti_invalid",
        ),
        (
            "jti-empty",
            "an empty jti",
            Box::new(|f| f.set(pl::JTI, bytes(&[]))),
            "proof.jti_invalid",
        ),
        (
            "htm-int",
            "htm as an integer",
            Box::new(|f| f.set(pl::HTM, int(1))),
            "proof.field_type",
        ),
        (
            "htm-not-token",
            "htm with a space",
            Box::new(|f| f.set(pl::HTM, text("GET /"))),
            "proof.field_type",
        ),
        (
            "iat-text",
            "iat as text",
            Box::new(|f| f.set(pl::IAT, text("now"))),
            "proof.field_type",
        ),
        (
            "tkh-full-hash",
            "tkh as a full 32-byte hash",
            Box::new(|f| f.set(pl::TKH, bytes(&[0; 32]))),
            "proof.field_type",
        ),
        (
            "htm-lowercase",
            "htm \"get\" on a GET request (methods are case-sensitive)",
            Box::new(|f| f.set(pl::HTM, text("get"))),
            "proof.htm_mismatch",
        ),
        (
            "htm-post-on-get",
            "htm POST on a GET request",
            Box::new(|f| f.set(pl::HTM, text("POST"))),
            "proof.htm_mismatch",
        ),
        (
            "htm-head-on-get",
            "htm HEAD on a GET request",
            Box::new(|f| f.set(pl::HTM, text("HEAD"))),
            "proof.htm_mismatch",
        ),
        (
            "htu-other-path",
            "a proof for /v2/flavors",
            Box::new(|f| f.set(pl::HTU, text("https://nova.example/v2/flavors"))),
            "proof.htu_mismatch",
        ),
        (
            "htu-trailing-slash",
            "a trailing slash differs",
            Box::new(|f| f.set(pl::HTU, text("https://nova.example/v2/servers/"))),
            "proof.htu_mismatch",
        ),
        (
            "htu-path-case",
            "path case differs",
            Box::new(|f| f.set(pl::HTU, text("https://nova.example/v2/Servers"))),
            "proof.htu_mismatch",
        ),
        (
            "htu-query-added",
            "the proof covers a query the request lacks",
            Box::new(|f| f.set(pl::HTU, text("https://nova.example/v2/servers?all=1"))),
            "proof.htu_mismatch",
        ),
        (
            "htu-port",
            "port 8443 against 443",
            Box::new(|f| f.set(pl::HTU, text("https://nova.example:8443/v2/servers"))),
            "proof.htu_mismatch",
        ),
        (
            "htu-scheme",
            "http against https",
            Box::new(|f| f.set(pl::HTU, text("http://nova.example/v2/servers"))),
            "proof.htu_mismatch",
        ),
        (
            "htu-other-service",
            "a proof for glance replayed to nova (Kerberos rcache gap)",
            Box::new(|f| f.set(pl::HTU, text("https://glance.example/v2/servers"))),
            "proof.htu_mismatch",
        ),
        (
            "htu-encoded-slash",
            "%2F is not /",
            Box::new(|f| f.set(pl::HTU, text("https://nova.example/v2%2Fservers"))),
            "proof.htu_mismatch",
        ),
        (
            "htu-userinfo",
            "CVE-2026-7504 analogue: userinfo with two @",
            Box::new(|f| f.set(pl::HTU, text("https://a@b@nova.example/v2/servers"))),
            "proof.htu_invalid",
        ),
        (
            "htu-relative",
            "a relative htu",
            Box::new(|f| f.set(pl::HTU, text("/v2/servers"))),
            "proof.htu_invalid",
        ),
        (
            "htu-non-ascii",
            "a non-ASCII host",
            Box::new(|f| f.set(pl::HTU, text("https://növa.example/v2/servers"))),
            "proof.htu_invalid",
        ),
        (
            "tkh-other-token",
            "the proof names another token",
            Box::new(|f| f.set(pl::TKH, bytes(&[0, 1, 2, 3]))),
            "proof.ath_mismatch",
        ),
        (
            "bdh-other-body",
            "the proof names another body",
            Box::new(|f| f.set(pl::BDH, bytes(&[0, 1, 2, 3]))),
            "proof.body_mismatch",
        ),
        (
            "stale",
            "iat = now − max_age − 1",
            Box::new(|f| f.set(pl::IAT, int((NOW - MAX_AGE - 1) as i64))),
            "proof.stale",
        ),
        (
            "stale-hour",
            "iat an hour ago",
            Box::new(|f| f.set(pl::IAT, int((NOW - 3600) as i64))),
            "proof.stale",
        ),
        (
            "future",
            "iat = now + leeway + 1",
            Box::new(|f| f.set(pl::IAT, int((NOW + LEEWAY + 1) as i64))),
            "proof.future",
        ),
        (
            "future-year",
            "a proof pre-generated a year ahead",
            Box::new(|f| f.set(pl::IAT, int((NOW + 31_536_000) as i64))),
            "proof.future",
        ),
        (
            "nonce-empty",
            "an empty nonce",
            Box::new(|f| f.set(pl::NONCE, bytes(&[]))),
            "proof.nonce_invalid",
        ),
    ];
    for (name, description, edit, code) in cases {
        let (t, p) = g.edited_proof(&get, edit);
        g.push(&format!("invalid/proof/{name}"), description, t, Some(p), &get, code);
    }
    // Body binding.
    {
        let post = Req {
            method: "POST",
            uri: URI.into(),
            body: b"{\"a\":1}".to_vec(),
        };
        let (t, p) = g.with_claims(&base_claims(&g.keys.client_ed), &g.keys.client_ed, &post);
        let tampered = Req {
            body: b"{\"a\":2}".to_vec(),
            ..post.clone()
        };
        g.push(
            "invalid/proof/body-changed",
            "one body byte changed in transit",
            t.clone(),
            Some(p.clone()),
            &tampered,
            "proof.body_mismatch",
        );
        let emptied = Req {
            body: Vec::new(),
            ..post.clone()
        };
        g.push(
            "invalid/proof/body-dropped",
            "the body was dropped in transit",
            t.clone(),
            Some(p.clone()),
            &emptied,
            "proof.body_mismatch",
        );
        let get_proof = proof_from(
            &ProofFields::new("POST", URI, &t, b"", NOW - 1),
            &g.keys.client_ed,
            &t,
            b"",
        );
        g.push(
            "invalid/proof/body-added",
            "a proof for an empty body with a body attached",
            t.clone(),
            Some(get_proof),
            &post,
            "proof.body_mismatch",
        );
    }
    // Keys and signatures.
    {
        let fields = ProofFields::new("GET", URI, &token, b"", NOW - 1);
        let stolen = proof_from(&fields, &g.keys.attacker_ed, &token, b"");
        g.push(
            "invalid/proof/stolen-token",
            "a stolen token with a proof signed by the thief's key",
            token.clone(),
            Some(stolen),
            &get,
            "proof.bad_signature",
        );
        let es = proof_from(&fields, &g.keys.client_es, &token, b"");
        g.push(
            "invalid/proof/alg-mismatch",
            "an ES256 proof for a token bound to an Ed25519 key",
            token.clone(),
            Some(es),
            &get,
            "proof.alg_mismatch",
        );
        let protected = protected_header(-8, None);
        let wrong_context = {
            let mut aad = Vec::new();
            cbor::write_array(&mut aad, 3);
            cbor::write_text(&mut aad, &AAD_CONTEXT.replace("v1", "v0"));
            cbor::write_bytes(&mut aad, &crate::sha256(&token));
            cbor::write_bytes(&mut aad, &crate::sha256(b""));
            sign1_raw(&protected, &[0xa0], &fields.payload(), &g.keys.client_ed, &aad)
        };
        g.push(
            "invalid/proof/wrong-aad-context",
            "signed over another AAD context string",
            token.clone(),
            Some(wrong_context),
            &get,
            "proof.bad_signature",
        );
        let no_aad = sign1_raw(&protected, &[0xa0], &fields.payload(), &g.keys.client_ed, &[]);
        g.push(
            "invalid/proof/no-aad",
            "signed without the external AAD",
            token.clone(),
            Some(no_aad),
            &get,
            "proof.bad_signature",
        );
        let mut flipped = proof_from(&fields, &g.keys.client_ed, &token, b"");
        let last = flipped.len() - 5;
        flipped[last] ^= 0x40;
        g.push(
            "invalid/proof/signature-bit-flip",
            "one bit of the proof signature flipped",
            token.clone(),
            Some(flipped),
            &get,
            "proof.bad_signature",
        );
        let embedded = {
            let attacker_key = g.keys.attacker_ed.public_key().to_cose_key(None);
            let prot = enc(&map(vec![(int(1), int(-8))]));
            let unprot = enc(&map(vec![(int(-1), Value::Bytes(attacker_key))]));
            sign1_raw(
                &prot,
                &unprot,
                &fields.payload(),
                &g.keys.attacker_ed,
                &aad(&token, b""),
            )
        };
        g.push(
            "invalid/proof/embedded-key",
            "CVE-2018-0114 analogue: the proof embeds the attacker's key",
            token.clone(),
            Some(embedded),
            &get,
            "cose.header_unsupported",
        );
    }
    // Nonces and replay.
    {
        let nonces = Some(vec![b"nonce-epoch-1".to_vec()]);
        let (t, p) = g.good(&get);
        g.push_full(
            "invalid/proof/nonce-required",
            "the service requires a nonce; the proof has none",
            t,
            Some(p),
            &get,
            nonces.clone(),
            1,
            "proof.nonce_required",
        );
        let (t, p) = g.edited_proof(&get, |f| f.set(pl::NONCE, bytes(b"nonce-epoch-0")));
        g.push_full(
            "invalid/proof/nonce-expired",
            "a nonce the service no longer accepts",
            t,
            Some(p),
            &get,
            nonces.clone(),
            1,
            "proof.nonce_invalid",
        );
        let (t, p) = g.good(&get);
        g.push_full(
            "invalid/replay/same-proof-twice",
            "the same proof submitted twice",
            t,
            Some(p),
            &get,
            None,
            2,
            "replay.detected",
        );
    }
}

fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Seed of the vectors' keys (`derive`).
const VECTOR_SEED: &str = "keybound test vectors v1";

/// Every private key of the vectors and of the annotated examples in
/// spec/cbor.md §4–5, with the derivation that gives it, so that a client
/// implementation can rebuild tokens and proofs byte for byte:
/// `(name, algorithm, seed, info)`.
const PUBLISHED_KEYS: [(&str, Algorithm, &str, &str); 8] = [
    ("issuer-ed25519", Algorithm::EdDSA, VECTOR_SEED, "issuer-ed25519"),
    ("issuer-es256", Algorithm::ES256, VECTOR_SEED, "issuer-es256"),
    (
        "issuer-ed25519-next",
        Algorithm::EdDSA,
        VECTOR_SEED,
        "issuer-ed25519-next",
    ),
    ("client-ed25519", Algorithm::EdDSA, VECTOR_SEED, "client-ed25519"),
    ("client-es256", Algorithm::ES256, VECTOR_SEED, "client-es256"),
    ("attacker-ed25519", Algorithm::EdDSA, VECTOR_SEED, "attacker-ed25519"),
    ("spec-issuer", Algorithm::EdDSA, "spec", "issuer"),
    ("spec-client", Algorithm::EdDSA, "spec", "client"),
];

/// The secret `d` of the key derived as spec/issuer.md §7.2 describes
/// (HKDF-SHA256, salt "keybound key derivation v1", info ‖ counter byte),
/// checked against [`SigningKey::derive`]; returns (d, counter).
fn derived_secret(alg: Algorithm, seed: &str, info: &str) -> (Vec<u8>, u8) {
    let key = SigningKey::derive(alg, seed.as_bytes(), info.as_bytes()).expect("derivation succeeds");
    let hk = hkdf::Hkdf::<sha2::Sha256>::new(Some(b"keybound key derivation v1"), seed.as_bytes());
    for counter in 0u8..=255 {
        let mut okm = [0u8; 32];
        hk.expand(&[info.as_bytes(), &[counter]].concat(), &mut okm)
            .expect("32 bytes is a valid HKDF length");
        if let Ok(candidate) = SigningKey::from_secret_bytes(alg, &okm) {
            assert_eq!(
                candidate.public_key(),
                key.public_key(),
                "the documented derivation is the real one"
            );
            return (okm.to_vec(), counter);
        }
    }
    panic!("no valid key derived for {info}");
}

fn keys_json() -> String {
    let entries: Vec<String> = PUBLISHED_KEYS
        .iter()
        .map(|(name, alg, seed, info)| {
            let key = SigningKey::derive(*alg, seed.as_bytes(), info.as_bytes()).expect("derivation succeeds");
            let (d, counter) = derived_secret(*alg, seed, info);
            let public = key.public_key();
            format!(
                "    {{\"name\": {}, \"alg\": {}, \"seed\": {}, \"info\": {}, \"counter\": {counter}, \"d\": {}, \"kid\": {}, \"public_key\": {}}}",
                json_string(name),
                json_string(alg.name()),
                json_string(seed),
                json_string(info),
                json_string(&hex_encode(&d)),
                json_string(&hex_encode(&public.default_kid())),
                json_string(&hex_encode(&public.to_cose_key(Some(&public.default_kid())))),
            )
        })
        .collect();
    entries.join(",\n")
}

/// The vectors as `test-vectors/vectors.json`.
pub fn to_json(vectors: &[Vector]) -> String {
    let mut out = format!(
        "{{\n  \"version\": 1,\n  \"keys\": [\n{}\n  ],\n  \"vectors\": [\n",
        keys_json()
    );
    for (i, v) in vectors.iter().enumerate() {
        let keys: Vec<String> = v.issuer_keys.iter().map(|k| json_string(&hex_encode(k))).collect();
        let nonces = match &v.nonces {
            Some(list) => format!(
                ", \"nonces\": [{}]",
                list.iter()
                    .map(|n| json_string(&hex_encode(n)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            None => String::new(),
        };
        let policy = match &v.policy {
            Some(policy) => format!(", \"policy\": {}", json_string(policy)),
            None => String::new(),
        };
        let instance = match &v.instance {
            Some(instance) => format!(", \"instance\": {}", json_string(instance)),
            None => String::new(),
        };
        let slip = match &v.slip {
            Some(slip) => format!("      \"slip\": {},\n", json_string(&hex_encode(slip))),
            None => String::new(),
        };
        out.push_str(&format!(
            "    {{\n      \"name\": {},\n      \"description\": {},\n      \"issuer_keys\": [{}],\n      \"token\": {},\n      \"proof\": {},\n      \"request\": {{\"method\": {}, \"uri\": {}, \"body\": {}}},\n      \"verifier\": {{\"audience\": {}, \"issuer\": {}, \"now\": {}, \"leeway\": {LEEWAY}, \"proof_max_age\": {MAX_AGE}{instance}{nonces}{policy}}},\n{slip}      \"submissions\": {},\n      \"expected\": {}\n    }}{}\n",
            json_string(&v.name),
            json_string(&v.description),
            keys.join(", "),
            json_string(&hex_encode(&v.token)),
            v.proof.as_ref().map_or_else(|| "null".to_owned(), |p| json_string(&hex_encode(p))),
            json_string(&v.method),
            json_string(&v.uri),
            json_string(&hex_encode(&v.body)),
            json_string(&v.audience),
            json_string(&v.issuer),
            v.now,
            v.submissions,
            json_string(&v.expected),
            if i + 1 == vectors.len() { "" } else { "," },
        ));
    }
    out.push_str("  ]\n}\n");
    out
}

/// The vectors as a markdown table for people (`test-vectors/vectors.md`).
pub fn to_markdown(vectors: &[Vector]) -> String {
    let valid = vectors.iter().filter(|v| v.expected == "valid").count();
    let mut out = format!(
        "# keybound test vectors (generated)\n\nDo not edit: `cargo run --example gen_vectors` writes this file and vectors.json.\n\n{} vectors: {valid} valid, {} invalid. Verification time {NOW}, leeway {LEEWAY} s, proof max age {MAX_AGE} s.\n\n| name | expected | token bytes | proof bytes | description |\n|---|---|---:|---:|---|\n",
        vectors.len(),
        vectors.len() - valid
    );
    for v in vectors {
        out.push_str(&format!(
            "| `{}` | `{}` | {} | {} | {} |\n",
            v.name,
            v.expected,
            v.token.len(),
            v.proof.as_ref().map_or_else(|| "–".to_owned(), |p| p.len().to_string()),
            v.description.replace('|', "\\|")
        ));
    }
    out
}

/// A COSE_Key map from `(label, value)` pairs given in deterministic order.
fn cose_key_entry(entries: Vec<(i64, Value)>) -> Vec<u8> {
    enc(&map(entries
        .into_iter()
        .map(|(label, value)| (int(label), value))
        .collect()))
}

/// Key-set entries a verifier skips by kid, next to the usable keys (formats.md §6, K3).
fn key_sets(g: &mut Gen) {
    let get = Req::get();
    // RSA (kty 3): n at -1, e at -2, both byte strings.
    let rsa = cose_key_entry(vec![
        (1, int(3)),
        (2, bytes(b"rsa-2048")),
        (3, int(-37)),
        (-1, bytes(&[0xc5; 256])),
        (-2, bytes(&[0x01, 0x00, 0x01])),
    ]);
    // Symmetric (kty 4): k at -1.
    let symmetric = cose_key_entry(vec![(1, int(4)), (2, bytes(b"hmac")), (-1, bytes(&[0x5a; 32]))]);
    // The ES256 issuer key with y in the compressed form (its sign bit).
    let es_public = g.keys.issuer_es.public_key().to_cose_key(None);
    let es: Value = ciborium::from_reader(&es_public[..]).expect("own encoding");
    let coordinate = |label: i64| {
        es.as_map()
            .and_then(|m| m.iter().find(|(k, _)| *k == int(label)))
            .and_then(|(_, v)| v.as_bytes().cloned())
            .expect("EC2 key has x and y")
    };
    let (x, y) = (coordinate(-2), coordinate(-3));
    let compressed_kid = b"es256-compressed";
    let compressed = cose_key_entry(vec![
        (1, int(2)),
        (2, bytes(compressed_kid)),
        (3, int(-7)),
        (-1, int(1)),
        (-2, bytes(&x)),
        (-3, Value::Bool(y[31] & 1 == 1)),
    ]);
    let with_entry = |g: &Gen, entry: &[u8]| [vec![entry.to_vec()], g.issuer_keys()].concat();
    let token_under = |g: &Gen, issuer: &SigningKey, kid: &[u8]| {
        let payload = token::issue::encode_claims(&base_claims(&g.keys.client_ed));
        let protected = protected_header(issuer.algorithm().cose_id(), Some(kid));
        let t = sign1_raw(&protected, &[0xa0], &payload, issuer, &[]);
        let p = proof_from(
            &ProofFields::new("GET", URI, &t, b"", NOW - 1),
            &g.keys.client_ed,
            &t,
            b"",
        );
        (t, p)
    };
    for (name, entry, skipped_kid, what) in [
        (
            "rsa",
            &rsa,
            &b"rsa-2048"[..],
            "an RSA key (kty 3, n at -1 a byte string)",
        ),
        (
            "symmetric",
            &symmetric,
            &b"hmac"[..],
            "a symmetric key (kty 4, k at -1)",
        ),
        (
            "compressed-ec2",
            &compressed,
            &compressed_kid[..],
            "the ES256 issuer key with a compressed y (true/false, K1 key.unsupported)",
        ),
    ] {
        let (t, p) = g.good(&get);
        g.push(
            &format!("valid/keyset/{name}-entry-skipped"),
            &format!("the key set starts with {what}: that entry is skipped by its kid, the other keys are used"),
            t,
            Some(p),
            &get,
            "valid",
        );
        g.out.last_mut().expect("just pushed").issuer_keys = with_entry(g, entry);
        let signer = if name == "compressed-ec2" {
            &g.keys.issuer_es
        } else {
            &g.keys.issuer_ed
        };
        let (t, p) = token_under(g, signer, skipped_kid);
        g.push(
            &format!("invalid/keyset/token-kid-of-{name}-entry"),
            &format!("the token's kid names {what} of the key set, which was skipped: the kid is unknown (T6)"),
            t,
            Some(p),
            &get,
            "cose.key_unknown",
        );
        g.out.last_mut().expect("just pushed").issuer_keys = with_entry(g, entry);
    }
    // The limits of skipping: these defects refuse the whole set (K3).
    let mut okp_with_y = g.keys.issuer_ed_2.public_key().to_cose_key(Some(b"okp-y"));
    okp_with_y[0] += 1; // one more entry, appended in order after -2 (x)
    okp_with_y.extend_from_slice(&[0x22, 0xf5]);
    let mut rsa_text_kid = rsa.clone();
    // kid (2) as text: the one parameter of another key type that is read.
    let at = rsa_text_kid
        .windows(2)
        .position(|w| w == [0x02, 0x48])
        .expect("kid head");
    rsa_text_kid[at + 1] = 0x68;
    for (name, entry, what) in [
        (
            "okp-with-compressed-y",
            okp_with_y,
            "an OKP entry with y (-3) true: OKP keys have no y in either form",
        ),
        (
            "rsa-kid-text",
            rsa_text_kid,
            "an RSA entry whose kid (2) is a text string",
        ),
    ] {
        let (t, p) = g.good(&get);
        g.push(
            &format!("invalid/keyset/{name}"),
            &format!("the key set holds {what}: the whole set is refused (K3), whatever the token"),
            t,
            Some(p),
            &get,
            "keyset.invalid",
        );
        g.out.last_mut().expect("just pushed").issuer_keys = with_entry(g, &entry);
    }
}

/// C-1 for maps: a count is at most half the bytes after the head (cbor.md C-1).
fn map_counts(g: &mut Gen) {
    let get = Req::get();
    for (name, head, rest, what, code) in [
        (
            "map-count-over-half",
            0x1a,
            51,
            "map(26) (b8 1a) followed by 51 zero bytes: 26 entries need at least 52",
            "cbor.malformed",
        ),
        (
            "map-count-half",
            0x19,
            50,
            "map(25) (b8 19) followed by 50 zero bytes: the count passes C-1, then key 0 repeats",
            "cbor.duplicate_key",
        ),
    ] {
        let t = [vec![0xb8, head], vec![0; rest]].concat();
        let p = proof_from(
            &ProofFields::new("GET", URI, &t, b"", NOW - 1),
            &g.keys.client_ed,
            &t,
            b"",
        );
        g.push(&format!("invalid/cbor/token-{name}"), what, t, Some(p), &get, code);
    }
}

/// Root secret of the derived-key vector: the bytes 0x00, 0x01, …, 0x1f.
pub const DERIVED_ROOT: [u8; 32] = {
    let mut root = [0u8; 32];
    let mut i = 0;
    while i < 32 {
        root[i] = i as u8;
        i += 1;
    }
    root
};

/// Rotation period of the derived-key vector.
pub const DERIVED_PERIOD: u64 = 3600;

/// A token signed by an issuer key derived per spec/issuer.md §7.2, under
/// its kid `u32be(e) ‖ thumbprint[0..4]`.
fn derived_issuer_key(g: &mut Gen) {
    let get = Req::get();
    let epoch = NOW / DERIVED_PERIOD;
    let info = [&b"keybound issuer key v1"[..], &epoch.to_be_bytes()].concat();
    let issuer = SigningKey::derive(Algorithm::EdDSA, &DERIVED_ROOT, &info).expect("derivation succeeds");
    let mut kid = (epoch as u32).to_be_bytes().to_vec();
    kid.extend_from_slice(&issuer.public_key().thumbprint().as_bytes()[..4]);
    let payload = token::issue::encode_claims(&base_claims(&g.keys.client_ed));
    let protected = protected_header(issuer.algorithm().cose_id(), Some(&kid));
    let t = sign1_raw(&protected, &[0xa0], &payload, &issuer, &[]);
    let p = proof_from(
        &ProofFields::new("GET", URI, &t, b"", NOW - 1),
        &g.keys.client_ed,
        &t,
        b"",
    );
    g.push(
        "valid/issuer-derived/ed25519-epoch-kid",
        &format!(
            "issuer key of epoch {epoch} (period {DERIVED_PERIOD} s) derived from the root secret 000102…1f (spec/issuer.md §7.2); kid = u32be(epoch) ‖ thumbprint[0..4] = {}",
            hex_encode(&kid)
        ),
        t,
        Some(p),
        &get,
        "valid",
    );
    g.out.last_mut().expect("just pushed").issuer_keys = vec![issuer.public_key().to_cose_key(Some(&kid))];
}

/// The trust id of the delegated vectors: 22 base64url characters, as a
/// keybound issuer writes them.
const TRUST_ID: &str = "2Qf3mV0cZ8bq1Xo4yT6wUg";

fn actors(names: &[&str]) -> Vec<Actor> {
    names
        .iter()
        .map(|name| Actor {
            sub: (*name).to_owned(),
            iss: None,
        })
        .collect()
}

/// Delegated tokens (spec/delegation.md §4.1): steps D1–D5 and the policy
/// keys `delegated` and `actors` (A1). Appended last, so that the earlier
/// vectors keep their bytes.
fn delegated(g: &mut Gen) {
    let get = Req::get();
    let chain = [
        "nova-compute@service",
        "heat@service",
        "mistral@service",
        "senlin@service",
        "zaqar@service",
        "aodh@service",
        "magnum@service",
        "trove@service",
        "watcher@service",
    ];
    let base = base_claims(&g.keys.client_ed);
    let delegated_claims = |trust: Option<&str>, names: &[&str]| {
        let mut claims = base.clone();
        claims.trust_id = trust.map(str::to_owned);
        claims.actor_chain = actors(names);
        claims
    };
    let cases: Vec<(&str, &str, Claims, &str)> = vec![
        (
            "valid/delegation/chain-1",
            "a delegated token: trust id and one actor (a trust used by its trustee)",
            delegated_claims(Some(TRUST_ID), &chain[..1]),
            "valid",
        ),
        (
            "valid/delegation/chain-2",
            "two actors, current actor first (one redelegation)",
            delegated_claims(Some(TRUST_ID), &chain[..2]),
            "valid",
        ),
        (
            "valid/delegation/chain-4",
            "four actors: the longest chain of trusts (root and three redelegations)",
            delegated_claims(Some(TRUST_ID), &chain[..4]),
            "valid",
        ),
        (
            "invalid/delegation/chain-5",
            "five actors: within the wire limit of 8, longer than any chain of trusts (D3; catalog DL-03)",
            delegated_claims(Some(TRUST_ID), &chain[..5]),
            "delegation.too_deep",
        ),
        (
            "invalid/delegation/chain-8",
            "eight actors: the wire limit, still longer than any chain of trusts (D3)",
            delegated_claims(Some(TRUST_ID), &chain[..8]),
            "delegation.too_deep",
        ),
        (
            "invalid/delegation/chain-9",
            "nine actors: over the wire limit of 8, refused when the claims are read (T4)",
            delegated_claims(Some(TRUST_ID), &chain[..9]),
            "cwt.claim_type",
        ),
        (
            "invalid/delegation/trust-without-actors",
            "a trust id without an actor chain (D1)",
            delegated_claims(Some(TRUST_ID), &[]),
            "delegation.incomplete",
        ),
        (
            "invalid/delegation/actors-without-trust",
            "an actor chain without a trust id (D1)",
            delegated_claims(None, &chain[..1]),
            "delegation.incomplete",
        ),
        (
            "invalid/delegation/empty-trust-id",
            "an empty trust id with an actor chain (D1)",
            delegated_claims(Some(""), &chain[..1]),
            "delegation.incomplete",
        ),
        (
            "invalid/delegation/actor-empty-name",
            "an actor whose sub is the empty string (D4)",
            delegated_claims(Some(TRUST_ID), &["nova-compute@service", ""]),
            "delegation.actor_invalid",
        ),
        (
            "invalid/delegation/actor-is-subject",
            "the subject acts through another user for itself: A → B → A (D5; catalog DL-04)",
            delegated_claims(Some(TRUST_ID), &["ayoung@stoughton", "heat@service"]),
            "delegation.cycle",
        ),
        (
            "invalid/delegation/actor-twice",
            "one actor twice in the chain: a cycle B → C → B (D5; catalog DL-04)",
            delegated_claims(
                Some(TRUST_ID),
                &["heat@service", "nova-compute@service", "heat@service"],
            ),
            "delegation.cycle",
        ),
    ];
    for (name, description, claims, expected) in cases {
        let (token, proof) = g.with_claims(&claims, &g.keys.client_ed, &get);
        g.push(name, description, token, Some(proof), &get, expected);
    }
    // An actor vouched for by another issuer (federation is not specified).
    {
        let mut claims = delegated_claims(Some(TRUST_ID), &chain[..1]);
        claims.actor_chain[0].iss = Some("https://other.example".into());
        let (token, proof) = g.with_claims(&claims, &g.keys.client_ed, &get);
        g.push(
            "invalid/delegation/actor-with-issuer",
            "an actor with an iss (2) of its own: keybound actors are the token issuer's users (D4)",
            token,
            Some(proof),
            &get,
            "delegation.actor_invalid",
        );
    }
    // DL-09 (Bronze Bit): delegation outside the signed payload counts for
    // nothing; an unprotected header parameter is refused outright.
    {
        let payload = token::issue::encode_claims(&base_claims(&g.keys.client_ed));
        let protected = protected_header(g.keys.issuer_ed.algorithm().cose_id(), Some(&kid(&g.keys.issuer_ed)));
        let unprotected = enc(&map(vec![(
            text("actor_chain"),
            Value::Array(vec![map(vec![(int(1), text("nova-compute@service"))])]),
        )]));
        let token = sign1_raw(&protected, &unprotected, &payload, &g.keys.issuer_ed, &[]);
        let proof = proof_from(
            &ProofFields::new("GET", URI, &token, b"", NOW - 1),
            &g.keys.client_ed,
            &token,
            b"",
        );
        g.push(
            "invalid/delegation/actor-chain-unprotected",
            "an actor chain in the unprotected header of a plain token (catalog DL-09, CVE-2020-17049): T3 refuses it",
            token,
            Some(proof),
            &get,
            "cose.header_unsupported",
        );
    }
    // The service's policy (A1): `delegated` and `actors`.
    const REFUSES: &str = "[[rule]]\nmethod = \"GET\"\npath = \"/v2/servers\"\nroles = [\"member\"]\n";
    const NOVA_ONLY: &str = "[[rule]]\nmethod = \"GET\"\npath = \"/v2/servers\"\nroles = [\"member\"]\ndelegated = \"allow\"\nactors = [\"nova-compute@service\"]\n";
    let policies: [(&str, &str, &str, &[&str], &str); 5] = [
        (
            "valid/delegation/policy-allows-plain",
            "a token that is not delegated, under a policy that refuses delegated requests",
            REFUSES,
            &[],
            "valid",
        ),
        (
            "invalid/delegation/policy-refuses",
            "a delegated token verified by a service whose policy does not allow delegated requests (the default)",
            REFUSES,
            &chain[..1],
            "policy.denied",
        ),
        (
            "valid/delegation/policy-actor",
            "the policy allows delegated requests by nova-compute@service, the current actor",
            NOVA_ONLY,
            &chain[..2],
            "valid",
        ),
        (
            "invalid/delegation/policy-other-actor",
            "the policy allows delegated requests by nova-compute@service; heat@service is the current actor",
            NOVA_ONLY,
            &["heat@service"],
            "policy.denied",
        ),
        (
            "invalid/delegation/policy-inner-actor",
            "nova-compute@service is an inner actor only: inner actors decide nothing (catalog DL-10)",
            NOVA_ONLY,
            &["heat@service", "nova-compute@service"],
            "policy.denied",
        ),
    ];
    for (name, description, policy, names, expected) in policies {
        let trust = (!names.is_empty()).then_some(TRUST_ID);
        let (token, proof) = g.with_claims(&delegated_claims(trust, names), &g.keys.client_ed, &get);
        g.push(name, description, token, Some(proof), &get, expected);
        g.out.last_mut().expect("just pushed").policy = Some(policy.to_owned());
    }
}

/// Routing slips (spec/delegation.md §10): each vector is a valid request
/// (token and proof) carrying a slip in `KB-Slip`, or a slip where a token
/// belongs. Appended last, so that the earlier vectors keep their bytes.
fn slips(g: &mut Gen) {
    use crate::delegation::slip::{SLIP_AAD, SlipBuilder, SlipContent, encode_payload};
    const GLANCE: &str = "https://glance.example";
    const NEUTRON: &str = "https://neutron.example";
    const GLANCE_TRUST: &str = "gLaNcEtRuSt0123456789A";
    const NEUTRON_TRUST: &str = "nEuTrOnTrUsT0123456789";
    let get = Req::get();
    let workflow_id = *b"workflow-run-001";
    let content = |trustor: &str, iat: u64, exp: u64, hops: &[(&str, &str, &str)]| SlipContent {
        issuer: ISSUER.into(),
        workflow_id,
        workflow: "deploy-instance".into(),
        trustor: trustor.into(),
        issued_at: iat,
        expires_at: exp,
        hops: hops
            .iter()
            .map(|(trustee, audience, trust)| crate::delegation::slip::Hop {
                trustee: (*trustee).into(),
                audience: (*audience).into(),
                trust_id: (*trust).into(),
            })
            .collect(),
    };
    // The seed's workflow: nova-compute calls glance, nova (this service) and neutron.
    let three = [
        ("nova-compute@service", GLANCE, GLANCE_TRUST),
        ("nova-compute@service", AUDIENCE, TRUST_ID),
        ("nova-compute@service", NEUTRON, NEUTRON_TRUST),
    ];
    let one = [("nova-compute@service", GLANCE, GLANCE_TRUST)];
    let signed = |c: &SlipContent, key: &SigningKey| {
        let mut builder =
            SlipBuilder::new(&c.issuer, &c.workflow, &c.trustor, c.issued_at, c.expires_at).workflow_id(c.workflow_id);
        for hop in &c.hops {
            builder = builder.hop(&hop.trustee, &hop.audience, &hop.trust_id);
        }
        builder.sign(key, &kid(key)).expect("a valid slip").into_bytes()
    };
    // Signed as given, past the builder's checks, with `aad` and a kid.
    let raw = |payload: &[u8], key: &SigningKey, kid: &[u8], aad: &[u8]| {
        sign1_raw(
            &protected_header(key.algorithm().cose_id(), Some(kid)),
            &[0xa0],
            payload,
            key,
            aad,
        )
    };
    let (ed, es, attacker) = (&g.keys.issuer_ed, &g.keys.issuer_es, &g.keys.attacker_ed);
    let plain = base_claims(&g.keys.client_ed);
    let mut delegated = plain.clone();
    delegated.trust_id = Some(TRUST_ID.into());
    delegated.actor_chain = actors(&["nova-compute@service"]);
    let trustor = plain.sub.clone();
    let (iat, exp) = (NOW - 60, NOW + 3600);
    let good = content(&trustor, iat, exp, &three);
    let payload = encode_payload(&good);
    let mut too_many: Vec<(String, &str, &str)> = Vec::new();
    for i in 0..33 {
        too_many.push((format!("s{i}@service"), "https://g.example", GLANCE_TRUST));
    }
    let too_many: Vec<(&str, &str, &str)> = too_many.iter().map(|(a, b, c)| (a.as_str(), *b, *c)).collect();
    let mut map_payload = Vec::new();
    cbor::write_map(&mut map_payload, 1);
    cbor::write_int(&mut map_payload, 1);
    cbor::write_text(&mut map_payload, ISSUER);
    let cases: Vec<(&str, &str, &Claims, Vec<u8>, &str)> = vec![
        (
            "valid/slip/one-hop",
            "a request by the slip's trustor, not delegated, carrying a slip of one hop (S1–S7)",
            &plain,
            signed(&content(&trustor, iat, exp, &one), ed),
            "valid",
        ),
        (
            "valid/slip/delegated-hop",
            "a delegated request whose trust, current actor and audience are the second of three hops (S8)",
            &delegated,
            signed(&good, ed),
            "valid",
        ),
        (
            "valid/slip/es256-issuer",
            "the same slip signed by the ES256 issuer key",
            &delegated,
            signed(&good, es),
            "valid",
        ),
        (
            "valid/slip/expired-within-leeway",
            "a slip that expired 30 s ago: within the leeway (S6)",
            &plain,
            signed(&content(&trustor, NOW - 600, NOW - LEEWAY, &one), ed),
            "valid",
        ),
        (
            "invalid/slip/bad-signature",
            "a slip signed by another key under the issuer's kid (S5)",
            &delegated,
            raw(&payload, attacker, &kid(ed), SLIP_AAD),
            "slip.bad_signature",
        ),
        (
            "invalid/slip/signed-without-aad",
            "the slip's payload signed by the issuer as a token is (empty external AAD): the slip AAD separates the two (S5)",
            &delegated,
            raw(&payload, ed, &kid(ed), &[]),
            "slip.bad_signature",
        ),
        (
            "invalid/slip/unknown-kid",
            "a slip signed by the issuer under a kid its key set does not have (S5)",
            &delegated,
            raw(&payload, ed, b"no-such-kid", SLIP_AAD),
            "slip.key_unknown",
        ),
        (
            "invalid/slip/unknown-issuer",
            "a slip naming an issuer the service does not trust (S4)",
            &delegated,
            raw(
                &encode_payload(&SlipContent {
                    issuer: "https://other.example".into(),
                    ..good.clone()
                }),
                ed,
                &kid(ed),
                SLIP_AAD,
            ),
            "slip.issuer_unknown",
        ),
        (
            "invalid/slip/expired",
            "a slip that expired 31 s ago, beyond the leeway of 30 s (S6)",
            &delegated,
            signed(&content(&trustor, NOW - 600, NOW - LEEWAY - 1, &three), ed),
            "slip.expired",
        ),
        (
            "invalid/slip/not-yet-valid",
            "a slip issued 31 s in the future, beyond the leeway (S6)",
            &delegated,
            signed(&content(&trustor, NOW + LEEWAY + 1, exp, &three), ed),
            "slip.not_yet_valid",
        ),
        (
            "invalid/slip/wrong-trustor",
            "a slip for another user than the request's subject (S7)",
            &delegated,
            signed(&content("bob@stoughton", iat, exp, &three), ed),
            "slip.wrong_trustor",
        ),
        (
            "invalid/slip/hop-trust-missing",
            "a delegated request whose trust is in no hop of the slip (S8)",
            &delegated,
            signed(&content(&trustor, iat, exp, &one), ed),
            "slip.hop_mismatch",
        ),
        (
            "invalid/slip/hop-other-trustee",
            "the request's trust is in a hop of another trustee than its current actor (S8)",
            &delegated,
            signed(
                &content(&trustor, iat, exp, &[("heat@service", AUDIENCE, TRUST_ID)]),
                ed,
            ),
            "slip.hop_mismatch",
        ),
        (
            "invalid/slip/hop-other-audience",
            "the request's trust and actor are in a hop to another service (S8)",
            &delegated,
            signed(
                &content(&trustor, iat, exp, &[("nova-compute@service", GLANCE, TRUST_ID)]),
                ed,
            ),
            "slip.hop_mismatch",
        ),
        (
            "invalid/slip/too-many-hops",
            "a slip of 33 hops, one over the limit (S3)",
            &plain,
            raw(
                &encode_payload(&content(&trustor, iat, exp, &too_many)),
                ed,
                &kid(ed),
                SLIP_AAD,
            ),
            "slip.malformed",
        ),
        (
            "invalid/slip/payload-map",
            "a slip whose payload is a map, the shape of token claims, not the slip array (S3)",
            &plain,
            raw(&map_payload, ed, &kid(ed), SLIP_AAD),
            "slip.malformed",
        ),
        (
            "invalid/slip/no-kid",
            "a slip without kid (S2)",
            &plain,
            sign1_raw(&protected_header(-8, None), &[0xa0], &payload, ed, SLIP_AAD),
            "slip.malformed",
        ),
    ];
    let slip_as_token = signed(&good, ed);
    for (name, description, claims, slip, expected) in cases {
        let (token, proof) = g.with_claims(claims, &g.keys.client_ed, &get);
        g.push(name, description, token, Some(proof), &get, expected);
        g.out.last_mut().expect("just pushed").slip = Some(slip);
    }
    // A token presented as a slip, a proof presented as a slip, a slip presented as a token.
    let (token, proof) = g.with_claims(&plain, &g.keys.client_ed, &get);
    for (name, description, slip) in [
        (
            "invalid/slip/token-as-slip",
            "the request's own token in KB-Slip: a token is not a slip (S3)",
            token.clone(),
        ),
        (
            "invalid/slip/proof-as-slip",
            "the request's proof in KB-Slip: a proof has no kid and is not a slip (S2)",
            proof.clone(),
        ),
    ] {
        g.push(
            name,
            description,
            token.clone(),
            Some(proof.clone()),
            &get,
            "slip.malformed",
        );
        g.out.last_mut().expect("just pushed").slip = Some(slip);
    }
    let slip = slip_as_token;
    let proof = proof_from(
        &ProofFields::new("GET", URI, &slip, b"", NOW - 1),
        &g.keys.client_ed,
        &slip,
        b"",
    );
    g.push(
        "invalid/slip/slip-as-token",
        "a valid slip sent as the token: its payload is an array, not a claims map (T4)",
        slip,
        Some(proof),
        &get,
        "cwt.structure",
    );
}

/// Key-set document vectors (spec/formats.md §6.1, verification.md K3 step
/// 6): scenarios in which one source serves documents in order; after each,
/// what a verifier holds. Written to `test-vectors/keyset-documents.json`.
pub fn keyset_documents() -> String {
    let k1 = derive(Algorithm::EdDSA, "issuer-ed25519");
    let k2 = derive(Algorithm::EdDSA, "issuer-ed25519-next");
    let set = |keys: &[&SigningKey], sequence: u64| {
        let mut set = KeySet::new();
        for key in keys {
            set.insert(kid(key), key.public_key().clone()).expect("distinct kids");
        }
        set.with_sequence(sequence).to_cbor()
    };
    // A sequenced map with other labels or values than the format allows.
    let raw_map = |entries: &[(u64, &[u8])]| {
        let mut out = Vec::new();
        crate::cbor::write_map(&mut out, entries.len());
        for (label, value) in entries {
            crate::cbor::write_uint(&mut out, *label);
            out.extend_from_slice(value);
        }
        out
    };
    let uint = |n: u64| {
        let mut out = Vec::new();
        crate::cbor::write_uint(&mut out, n);
        out
    };
    let bare_k1 = set(&[&k1], 0);
    let scenarios: Vec<(&str, &str, Vec<Vec<u8>>)> = vec![
        (
            "valid/sequence-grows",
            "sequence 1 with k1, then sequence 2 with k1 and k2 (a rotation): both installed",
            vec![set(&[&k1], 1), set(&[&k1, &k2], 2)],
        ),
        (
            "valid/sequence-equal",
            "sequence 2 with k1, then sequence 2 with k2: an equal sequence is installed",
            vec![set(&[&k1], 2), set(&[&k2], 2)],
        ),
        (
            "valid/bare-then-sequenced",
            "a bare COSE_KeySet (sequence 0), then sequence 1",
            vec![bare_k1.clone(), set(&[&k2], 1)],
        ),
        (
            "valid/withdrawn",
            "sequence 1 with k1, then sequence 2 with no key: every key withdrawn, no token verifies (FD-04)",
            vec![set(&[&k1], 1), set(&[], 2)],
        ),
        (
            "invalid/rollback",
            "sequence 5 with k2, then sequence 4 with the retired k1: refused, k2 kept (FD-05)",
            vec![set(&[&k2], 5), set(&[&k1], 4)],
        ),
        (
            "invalid/rollback-to-bare",
            "sequence 3, then a bare COSE_KeySet (sequence 0): refused",
            vec![set(&[&k2], 3), bare_k1.clone()],
        ),
        (
            "invalid/withdrawn-then-old",
            "every key withdrawn at sequence 2, then sequence 1 with k1 again: refused, still withdrawn",
            vec![set(&[], 2), set(&[&k1], 1)],
        ),
        (
            "invalid/bare-empty",
            "a bare empty COSE_KeySet: no usable key (only a sequenced document may be empty)",
            vec![set(&[], 0)],
        ),
        (
            "invalid/sequence-zero-map",
            "{1: 0, 2: [k1]}: a sequenced document has a sequence of at least 1",
            vec![raw_map(&[(1, &uint(0)), (2, &bare_k1)])],
        ),
        (
            "invalid/extra-label",
            "{1: 1, 2: [k1], 3: 0}: a label the format does not define",
            vec![raw_map(&[(1, &uint(1)), (2, &bare_k1), (3, &uint(0))])],
        ),
        (
            "invalid/labels-reversed",
            "{2: [k1], 1: 1}: labels out of the deterministic order",
            vec![raw_map(&[(2, &bare_k1), (1, &uint(1))])],
        ),
        (
            "invalid/good-then-bad",
            "sequence 1 with k1, then an undecodable document: refused, k1 kept",
            vec![set(&[&k1], 1), vec![0xa2, 0x01]],
        ),
    ];
    let mut out = String::from(
        "{\n  \"description\": \"Key-set documents (spec/formats.md section 6.1) served by one source in order. A verifier starts with no set (sequence 0, no key); for each document it decodes it (keyset.invalid: keep what it holds) and installs it unless its sequence is lower than the held one (keyset.rollback: keep what it holds). After each document: the outcome (installed or the code), and the sequence and kids (hex, sorted) held.\",\n  \"scenarios\": [\n",
    );
    for (i, (name, description, documents)) in scenarios.iter().enumerate() {
        let mut held = KeySet::new();
        let mut steps = Vec::new();
        for document in documents {
            let outcome = KeySet::from_cbor(document).and_then(|next| next.may_replace(&held).map(|()| next));
            let result = match outcome {
                Ok(next) => {
                    held = next;
                    "installed".to_owned()
                }
                Err(e) => e.code().as_str().to_owned(),
            };
            let mut kids: Vec<String> = held.iter().map(|(kid, _)| crate::encoding::hex_encode(kid)).collect();
            kids.sort();
            steps.push(format!(
                "        {{\"document\": \"{}\", \"result\": \"{result}\", \"sequence\": {}, \"kids\": [{}]}}",
                crate::encoding::hex_encode(document),
                held.sequence(),
                kids.iter().map(|k| format!("\"{k}\"")).collect::<Vec<_>>().join(", ")
            ));
        }
        out.push_str(&format!(
            "    {{\n      \"name\": \"{name}\",\n      \"description\": \"{description}\",\n      \"steps\": [\n{}\n      ]\n    }}{}\n",
            steps.join(",\n"),
            if i + 1 < scenarios.len() { "," } else { "" }
        ));
    }
    out.push_str("  ]\n}\n");
    out
}

/// The identity secret of [`gateway_identities`].
pub const IDENTITY_SECRET: &[u8] = b"keybound gateway identity vector secret, 44 b";
/// The method of every case of [`gateway_identities`] but one.
pub const IDENTITY_METHOD: &str = "GET";
/// The target of every case of [`gateway_identities`] but one.
pub const IDENTITY_TARGET: &str = "/v2/servers?limit=10";

/// The identity assertions of `keybound gateway` (spec/gateway.md §4) as
/// JSON: one secret, then cases of request headers a service receives, with
/// the method and target it sees and its clock; each says whether the
/// assertion's MAC and time check (`mac`: what any implementation of §4.2,
/// such as the spec's Python, must decide) and the full outcome of
/// [`Identity::check_fields`] (`result`: `valid` with the identity read, or
/// the code).
pub fn gateway_identities() -> String {
    use crate::gateway::identity::{self, Identity};
    const SECRET: &[u8] = IDENTITY_SECRET;
    const METHOD: &str = IDENTITY_METHOD;
    const TARGET: &str = IDENTITY_TARGET;
    let member = Identity {
        subject: "ayoung@stoughton".into(),
        domain: Some("stoughton".into()),
        project: Some("turing".into()),
        roles: vec!["member".into(), "reader".into()],
        trust: None,
        actors: vec![],
        issuer: "https://issuer.example".into(),
        expires_at: NOW + 240,
        key_thumbprint: "5f".repeat(32),
        proven: true,
    };
    let delegated = Identity {
        trust: Some("t-7f3a9c".into()),
        actors: vec!["nova@service".into(), "heat@service".into()],
        roles: vec!["member".into()],
        ..member.clone()
    };
    let bearer = Identity {
        domain: None,
        project: None,
        roles: vec![],
        proven: false,
        ..member.clone()
    };
    let fields = |id: &Identity, t: u64| -> Vec<(String, String)> {
        id.to_fields(SECRET, METHOD, TARGET, t)
            .expect("vector identities encode")
            .into_iter()
            .map(|(n, v)| (n.to_owned(), v))
            .collect()
    };
    // A MAC over arbitrary values, for cases whose values the encoder
    // refuses to produce but whose MAC is right.
    let forged = |values: &[(&str, &str)], t: u64| -> Vec<(String, String)> {
        let mut all: Vec<(String, String)> = fields(&member, t)
            .into_iter()
            .filter(|(n, _)| n != identity::ASSERTION)
            .collect();
        for (name, value) in values {
            all.iter_mut().find(|(n, _)| n == name).expect("a field").1 = (*value).to_owned();
        }
        let ordered: [String; 10] = std::array::from_fn(|i| all[i].1.clone());
        let mac = identity::vector_mac(SECRET, METHOD, TARGET, t, &ordered);
        all.push((
            identity::ASSERTION.to_owned(),
            format!("v1 t={t} mac={}", crate::encoding::b64url_encode(&mac)),
        ));
        all
    };
    let set = |mut h: Vec<(String, String)>, name: &str, value: &str| {
        h.iter_mut().find(|(n, _)| n == name).expect("a field").1 = value.to_owned();
        h
    };
    let without = |h: Vec<(String, String)>, name: &str| h.into_iter().filter(|(n, _)| n != name).collect::<Vec<_>>();
    let assertion_of = |h: &[(String, String)]| {
        h.iter()
            .find(|(n, _)| n == identity::ASSERTION)
            .expect("assertion")
            .1
            .clone()
    };
    let good = fields(&member, NOW);
    let mut flipped_mac = assertion_of(&good);
    let last = flipped_mac.pop().expect("non-empty");
    flipped_mac.push(if last == 'A' { 'B' } else { 'A' });
    let mut twice = good.clone();
    twice.insert(4, (identity::ROLES.to_owned(), "admin".to_owned()));
    let other_secret = {
        let h = member
            .to_fields(b"another secret, also at least thirty-two bytes", METHOD, TARGET, NOW)
            .expect("encodes");
        h.into_iter().map(|(n, v)| (n.to_owned(), v)).collect::<Vec<_>>()
    };
    // (name, description, method, target, now, headers)
    type Case<'a> = (&'a str, &'a str, &'a str, &'a str, u64, Vec<(String, String)>);
    let cases: Vec<Case> = vec![
        (
            "valid/member",
            "a proven request with a project and two roles",
            METHOD,
            TARGET,
            NOW,
            good.clone(),
        ),
        (
            "valid/delegated",
            "a delegated request: trust id and actor chain, current actor first",
            METHOD,
            TARGET,
            NOW,
            fields(&delegated, NOW),
        ),
        (
            "valid/bearer-no-project",
            "admitted on its token alone (bearer rollout), no project, no roles: empty values are covered too",
            METHOD,
            TARGET,
            NOW,
            fields(&bearer, NOW),
        ),
        (
            "valid/30s-old",
            "the assertion is 30 s old: the edge of max_age",
            METHOD,
            TARGET,
            NOW + 30,
            good.clone(),
        ),
        (
            "valid/30s-ahead",
            "the assertion is 30 s ahead of the service's clock",
            METHOD,
            TARGET,
            NOW - 30,
            good.clone(),
        ),
        (
            "invalid/31s-old",
            "the assertion is 31 s old",
            METHOD,
            TARGET,
            NOW + 31,
            good.clone(),
        ),
        (
            "invalid/31s-ahead",
            "the assertion is 31 s ahead of the service's clock",
            METHOD,
            TARGET,
            NOW - 31,
            good.clone(),
        ),
        (
            "invalid/other-method",
            "moved to a POST with the same target",
            "POST",
            TARGET,
            NOW,
            good.clone(),
        ),
        (
            "invalid/other-target",
            "moved to another query",
            METHOD,
            "/v2/servers?limit=11",
            NOW,
            good.clone(),
        ),
        (
            "invalid/roles-changed",
            "x-keybound-roles changed after the MAC",
            METHOD,
            TARGET,
            NOW,
            set(good.clone(), identity::ROLES, "member,reader,admin"),
        ),
        (
            "invalid/subject-changed",
            "x-keybound-subject changed after the MAC",
            METHOD,
            TARGET,
            NOW,
            set(good.clone(), identity::SUBJECT, "admin@stoughton"),
        ),
        (
            "invalid/mac-changed",
            "the MAC's last character changed",
            METHOD,
            TARGET,
            NOW,
            set(good.clone(), identity::ASSERTION, &flipped_mac),
        ),
        (
            "invalid/other-secret",
            "the MAC is under another secret",
            METHOD,
            TARGET,
            NOW,
            other_secret,
        ),
        (
            "invalid/no-assertion",
            "x-keybound-identity missing",
            METHOD,
            TARGET,
            NOW,
            without(good.clone(), identity::ASSERTION),
        ),
        (
            "valid/no-trust-header",
            "an empty field's header missing altogether: read as empty (a proxy may drop empty headers)",
            METHOD,
            TARGET,
            NOW,
            without(good.clone(), identity::TRUST),
        ),
        (
            "invalid/no-project-header",
            "a non-empty field's header missing: read as empty, so the MAC does not match",
            METHOD,
            TARGET,
            NOW,
            without(good.clone(), identity::PROJECT),
        ),
        (
            "invalid/roles-twice",
            "x-keybound-roles sent twice",
            METHOD,
            TARGET,
            NOW,
            twice,
        ),
        (
            "invalid/version",
            "assertion version v2",
            METHOD,
            TARGET,
            NOW,
            set(
                good.clone(),
                identity::ASSERTION,
                &assertion_of(&good).replacen("v1", "v2", 1),
            ),
        ),
        (
            "invalid/time-with-plus",
            "t=+1800000000: the time is digits only",
            METHOD,
            TARGET,
            NOW,
            set(
                good.clone(),
                identity::ASSERTION,
                &assertion_of(&good).replacen("t=", "t=+", 1),
            ),
        ),
        (
            "invalid/mac-padded",
            "the MAC with base64 padding",
            METHOD,
            TARGET,
            NOW,
            set(good.clone(), identity::ASSERTION, &format!("{}=", assertion_of(&good))),
        ),
        (
            "invalid/proof-unknown",
            "the MAC checks but x-keybound-proof is neither proof nor bearer",
            METHOD,
            TARGET,
            NOW,
            forged(&[(identity::PROOF, "maybe")], NOW),
        ),
        (
            "invalid/expires-not-number",
            "the MAC checks but x-keybound-expires is not decimal digits",
            METHOD,
            TARGET,
            NOW,
            forged(&[(identity::EXPIRES, "+1800000240")], NOW),
        ),
    ];
    let json = |s: &str| {
        let mut out = String::from('"');
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                c => out.push(c),
            }
        }
        out.push('"');
        out
    };
    let list = |v: &[String]| format!("[{}]", v.iter().map(|s| json(s)).collect::<Vec<_>>().join(", "));
    let opt = |v: &Option<String>| v.as_deref().map_or("null".to_owned(), json);
    let mut out = format!(
        "{{\n  \"description\": \"Identity assertions of keybound gateway (spec/gateway.md section 4). secret_hex keys every MAC. For each case a service receives headers (names in lower case), sees method and target, and its clock reads now; max_age is 30. mac: whether the assertion's format, time and MAC check (section 4.2; what the spec's Python decides). result: valid, with the identity read, or the refusal's code.\",\n  \"secret_hex\": \"{}\",\n  \"max_age\": 30,\n  \"cases\": [\n",
        crate::encoding::hex_encode(SECRET)
    );
    for (i, (name, description, method, target, now, headers)) in cases.iter().enumerate() {
        let pairs: Vec<(&str, &[u8])> = headers.iter().map(|(n, v)| (n.as_str(), v.as_bytes())).collect();
        let outcome = Identity::check_fields(&pairs, SECRET, method, target, *now, 30);
        let mac_ok = identity::assertion_checks(&pairs, SECRET, method, target, *now, 30);
        let result = match &outcome {
            Ok(id) => format!(
                "\"valid\",\n      \"identity\": {{\"subject\": {}, \"domain\": {}, \"project\": {}, \"roles\": {}, \"trust\": {}, \"actors\": {}, \"issuer\": {}, \"expires_at\": {}, \"key_thumbprint\": {}, \"proven\": {}}}",
                json(&id.subject),
                opt(&id.domain),
                opt(&id.project),
                list(&id.roles),
                opt(&id.trust),
                list(&id.actors),
                json(&id.issuer),
                id.expires_at,
                json(&id.key_thumbprint),
                id.proven
            ),
            Err(e) => json(e.code().as_str()),
        };
        let headers_json: Vec<String> = headers
            .iter()
            .map(|(n, v)| format!("[{}, {}]", json(n), json(v)))
            .collect();
        out.push_str(&format!(
            "    {{\n      \"name\": {},\n      \"description\": {},\n      \"method\": {},\n      \"target\": {},\n      \"now\": {now},\n      \"headers\": [\n        {}\n      ],\n      \"mac\": {},\n      \"result\": {result}\n    }}{}\n",
            json(name),
            json(description),
            json(method),
            json(target),
            headers_json.join(",\n        "),
            if mac_ok { "\"ok\"" } else { "\"refused\"" },
            if i + 1 < cases.len() { "," } else { "" }
        ));
    }
    out.push_str("  ]\n}\n");
    out
}
