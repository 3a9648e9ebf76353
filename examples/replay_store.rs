//! The default in-memory replay store under sustained load, on the real
//! clock, against a baseline measured in the same run.
//!
//! `cargo run --release --example replay_store -- [seconds] [proofs/s]`
//! (default 20 s at 50,000 proofs/s). Two threads record the offered rate
//! between them, each entry as the default verifier makes it (replay key
//! from audience, key thumbprint and a new jti; `iat` now or up to 2 s
//! earlier; expiry `iat + 60 + 30 + 1`), into a store with the default
//! budget; one proof in 100 is also sent again a while later and must be
//! refused as a replay. Every 10 s a line reports the entries, the tables'
//! bytes, bytes per entry and the process's RSS; the end reports what was
//! accepted and refused, the CPU time per record, and that time as a
//! fraction of one raw Ed25519 verification (the least a proof costs),
//! measured in the same run. A 5-s unpaced phase first measures how many
//! records per second the two threads manage.
//!
//! The store's fence is set to 0: the run starts within the second the
//! store is made, and the fence is not what is measured.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ed25519_dalek::{Signer, SigningKey as DalekKey};
use keybound::Code;
use keybound::key::{Algorithm, SigningKey};
use keybound::verify::{
    Clock, MemoryReplayStore, ReplayEntry, ReplayKey, ReplayStore, SystemClock, default_replay_budget,
};

const AUDIENCE: &str = "https://nova.example";
const THREADS: u64 = 2;
const REPLAY_EVERY: u64 = 100;
const REPLAY_LAG: usize = 5_000;

#[derive(Default)]
struct Tally {
    accepted: AtomicU64,
    replays_refused: AtomicU64,
    replays_accepted: AtomicU64,
    full: AtomicU64,
    other: AtomicU64,
    record_ns: AtomicU64,
}

fn record(store: &MemoryReplayStore, key: ReplayKey, issued_at: u64, now: u64) -> Result<(), Code> {
    let entry = ReplayEntry {
        key,
        issued_at,
        expires_at: issued_at + 60 + 30 + 1,
        now,
    };
    store.check_and_record(entry).map_err(|e| e.code())
}

fn jti(thread: u64, i: u64) -> [u8; 16] {
    let mut jti = [0; 16];
    jti[..8].copy_from_slice(&thread.to_be_bytes());
    jti[8..].copy_from_slice(&i.to_be_bytes());
    jti
}

