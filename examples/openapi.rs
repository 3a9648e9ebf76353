//! Prints the issuer's OpenAPI document, generated from its routes:
//! `cargo run --example openapi --features issuer > spec/openapi.json`.

fn main() {
    match keybound::issuer::openapi::document() {
        Ok(document) => print!("{document}"),
        Err(e) => {
            eprintln!("the OpenAPI document does not serialise: {e}");
            std::process::exit(1);
        }
    }
}
