//! Key sets fetched over real HTTP on loopback: caching, refresh, unknown-kid
//! refetch limits, garbage, huge bodies, and the issuer going away.
#![cfg(feature = "http")]

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::routing::get;
use keybound::Code;
use keybound::key::{Algorithm, KeySet, SigningKey};
use keybound::keyset::{HttpKeys, HttpKeysOptions, KeySource};
use keybound::proof::{ProofBuilder, RequestInfo};
use keybound::token::TokenBuilder;
use keybound::verify::{ManualClock, MemoryReplayStore, TrustedIssuer, Verifier};

const ISSUER: &str = "https://issuer.example";
const AUDIENCE: &str = "https://nova.example";
const NOW: u64 = 1_763_800_000;

/// What the fake issuer answers.
#[derive(Clone)]
enum Serve {
    Keys(Vec<u8>, Option<&'static str>),
    Status(u16),
    Garbage,
    Huge,
    /// A huge body streamed in chunks, without Content-Length.
    HugeStream,
    /// A valid set sent one byte every 200 ms (catalog FD-06).
    Trickle(Vec<u8>),
}

/// One byte per tick: a body that never finishes within the fetch timeout.
struct Trickle {
    bytes: Vec<u8>,
    at: usize,
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl http_body::Body for Trickle {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        if self.at >= self.bytes.len() {
            return std::task::Poll::Ready(None);
        }
        std::task::ready!(self.sleep.as_mut().poll(cx));
        let next = tokio::time::Instant::now() + Duration::from_millis(200);
        self.sleep.as_mut().reset(next);
        let byte = self.bytes[self.at];
        self.at += 1;
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(bytes::Bytes::from(vec![byte])))))
    }
}

/// 200 chunks of 1 KB with no declared length: only a streaming limit stops it.
struct Chunks(usize);

impl http_body::Body for Chunks {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        if self.0 == 0 {
            return std::task::Poll::Ready(None);
        }
        self.0 -= 1;
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(bytes::Bytes::from(vec![0x80; 1000])))))
    }
}

struct Issuer {
    serve: Mutex<Serve>,
    fetches: AtomicUsize,
}

async fn start_issuer(state: Arc<Issuer>) -> (String, tokio::sync::oneshot::Sender<()>) {
    let app = Router::new().route(
        "/.well-known/keybound/keys",
        get(move || {
            let state = state.clone();
            async move {
                state.fetches.fetch_add(1, Ordering::SeqCst);
                let serve = state.serve.lock().unwrap().clone();
                let mut headers = HeaderMap::new();
                if let Serve::HugeStream = serve {
                    return (StatusCode::OK, headers, axum::body::Body::new(Chunks(200)));
                }
                if let Serve::Trickle(bytes) = serve {
                    let sleep = Box::pin(tokio::time::sleep(Duration::ZERO));
                    return (
                        StatusCode::OK,
                        headers,
                        axum::body::Body::new(Trickle { bytes, at: 0, sleep }),
                    );
                }
                let (status, headers, body) = match serve {
                    Serve::Keys(body, cache_control) => {
                        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/cbor"));
                        if let Some(cc) = cache_control {
                            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cc));
                        }
                        (StatusCode::OK, headers, body)
                    }
                    Serve::Status(code) => (StatusCode::from_u16(code).unwrap(), headers, b"error".to_vec()),
                    Serve::Garbage => (StatusCode::OK, headers, b"<html>not a key set</html>".to_vec()),
                    Serve::Huge => (StatusCode::OK, headers, vec![0x80; 200_000]),
                    Serve::HugeStream | Serve::Trickle(_) => unreachable!("answered above"),
                };
                (status, headers, axum::body::Body::from(body))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
            .unwrap()
    });
    (format!("http://{addr}/.well-known/keybound/keys"), stop)
}

fn key(name: &str) -> SigningKey {
    SigningKey::derive(Algorithm::EdDSA, b"key-sources", name.as_bytes()).unwrap()
}

fn set_of(keys: &[&SigningKey]) -> Vec<u8> {
    sequenced_set_of(keys, 0)
}

fn sequenced_set_of(keys: &[&SigningKey], sequence: u64) -> Vec<u8> {
    let mut set = KeySet::new();
    for k in keys {
        set.insert(k.public_key().default_kid(), k.public_key().clone())
            .unwrap();
    }
    set.with_sequence(sequence).to_cbor()
}