/// Records `rate / THREADS` proofs per second on the real clock until
/// `stop`; `rate` 0 means as fast as possible.
fn drive(store: &MemoryReplayStore, thread: u64, rate: u64, stop: &AtomicBool, tally: &Tally) {
    let thumbprint = *SigningKey::derive(Algorithm::EdDSA, b"replay bench", &thread.to_be_bytes())
        .unwrap()
        .public_key()
        .thumbprint();
    let per_thread = rate / THREADS;
    let started = Instant::now();
    let mut sent = 0u64;
    let mut recent: Vec<(ReplayKey, u64)> = Vec::with_capacity(REPLAY_LAG);
    while !stop.load(Ordering::Relaxed) {
        let due = if rate == 0 {
            sent + 1_000
        } else {
            (started.elapsed().as_secs_f64() * per_thread as f64) as u64
        };
        if due <= sent {
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        let batch = Instant::now();
        while sent < due {
            let now = SystemClock.now();
            let issued_at = now - sent % 3;
            let key = ReplayKey::new(AUDIENCE, &thumbprint, &jti(thread, sent));
            match record(store, key, issued_at, now) {
                Ok(()) => tally.accepted.fetch_add(1, Ordering::Relaxed),
                Err(Code::ReplayStoreFull) => tally.full.fetch_add(1, Ordering::Relaxed),
                Err(_) => tally.other.fetch_add(1, Ordering::Relaxed),
            };
            if sent.is_multiple_of(REPLAY_EVERY) {
                if recent.len() == REPLAY_LAG {
                    let (old, old_iat) = recent[(sent / REPLAY_EVERY) as usize % REPLAY_LAG];
                    match record(store, old, old_iat, now) {
                        Err(Code::ReplayDetected) => tally.replays_refused.fetch_add(1, Ordering::Relaxed),
                        Ok(()) => tally.replays_accepted.fetch_add(1, Ordering::Relaxed),
                        Err(_) => tally.other.fetch_add(1, Ordering::Relaxed),
                    };
                    recent[(sent / REPLAY_EVERY) as usize % REPLAY_LAG] = (key, issued_at);
                } else {
                    recent.push((key, issued_at));
                }
            }
            sent += 1;
        }
        tally
            .record_ns
            .fetch_add(batch.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Median ns of one `verify_strict` of a 200-byte message.
fn raw_ed25519_ns() -> f64 {
    let key = DalekKey::from_bytes(&[7; 32]);
    let public = key.verifying_key();
    let messages: Vec<[u8; 200]> = (0..64u8).map(|i| [i; 200]).collect();
    let signatures: Vec<_> = messages.iter().map(|m| key.sign(m)).collect();
    let mut samples: Vec<f64> = (0..31)
        .map(|_| {
            let start = Instant::now();
            for (m, s) in messages.iter().zip(&signatures) {
                black_box(public.verify_strict(black_box(m), s)).unwrap();
            }
            start.elapsed().as_nanos() as f64 / messages.len() as f64
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn run(seconds: u64, rate: u64, report: bool) -> (Arc<MemoryReplayStore>, Tally, Duration) {
    let store = Arc::new(MemoryReplayStore::default().fenced_at(0));
    let tally = Tally::default();
    let stop = AtomicBool::new(false);
    let started = Instant::now();
    std::thread::scope(|s| {
        for thread in 0..THREADS {
            let (store, stop, tally) = (&store, &stop, &tally);
            s.spawn(move || drive(store, thread, rate, stop, tally));
        }
        let deadline = started + Duration::from_secs(seconds);
        let mut next = started + Duration::from_secs(10);
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
            if report && Instant::now() >= next {
                next += Duration::from_secs(10);
                let usage = store.usage();
                println!(
                    "t={:>4}s entries={:>9} table_bytes={:>10} bytes/entry={:>5.1} rss={:>10} accepted={} full={}",
                    started.elapsed().as_secs(),
                    usage.entries,
                    usage.bytes,
                    usage.bytes as f64 / usage.entries.max(1) as f64,
                    rss_bytes(),
                    tally.accepted.load(Ordering::Relaxed),
                    tally.full.load(Ordering::Relaxed),
                );
            }
        }
        stop.store(true, Ordering::Relaxed);
    });
    (store, tally, started.elapsed())
}

fn main() {
    let mut args = std::env::args()
        .skip(1)
        .map(|a| a.parse::<u64>().expect("seconds and proofs/s are numbers"));
    let seconds = args.next().unwrap_or(20);
    let rate = args.next().unwrap_or(50_000);
    let rss_at_start = rss_bytes();
    let ed25519_ns = raw_ed25519_ns();

    let (_, burst, burst_time) = run(5, 0, false);
    let burst_rate = burst.accepted.load(Ordering::Relaxed) as f64 / burst_time.as_secs_f64();
    println!("unpaced: {burst_rate:.0} records/s over {THREADS} threads for 5 s");

    let (store, tally, elapsed) = run(seconds, rate, true);
    let usage = store.usage();
    let accepted = tally.accepted.load(Ordering::Relaxed);
    let records = accepted + tally.full.load(Ordering::Relaxed) + tally.other.load(Ordering::Relaxed);
    let record_ns = tally.record_ns.load(Ordering::Relaxed) as f64 / records.max(1) as f64;
    println!(
        "{{\"seconds\": {}, \"offered_per_s\": {rate}, \"accepted\": {accepted}, \"accepted_per_s\": {:.0}, \
         \"refused_full\": {}, \"refused_other\": {}, \"replays_refused\": {}, \"replays_accepted\": {}, \
         \"entries\": {}, \"table_bytes\": {}, \"bytes_per_entry\": {:.1}, \"budget_bytes\": {}, \
         \"default_budget_bytes\": {}, \"rss_start\": {rss_at_start}, \"rss_end\": {}, \"record_ns\": {record_ns:.0}, \
         \"raw_ed25519_verify_ns\": {ed25519_ns:.0}, \"record_per_ed25519\": {:.4}, \"unpaced_records_per_s\": {burst_rate:.0}}}",
        elapsed.as_secs(),
        accepted as f64 / elapsed.as_secs_f64(),
        tally.full.load(Ordering::Relaxed),
        tally.other.load(Ordering::Relaxed),
        tally.replays_refused.load(Ordering::Relaxed),
        tally.replays_accepted.load(Ordering::Relaxed),
        usage.entries,
        usage.bytes,
        usage.bytes as f64 / usage.entries.max(1) as f64,
        usage.budget_bytes,
        default_replay_budget(),
        rss_bytes(),
        record_ns / ed25519_ns,
    );
}
