//! One table of HTTP-binding cases (spec/http.md), run against the library's
//! layer (`http_layer`) and again through `keybound gateway` (`gateway`):
//! whatever the layer accepts or refuses, the gateway must too, with the
//! same status and code.

use keybound::encoding::b64url_encode;
use keybound::key::SigningKey;
use keybound::proof::ProofBuilder;
use keybound::token::Token;

/// What a table needs from the setting it runs in.
pub struct Setting<'a> {
    /// The client key the tokens are bound to.
    pub client: &'a SigningKey,
    /// A token for the service.
    pub token: &'a Token,
    /// A token of the same issuer for another audience.
    pub other_audience: &'a Token,
    /// The service's external base URL (what proofs name).
    pub external: &'a str,
    /// The time proofs are made at.
    pub now: u64,
    /// The service's body limit.
    pub max_body: usize,
}

/// One request and what the binding answers.
pub struct Case {
    pub name: &'static str,
    pub method: &'static str,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Sent once first (and answered 2xx) to set up a replay.
    pub send_before: bool,
    pub status: u16,
    pub code: Option<&'static str>,
}

fn proof(s: &Setting, key: &SigningKey, method: &str, path: &str, body: &[u8], at: u64) -> String {
    let proof = ProofBuilder::new(method, &format!("{}{path}", s.external), s.token.as_bytes(), body, at)
        .unwrap()
        .sign(key)
        .unwrap();
    b64url_encode(&proof.into_bytes())
}

fn auth(token: &Token) -> (String, String) {
    ("authorization".into(), format!("KB {}", token.to_base64url()))
}

/// The table.
pub fn cases(s: &Setting) -> Vec<Case> {
    let get = |name, headers: Vec<(String, String)>, status, code| Case {
        name,
        method: "GET",
        path: "/v2/servers".into(),
        headers,
        body: Vec::new(),
        send_before: false,
        status,
        code,
    };
    let signed = |method: &str, path: &str, body: &[u8]| {
        vec![
            auth(s.token),
            ("kb-proof".into(), proof(s, s.client, method, path, body, s.now)),
        ]
    };
    let body = br#"{"name":"vm1"}"#.to_vec();
    let stranger = SigningKey::derive(keybound::key::Algorithm::EdDSA, b"binding-cases", b"stranger").unwrap();
    let big = vec![b'x'; s.max_body + 1];
    vec![
        get("a signed GET", signed("GET", "/v2/servers", b""), 200, None),
        Case {
            send_before: true,
            ..get(
                "the same proof again",
                signed("GET", "/v2/servers", b""),
                401,
                Some("replay.detected"),
            )
        },
        Case {
            method: "POST",
            body: body.clone(),
            ..get(
                "a signed POST with its body",
                signed("POST", "/v2/servers", &body),
                200,
                None,
            )
        },
        Case {
            method: "POST",
            body: br#"{"name":"vm2"}"#.to_vec(),
            ..get(
                "another body under the proof",
                signed("POST", "/v2/servers", &body),
                401,
                Some("proof.body_mismatch"),
            )
        },
        Case {
            path: "/v2/images".into(),
            ..get(
                "a proof for another URI",
                signed("GET", "/v2/servers", b""),
                401,
                Some("proof.htu_mismatch"),
            )
        },
        Case {
            method: "DELETE",
            ..get(
                "a proof for another method",
                signed("GET", "/v2/servers", b""),
                401,
                Some("proof.htm_mismatch"),
            )
        },
        get("no token", vec![], 401, Some("http.token_missing")),
        get(
            "a token without a proof",
            vec![auth(s.token)],
            401,
            Some("proof.missing"),
        ),
        get(
            "the Bearer scheme",
            vec![("authorization".into(), format!("Bearer {}", s.token.to_base64url()))],
            401,
            Some("http.scheme"),
        ),
        get(
            "two tokens",
            {
                let mut h = signed("GET", "/v2/servers", b"");
                h.push(auth(s.token));
                h
            },
            401,
            Some("http.token_multiple"),
        ),
        get(
            "a token that is not base64url",
            vec![
                ("authorization".into(), "KB ***".into()),
                ("kb-proof".into(), "AAAA".into()),
            ],
            401,
            Some("http.token_malformed"),
        ),
        get(
            "a token for another audience",
            vec![
                auth(s.other_audience),
                ("kb-proof".into(), proof(s, s.client, "GET", "/v2/servers", b"", s.now)),
            ],
            401,
            Some("cwt.aud_mismatch"),
        ),
        get(
            "a proof by another key",
            vec![
                auth(s.token),
                ("kb-proof".into(), proof(s, &stranger, "GET", "/v2/servers", b"", s.now)),
            ],
            401,
            Some("proof.bad_signature"),
        ),
        get(
            "a proof from ten minutes ago",
            vec![
                auth(s.token),
                (
                    "kb-proof".into(),
                    proof(s, s.client, "GET", "/v2/servers", b"", s.now - 600),
                ),
            ],
            401,
            Some("proof.stale"),
        ),
        get(
            "a proof from ten minutes ahead",
            vec![
                auth(s.token),
                (
                    "kb-proof".into(),
                    proof(s, s.client, "GET", "/v2/servers", b"", s.now + 600),
                ),
            ],
            401,
            Some("proof.future"),
        ),
        Case {
            path: "/v2/%73ervers".into(),
            ..get(
                "an escaped unreserved character",
                signed("GET", "/v2/%73ervers", b""),
                400,
                Some("http.path_not_normalized"),
            )
        },
        Case {
            method: "POST",
            body: big.clone(),
            ..get(
                "a body over the limit",
                signed("POST", "/v2/servers", &big),
                413,
                Some("http.body_too_large"),
            )
        },
    ]
}

/// Sends every case to `base` (where the service listens; the proofs name
/// its external URL) and returns the mismatches.
pub async fn run(base: &str, cases: Vec<Case>) -> Vec<String> {
    let client = reqwest::Client::new();
    let mut problems = Vec::new();
    for case in cases {
        let send = || {
            let mut request = client
                .request(case.method.parse().unwrap(), format!("{base}{}", case.path))
                .body(case.body.clone());
            for (name, value) in &case.headers {
                request = request.header(name.as_str(), value.as_str());
            }
            request.send()
        };
        if case.send_before {
            let first = send().await.unwrap();
            if !first.status().is_success() {
                problems.push(format!("{}: the first send answered {}", case.name, first.status()));
            }
        }
        let response = send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        let code = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["code"].as_str().map(str::to_owned));
        let code = if status < 300 { None } else { code };
        if (status, code.as_deref()) != (case.status, case.code) {
            problems.push(format!(
                "{}: expected {} {:?}, got {status} {code:?}: {text}",
                case.name, case.status, case.code
            ));
        }
    }
    problems
}
