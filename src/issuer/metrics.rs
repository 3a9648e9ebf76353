//! Prometheus metrics in the text exposition format, without a registry
//! dependency: a handful of counters and one latency histogram per route.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const BUCKETS: [f64; 10] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0];

#[derive(Default)]
struct Histogram {
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// The issuer's metrics.
#[derive(Default)]
pub struct Metrics {
    tokens_minted: AtomicU64,
    trust_tokens_minted: AtomicU64,
    session_tokens: AtomicU64,
    logins_ok: AtomicU64,
    logins_failed: AtomicU64,
    failures: Mutex<BTreeMap<&'static str, u64>>,
    latency: Mutex<BTreeMap<&'static str, Histogram>>,
    records_dropped: Mutex<Option<Arc<AtomicU64>>>,
}

impl Metrics {
    /// A service token was minted.
    pub fn minted(&self) {
        self.tokens_minted.fetch_add(1, Ordering::Relaxed);
    }

    /// A service token was minted from a trust (also counted by [`Self::minted`]).
    pub fn trust_minted(&self) {
        self.trust_tokens_minted.fetch_add(1, Ordering::Relaxed);
    }

    /// A login succeeded (a session token was issued) or failed.
    pub fn login(&self, ok: bool) {
        if ok {
            self.logins_ok.fetch_add(1, Ordering::Relaxed);
            self.session_tokens.fetch_add(1, Ordering::Relaxed);
        } else {
            self.logins_failed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A request failed with `code`.
    pub fn failure(&self, code: &'static str) {
        *self
            .failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(code)
            .or_default() += 1;
    }

    /// A request to `route` took `elapsed`.
    pub fn observe(&self, route: &'static str, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let mut latency = self.latency.lock().unwrap_or_else(|p| p.into_inner());
        let h = latency.entry(route).or_default();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                h.buckets[i] += 1;
            }
        }
        h.count += 1;
        h.sum += seconds;
    }

    /// Reports the drop counter of the denial log
    /// ([`crate::policy::JsonLinesFile::dropped_counter`]).
    pub fn count_dropped_records(&self, counter: Arc<AtomicU64>) {
        *self.records_dropped.lock().unwrap_or_else(|p| p.into_inner()) = Some(counter);
    }

    /// Renders all metrics.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let counter = |out: &mut String, name: &str, help: &str, value: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}");
        };
        counter(
            &mut out,
            "keybound_tokens_minted_total",
            "Service tokens minted.",
            self.tokens_minted.load(Ordering::Relaxed),
        );
        let _ = writeln!(out, "{}", crate::http::serve::overloaded_metric());
        counter(
            &mut out,
            "keybound_trust_tokens_minted_total",
            "Service tokens minted from a trust (delegated), included in keybound_tokens_minted_total.",
            self.trust_tokens_minted.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "keybound_session_tokens_total",
            "Session tokens issued at login.",
            self.session_tokens.load(Ordering::Relaxed),
        );
        let records_dropped = self.records_dropped.lock().unwrap_or_else(|p| p.into_inner()).clone();
        counter(
            &mut out,
            "keybound_records_dropped_total",
            "Denial records dropped because the denial log's writer could not keep up.",
            records_dropped.map_or(0, |c| c.load(Ordering::Relaxed)),
        );
        let _ = writeln!(
            out,
            "# HELP keybound_logins_total Login attempts by outcome.\n# TYPE keybound_logins_total counter"
        );
        let _ = writeln!(
            out,
            "keybound_logins_total{{outcome=\"success\"}} {}",
            self.logins_ok.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "keybound_logins_total{{outcome=\"failure\"}} {}",
            self.logins_failed.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP keybound_failures_total Refused requests by error code.\n# TYPE keybound_failures_total counter"
        );
        for (code, n) in self.failures.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let _ = writeln!(out, "keybound_failures_total{{code=\"{code}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP keybound_request_duration_seconds Request latency by route.\n# TYPE keybound_request_duration_seconds histogram"
        );
        for (route, h) in self.latency.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            for (bound, n) in BUCKETS.iter().zip(h.buckets) {
                let _ = writeln!(
                    out,
                    "keybound_request_duration_seconds_bucket{{route=\"{route}\",le=\"{bound}\"}} {n}"
                );
            }
            let _ = writeln!(
                out,
                "keybound_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "keybound_request_duration_seconds_sum{{route=\"{route}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "keybound_request_duration_seconds_count{{route=\"{route}\"}} {}",
                h.count
            );
        }
        out
    }
}

/// Gauges of the issuer's replay store, when it reports its usage (the
/// in-memory store does; Redis does not).
pub(crate) fn replay_gauges(usage: Option<crate::verify::ReplayUsage>) -> String {
    let Some(usage) = usage else {
        return String::new();
    };
    let mut out = String::new();
    for (name, help, value) in [
        (
            "keybound_replay_store_entries",
            "Entries in the replay store.",
            usage.entries,
        ),
        (
            "keybound_replay_store_bytes",
            "Bytes the replay store's tables take.",
            usage.bytes,
        ),
        (
            "keybound_replay_store_budget_bytes",
            "The replay store's memory budget; at it, new proofs are refused.",
            usage.budget_bytes,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
    }
    out
}

/// The build and the signing keys, for alerting: the version running, the
/// issuer's clock (compare it with the scraper's to see skew), when the
/// current key began signing and when it is replaced, how many rotations
/// were ordered, and whether this process stopped signing after an
/// emergency replacement of the root secret.
pub(crate) fn key_gauges(keys: &super::IssuerKeys, now: u64) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP keybound_build_info The running build.\n# TYPE keybound_build_info gauge\nkeybound_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    let mut gauge = |name: &str, help: &str, value: u64| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
    };
    gauge("keybound_time_seconds", "The issuer's clock, Unix seconds.", now);
    if let Some((started, next)) = keys.current_epoch_bounds() {
        gauge(
            "keybound_signing_key_started_seconds",
            "When the current signing key began signing, Unix seconds.",
            started,
        );
        gauge(
            "keybound_signing_key_next_rotation_seconds",
            "When the next signing key takes over, Unix seconds.",
            next,
        );
    }
    gauge(
        "keybound_key_rotations_ordered",
        "Rotations ordered with `keybound admin rotate` (recorded in the database).",
        keys.schedule().rotations().len() as u64,
    );
    gauge(
        "keybound_root_secret_replaced",
        "1 when the database records another root secret and this process stopped signing.",
        u64::from(keys.is_replaced()),
    );
    out
}