struct Client {
    key: SigningKey,
}

impl Client {
    fn request(
        &self,
        issuer: &SigningKey,
        verifier: &Verifier,
    ) -> impl std::future::Future<Output = keybound::Result<()>> {
        let token = TokenBuilder::service(
            ISSUER,
            "ayoung@stoughton",
            AUDIENCE,
            self.key.public_key().clone(),
            NOW - 2,
        )
        .sign(issuer, &issuer.public_key().default_kid())
        .unwrap();
        let proof = ProofBuilder::new("GET", "https://nova.example/x", token.as_bytes(), b"", NOW - 1)
            .unwrap()
            .sign(&self.key)
            .unwrap();
        async move {
            let request = RequestInfo::new("GET", "https://nova.example/x", b"");
            verifier
                .verify_request_async(token.as_bytes(), proof.as_bytes(), &request)
                .await
                .map(|_| ())
        }
    }
}

fn verifier_with(source: HttpKeys) -> Verifier {
    Verifier::builder(AUDIENCE, TrustedIssuer::new(ISSUER, source))
        .clock(Arc::new(ManualClock::new(NOW)))
        .replay_store(Arc::new(MemoryReplayStore::default().fenced_at(NOW - 3600)))
        .build()
        .unwrap()
}

fn fast_options() -> HttpKeysOptions {
    HttpKeysOptions {
        min_refresh: Duration::from_millis(200),
        default_refresh: Duration::from_secs(3600),
        unknown_kid_interval: Duration::from_secs(3600),
        timeout: Duration::from_secs(2),
        ..HttpKeysOptions::default()
    }
}

#[tokio::test]
async fn unknown_kid_refetches_once_and_floods_do_not_multiply_fetches() {
    let (k1, k2) = (key("k1"), key("k2"));
    let state = Arc::new(Issuer {
        serve: Mutex::new(Serve::Keys(set_of(&[&k1]), None)),
        fetches: AtomicUsize::new(0),
    });
    let (url, _stop) = start_issuer(state.clone()).await;
    let source = HttpKeys::start(&url, fast_options()).await.unwrap();
    let verifier = verifier_with(source);
    let client = Client { key: key("client") };
    client.request(&k1, &verifier).await.unwrap();
    assert_eq!(state.fetches.load(Ordering::SeqCst), 1);

    // The issuer rotates to k2; the first k2 token triggers one refetch and passes.
    *state.serve.lock().unwrap() = Serve::Keys(set_of(&[&k1, &k2]), None);
    client.request(&k2, &verifier).await.unwrap();
    assert_eq!(state.fetches.load(Ordering::SeqCst), 2);

    // A flood of tokens under unknown kids: refused, and no fetch per request.
    let rogue = key("rogue");
    for _ in 0..50 {
        let err = client.request(&rogue, &verifier).await.unwrap_err();
        assert_eq!(err.code(), Code::CoseKeyUnknown);
    }
    assert_eq!(
        state.fetches.load(Ordering::SeqCst),
        2,
        "the unknown-kid refetch is rate-limited"
    );
}

#[tokio::test]
async fn unknown_kid_refetch_is_allowed_again_after_the_interval() {
    let state = Arc::new(Issuer {
        serve: Mutex::new(Serve::Keys(set_of(&[&key("k1")]), None)),
        fetches: AtomicUsize::new(0),
    });
    let (url, _stop) = start_issuer(state.clone()).await;
    let options = HttpKeysOptions {
        unknown_kid_interval: Duration::from_millis(400),
        ..fast_options()
    };
    let verifier = verifier_with(HttpKeys::start(&url, options).await.unwrap());
    let (client, rogue) = (Client { key: key("client") }, key("rogue"));
    let fetches = || state.fetches.load(Ordering::SeqCst);
    assert_eq!(fetches(), 1);
    client.request(&rogue, &verifier).await.unwrap_err();
    assert_eq!(fetches(), 2, "the first unknown kid refetches");
    client.request(&rogue, &verifier).await.unwrap_err();
    assert_eq!(fetches(), 2, "within the interval: no refetch");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let err = client.request(&rogue, &verifier).await.unwrap_err();
    assert_eq!(err.code(), Code::CoseKeyUnknown);
    assert_eq!(fetches(), 3, "after the interval one refetch is allowed again");
}

