//! FL-06 (issue 17, security-catalog.md §4): clock offsets between the
//! issuer, the services and the clients, with injected clocks. A real
//! issuer on loopback mints over HTTP; a real service (axum behind
//! `KeyboundLayer`, served by `keybound::http::serve`) fetches the issuer's
//! key set over HTTP and verifies; proofs are made by the keybound library
//! with the client's key. Each case records accept or refuse, the status
//! and the code, and whether the handler ran; docs/faults.md has the table.
//!
//! Every clock is the test's start instant, frozen, plus the offset of its
//! component. Frozen, because the cases at the limits (±31 s, −330/−331 s,
//! −60/−61 s) are one second from them: with moving clocks a case whose
//! mint and check fell on either side of a second boundary would change
//! its outcome. The service's clock is the reference (offset 0).
#![cfg(all(feature = "issuer", feature = "client", target_os = "linux"))]

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use keybound::client::{Client, Scope};
use keybound::encoding::b64url_encode;
use keybound::http::{KeyboundLayer, ServeConfig};
use keybound::issuer::loopback::{ADMIN_USER, LoopbackIssuer, PROJECT, USER, World};
use keybound::key::{Algorithm, SigningKey};
use keybound::keyset::{HttpKeys, HttpKeysOptions};
use keybound::proof::ProofBuilder;
use keybound::token::Token;
use keybound::verify::{Clock, MemoryReplayStore, SystemClock, TrustedIssuer, VerifiedRequest, Verifier};

use crate::common::start_issuer;

const ADMIN_PASSWORD: &str = "clock offsets admin password";
const PASSWORD: &str = "clock offsets user password";

/// The test's frozen instant plus an offset that can be changed (the
/// issuer's clock is stepped from case to case, forward only).
struct OffsetClock {
    base: u64,
    offset: AtomicI64,
}

impl OffsetClock {
    fn new(base: u64, offset: i64) -> Arc<Self> {
        Arc::new(OffsetClock {
            base,
            offset: AtomicI64::new(offset),
        })
    }

    fn set(&self, offset: i64) {
        self.offset.store(offset, Ordering::SeqCst);
    }
}

impl Clock for OffsetClock {
    fn now(&self) -> u64 {
        self.base.saturating_add_signed(self.offset.load(Ordering::SeqCst))
    }
}

/// A service on loopback verifying tokens of `issuer` with `clock`, its
/// replay store fenced at `fence`; counts the requests its handler ran.
struct Service {
    url: String,
    handled: Arc<AtomicUsize>,
    _server: tokio::task::JoinHandle<()>,
}

impl Service {
    async fn serve(
        listener: tokio::net::TcpListener,
        url: String,
        issuer: &LoopbackIssuer,
        clock: Arc<dyn Clock>,
        fence: u64,
    ) -> Service {
        let keys = HttpKeys::start(
            &format!("{}/.well-known/keybound/keys", issuer.url()),
            HttpKeysOptions::default(),
        )
        .await
        .unwrap();
        // The defaults of spec/verification.md §1: leeway 30 s, proof max age 60 s.
        let verifier = Verifier::builder(&url, TrustedIssuer::new(issuer.url(), keys))
            .clock(clock)
            .replay_store(Arc::new(MemoryReplayStore::default().fenced_at(fence)))
            .build()
            .unwrap();
        let handled = Arc::new(AtomicUsize::new(0));
        let count = handled.clone();
        let app = axum::Router::new()
            .fallback(move |request: VerifiedRequest| {
                let count = count.clone();
                async move {
                    count.fetch_add(1, Ordering::SeqCst);
                    request.subject().to_owned()
                }
            })
            .layer(KeyboundLayer::new(Arc::new(verifier), &url).unwrap());
        let server = tokio::spawn(keybound::http::serve(
            listener,
            app,
            ServeConfig::default(),
            std::future::pending(),
        ));
        Service {
            url,
            handled,
            _server: server,
        }
    }
}

/// What a case expects: accepted (200, the handler ran), or refused with
/// this status and code (the handler did not run).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    Accepted,
    Refused(u16, &'static str),
}

/// What happened.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    status: u16,
    code: Option<String>,
    handler_ran: bool,
}

impl Outcome {
    fn matches(&self, expect: Expect) -> bool {
        match expect {
            Expect::Accepted => self.status == 200 && self.code.is_none() && self.handler_ran,
            Expect::Refused(status, code) => {
                self.status == status && self.code.as_deref() == Some(code) && !self.handler_ran
            }
        }
    }
}

