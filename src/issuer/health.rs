//! Readiness: the issuer is ready when what every login and mint needs
//! works, not only when the database answers a `SELECT`: the database
//! accepts a committed write (a full disk or a read-only file fails every
//! audited request) and the replay store records a key (Redis down fails
//! every proof).

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

/// The last readiness result (`None`: ready), shared by concurrent probes.
#[derive(Default)]
pub(crate) struct Readiness {
    last: tokio::sync::Mutex<Option<(Instant, Option<NotReady>)>>,
}

impl Readiness {
    async fn check(&self, state: &IssuerState) -> Option<NotReady> {
        let mut last = self.last.lock().await;
        if let Some((at, outcome)) = &*last
            && at.elapsed() < CACHE_FOR
        {
            return *outcome;
        }
        let outcome = probe(state).await.err();
        *last = Some((Instant::now(), outcome));
        outcome
    }
}

async fn probe(state: &IssuerState) -> std::result::Result<(), NotReady> {
    if state.keys.is_replaced() {
        // An emergency replacement: this replica signs nothing until restarted.
        return Err((Code::IssuerRootSecretMismatch, "the root secret (replaced)"));
    }
    within("the database", state.store.check_writable()).await?;
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
    .await
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

/// `GET /readyz`: 200 `ready`, or the failing check's problem (503): its
/// code tells the part (`issuer.unavailable`: the database; `replay.*`: the
/// replay store); the log has the cause.
pub(super) async fn readyz(State(state): State<Arc<IssuerState>>) -> Response {
    match state.readiness.check(&state).await {
        None => "ready\n".into_response(),
        // Not ready is 503 whatever the part's code says elsewhere (a
        // replaced root secret is 500 at login): balancers key on it.
        Some((code, part)) => crate::http::problem::problem_response(
            &Error::new(code, format!("not ready: {part}")),
            http::StatusCode::SERVICE_UNAVAILABLE,
            None,
        ),
    }
}
