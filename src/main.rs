//! The `keybound` command line tool. It is built on the library's public API
//! only: `src/cli/` is part of this binary, not of the library.

mod cli;

// The library's modules at this crate's root, so `crate::client::…` paths
// inside `src/cli/` name the library's items.
use keybound::{
    Code, Error, cbor, client, danger, delegation, encoding, error, federation, gateway, http, issuer, key, keyset,
    names, policy, proof, token, verify,
};

fn main() -> std::process::ExitCode {
    cli::main()
}
