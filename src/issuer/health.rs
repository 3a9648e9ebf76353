//! Readiness: the issuer is ready when what every login and mint needs
//! works, not only when the database answers a `SELECT`: the database
//! accepts a committed write (a full disk or a read-only file fails every
//! audited request) and the replay store records a key (Redis down fails
//! every proof).
//!
//! One exception: a database that answers reads but refuses writes (its
//! volume full or read-only, `issuer.storage_unavailable`) leaves the issuer
//! ready, with the code in the body. Every replica shares that database, so
//! taking them out of the balancer helps no write and stops every read that
//! still works: key sets, metadata, admin `GET`s, and mints whose minute is
//! already audited.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::response::{IntoResponse, Response};

use super::IssuerState;
use crate::error::{Code, Error, Result};
use crate::verify::{ReplayEntry, ReplayKey};

/// How long one check may take before it counts as failed.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// A result is reused this long, so a flood of `/readyz` costs at most one
/// committed write and one replay-store call per second.
const CACHE_FOR: Duration = Duration::from_secs(1);

/// Why the issuer is not ready: the code of the failing check and the part
/// that failed (the cause goes to the log only).
type NotReady = (Code, &'static str);

/// Ready (`Ok`), with the code of a degraded part that leaves it ready
/// (`Some(issuer.storage_unavailable)`), or not ready.
type Outcome = std::result::Result<Option<Code>, NotReady>;

/// The last readiness result, shared by concurrent probes.
#[derive(Default)]
pub(crate) struct Readiness {
    last: tokio::sync::Mutex<Option<(Instant, Outcome)>>,
}

impl Readiness {
    async fn check(&self, state: &IssuerState) -> Outcome {
        let mut last = self.last.lock().await;
        if let Some((at, outcome)) = &*last
            && at.elapsed() < CACHE_FOR
        {
            return *outcome;
        }
        let outcome = probe(state).await;
        *last = Some((Instant::now(), outcome));
        outcome
    }
}

async fn probe(state: &IssuerState) -> Outcome {
    if state.keys.is_replaced() {
        // An emergency replacement: this replica signs nothing until restarted.
        return Err((Code::IssuerRootSecretMismatch, "the root secret (replaced)"));
    }
    let degraded = match within("the database", state.store.check_writable()).await {
        Ok(()) => None,
        Err((Code::IssuerStorageUnavailable, part)) => {
            // Writes refused: still ready if reads are served.
            within(part, state.store.check_readable()).await?;
            Some(Code::IssuerStorageUnavailable)
        }
        Err(failed) => return Err(failed),
    };
    within("the replay store", async {
        // A random key nobody else uses, kept for a second.
        let key = ReplayKey(crate::random_array::<32>()?);
        let now = state.now();
        let entry = ReplayEntry {
            key,
            issued_at: now,
            expires_at: now + 1,
            now,
        };
        state.replay.check_and_record_async(entry).await
    })
    .await?;
    Ok(degraded)
}

async fn within(part: &'static str, check: impl Future<Output = Result<()>>) -> std::result::Result<(), NotReady> {
    let failed = match tokio::time::timeout(CHECK_TIMEOUT, check).await {
        Ok(Ok(())) => return Ok(()),
        Ok(Err(e)) => e,
        Err(_) => Error::new(
            Code::IssuerUnavailable,
            format!("no answer within {} s", CHECK_TIMEOUT.as_secs()),
        ),
    };
    tracing::warn!(
        part,
        code = failed.code().as_str(),
        detail = failed.message(),
        "not ready"
    );
    Err((failed.code(), part))
}

/// `GET /readyz`: 200 `ready` (`ready, writes refused: CODE` when the
/// database refuses writes), or the failing check's problem (503): its
/// code tells the part (`issuer.unavailable`: the database; `replay.*`: the
/// replay store); the log has the cause.
pub(super) async fn readyz(State(state): State<Arc<IssuerState>>) -> Response {
    match state.readiness.check(&state).await {
        Ok(None) => "ready\n".into_response(),
        Ok(Some(code)) => format!("ready, writes refused: {}\n", code.as_str()).into_response(),
        // Not ready is 503 whatever the part's code says elsewhere (a
        // replaced root secret is 500 at login): balancers key on it.
        Err((code, part)) => crate::http::problem::problem_response(
            &Error::new(code, format!("not ready: {part}")),
            http::StatusCode::SERVICE_UNAVAILABLE,
            None,
        ),
    }
}
