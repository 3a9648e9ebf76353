//! What a service's verification state costs in memory, measured as the
//! process's resident set (`VmRSS`), not as the sizes the types claim.
//!
//! `cargo run --release --example memory` prints one JSON object:
//!
//! - **1 M replay entries.** A `MemoryReplayStore::default()` (the default
//!   budget) is given `REPLAY_ENTRIES` (default 1,000,000) live entries,
//!   each as the verifier records a proof (replay key from audience, key
//!   thumbprint and a fresh jti, expiry `iat + 60 + 30 + 1`): the RSS before
//!   and after, the growth per entry, and the store's own count of its
//!   tables' bytes.
//! - **Cached verified tokens.** A verifier with the default token cache
//!   verifies `TOKENS` (default 20,000) requests, each with a token it has
//!   not seen (so each is verified and cached) and its proof; the growth of
//!   RSS less the replay entries those proofs left, per token, next to the
//!   token's size on the wire.
//!
//! Everything is prepared before the first reading, so the growth is the
//! state alone. The allocator keeps freed memory, so figures are upper
//! bounds of what the state needs, which is what an operator sizes for.

use std::sync::Arc;

use keybound::key::{Algorithm, KeySet, SigningKey};
use keybound::proof::{ProofBuilder, RequestInfo};
use keybound::token::TokenBuilder;
use keybound::verify::{
    Clock, DEFAULT_TOKEN_CACHE_CAPACITY, ManualClock, MemoryReplayStore, ReplayEntry, ReplayKey, ReplayStore,
    SystemClock, TrustedIssuer, Verifier,
};
use serde_json::json;

const ISSUER: &str = "https://issuer.example";
const AUDIENCE: &str = "https://nova.example";
const URI: &str = "https://nova.example/v2/servers";

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn count(variable: &str, default: usize) -> usize {
    std::env::var(variable)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The report, and the store (kept alive so that the next measurement does
/// not reuse its memory).
fn replay_entries(n: usize) -> (serde_json::Value, MemoryReplayStore) {
    let thumbprint = *SigningKey::derive(Algorithm::EdDSA, b"memory bench", b"client")
        .unwrap()
        .public_key()
        .thumbprint();
    let store = MemoryReplayStore::default().fenced_at(0);
    let now = SystemClock.now();
    let before = rss_bytes();
    let mut refused = 0usize;
    for i in 0..n as u64 {
        let mut jti = [0u8; 16];
        jti[8..].copy_from_slice(&i.to_be_bytes());
        let entry = ReplayEntry {
            key: ReplayKey::new(AUDIENCE, &thumbprint, &jti),
            issued_at: now,
            expires_at: now + 60 + 30 + 1,
            now,
        };
        if store.check_and_record(entry).is_err() {
            refused += 1;
        }
    }
    let after = rss_bytes();
    let usage = store.usage();
    assert_eq!(refused, 0, "the default budget must hold {n} entries");
    let report = json!({
        "entries": usage.entries,
        "rss_before": before,
        "rss_after": after,
        "rss_growth_bytes": after.saturating_sub(before),
        "rss_growth_per_entry": ((after.saturating_sub(before)) as f64 / n as f64 * 10.0).round() / 10.0,
        "table_bytes": usage.bytes,
        "table_bytes_per_entry": (usage.bytes as f64 / n as f64 * 10.0).round() / 10.0,
        "budget_bytes": usage.budget_bytes,
    });
    (report, store)
}

fn cached_tokens(n: usize) -> (serde_json::Value, Verifier<MemoryReplayStore>) {
    const NOW: u64 = 1_763_800_000;
    let issuer = SigningKey::derive(Algorithm::EdDSA, b"memory bench", b"issuer").unwrap();
    let client = SigningKey::derive(Algorithm::EdDSA, b"memory bench", b"client").unwrap();
    let kid = issuer.public_key().default_kid();
    let keys = KeySet::new().with(kid.clone(), issuer.public_key().clone()).unwrap();
    let replay = Arc::new(MemoryReplayStore::default().fenced_at(0));
    let verifier = Verifier::builder(AUDIENCE, TrustedIssuer::with_keys(ISSUER, keys))
        .clock(Arc::new(ManualClock::new(NOW)))
        .replay_store(replay.clone())
        .build()
        .unwrap();
    // Tokens as an issuer mints them for one user: each differs in its cti
    // (set by the builder), so each is a cache entry of its own.
    let requests: Vec<(Vec<u8>, Vec<u8>)> = (0..n)
        .map(|_| {
            let token = TokenBuilder::service(
                ISSUER,
                "ayoung@stoughton",
                AUDIENCE,
                client.public_key().clone(),
                NOW - 10,
            )
            .scope("stoughton", "turing")
            .roles(["member"])
            .sign(&issuer, &kid)
            .unwrap()
            .into_bytes();
            let proof = ProofBuilder::new("GET", URI, &token, b"", NOW - 1)
                .unwrap()
                .sign(&client)
                .unwrap()
                .into_bytes();
            (token, proof)
        })
        .collect();
    let token_bytes = requests.first().map_or(0, |(t, _)| t.len());
    let request = RequestInfo::new("GET", URI, b"");
    let before = rss_bytes();
    let replay_before = replay.usage().bytes;
    for (token, proof) in &requests {
        verifier.verify_request(token, proof, &request).unwrap();
    }
    let after = rss_bytes();
    let replay_bytes = replay.usage().bytes.saturating_sub(replay_before) as u64;
    let growth = after.saturating_sub(before).saturating_sub(replay_bytes);
    let report = json!({
        "tokens": n,
        "cached": verifier.cached_tokens(),
        "cache_capacity_default": DEFAULT_TOKEN_CACHE_CAPACITY,
        "token_bytes_on_the_wire": token_bytes,
        "rss_growth_bytes_less_replay_entries": growth,
        "rss_growth_per_cached_token": (growth as f64 / n as f64).round(),
        "default_cache_full_bytes_estimate": (growth as f64 / n as f64 * DEFAULT_TOKEN_CACHE_CAPACITY as f64).round(),
    });
    (report, verifier)
}

fn main() {
    let entries = count("REPLAY_ENTRIES", 1_000_000);
    let tokens = count("TOKENS", 20_000).min(DEFAULT_TOKEN_CACHE_CAPACITY);
    let start = rss_bytes();
    let (replay, _store) = replay_entries(entries);
    let (tokens, _verifier) = cached_tokens(tokens);
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({
            "benchmark": "memory of a service's verification state (VmRSS)",
            "rss_at_start": start,
            "replay_entries": replay,
            "verified_token_cache": tokens,
        }))
        .unwrap()
    );
}
