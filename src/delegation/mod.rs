//! Delegation formats shared by the issuer, clients and services
//! (spec/delegation.md): trust requests, workplans and routing slips.
//!
//! Everything here is pure: parsing and the checks that need no database.
//! The issuer's checks against its store are in `issuer::trusts`; a
//! service's checks of a delegated token are in `verify` (steps D1–D5).

pub mod slip;
#[cfg(feature = "policy")]
pub mod trust_request;
#[cfg(feature = "policy")]
pub mod workplan;
