//! `keybound gateway`: keybound verification in front of a service written
//! in any language (spec/gateway.md). Two modes share one verifier and one
//! `KeyboundLayer` (the same HTTP binding as every service):
//!
//! - `Mode::Proxy`: a reverse proxy. Every request is verified for the
//!   service's audience against its external URL, then forwarded to the
//!   upstream with the verified identity ([`identity`]) in place of the
//!   credentials; the upstream's answer streams back.
//! - `Mode::Auth`: a forward-auth endpoint (nginx `auth_request`, Traefik
//!   `forwardAuth`, Envoy `ext_authz` in HTTP mode). The original method and
//!   URI come from trusted headers, and only from trusted forwarders; a
//!   request whose body is not forwarded is refused (spec/http.md §7). The
//!   answer is `200` with the identity headers, or the refusal.
//!
//! The operations listener serves `/healthz`, `/readyz` and `/metrics`.
//!
//! Everything but [`identity`] needs the feature `gateway`; the identity
//! format is in the core, so a Rust service behind a gateway checks it
//! without an HTTP stack, and `fuzz/` reaches it.

pub mod identity;
#[cfg(feature = "gateway")]
mod proxy;
#[cfg(feature = "gateway")]
mod upstream;
#[cfg(feature = "gateway")]
pub use proxy::*;
#[cfg(feature = "gateway")]
pub use upstream::{Upstream, UpstreamError};
