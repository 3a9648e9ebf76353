//! Prints the sizes of a typical service token and proof.
use keybound::key::{Algorithm, SigningKey};
use keybound::proof::ProofBuilder;
use keybound::token::{TokenBuilder, TokenTagging};

fn main() -> keybound::Result<()> {
    for alg in [Algorithm::EdDSA, Algorithm::ES256] {
        let issuer = SigningKey::derive(alg, b"sizes", b"issuer")?;
        let client = SigningKey::derive(alg, b"sizes", b"client")?;
        let kid = issuer.public_key().default_kid();
        for tagging in [TokenTagging::Untagged, TokenTagging::Sign1, TokenTagging::Cwt] {
            let token = TokenBuilder::service(
                "https://issuer.example",
                "ayoung@stoughton",
                "https://nova.example",
                client.public_key().clone(),
                1_763_800_000,
            )
            .scope("stoughton", "turing")
            .roles(["member"])
            .tagging(tagging)
            .sign(&issuer, &kid)?;
            let proof = ProofBuilder::new(
                "GET",
                "https://nova.example/v2/servers",
                token.as_bytes(),
                b"",
                1_763_800_001,
            )?
            .sign(&client)?;
            println!(
                "{alg} {tagging:?}: token {} B (b64url {}), proof {} B (b64url {})",
                token.as_bytes().len(),
                token.to_base64url().len(),
                proof.as_bytes().len(),
                proof.to_base64url().len()
            );
        }
    }
    Ok(())
}
