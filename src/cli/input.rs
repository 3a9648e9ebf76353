//! Reading what the user hands in: files or stdin, size-capped, in raw
//! binary, hex or base64url; and public keys given as a file or a literal.

use std::io::{IsTerminal, Read};
use std::path::Path;

use zeroize::Zeroizing;

use super::{CliError, EXIT_USAGE};
use crate::encoding::decode_flexible;
use crate::key::{PublicKey, SigningKey};
use crate::{Code, Error};

/// Largest input (a token or proof in any encoding) read from a file or stdin.
pub(crate) const MAX_INPUT: usize = 64 * 1024;
/// Largest key file read by `--key` options.
pub(crate) const MAX_KEY_FILE: usize = 4096;

/// How the input was encoded on the way in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Encoding {
    Binary,
    Hex,
    Base64url,
}

impl Encoding {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Encoding::Binary => "binary",
            Encoding::Hex => "hex",
            Encoding::Base64url => "base64url",
        }
    }
}

/// Reads at most `cap` bytes from `reader`; more is an error.
fn read_capped(mut reader: impl Read, cap: usize, what: &str) -> Result<Vec<u8>, CliError> {
    let mut buf = Vec::new();
    reader
        .by_ref()
        .take(cap as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|e| CliError::new(super::CODE_IO, format!("cannot read {what}: {e}"), EXIT_USAGE))?;
    if buf.len() > cap {
        return Err(CliError::with_exit(
            Error::new(Code::CborTooLarge, format!("{what} is larger than {cap} bytes")),
            EXIT_USAGE,
        ));
    }
    Ok(buf)
}

/// Reads the raw input: the file `path`, or stdin when `path` is `None` or `-`.
pub(crate) fn read_input(path: Option<&Path>) -> Result<Vec<u8>, CliError> {
    match path {
        Some(p) if p != Path::new("-") => {
            let file = std::fs::File::open(p)
                .map_err(|e| CliError::new(super::CODE_IO, format!("cannot open {}: {e}", p.display()), EXIT_USAGE))?;
            read_capped(file, MAX_INPUT, &p.display().to_string())
        }
        _ => {
            let stdin = std::io::stdin();
            if stdin.is_terminal() {
                return Err(CliError::usage("no input: give a file, or pipe the token into stdin"));
            }
            read_capped(stdin.lock(), MAX_INPUT, "stdin")
        }
    }
}

/// Decodes raw binary, hex or base64url input and says which one it was.
pub(crate) fn decode_input(raw: &[u8]) -> Result<(Vec<u8>, Encoding), Error> {
    if raw.trim_ascii().is_empty() {
        return Err(Error::new(Code::InputMalformed, "the input is empty"));
    }
    let bytes = decode_flexible(raw)?;
    let encoding = if bytes == raw {
        Encoding::Binary
    } else if raw.trim_ascii().iter().all(u8::is_ascii_hexdigit) {
        Encoding::Hex
    } else {
        Encoding::Base64url
    };
    Ok((bytes, encoding))
}

/// Reads a public key given as a path to a file, or literally; either way as
/// a COSE_Key in raw CBOR, hex or base64url. A private COSE_Key (a key file)
/// is accepted too: only its public half is used.
pub(crate) fn public_key_arg(arg: &str, option: &str) -> Result<PublicKey, CliError> {
    let path = Path::new(arg);
    let raw = if path.is_file() {
        let file = std::fs::File::open(path).map_err(|e| {
            CliError::new(
                crate::Code::KeyIo.as_str(),
                format!("{option}: cannot open {}: {e}", path.display()),
                EXIT_USAGE,
            )
        })?;
        Zeroizing::new(read_capped(file, MAX_KEY_FILE, &path.display().to_string()).map_err(|e| e.context(option))?)
    } else {
        Zeroizing::new(arg.as_bytes().to_vec())
    };
    let bytes = Zeroizing::new(decode_flexible(&raw).map_err(|e| {
        let e = CliError::with_exit(e, EXIT_USAGE);
        if path.is_file() {
            e.context(option)
        } else {
            // Never echo the argument: it might be key material.
            e.context(&format!(
                "{option} is neither an existing file nor a hex/base64url COSE_Key"
            ))
        }
    })?);
    match PublicKey::from_cose_key(&bytes) {
        Ok(key) => Ok(key),
        Err(e) if e.code() == Code::KeyWrongKind => SigningKey::from_cose_key(&bytes)
            .map(|private| private.public_key().clone())
            .map_err(|e| CliError::with_exit(e, EXIT_USAGE).context(option)),
        Err(e) => Err(CliError::with_exit(e, EXIT_USAGE).context(option)),
    }
}
