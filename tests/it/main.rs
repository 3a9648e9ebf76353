//! The integration tests, in one binary: one link of the crate and its
//! dependencies instead of one per file. Each module is one area; the
//! shared helpers (an issuer on loopback, a private redis-server) are in
//! `common`. Run one area with `cargo test --all-features --test it AREA::`.

mod admin_cli;
mod cli_basics;
mod client_cli;
mod common;
mod delegation;
mod e2e_cli;
mod exchange_requests;
mod faults;
mod faults_bodies;
mod faults_clock;
mod faults_overload;
mod faults_storage;
mod federation;
mod gateway;
mod gateway_identities;
mod history;
mod http_layer;
mod issuer;
mod key_sources;
mod keyset_documents;
mod login_memory;
mod negative;
mod openapi_contract;
mod operations_guide;
mod policy_learn;
mod properties;
mod redis_replay;
mod replay_restarts;
mod root_secret;
mod rotation;
mod serve;
mod serve_config;
mod slips;
mod spec_cddl;
mod store_conformance;
mod trust_cli;
mod trust_requests;
mod trusts;
mod vectors;
mod verifier;
mod workflow;
mod workplans;
mod wycheproof;