/// Calls `service` with `token` and a new proof by `key` made at `iat`.
async fn call(http: &reqwest::Client, service: &Service, key: &SigningKey, token: &Token, iat: u64) -> Outcome {
    let url = format!("{}/v2/servers", service.url);
    let proof = ProofBuilder::new("GET", &url, token.as_bytes(), b"", iat)
        .unwrap()
        .sign(key)
        .unwrap();
    let before = service.handled.load(Ordering::SeqCst);
    let response = http
        .get(&url)
        .header("authorization", format!("KB {}", token.to_base64url()))
        .header("kb-proof", b64url_encode(&proof.into_bytes()))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let header = response
        .headers()
        .get("kb-error")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = response.text().await.unwrap_or_default();
    let json: serde_json::Value = serde_json::from_str(&body).unwrap_or(serde_json::Value::Null);
    Outcome {
        status,
        code: header.or_else(|| json["code"].as_str().map(str::to_owned)),
        handler_ran: service.handled.load(Ordering::SeqCst) > before,
    }
}

/// The issuer's `keybound_time_seconds` gauge, read from its `/metrics`.
async fn issuer_time(http: &reqwest::Client, issuer: &LoopbackIssuer) -> Option<u64> {
    let text = http
        .get(format!("{}/metrics", issuer.url()))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("keybound_time_seconds "))
        .and_then(|v| v.trim().parse().ok())
}

