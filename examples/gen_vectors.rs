//! Writes test-vectors/vectors.json, test-vectors/vectors.md,
//! test-vectors/keyset-documents.json and test-vectors/gateway-identities.json.
//!
//! Run from the repository root: `cargo run --example gen_vectors --features testkit`.
fn main() -> std::io::Result<()> {
    let vectors = keybound::vectors::generate();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("test-vectors");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("vectors.json"), keybound::vectors::to_json(&vectors))?;
    std::fs::write(dir.join("vectors.md"), keybound::vectors::to_markdown(&vectors))?;
    std::fs::write(dir.join("keyset-documents.json"), keybound::vectors::keyset_documents())?;
    std::fs::write(
        dir.join("gateway-identities.json"),
        keybound::vectors::gateway_identities(),
    )?;
    let valid = vectors.iter().filter(|v| v.expected == "valid").count();
    println!(
        "wrote {} vectors ({valid} valid, {} invalid) to {}",
        vectors.len(),
        vectors.len() - valid,
        dir.display()
    );
    Ok(())
}
