//! Verification metrics for services: the hook [`KeyboundLayer::observe`]
//! calls for every request the layer decides on, and
//! [`VerificationMetrics`], an observer that keeps Prometheus counters
//! and a latency histogram and renders them with the key sets' age.
//!
//! ```no_run
//! # async fn run(verifier: keybound::verify::Verifier, keys: keybound::keyset::HttpKeys) -> keybound::Result<()> {
//! use std::sync::Arc;
//! use axum::{Router, routing::get};
//! use keybound::http::{KeyboundLayer, VerificationMetrics};
//!
//! let metrics = Arc::new(VerificationMetrics::default().key_source("issuer", keys));
//! let layer = KeyboundLayer::new(Arc::new(verifier), "https://nova.example")?.observe(metrics.clone());
//! let app: Router = Router::new()
//!     .route("/v2/servers", get(|| async { "servers" }))
//!     .layer(layer)
//!     // Outside the layer: scraped without a token (expose it to monitoring only).
//!     .route("/metrics", get(move || {
//!         let metrics = metrics.clone();
//!         async move { metrics.render() }
//!     }));
//! # Ok(()) }
//! ```
//!
//! [`KeyboundLayer::observe`]: super::KeyboundLayer::observe

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

use crate::error::Code;
use crate::keyset::HttpKeys;

/// What the layer decided about one request, handed to a
/// [`VerificationObserver`].
#[derive(Clone, Copy, Debug)]
pub struct VerificationOutcome {
    /// `None`: admitted (with a proof, or as bearer use in rollout mode);
    /// else the refusal's code.
    pub refused: Option<Code>,
    /// Time the layer spent: reading and hashing the body, verifying the
    /// token and proof, the replay store, the policy. Not the handler's.
    pub elapsed: Duration,
}

/// Receives every [`VerificationOutcome`] of a layer. Called on the request's
/// task before the handler runs (or the refusal is sent): keep it cheap.
pub trait VerificationObserver: Send + Sync {
    /// One request's outcome.
    fn observe(&self, outcome: &VerificationOutcome);
}

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 10] = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1.0];

#[derive(Default)]
struct Counts {
    outcomes: BTreeMap<&'static str, u64>,
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// A [`VerificationObserver`] that counts outcomes by code and times the
/// layer, rendered in the Prometheus text format by
/// [`VerificationMetrics::render`] with the age of each key source added.
#[derive(Default)]
pub struct VerificationMetrics {
    counts: Mutex<Counts>,
    sources: Vec<(String, HttpKeys)>,
}

impl std::fmt::Debug for VerificationMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerificationMetrics").finish_non_exhaustive()
    }
}

impl VerificationMetrics {
    /// Reports the age of `keys` (time since its current key set was
    /// fetched) and its fetch failures, labelled `issuer="{label}"`.
    pub fn key_source(mut self, label: impl Into<String>, keys: HttpKeys) -> Self {
        self.sources.push((label.into(), keys));
        self
    }

    /// The metrics in the text exposition format 0.0.4.
    pub fn render(&self) -> String {
        let counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP keybound_verifications_total Requests the keybound layer decided on, by outcome (ok or the refusal's code).\n# TYPE keybound_verifications_total counter"
        );
        for (outcome, n) in &counts.outcomes {
            let _ = writeln!(out, "keybound_verifications_total{{outcome=\"{outcome}\"}} {n}");
        }
        let _ = writeln!(out, "{}", super::serve::overloaded_metric());
        let _ = writeln!(
            out,
            "# HELP keybound_verification_duration_seconds Time the keybound layer spent per request.\n# TYPE keybound_verification_duration_seconds histogram"
        );
        for (bound, n) in BUCKETS.iter().zip(counts.buckets) {
            let _ = writeln!(
                out,
                "keybound_verification_duration_seconds_bucket{{le=\"{bound}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "keybound_verification_duration_seconds_bucket{{le=\"+Inf\"}} {}\nkeybound_verification_duration_seconds_sum {}\nkeybound_verification_duration_seconds_count {}",
            counts.count, counts.sum, counts.count
        );
        drop(counts);
        if !self.sources.is_empty() {
            let _ = writeln!(
                out,
                "# HELP keybound_key_set_age_seconds Time since the key set was last fetched.\n# TYPE keybound_key_set_age_seconds gauge"
            );
            for (label, keys) in &self.sources {
                if let Some(at) = keys.stats().last_success {
                    let _ = writeln!(
                        out,
                        "keybound_key_set_age_seconds{{issuer=\"{}\"}} {:.3}",
                        escape(label),
                        at.elapsed().as_secs_f64()
                    );
                }
            }
            let _ = writeln!(
                out,
                "# HELP keybound_key_set_fetch_failures_total Failed key-set fetches.\n# TYPE keybound_key_set_fetch_failures_total counter"
            );
            for (label, keys) in &self.sources {
                let _ = writeln!(
                    out,
                    "keybound_key_set_fetch_failures_total{{issuer=\"{}\"}} {}",
                    escape(label),
                    keys.stats().failures
                );
            }
        }
        out
    }
}

impl VerificationObserver for VerificationMetrics {
    fn observe(&self, outcome: &VerificationOutcome) {
        let seconds = outcome.elapsed.as_secs_f64();
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        *counts
            .outcomes
            .entry(outcome.refused.map_or("ok", |code| code.as_str()))
            .or_default() += 1;
        for (i, bound) in BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                counts.buckets[i] += 1;
            }
        }
        counts.count += 1;
        counts.sum += seconds;
    }
}

/// A label value in the text format: backslash, quote and newline escaped.
fn escape(label: &str) -> String {
    label.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_and_latency_are_counted() {
        let metrics = VerificationMetrics::default();
        metrics.observe(&VerificationOutcome {
            refused: None,
            elapsed: Duration::from_micros(300),
        });
        metrics.observe(&VerificationOutcome {
            refused: Some(Code::ReplayDetected),
            elapsed: Duration::from_millis(2),
        });
        let text = metrics.render();
        assert!(
            text.contains("keybound_verifications_total{outcome=\"ok\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("keybound_verifications_total{outcome=\"replay.detected\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("keybound_verification_duration_seconds_bucket{le=\"0.0005\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("keybound_verification_duration_seconds_bucket{le=\"0.0025\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("keybound_verification_duration_seconds_count 2"),
            "{text}"
        );
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
