//! Transport encodings: hex and base64url (RFC 4648 §5, no padding), and the
//! detection the CLI uses for "binary, hex or base64url" input.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::error::{Code, Error, Result, err};

/// Lower-case hex.
pub fn hex_encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

/// Decodes hex (either case, no separators).
pub fn hex_decode(text: &str) -> Result<Vec<u8>> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return err(Code::InputMalformed, "hex input has an odd number of digits");
    }
    bytes
        .chunks_exact(2)
        .map(|pair| match (nibble(pair[0]), nibble(pair[1])) {
            (Some(h), Some(l)) => Ok(h << 4 | l),
            _ => err(Code::InputMalformed, "hex input contains a non-hex character"),
        })
        .collect()
}

/// base64url without padding: the only transport encoding of tokens and
/// proofs in HTTP headers (spec/http.md).
pub fn b64url_encode(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes base64url without padding. Padding, whitespace and the standard
/// alphabet's `+` and `/` are refused: one canonical form only.
pub fn b64url_decode(text: &str) -> Result<Vec<u8>> {
    URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|e| Error::new(Code::InputMalformed, format!("not unpadded base64url: {e}")))
}

/// Interprets `input` as raw CBOR, hex or base64url, in that order of
/// preference: bytes that are not printable ASCII are raw; printable input is
/// hex if it is all hex digits, base64url otherwise. Surrounding ASCII
/// whitespace of text input is ignored.
pub fn decode_flexible(input: &[u8]) -> Result<Vec<u8>> {
    let printable = !input.is_empty() && input.iter().all(|b| b.is_ascii_graphic() || b.is_ascii_whitespace());
    if !printable {
        return Ok(input.to_vec());
    }
    let text = std::str::from_utf8(input)
        .map_err(|_| Error::new(Code::InputMalformed, "input is not UTF-8"))?
        .trim();
    if text.is_empty() {
        return err(Code::InputMalformed, "input is empty");
    }
    if text.len().is_multiple_of(2) && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return hex_decode(text);
    }
    b64url_decode(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let data = [0u8, 1, 0xfe, 0xff, 0x3f];
        assert_eq!(hex_decode(&hex_encode(&data)).unwrap(), data);
        assert_eq!(b64url_decode(&b64url_encode(&data)).unwrap(), data);
        assert_eq!(decode_flexible(hex_encode(&data).as_bytes()).unwrap(), data);
        assert_eq!(decode_flexible(b64url_encode(&data).as_bytes()).unwrap(), data);
        assert_eq!(decode_flexible(&data).unwrap(), data);
    }

    #[test]
    fn refuses_non_canonical_base64() {
        assert!(b64url_decode("AAE=").is_err());
        assert!(b64url_decode("A+/").is_err());
        assert!(b64url_decode("AA E").is_err());
    }
}
