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

/// The error of opening the file `path` named on the command line: "file
/// not found" when there is none, the I/O error otherwise (exit status 2).
pub(crate) fn open_error(path: &Path, e: &std::io::Error) -> CliError {
    let message = if e.kind() == std::io::ErrorKind::NotFound {
        format!("file not found: {}", path.display())
    } else {
        format!("cannot open {}: {e}", path.display())
    };
    CliError::new(super::CODE_IO, message, EXIT_USAGE)
}

/// Opens the file `path` named on the command line.
fn open(path: &Path) -> Result<std::fs::File, CliError> {
    std::fs::File::open(path).map_err(|e| open_error(path, &e))
}

/// True when `arg` can be an encoded value given literally: hex or
/// base64url characters only (surrounding whitespace aside). Anything else
/// (a `.`, a `/`) can only be a file name.
fn could_be_literal(arg: &str) -> bool {
    let arg = arg.trim_ascii();
    !arg.is_empty() && arg.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Longest argument named in a "file not found" message: a file name, not
/// a token or key pasted in another encoding (every token is longer).
const MAX_NAMED: usize = 128;

/// Reads an argument that is a file or the encoded value itself: the file
/// when one exists, else the argument when it can be a literal (hex or
/// base64url characters only), else "file not found" (`token.b64` is a
/// missing file, not a token to decode). The message names the file unless
/// `secret` (the argument may be key material) or it is too long to be a
/// file name. At most `cap` bytes; decoding is the caller's.
pub(crate) fn file_or_literal(arg: &str, cap: usize, option: &str, secret: bool) -> Result<Vec<u8>, CliError> {
    let path = Path::new(arg);
    if path.is_file() {
        return read_capped(open(path)?, cap, &path.display().to_string()).map_err(|e| e.context(option));
    }
    if could_be_literal(arg) {
        return Ok(arg.as_bytes().to_vec());
    }
    let message = if secret || arg.len() > MAX_NAMED || arg.chars().any(char::is_control) {
        format!(
            "file not found, and the argument is not hex or base64url either ({} characters)",
            arg.chars().count()
        )
    } else {
        format!("file not found: {arg}")
    };
    Err(CliError::new(super::CODE_IO, message, EXIT_USAGE).context(option))
}

/// Reads the raw input: the file `path`, or stdin when `path` is `None` or `-`.
pub(crate) fn read_input(path: Option<&Path>) -> Result<Vec<u8>, CliError> {
    match path {
        Some(p) if p != Path::new("-") => read_capped(open(p)?, MAX_INPUT, &p.display().to_string()),
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
    let raw = Zeroizing::new(file_or_literal(arg, MAX_KEY_FILE, option, true)?);
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

/// The value parser of URL arguments: an absolute `http://` or `https://`
/// URL with a host. `127.0.0.1:8080/v2` has no scheme and `localhost:8080`
/// parses as the scheme `localhost:`; both are usage errors that say what
/// to type instead, rather than a proof signed for a URL that cannot be.
pub(crate) fn http_url(arg: &str) -> Result<String, String> {
    let hint = || format!("write it with its scheme, e.g. http://{arg}");
    match reqwest::Url::parse(arg) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host_str().is_some_and(|h| !h.is_empty()) => {
            Ok(arg.to_owned())
        }
        Ok(url) if matches!(url.scheme(), "http" | "https") => Err("the URL has no host".to_owned()),
        Ok(url) if url.cannot_be_a_base() || url.host_str().is_none() => {
            Err(format!("not an http:// or https:// URL: {}", hint()))
        }
        Ok(url) => Err(format!("the scheme {}: is not http or https", url.scheme())),
        Err(_) if !arg.contains("://") => Err(format!("not an http:// or https:// URL: {}", hint())),
        Err(e) => Err(format!("not a URL: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_need_a_scheme() {
        for good in [
            "http://127.0.0.1:8080",
            "https://nova.example/v2/servers?limit=1",
            "http://[::1]:80/",
        ] {
            assert_eq!(http_url(good).as_deref(), Ok(good));
        }
        for bad in [
            "127.0.0.1:8080/v2",
            "localhost:8080",
            "nova.example/v2",
            "",
            "ftp://x.example",
            "http://",
        ] {
            assert!(http_url(bad).is_err(), "{bad}");
        }
        assert!(
            http_url("localhost:8080")
                .unwrap_err()
                .contains("http://localhost:8080")
        );
    }

    #[test]
    fn names_that_cannot_be_literals_are_missing_files() {
        let e = file_or_literal("no-such-dir/token.b64", 100, "--token", false).unwrap_err();
        assert_eq!(e.code(), "cli.io");
        assert_eq!(e.message(), "--token: file not found: no-such-dir/token.b64");
        let e = file_or_literal("a+b/c==", 100, "--key", true).unwrap_err();
        assert!(!e.message().contains("a+b"), "{}", e.message());
        assert_eq!(file_or_literal("hEOhASeg", 100, "--token", false).unwrap(), b"hEOhASeg");
    }
}
