//! The Redis replay store against a real Redis (`KEYBOUND_TEST_REDIS_URL`),
//! and against private `redis-server` processes for the failure cases.
#![cfg(feature = "redis")]

use std::sync::Arc;
use std::time::Duration;

use keybound::Code;
use keybound::key::{Algorithm, KeySet, SigningKey};
use keybound::proof::{ProofBuilder, RequestInfo};
use keybound::token::{Token, TokenBuilder};
use keybound::verify::{ManualClock, RedisReplayOptions, RedisReplayStore, TrustedIssuer, Verifier};

/// A verifier recording in Redis: it has only the `async` methods.
type RedisVerifier = Verifier<RedisReplayStore>;

use crate::common;
use common::PrivateRedis;

const ISSUER: &str = "https://issuer.example";
const AUDIENCE: &str = "https://nova.example";
const URI: &str = "https://nova.example/v2/servers";
const NOW: u64 = 1_763_800_000;

fn redis_url() -> Option<String> {
    let url = std::env::var("KEYBOUND_TEST_REDIS_URL").ok();
    if url.is_none() {
        eprintln!("skipped: KEYBOUND_TEST_REDIS_URL is not set (e.g. redis://127.0.0.1:6379/)");
    }
    url
}

fn options() -> RedisReplayOptions {
    let unique: u64 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    RedisReplayOptions {
        prefix: format!("kb:test:{unique}:"),
        ..RedisReplayOptions::default()
    }
}

struct Fixture {
    issuer: SigningKey,
    client: SigningKey,
}

impl Fixture {
    fn new() -> Self {
        Fixture {
            issuer: SigningKey::derive(Algorithm::EdDSA, b"redis", b"issuer").unwrap(),
            client: SigningKey::derive(Algorithm::EdDSA, b"redis", b"client").unwrap(),
        }
    }

    fn verifier(&self, store: Arc<RedisReplayStore>) -> RedisVerifier {
        self.verifier_at(store, Arc::new(ManualClock::new(NOW)))
    }

    fn verifier_at(&self, store: Arc<RedisReplayStore>, clock: Arc<ManualClock>) -> RedisVerifier {
        let keys = KeySet::new()
            .with(self.issuer.public_key().default_kid(), self.issuer.public_key().clone())
            .unwrap();
        Verifier::builder(AUDIENCE, TrustedIssuer::with_keys(ISSUER, keys))
            .clock(clock)
            .replay_store(store)
            .build()
            .unwrap()
    }

    fn token(&self) -> Token {
        TokenBuilder::service(
            ISSUER,
            "ayoung@stoughton",
            AUDIENCE,
            self.client.public_key().clone(),
            NOW - 5,
        )
        .sign(&self.issuer, &self.issuer.public_key().default_kid())
        .unwrap()
    }

    fn proof(&self, token: &Token) -> Vec<u8> {
        self.proof_at(token, NOW - 1)
    }

    fn proof_at(&self, token: &Token, iat: u64) -> Vec<u8> {
        ProofBuilder::new("GET", URI, token.as_bytes(), b"", iat)
            .unwrap()
            .sign(&self.client)
            .unwrap()
            .into_bytes()
    }
}

/// Connects to a store whose fence key says it has been in use since an
/// hour before `NOW`, as a Redis that has not lost its data would.
async fn connect_running(url: &str, options: RedisReplayOptions) -> RedisReplayStore {
    let client = redis::Client::open(url).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let () = redis::cmd("SET")
        .arg(format!("{}fence", options.prefix))
        .arg(NOW - 3600)
        .query_async(&mut connection)
        .await
        .unwrap();
    RedisReplayStore::connect(url, options).await.unwrap()
}

async fn submit(verifier: &RedisVerifier, token: &Token, proof: &[u8]) -> keybound::Result<()> {
    verifier
        .verify_request_async(token.as_bytes(), proof, &RequestInfo::new("GET", URI, b""))
        .await
        .map(|_| ())
}

#[tokio::test]
async fn two_verifiers_sharing_redis_accept_a_proof_once() {
    let Some(url) = redis_url() else { return };
    let options = options();
    let f = Fixture::new();
    let a = f.verifier(Arc::new(connect_running(&url, options.clone()).await));
    let b = f.verifier(Arc::new(connect_running(&url, options).await));
    let token = f.token();
    let proof = f.proof(&token);
    submit(&a, &token, &proof).await.unwrap();
    assert_eq!(
        submit(&b, &token, &proof).await.unwrap_err().code(),
        Code::ReplayDetected
    );
    assert_eq!(
        submit(&a, &token, &proof).await.unwrap_err().code(),
        Code::ReplayDetected
    );
    // A fresh proof is accepted by either.
    submit(&b, &token, &f.proof(&token)).await.unwrap();
}

#[tokio::test]
async fn concurrent_replays_across_replicas_succeed_exactly_once() {
    let Some(url) = redis_url() else { return };
    let options = options();
    let f = Arc::new(Fixture::new());
    let replicas: Vec<Arc<RedisVerifier>> = futures_join(4, |_| {
        let url = url.clone();
        let options = options.clone();
        let f = f.clone();
        async move { Arc::new(f.verifier(Arc::new(connect_running(&url, options).await))) }
    })
    .await;
    for round in 0..20 {
        let token = Arc::new(f.token());
        let proof = Arc::new(f.proof(&token));
        let mut tasks = Vec::new();
        for i in 0..32 {
            let verifier = replicas[i % replicas.len()].clone();
            let (token, proof) = (token.clone(), proof.clone());
            tasks.push(tokio::spawn(async move { submit(&verifier, &token, &proof).await }));
        }
        let mut accepted = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(()) => accepted += 1,
                Err(e) => assert_eq!(e.code(), Code::ReplayDetected),
            }
        }
        assert_eq!(accepted, 1, "round {round}");
    }
}