/// FL-06, one table: the expected outcome of every offset, by which clock
/// is off (spec/verification.md T11 and P10, leeway `L` = 30 s, proof max
/// age `A` = 60 s, service tokens of 300 s):
///
/// 1. **issuer vs service** (the token's times, T11): the issuer's clock
///    is off by `d`; the client that mints agrees with its issuer (so its
///    login and mint proofs are on time there), and its proof to the
///    service is made at the service's time. `iat = now + d`,
///    `exp = now + d + 300`: refused `cwt.iat_future` when `d > L`;
///    refused `cwt.expired` when `exp + L < now`, i.e. `d < −330` — an
///    issuer 5 min behind mints tokens that are accepted, for the
///    leeway's 30 s only. The issuer's `/metrics` shows its skewed time.
/// 2. **client vs service** (the proof's times, P10): the token is on
///    time, the proof is made at `now + d`: `proof.future` when `d > L`,
///    `proof.stale` when `d < −A`. A client behind a service that has just
///    started (its replay store fenced at its start, P13) is refused
///    `replay.store_restarted` instead, until the service's clock passes
///    the client's.
/// 3. **client vs issuer** (the login's proof, P10 at the issuer): the
///    client's clock is off by `d` from an on-time issuer; the same limits
///    as 2., so an issuer whose clock is off by more than the leeway
///    refuses the logins of on-time clients the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fl06_clock_offsets_accepted_within_the_leeway_refused_beyond_with_their_codes() {
    let started = Instant::now();
    // The test's instant is an hour after the system's now, and the issuer
    // starts an hour behind it, at the system's now: bootstrap (which
    // creates the administrator) runs on the system clock, and the issuer
    // refuses sessions issued more than the leeway before their user was
    // created. So its replay fence and every user's creation lie before
    // every case.
    let base = SystemClock.now() + 3600;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let issuer_clock = OffsetClock::new(base, -3600);
    let (issuer, _dir) = start_issuer(ADMIN_PASSWORD, issuer_clock.clone(), |_| {}).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let service_url = format!("http://{}", listener.local_addr().unwrap());
    let fresh_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let fresh_url = format!("http://{}", fresh_listener.local_addr().unwrap());
    // The administrator's client agrees with the issuer.
    let admin = Client::new(issuer.url(), SigningKey::generate(Algorithm::EdDSA).unwrap())
        .unwrap()
        .with_clock(issuer_clock.clone());
    admin.login_password(ADMIN_USER, ADMIN_PASSWORD, None).await.unwrap();
    issuer
        .create_world(
            &admin,
            &World {
                password: PASSWORD,
                services: &[&service_url, &fresh_url],
            },
        )
        .await
        .unwrap();
    let scope = Scope::new(&service_url).project(PROJECT);

    // Group 1 runs from the lowest offset up, so the issuer's clock only
    // steps forward, and the service fetches the key set at the first
    // case's issuer time (every later case signs with that epoch's key or
    // the next, both published).
    let issuer_cases: [(i64, Expect); 11] = [
        (-331, Expect::Refused(401, "cwt.expired")),
        (-330, Expect::Accepted),
        (-300, Expect::Accepted),
        (-31, Expect::Accepted),
        (-29, Expect::Accepted),
        (-5, Expect::Accepted),
        (0, Expect::Accepted),
        (5, Expect::Accepted),
        (29, Expect::Accepted),
        (31, Expect::Refused(401, "cwt.iat_future")),
        (300, Expect::Refused(401, "cwt.iat_future")),
    ];
    issuer_clock.set(issuer_cases[0].0);
    let service_clock = OffsetClock::new(base, 0);
    // The service has run for an hour: its fence is long past.
    let service = Service::serve(
        listener,
        service_url.clone(),
        &issuer,
        service_clock.clone(),
        base - 3600,
    )
    .await;
    // The client agrees with its issuer: it shares the issuer's clock.
    let minter = Client::new(issuer.url(), SigningKey::generate(Algorithm::EdDSA).unwrap())
        .unwrap()
        .with_clock(issuer_clock.clone());
    minter.login_password(USER, PASSWORD, None).await.unwrap();
    let mut failures = Vec::new();
    let mut table = Vec::new();
    for (offset, expect) in issuer_cases {
        issuer_clock.set(offset);
        minter.forget_token(&scope);
        let token = match minter.service_token(&scope).await {
            Ok(token) => token,
            Err(e) => {
                failures.push(format!("issuer {offset:+} s: the mint failed: {e}"));
                continue;
            }
        };
        let claims = keybound::danger::insecure_decode_token(token.as_bytes())
            .unwrap()
            .claims;
        let shown = issuer_time(&http, &issuer).await;
        let outcome = call(&http, &service, minter.key(), &token, base).await;
        table.push(format!(
            "issuer {offset:+5} s: iat {:+}, exp {:+}, /metrics time {:+?} -> {} {:?}",
            claims.iat as i64 - base as i64,
            claims.exp as i64 - base as i64,
            shown.map(|t| t as i64 - base as i64),
            outcome.status,
            outcome.code
        ));
        if claims.iat != base.saturating_add_signed(offset) || claims.exp != claims.iat + 300 {
            failures.push(format!(
                "issuer {offset:+} s: minted iat {} exp {}, expected iat {} and a 300 s lifetime",
                claims.iat,
                claims.exp,
                base.saturating_add_signed(offset)
            ));
        }
        // The skewed issuer shows its time, so an operator can compute the
        // offset (keybound_time_seconds minus the scrape's time).
        if shown != Some(base.saturating_add_signed(offset)) {
            failures.push(format!(
                "issuer {offset:+} s: /metrics keybound_time_seconds {shown:?}, expected {}",
                base.saturating_add_signed(offset)
            ));
        }
        if !outcome.matches(expect) {
            failures.push(format!("issuer {offset:+} s: expected {expect:?}, got {outcome:?}"));
        }
    }

    // Groups 2 and 3: the issuer on time.
    issuer_clock.set(0);
    minter.forget_token(&scope);
    let token = minter.service_token(&scope).await.unwrap();
    let proof_cases: [(i64, Expect); 12] = [
        (-300, Expect::Refused(401, "proof.stale")),
        (-61, Expect::Refused(401, "proof.stale")),
        (-60, Expect::Accepted),
        (-31, Expect::Accepted),
        (-29, Expect::Accepted),
        (-5, Expect::Accepted),
        (0, Expect::Accepted),
        (5, Expect::Accepted),
        (29, Expect::Accepted),
        (30, Expect::Accepted),
        (31, Expect::Refused(401, "proof.future")),
        (300, Expect::Refused(401, "proof.future")),
    ];
    for (offset, expect) in proof_cases {
        let outcome = call(
            &http,
            &service,
            minter.key(),
            &token,
            base.saturating_add_signed(offset),
        )
        .await;
        table.push(format!(
            "client {offset:+5} s to the service -> {} {:?}",
            outcome.status, outcome.code
        ));
        if !outcome.matches(expect) {
            failures.push(format!(
                "client {offset:+} s to the service: expected {expect:?}, got {outcome:?}"
            ));
        }
    }
    // A service that has just started: its fence is its own now.
    let fresh = Service::serve(fresh_listener, fresh_url.clone(), &issuer, service_clock.clone(), base).await;
    let token_fresh = minter
        .service_token(&Scope::new(&fresh_url).project(PROJECT))
        .await
        .unwrap();
    for (offset, expect) in [
        (-5, Expect::Refused(401, "replay.store_restarted")),
        (0, Expect::Accepted),
        (5, Expect::Accepted),
    ] {
        let outcome = call(
            &http,
            &fresh,
            minter.key(),
            &token_fresh,
            base.saturating_add_signed(offset),
        )
        .await;
        table.push(format!(
            "client {offset:+5} s to a service that has just started -> {} {:?}",
            outcome.status, outcome.code
        ));
        if !outcome.matches(expect) {
            failures.push(format!(
                "client {offset:+} s to a just-started service: expected {expect:?}, got {outcome:?}"
            ));
        }
    }

    let login_cases: [(i64, Option<&str>); 8] = [
        (-300, Some("proof.stale")),
        (-31, None),
        (-29, None),
        (-5, None),
        (5, None),
        (29, None),
        (31, Some("proof.future")),
        (300, Some("proof.future")),
    ];
    for (offset, expect) in login_cases {
        let client = Client::new(issuer.url(), SigningKey::generate(Algorithm::EdDSA).unwrap())
            .unwrap()
            .with_clock(OffsetClock::new(base, offset));
        let got = client
            .login_password(USER, PASSWORD, None)
            .await
            .err()
            .map(|e| e.code().as_str().to_owned());
        table.push(format!("client {offset:+5} s logging in -> {got:?}"));
        if got.as_deref() != expect {
            failures.push(format!(
                "client {offset:+} s logging in: expected {expect:?}, got {got:?}"
            ));
        }
    }
    eprintln!("--- fl06 ({} ms)\n{}", started.elapsed().as_millis(), table.join("\n"));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
