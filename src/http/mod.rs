//! The HTTP binding (spec/http.md) for services: a tower [`Layer`] that
//! verifies every request before the handler runs, and axum extractors
//! that hand the handler the [`VerifiedRequest`] or, on routes that also
//! serve requests admitted without a proof in bearer rollout mode
//! ([`ProofMode::BearerAllowed`]), a [`ProvenOrBearer`].
//!
//! ```no_run
//! # async fn run(verifier: keybound::verify::Verifier) -> keybound::Result<()> {
//! use std::sync::Arc;
//! use axum::{Router, routing::get};
//! use keybound::http::KeyboundLayer;
//! use keybound::verify::VerifiedRequest;
//!
//! async fn servers(request: VerifiedRequest) -> String {
//!     format!("servers of {} in {:?}", request.subject(), request.project())
//! }
//!
//! let layer = KeyboundLayer::new(Arc::new(verifier), "https://nova.example")?;
//! let app: Router = Router::new().route("/v2/servers", get(servers)).layer(layer);
//! # Ok(()) }
//! ```
//!
//! [`Layer`]: tower::Layer
//! [`VerifiedRequest`]: crate::verify::VerifiedRequest
//! [`ProvenOrBearer`]: crate::verify::ProvenOrBearer

pub(crate) mod layer;
mod metrics;
pub(crate) mod problem;
pub mod serve;

pub use layer::{KeyboundLayer, KeyboundService, PolicyHandle, ProofMode};
pub use metrics::{VerificationMetrics, VerificationObserver, VerificationOutcome};
pub use problem::{error_response, status_for};
pub use serve::{ServeConfig, serve};

use axum::extract::FromRequestParts;
use http::request::Parts;

use crate::error::{Code, Error};
use crate::verify::{BearerRequest, ProvenOrBearer, VerifiedRequest};

/// The `Authorization` scheme of keybound tokens.
pub const AUTH_SCHEME: &str = "KB";
/// The request header carrying the proof.
pub const PROOF_HEADER: http::HeaderName = http::HeaderName::from_static("kb-proof");
/// The request header carrying a routing slip (spec/http.md §3.5).
pub const SLIP_HEADER: http::HeaderName = http::HeaderName::from_static("kb-slip");
/// The response header carrying a server nonce.
pub const NONCE_HEADER: http::HeaderName = http::HeaderName::from_static("kb-nonce");
/// The workflow correlation header: labels a request's decision records
/// with its workflow (spec/delegation.md §8.3); unsigned, never used for a
/// decision.
pub const WORKFLOW_HEADER: http::HeaderName = http::HeaderName::from_static("kb-workflow");

/// The answer to a handler that asked for a verified request on a route
/// without the layer: fail closed and say so in the log.
fn layer_missing(parts: &Parts, what: &str) -> axum::response::Response {
    tracing::error!(path = %parts.uri.path(), "{what} extracted on a route without KeyboundLayer");
    error_response(&Error::new(Code::HttpLayerMissing, "server misconfiguration"), None)
}

/// Only a request whose proof was verified: a request the layer admitted
/// without one (bearer rollout mode) is refused as the layer refuses it in
/// strict mode (401 `proof.missing`), so the handler never runs for it.
impl<S: Send + Sync> FromRequestParts<S> for VerifiedRequest {
    type Rejection = axum::response::Response;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        if let Some(verified) = parts.extensions.get::<VerifiedRequest>() {
            return Ok(verified.clone());
        }
        if parts.extensions.get::<BearerRequest>().is_some() {
            let e = layer::proof_missing();
            tracing::info!(code = e.code().as_str(), method = %parts.method, path = parts.uri.path(), "bearer request refused by a route that needs a proof");
            return Err(error_response(&e, None));
        }
        Err(layer_missing(parts, "VerifiedRequest"))
    }
}

/// A verified request, or one admitted without a proof in bearer rollout
/// mode: for the routes that opt in to serving both.
impl<S: Send + Sync> FromRequestParts<S> for ProvenOrBearer {
    type Rejection = axum::response::Response;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        if let Some(verified) = parts.extensions.get::<VerifiedRequest>() {
            return Ok(ProvenOrBearer::Proven(verified.clone()));
        }
        if let Some(bearer) = parts.extensions.get::<BearerRequest>() {
            return Ok(ProvenOrBearer::Bearer(bearer.clone()));
        }
        Err(layer_missing(parts, "ProvenOrBearer"))
    }
}
