//! `keybound keygen`: a new signing key in a 0600 key file.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde_json::json;

use super::{CliError, EXIT_FAILURE, print_stdout};
use crate::encoding::{b64url_encode, hex_decode, hex_encode};
use crate::key::{Algorithm, SigningKey, write_signing_key_file};

pub(crate) const ABOUT: &str = "Generate a signing key (Ed25519 or P-256) into a new private key file";

pub(crate) const LONG_ABOUT: &str = "\
Generate a signing key (Ed25519 or P-256) into a new private key file.

The private key is written as a COSE_Key (CBOR) to a new file with mode 0600; an existing file is never \
overwritten. The public key (COSE_Key, hex and base64url) and its RFC 9679 thumbprint (base64url and hex) \
are printed; with --json as one JSON object with the fields alg, thumbprint, thumbprint_hex, kid, \
public_key_hex, public_key_b64url, out and public_out. No private key material is ever printed.

With --public-out the public COSE_Key is also written, as CBOR, for services that need to trust the key.";

pub(crate) const EXAMPLES: &str = "\
Examples:
  keybound keygen --out client.key
  keybound keygen --alg es256 --out issuer.key --kid 6b31 --public-out issuer.pub
  keybound keygen --alg ed25519 --out client.key --json";

/// Longest `--kid` accepted, in bytes.
const MAX_KID: usize = 64;

/// The algorithms a key can be generated for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum AlgArg {
    /// EdDSA with Ed25519 (COSE alg -8)
    #[value(alias = "eddsa")]
    Ed25519,
    /// ECDSA with P-256 and SHA-256 (COSE alg -7)
    #[value(alias = "p256", alias = "p-256")]
    Es256,
}

impl From<AlgArg> for Algorithm {
    fn from(a: AlgArg) -> Self {
        match a {
            AlgArg::Ed25519 => Algorithm::EdDSA,
            AlgArg::Es256 => Algorithm::ES256,
        }
    }
}

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Signature algorithm of the key.
    #[arg(long, value_enum, default_value_t = AlgArg::Ed25519)]
    alg: AlgArg,

    /// The private key file to create (mode 0600; must not exist).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,

    /// Key id to store in the key (hex), e.g. the kid an issuer signs under.
    #[arg(long, value_name = "HEX")]
    kid: Option<String>,

    /// Also write the public COSE_Key (CBOR) to this new file.
    #[arg(long, value_name = "FILE")]
    public_out: Option<PathBuf>,

    /// Print the result as one JSON object.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(args: Args) -> Result<ExitCode, CliError> {
    let kid = match &args.kid {
        Some(text) => {
            let kid = hex_decode(text.trim()).map_err(|e| CliError::usage(format!("--kid: {}", e.message())))?;
            if kid.is_empty() || kid.len() > MAX_KID {
                return Err(CliError::usage(format!(
                    "--kid must be 1 to {MAX_KID} bytes, not {}",
                    kid.len()
                )));
            }
            Some(kid)
        }
        None => None,
    };
    if args.out == Path::new("-") {
        return Err(CliError::usage(
            "--out: a private key is written to a file, never to stdout",
        ));
    }
    // Refuse before anything is written, so a failure leaves nothing behind.
    for (option, path) in [("--out", Some(&args.out)), ("--public-out", args.public_out.as_ref())] {
        if let Some(path) = path.filter(|p| p.symlink_metadata().is_ok()) {
            return Err(CliError::new(
                crate::Code::KeyIo.as_str(),
                format!("{option}: {} already exists; it is never overwritten", path.display()),
                EXIT_FAILURE,
            ));
        }
    }
    if args.public_out.as_ref() == Some(&args.out) {
        return Err(CliError::usage("--out and --public-out name the same file"));
    }

    let key = SigningKey::generate(args.alg.into())?;
    write_signing_key_file(&args.out, &key, kid.as_deref())?;

    let public = key.public_key();
    let public_cose = public.to_cose_key(kid.as_deref());
    if let Some(path) = &args.public_out {
        write_public_file(path, &public_cose).map_err(|e| {
            e.context(&format!(
                "the private key was written to {}, but the public key was not",
                args.out.display()
            ))
        })?;
    }

    let thumbprint = public.thumbprint();
    let output = if args.json {
        let path_json = |p: &Path| p.display().to_string();
        json!({
            "alg": public.algorithm().name(),
            "thumbprint": thumbprint.to_string(),
            "thumbprint_hex": hex_encode(thumbprint.as_bytes()),
            "kid": kid.as_deref().map(hex_encode),
            "public_key_hex": hex_encode(&public_cose),
            "public_key_b64url": b64url_encode(&public_cose),
            "out": path_json(&args.out),
            "public_out": args.public_out.as_deref().map(path_json),
        })
        .to_string()
    } else {
        let mut text = format!(
            "Wrote a new {} private key to {} (mode 0600).\n\
             thumbprint:                  {thumbprint}\n\
             thumbprint (hex):            {}\n",
            public.algorithm().name(),
            args.out.display(),
            hex_encode(thumbprint.as_bytes()),
        );
        if let Some(kid) = &kid {
            text.push_str(&format!("kid (hex):                   {}\n", hex_encode(kid)));
        }
        text.push_str(&format!(
            "public COSE_Key (hex):       {}\n\
             public COSE_Key (base64url): {}",
            hex_encode(&public_cose),
            b64url_encode(&public_cose),
        ));
        if let Some(path) = &args.public_out {
            text.push_str(&format!("\nWrote the public COSE_Key to {}.", path.display()));
        }
        text
    };
    print_stdout(&output)?;
    Ok(ExitCode::SUCCESS)
}

/// Writes the public COSE_Key to a new file (never overwriting one).
fn write_public_file(path: &Path, bytes: &[u8]) -> Result<(), CliError> {
    let fail = |what: &str, e: std::io::Error| {
        CliError::new(
            crate::Code::KeyIo.as_str(),
            format!("cannot {what} {}: {e}", path.display()),
            EXIT_FAILURE,
        )
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| fail("create", e))?;
    file.write_all(bytes).map_err(|e| fail("write", e))?;
    file.sync_all().map_err(|e| fail("sync", e))
}