async fn futures_join<T, F, Fut>(n: usize, make: F) -> Vec<T>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        out.push(make(i).await);
    }
    out
}

#[tokio::test]
async fn refuses_to_start_on_an_evicting_redis() {
    // A private redis-server: no need for KEYBOUND_TEST_REDIS_URL.
    let Some(redis) = PrivateRedis::start(&["--maxmemory-policy", "allkeys-lru", "--maxmemory", "10mb"], None) else {
        return;
    };
    let err = RedisReplayStore::connect(&redis.url(), options()).await.unwrap_err();
    assert_eq!(err.code(), Code::ReplayStoreUnavailable);
    assert!(err.message().contains("allkeys-lru"), "{err}");
    let Some(volatile) = PrivateRedis::start(&["--maxmemory-policy", "volatile-ttl"], None) else {
        return;
    };
    assert!(RedisReplayStore::connect(&volatile.url(), options()).await.is_err());
}

#[tokio::test]
async fn fails_closed_while_redis_is_down_and_recovers() {
    // A private redis-server: no need for KEYBOUND_TEST_REDIS_URL.
    let Some(mut redis) = PrivateRedis::start(&[], None) else {
        return;
    };
    let port = redis.port;
    let f = Fixture::new();
    let verifier = f.verifier(Arc::new(connect_running(&redis.url(), options()).await));
    let token = f.token();
    submit(&verifier, &token, &f.proof(&token)).await.unwrap();
    redis.kill();
    for _ in 0..3 {
        let err = submit(&verifier, &token, &f.proof(&token)).await.unwrap_err();
        assert_eq!(err.code(), Code::ReplayStoreUnavailable, "{err}");
    }
    // Back up on the same port, empty: the store reconnects and accepts
    // proofs made since (its fence is now NOW).
    let _redis = PrivateRedis::start(&[], Some(port)).unwrap();
    let mut recovered = false;
    for _ in 0..40 {
        if submit(&verifier, &token, &f.proof_at(&token, NOW)).await.is_ok() {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "the store reconnects once Redis is back");
}

/// Issue 11 §5: a Redis restarted without persistence forgets every entry;
/// the missing fence key gives it away, and a proof accepted before the
/// restart is refused after it (`replay.store_restarted`), in the same
/// round trip as the record. Proofs made since are accepted once.
#[tokio::test]
async fn a_proof_accepted_before_redis_lost_its_data_is_refused_after() {
    let Some(mut redis) = PrivateRedis::start(&[], None) else {
        return;
    };
    let port = redis.port;
    let f = Fixture::new();
    let clock = Arc::new(ManualClock::new(NOW));
    let verifier = f.verifier_at(Arc::new(connect_running(&redis.url(), options()).await), clock.clone());
    let token = f.token();
    let before = f.proof(&token);
    submit(&verifier, &token, &before).await.unwrap();
    redis.kill();
    let _restarted = PrivateRedis::start(&[], Some(port)).unwrap();
    clock.advance(3);
    let mut answer = submit(&verifier, &token, &before).await;
    for _ in 0..40 {
        if !answer.as_ref().is_err_and(|e| e.code() == Code::ReplayStoreUnavailable) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        answer = submit(&verifier, &token, &before).await;
    }
    assert_eq!(answer.unwrap_err().code(), Code::ReplayStoreRestarted);
    // Still refused: the fence was written, at the verifier's now.
    assert_eq!(
        submit(&verifier, &token, &before).await.unwrap_err().code(),
        Code::ReplayStoreRestarted
    );
    let after = f.proof_at(&token, NOW + 3);
    submit(&verifier, &token, &after).await.unwrap();
    assert_eq!(
        submit(&verifier, &token, &after).await.unwrap_err().code(),
        Code::ReplayDetected
    );
}

/// A Redis that could come back from a crash with an older copy of its
/// data (snapshots, or an append-only file synced once a second) is
/// refused at start; one that persists nothing, or syncs every write, is
/// accepted.
#[tokio::test]
async fn refuses_to_start_on_a_redis_that_could_roll_back() {
    for (settings, accepted) in [
        (&["--save", "60 1"][..], false),
        (&["--appendonly", "yes", "--appendfsync", "everysec"][..], false),
        (&["--appendonly", "yes", "--appendfsync", "always"][..], true),
        (&[][..], true),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut args = vec!["--dir", dir.path().to_str().unwrap()];
        args.extend(settings);
        let Some(redis) = PrivateRedis::start(&args, None) else {
            return;
        };
        let result = RedisReplayStore::connect(&redis.url(), options()).await;
        match result {
            Ok(_) => assert!(accepted, "{settings:?} was accepted"),
            Err(e) => {
                assert!(!accepted, "{settings:?}: {e}");
                assert_eq!(e.code(), Code::ReplayStoreUnavailable);
                assert!(e.message().contains("appendfsync always"), "{e}");
            }
        }
    }
}