#[tokio::test]
async fn cache_control_max_age_is_honoured_within_bounds() {
    let k1 = key("k1");
    // A long max-age is honoured: no background fetch for a while.
    let state = Arc::new(Issuer {
        serve: Mutex::new(Serve::Keys(set_of(&[&k1]), Some("public, max-age=3600"))),
        fetches: AtomicUsize::new(0),
    });
    let (url, _stop) = start_issuer(state.clone()).await;
    let _source = HttpKeys::start(&url, fast_options()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(state.fetches.load(Ordering::SeqCst), 1, "max-age=3600 honoured");

    // The same max-age beyond the configured maximum is clamped to it.
    let state = Arc::new(Issuer {
        serve: Mutex::new(Serve::Keys(set_of(&[&k1]), Some("public, max-age=3600"))),
        fetches: AtomicUsize::new(0),
    });
    let (url, _stop) = start_issuer(state.clone()).await;
    let options = HttpKeysOptions {
        max_refresh: Duration::from_millis(300),
        ..fast_options()
    };
    let _source = HttpKeys::start(&url, options).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(
        state.fetches.load(Ordering::SeqCst) >= 3,
        "max-age clamped to max_refresh (300 ms): {} fetches in 1 s",
        state.fetches.load(Ordering::SeqCst)
    );
}

#[tokio::test]
async fn bad_answers_never_replace_a_good_set_and_the_issuer_may_vanish() {
    let k1 = key("k1");
    let state = Arc::new(Issuer {
        serve: Mutex::new(Serve::Keys(set_of(&[&k1]), Some("max-age=0"))),
        fetches: AtomicUsize::new(0),
    });
    let (url, stop) = start_issuer(state.clone()).await;
    let source = HttpKeys::start(&url, fast_options()).await.unwrap();
    let verifier = verifier_with(source.clone());
    let client = Client { key: key("client") };
    for bad in [
        Serve::Garbage,
        Serve::Huge,
        Serve::HugeStream,
        Serve::Status(500),
        Serve::Status(404),
        Serve::Keys(vec![0x80], None),
    ] {
        *state.serve.lock().unwrap() = bad;
        let before = state.fetches.load(Ordering::SeqCst);
        assert!(source.refresh().await.is_err());
        assert!(state.fetches.load(Ordering::SeqCst) > before);
        client
            .request(&k1, &verifier)
            .await
            .expect("the last good set still verifies");
        assert!(source.key_set().get(&k1.public_key().default_kid()).is_some());
    }
    // Background refreshes happen (max-age=0 is clamped to min_refresh).
    *state.serve.lock().unwrap() = Serve::Keys(set_of(&[&k1]), Some("max-age=0"));
    let before = state.fetches.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        state.fetches.load(Ordering::SeqCst) > before,
        "refreshed in the background"
    );
    // The issuer goes away mid-test: verification continues offline.
    stop.send(()).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(source.refresh().await.is_err());
    for _ in 0..5 {
        client
            .request(&k1, &verifier)
            .await
            .expect("offline verification with the cached set");
    }
    assert!(source.stats().failures >= 6);
}

#[tokio::test]
async fn a_cache_file_lets_a_restart_survive_an_unreachable_issuer() {
    let k1 = key("k1");
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("issuer-keys.cbor");
    let options = HttpKeysOptions {
        cache_file: Some(cache.clone()),
        ..fast_options()
    };
    let state = Arc::new(Issuer {
        serve: Mutex::new(Serve::Keys(set_of(&[&k1]), None)),
        fetches: AtomicUsize::new(0),
    });
    let (url, stop) = start_issuer(state).await;
    drop(HttpKeys::start(&url, options.clone()).await.unwrap());
    assert!(cache.exists());
    stop.send(()).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Restart while the issuer is down.
    let source = HttpKeys::start(&url, options)
        .await
        .expect("started from the cache file");
    let client = Client { key: key("client") };
    client.request(&k1, &verifier_with(source)).await.unwrap();
    // Without a cache file the start fails with a clear error.
    let err = HttpKeys::start(&url, fast_options()).await.unwrap_err();
    assert_eq!(err.code(), Code::KeySetInvalid);
    // The cache file belongs to its URL: another (unreachable) issuer URL
    // configured with the same file does not inherit these keys.
    let other_url = url.replace("/.well-known", "/other/.well-known");
    assert_ne!(other_url, url);
    let err = HttpKeys::start(&other_url, options_with_cache(&cache))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::KeySetInvalid);
}

