//! The HTTP binding (spec/http.md) for services: a tower [`Layer`] that
//! verifies every request before the handler runs, and an axum extractor
//! that hands the handler the [`VerifiedRequest`].
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

pub(crate) mod layer;
mod problem;
pub mod serve;

pub use layer::{KeyboundLayer, KeyboundService, PolicyHandle, ProofMode};
pub use problem::{error_response, status_for};
pub use serve::{ServeConfig, serve};

use axum::extract::FromRequestParts;
use http::request::Parts;

use crate::error::{Code, Error};
use crate::verify::VerifiedRequest;

/// The `Authorization` scheme of keybound tokens.
pub const AUTH_SCHEME: &str = "KB";
/// The request header carrying the proof.
pub const PROOF_HEADER: http::HeaderName = http::HeaderName::from_static("kb-proof");
/// The response header carrying a server nonce.
pub const NONCE_HEADER: http::HeaderName = http::HeaderName::from_static("kb-nonce");

impl<S: Send + Sync> FromRequestParts<S> for VerifiedRequest {
    type Rejection = axum::response::Response;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<VerifiedRequest>().cloned().ok_or_else(|| {
            // A handler asked for a verified request on a route without the
            // layer: fail closed and say so in the log.
            tracing::error!(path = %parts.uri.path(), "VerifiedRequest extracted on a route without KeyboundLayer");
            error_response(&Error::new(Code::HttpLayerMissing, "server misconfiguration"), None)
        })
    }
}
