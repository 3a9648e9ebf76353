//! The smallest service setup: a verifier behind the tower layer, built on
//! what `features = ["http"]` offers.

use std::sync::Arc;

use keybound::http::KeyboundLayer;
use keybound::keyset::KeySet;
use keybound::verify::{TrustedIssuer, Verifier};

fn main() -> keybound::Result<()> {
    let issuer = TrustedIssuer::with_keys("https://issuer.example", KeySet::new());
    let verifier = Verifier::builder("https://nova.example", issuer).build()?;
    let _layer = KeyboundLayer::new(Arc::new(verifier), "https://nova.example")?;
    println!("keybound layer ready");
    Ok(())
}