fn options_with_cache(cache: &std::path::Path) -> HttpKeysOptions {
    HttpKeysOptions {
        cache_file: Some(cache.to_owned()),
        ..fast_options()
    }
}

/// Catalog FD-05: a set with a lower sequence than the one loaded (an old
/// set, with a retired key) is ignored and the last good set kept, also
/// across a restart from the cache file; FD-04: a sequenced set with no key
/// withdraws the issuer's keys.
#[tokio::test]
async fn a_key_set_with_a_lower_sequence_is_refused_and_the_last_good_set_kept() {
    let (retired, current) = (key("retired"), key("current"));
    let dir = tempfile::tempdir().unwrap();
    let options = options_with_cache(&dir.path().join("keys.cbor"));
    let state = Arc::new(Issuer {
        serve: Mutex::new(Serve::Keys(sequenced_set_of(&[&current], 20), None)),
        fetches: AtomicUsize::new(0),
    });
    let (url, _stop) = start_issuer(state.clone()).await;
    let source = HttpKeys::start(&url, options.clone()).await.unwrap();
    assert_eq!(source.key_set().sequence(), 20);
    let verifier = verifier_with(source.clone());
    let client = Client { key: key("client") };
    for (old, what) in [
        (sequenced_set_of(&[&retired, &current], 19), "a lower sequence"),
        (set_of(&[&retired, &current]), "a bare set (sequence 0)"),
    ] {
        *state.serve.lock().unwrap() = Serve::Keys(old, None);
        let refused = source.refresh().await.unwrap_err();
        assert_eq!(refused.code(), Code::KeySetRollback, "{what}");
        assert_eq!(source.key_set().sequence(), 20, "{what}");
        assert!(
            source.key_set().get(&retired.public_key().default_kid()).is_none(),
            "{what}"
        );
        let err = client.request(&retired, &verifier).await.unwrap_err();
        assert_eq!(err.code(), Code::CoseKeyUnknown, "{what}: the retired key stays out");
        client.request(&current, &verifier).await.expect("the last good set");
    }
    // A restart does not forget the sequence: the cache file is its floor.
    drop(source);
    let restarted = HttpKeys::start(&url, options.clone()).await.unwrap();
    assert_eq!(
        restarted.key_set().sequence(),
        20,
        "the rollback is refused at start too"
    );
    assert!(restarted.key_set().get(&retired.public_key().default_kid()).is_none());
    // The same sequence again, and a higher one, are taken.
    *state.serve.lock().unwrap() = Serve::Keys(sequenced_set_of(&[&current], 20), None);
    restarted.refresh().await.unwrap();
    *state.serve.lock().unwrap() = Serve::Keys(sequenced_set_of(&[], 21), None);
    restarted.refresh().await.unwrap();
    assert!(restarted.key_set().is_withdrawn());
    let err = client.request(&current, &verifier_with(restarted)).await.unwrap_err();
    assert_eq!(
        err.code(),
        Code::CoseKeyUnknown,
        "a withdrawn issuer's tokens are refused"
    );
}

/// Catalog FD-06: a set trickled one byte at a time is cut off by the fetch
/// timeout; the last good set stays.
#[tokio::test]
async fn a_trickled_key_set_times_out_and_the_last_good_set_is_kept() {
    let k1 = key("k1");
    let state = Arc::new(Issuer {
        serve: Mutex::new(Serve::Keys(sequenced_set_of(&[&k1], 5), None)),
        fetches: AtomicUsize::new(0),
    });
    let (url, _stop) = start_issuer(state.clone()).await;
    let options = HttpKeysOptions {
        timeout: Duration::from_secs(1),
        ..fast_options()
    };
    let source = HttpKeys::start(&url, options).await.unwrap();
    *state.serve.lock().unwrap() = Serve::Trickle(sequenced_set_of(&[&key("k2")], 6));
    let started = std::time::Instant::now();
    assert_eq!(source.refresh().await.unwrap_err().code(), Code::KeySetInvalid);
    assert!(started.elapsed() < Duration::from_secs(3), "cut off by the timeout");
    assert_eq!(source.key_set().sequence(), 5);
    Client { key: key("client") }
        .request(&k1, &verifier_with(source))
        .await
        .unwrap();
}
