//! The strict CBOR profile (spec/cbor.md).
//!
//! Everything keybound reads goes through [`validate`] first: one pass over
//! the raw bytes that refuses anything outside the profile before any value is
//! interpreted. Then [`Reader`] walks the same bytes without copying.
//!
//! The profile is RFC 8949 §4.2.1 core deterministic encoding, narrowed:
//!
//! | rule | code |
//! |---|---|
//! | well-formed, exactly one item, nothing after it | `cbor.malformed`, `cbor.trailing_data` |
//! | shortest-form heads, definite lengths only, map keys in bytewise order | `cbor.not_deterministic` |
//! | no key twice in a map | `cbor.duplicate_key` |
//! | map keys are integers or text strings | `cbor.key_type` |
//! | no tags (the callers strip the COSE/CWT tags they accept) | `cbor.unexpected_tag` |
//! | no floats, no `undefined`, no simple values but true/false/null | `cbor.unsupported_type` |
//! | text is UTF-8 | `cbor.invalid_utf8` |
//! | nesting ≤ [`MAX_DEPTH`], strings ≤ [`MAX_STRING`] bytes, containers ≤ [`MAX_ENTRIES`] | `cbor.too_deep`, `cbor.too_large` |
//!
//! Why not decode with ciborium directly: ciborium reads `18 01` as `1` and
//! keeps the last of two duplicate keys, so it cannot tell a profile violation
//! from a valid item, and building its `Value` tree costs about 2 µs per token.
//! Everything keybound *writes* goes through the writer at the end of this
//! module (`write_*`), which emits deterministic encoding by construction:
//! shortest heads, definite lengths, map keys written in bytewise order by
//! the callers. ciborium and coset are independent oracles only: the tests
//! and the round-trip fuzz targets check that they read and re-encode what
//! keybound writes to the same bytes.

use crate::error::{Code, Result, err};

/// Deepest nesting of arrays and maps allowed. A COSE_Key inside `cnf` inside
/// the claims is at depth 3; actor chains add two levels.
pub const MAX_DEPTH: usize = 16;
/// Longest byte or text string allowed, in bytes (URIs up to 2 KiB).
pub const MAX_STRING: usize = 2048;
/// Most entries in one array or map.
pub const MAX_ENTRIES: usize = 64;

const MAJOR_UINT: u8 = 0;
const MAJOR_NINT: u8 = 1;
const MAJOR_BYTES: u8 = 2;
const MAJOR_TEXT: u8 = 3;
const MAJOR_ARRAY: u8 = 4;
const MAJOR_MAP: u8 = 5;
const MAJOR_TAG: u8 = 6;
const MAJOR_SIMPLE: u8 = 7;

/// A decoded item head: major type and argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Head {
    major: u8,
    arg: u64,
}

/// Reads one head at `pos`, enforcing shortest form and refusing indefinite
/// lengths and reserved values. Returns the head and the position after it.
fn read_head(buf: &[u8], pos: usize) -> Result<(Head, usize)> {
    let Some(&initial) = buf.get(pos) else {
        return err(
            Code::CborMalformed,
            format!("input ends at offset {pos} where an item was expected"),
        );
    };
    let major = initial >> 5;
    let ai = initial & 0x1f;
    let (arg, len) = match ai {
        0..=23 => (u64::from(ai), 0usize),
        24 => (take(buf, pos + 1, 1)?, 1),
        25 => (take(buf, pos + 1, 2)?, 2),
        26 => (take(buf, pos + 1, 4)?, 4),
        27 => (take(buf, pos + 1, 8)?, 8),
        28..=30 => {
            return err(
                Code::CborMalformed,
                format!("reserved additional information {ai} at offset {pos}"),
            );
        }
        _ => {
            return match major {
                MAJOR_BYTES | MAJOR_TEXT | MAJOR_ARRAY | MAJOR_MAP => err(
                    Code::CborNotDeterministic,
                    format!("indefinite-length item at offset {pos}; the profile allows definite lengths only"),
                ),
                MAJOR_SIMPLE => err(
                    Code::CborMalformed,
                    format!("break code outside an indefinite-length item at offset {pos}"),
                ),
                _ => err(
                    Code::CborMalformed,
                    format!("additional information 31 on major type {major} at offset {pos}"),
                ),
            };
        }
    };
    if major == MAJOR_SIMPLE {
        // Floats (ai 25–27) are refused by the caller; a one-byte simple value
        // below 32 is not well-formed (RFC 8949 §3.3).
        if ai == 24 && arg < 32 {
            return err(
                Code::CborMalformed,
                format!("reserved two-byte simple value {arg} at offset {pos}"),
            );
        }
    } else {
        let minimal = match len {
            0 => true,
            1 => arg >= 24,
            2 => arg > 0xff,
            4 => arg > 0xffff,
            _ => arg > 0xffff_ffff,
        };
        if !minimal {
            return err(
                Code::CborNotDeterministic,
                format!("argument {arg} at offset {pos} is not in its shortest form"),
            );
        }
    }
    Ok((Head { major, arg }, pos + 1 + len))
}

fn take(buf: &[u8], pos: usize, n: usize) -> Result<u64> {
    let Some(bytes) = buf.get(pos..pos + n) else {
        return err(
            Code::CborMalformed,
            format!("input ends inside an item head at offset {pos}"),
        );
    };
    Ok(bytes.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
}

/// Checks that `input` is exactly one item of the strict profile, with no tags.
pub fn validate(input: &[u8]) -> Result<()> {
    let end = validate_item(input, 0, 0)?;
    if end != input.len() {
        return err(
            Code::CborTrailingData,
            format!("{} bytes follow the item that ends at offset {end}", input.len() - end),
        );
    }
    Ok(())
}

/// Validates one item at `pos` nested inside `depth` containers; returns its end.
fn validate_item(buf: &[u8], pos: usize, depth: usize) -> Result<usize> {
    let (head, mut next) = read_head(buf, pos)?;
    match head.major {
        MAJOR_UINT | MAJOR_NINT => Ok(next),
        MAJOR_BYTES | MAJOR_TEXT => {
            let len = string_len(buf, next, head.arg, pos)?;
            if head.major == MAJOR_TEXT && std::str::from_utf8(&buf[next..next + len]).is_err() {
                return err(
                    Code::CborInvalidUtf8,
                    format!("text string at offset {pos} is not valid UTF-8"),
                );
            }
            Ok(next + len)
        }
        MAJOR_ARRAY | MAJOR_MAP => {
            if depth + 1 > MAX_DEPTH {
                return err(
                    Code::CborTooDeep,
                    format!("nesting at offset {pos} exceeds the limit of {MAX_DEPTH}"),
                );
            }
            let count = container_len(buf, next, head, pos)?;
            if head.major == MAJOR_ARRAY {
                for _ in 0..count {
                    next = validate_item(buf, next, depth + 1)?;
                }
                return Ok(next);
            }
            let map_start = next;
            let mut previous_key: Option<&[u8]> = None;
            for _ in 0..count {
                let key_start = next;
                let (key_head, _) = read_head(buf, key_start)?;
                if !matches!(key_head.major, MAJOR_UINT | MAJOR_NINT | MAJOR_TEXT) {
                    return err(
                        Code::CborKeyType,
                        format!("map key at offset {key_start} is not an integer or text string"),
                    );
                }
                let key_end = validate_item(buf, key_start, depth + 1)?;
                let key = &buf[key_start..key_end];
                if let Some(prev) = previous_key
                    && key <= prev
                {
                    return Err(misordered_key(buf, map_start, key_start, key));
                }
                previous_key = Some(key);
                next = validate_item(buf, key_end, depth + 1)?;
            }
            Ok(next)
        }
        MAJOR_TAG => err(
            Code::CborUnexpectedTag,
            format!("tag {} at offset {pos}; the profile allows no tags here", head.arg),
        ),
        _ => match buf[pos] & 0x1f {
            20..=22 => Ok(next),
            25..=27 => err(
                Code::CborUnsupportedType,
                format!("floating-point value at offset {pos}"),
            ),
            _ => err(
                Code::CborUnsupportedType,
                format!("simple value {} at offset {pos}", head.arg),
            ),
        },
    }
}

/// Classifies an out-of-order map key: a duplicate of any earlier key, or
/// merely unsorted. Only runs on the error path.
fn misordered_key(buf: &[u8], map_start: usize, key_start: usize, key: &[u8]) -> crate::error::Error {
    let mut pos = map_start;
    while pos < key_start {
        // Keys and values before `key_start` were validated already.
        let key_end = match skip(buf, pos) {
            Ok(end) => end,
            Err(e) => return e,
        };
        if &buf[pos..key_end] == key {
            return crate::error::Error::new(
                Code::CborDuplicateKey,
                format!("map key at offset {key_start} repeats the key at offset {pos}"),
            );
        }
        pos = match skip(buf, key_end) {
            Ok(end) => end,
            Err(e) => return e,
        };
    }
    crate::error::Error::new(
        Code::CborNotDeterministic,
        format!("map key at offset {key_start} is out of deterministic (bytewise) order"),
    )
}

fn string_len(buf: &[u8], start: usize, declared: u64, pos: usize) -> Result<usize> {
    let remaining = buf.len() - start;
    if declared > remaining as u64 {
        return err(
            Code::CborMalformed,
            format!("string at offset {pos} declares {declared} bytes but only {remaining} remain"),
        );
    }
    if declared > MAX_STRING as u64 {
        return err(
            Code::CborTooLarge,
            format!("string at offset {pos} has {declared} bytes; the limit is {MAX_STRING}"),
        );
    }
    Ok(declared as usize)
}

fn container_len(buf: &[u8], start: usize, head: Head, pos: usize) -> Result<u64> {
    let per_entry = if head.major == MAJOR_MAP { 2 } else { 1 };
    let remaining = (buf.len() - start) as u64;
    // Every item takes at least one byte: a count beyond that is a lie, and
    // is refused before anything is allocated or iterated.
    if head.arg > remaining / per_entry {
        return err(
            Code::CborMalformed,
            format!(
                "container at offset {pos} declares {} entries but only {remaining} bytes remain",
                head.arg
            ),
        );
    }
    if head.arg > MAX_ENTRIES as u64 {
        return err(
            Code::CborTooLarge,
            format!(
                "container at offset {pos} has {} entries; the limit is {MAX_ENTRIES}",
                head.arg
            ),
        );
    }
    Ok(head.arg)
}

/// Skips one already-validated item, returning its end.
fn skip(buf: &[u8], pos: usize) -> Result<usize> {
    let (head, mut next) = read_head(buf, pos)?;
    match head.major {
        MAJOR_BYTES | MAJOR_TEXT => Ok(next + string_len(buf, next, head.arg, pos)?),
        MAJOR_ARRAY | MAJOR_MAP => {
            let count = container_len(buf, next, head, pos)?;
            let items = if head.major == MAJOR_MAP { count * 2 } else { count };
            for _ in 0..items {
                next = skip(buf, next)?;
            }
            Ok(next)
        }
        MAJOR_TAG => skip(buf, next),
        _ => Ok(next),
    }
}

/// Removes up to `max` leading tags, returning them outermost first and the
/// remaining bytes. Only the tag heads are examined.
pub fn strip_tags(input: &[u8], max: usize) -> Result<(Vec<u64>, &[u8])> {
    let mut tags = Vec::new();
    let mut rest = input;
    while rest.first().is_some_and(|b| b >> 5 == MAJOR_TAG) {
        if tags.len() == max {
            break;
        }
        let (head, next) = read_head(rest, 0)?;
        tags.push(head.arg);
        rest = &rest[next..];
    }
    Ok((tags, rest))
}

/// A map key: an integer or a text string.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Label<'a> {
    /// Integer label.
    Int(i64),
    /// Text label.
    Text(&'a str),
}

impl std::fmt::Display for Label<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Label::Int(i) => write!(f, "{i}"),
            Label::Text(t) => write!(f, "{t:?}"),
        }
    }
}

/// A zero-copy reader over bytes that passed [`validate`].
///
/// Each typed read returns `None` without consuming anything when the next
/// item has another type, so the caller can report the error in its own terms
/// (`cwt.claim_type`, `cose.header_type`, …).
#[derive(Clone, Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Starts reading at the beginning of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Current offset.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// True when every byte has been read.
    pub fn is_at_end(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn peek(&self) -> Option<(Head, usize)> {
        read_head(self.buf, self.pos).ok()
    }

    fn read_if(&mut self, major: u8) -> Option<u64> {
        let (head, next) = self.peek()?;
        if head.major != major {
            return None;
        }
        self.pos = next;
        Some(head.arg)
    }

    /// An unsigned integer.
    pub fn uint(&mut self) -> Option<u64> {
        self.read_if(MAJOR_UINT)
    }

    /// A signed integer in the i64 range.
    pub fn int(&mut self) -> Option<i64> {
        let (head, next) = self.peek()?;
        let value = match head.major {
            MAJOR_UINT => i64::try_from(head.arg).ok()?,
            MAJOR_NINT => -1 - i64::try_from(head.arg).ok()?,
            _ => return None,
        };
        self.pos = next;
        Some(value)
    }

    /// A byte string.
    pub fn bytes(&mut self) -> Option<&'a [u8]> {
        let (head, next) = self.peek()?;
        if head.major != MAJOR_BYTES {
            return None;
        }
        let bytes = self.buf.get(next..next.checked_add(usize::try_from(head.arg).ok()?)?)?;
        self.pos = next + bytes.len();
        Some(bytes)
    }

    /// A text string.
    pub fn text(&mut self) -> Option<&'a str> {
        let (head, next) = self.peek()?;
        if head.major != MAJOR_TEXT {
            return None;
        }
        let bytes = self.buf.get(next..next.checked_add(usize::try_from(head.arg).ok()?)?)?;
        let text = std::str::from_utf8(bytes).ok()?;
        self.pos = next + bytes.len();
        Some(text)
    }

    /// An array head; returns the number of items.
    pub fn array(&mut self) -> Option<usize> {
        self.read_if(MAJOR_ARRAY).map(|n| n as usize)
    }

    /// A map head; returns the number of entries.
    pub fn map(&mut self) -> Option<usize> {
        self.read_if(MAJOR_MAP).map(|n| n as usize)
    }

    /// `true` or `false`.
    pub fn bool(&mut self) -> Option<bool> {
        match self.buf.get(self.pos) {
            Some(0xf4) => {
                self.pos += 1;
                Some(false)
            }
            Some(0xf5) => {
                self.pos += 1;
                Some(true)
            }
            _ => None,
        }
    }

    /// `null`.
    pub fn null(&mut self) -> Option<()> {
        (self.buf.get(self.pos) == Some(&0xf6)).then(|| self.pos += 1)
    }

    /// A map key.
    pub fn label(&mut self) -> Option<Label<'a>> {
        if let Some(i) = self.int() {
            return Some(Label::Int(i));
        }
        self.text().map(Label::Text)
    }

    /// Skips one item of any type and returns its raw bytes.
    pub fn raw_item(&mut self) -> Option<&'a [u8]> {
        let start = self.pos;
        let end = skip(self.buf, start).ok()?;
        self.pos = end;
        Some(&self.buf[start..end])
    }

    /// A short description of the next item's type, for error messages.
    pub fn describe_next(&self) -> &'static str {
        match self.peek().map(|(h, _)| h.major) {
            Some(MAJOR_UINT) => "an unsigned integer",
            Some(MAJOR_NINT) => "a negative integer",
            Some(MAJOR_BYTES) => "a byte string",
            Some(MAJOR_TEXT) => "a text string",
            Some(MAJOR_ARRAY) => "an array",
            Some(MAJOR_MAP) => "a map",
            Some(MAJOR_TAG) => "a tagged item",
            Some(_) => "a simple value",
            None => "nothing",
        }
    }
}

// ---- Writing: the one CBOR writer of everything keybound emits ----

/// Appends a shortest-form head.
pub fn write_head(out: &mut Vec<u8>, major: u8, arg: u64) {
    let m = major << 5;
    if arg < 24 {
        out.push(m | arg as u8);
    } else if arg <= 0xff {
        out.extend_from_slice(&[m | 24, arg as u8]);
    } else if arg <= 0xffff {
        out.push(m | 25);
        out.extend_from_slice(&(arg as u16).to_be_bytes());
    } else if arg <= 0xffff_ffff {
        out.push(m | 26);
        out.extend_from_slice(&(arg as u32).to_be_bytes());
    } else {
        out.push(m | 27);
        out.extend_from_slice(&arg.to_be_bytes());
    }
}

/// Appends a byte string.
pub fn write_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    write_head(out, MAJOR_BYTES, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// Appends a text string.
pub fn write_text(out: &mut Vec<u8>, text: &str) {
    write_head(out, MAJOR_TEXT, text.len() as u64);
    out.extend_from_slice(text.as_bytes());
}

/// Appends an array head.
pub fn write_array(out: &mut Vec<u8>, len: usize) {
    write_head(out, MAJOR_ARRAY, len as u64);
}

/// Appends an integer: major type 0 for `value >= 0`, else 1.
pub fn write_int(out: &mut Vec<u8>, value: i64) {
    if value >= 0 {
        write_head(out, MAJOR_UINT, value as u64);
    } else {
        // -1 - value, without overflow for i64::MIN.
        write_head(out, MAJOR_NINT, !(value as u64));
    }
}

/// Appends an unsigned integer.
pub fn write_uint(out: &mut Vec<u8>, value: u64) {
    write_head(out, MAJOR_UINT, value);
}

/// Appends a map head; the caller then writes `len` key/value pairs, keys
/// in bytewise order of their encoding.
pub fn write_map(out: &mut Vec<u8>, len: usize) {
    write_head(out, MAJOR_MAP, len as u64);
}

/// Encodes a ciborium value with ciborium: an independent encoder, for the
/// test-vector generator's deliberately malformed inputs and as an oracle.
#[cfg(any(test, feature = "testkit"))]
pub fn to_vec(value: &ciborium::Value) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing to a Vec cannot fail for the value types this crate builds.
    ciborium::into_writer(value, &mut out).expect("CBOR encoding into a Vec is infallible");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(hex: &str) -> Option<&'static str> {
        let bytes = crate::encoding::hex_decode(hex).unwrap();
        validate(&bytes).err().map(|e| e.code().as_str())
    }

    #[test]
    fn accepts_profile_items() {
        for hex in [
            "00",
            "17",
            "1818",
            "190100",
            "20",
            "3818",
            "40",
            "6161",
            "80",
            "a0",
            "a201020300",
            "a2016161616202",
            "f4",
            "f5",
            "f6",
            "a201202100",
        ] {
            assert_eq!(code(hex), None, "{hex}");
        }
    }

    #[test]
    fn refuses_appendix_f_and_profile_violations() {
        let cases = [
            ("18", "cbor.malformed"),
            ("1901", "cbor.malformed"),
            ("5affffffff00", "cbor.malformed"),
            ("9affffffff", "cbor.malformed"),
            ("1c", "cbor.malformed"),
            ("ff", "cbor.malformed"),
            ("f800", "cbor.malformed"),
            ("1f", "cbor.malformed"),
            ("0000", "cbor.trailing_data"),
            ("1801", "cbor.not_deterministic"),
            ("190004", "cbor.not_deterministic"),
            ("9f00ff", "cbor.not_deterministic"),
            ("5f4100ff", "cbor.not_deterministic"),
            ("a202000100", "cbor.not_deterministic"),
            ("a201000100", "cbor.duplicate_key"),
            ("a3010002000100", "cbor.duplicate_key"),
            ("a1f90000", "cbor.key_type"),
            ("a14000", "cbor.key_type"),
            ("c11a00000000", "cbor.unexpected_tag"),
            ("f97e00", "cbor.unsupported_type"),
            ("f7", "cbor.unsupported_type"),
            ("62c328", "cbor.invalid_utf8"),
        ];
        for (hex, expected) in cases {
            assert_eq!(code(hex), Some(expected), "{hex}");
        }
    }

    #[test]
    fn depth_limit_is_exact() {
        let ok = "81".repeat(MAX_DEPTH) + "00";
        let too_deep = "81".repeat(MAX_DEPTH + 1) + "00";
        assert_eq!(code(&ok), None);
        assert_eq!(code(&too_deep), Some("cbor.too_deep"));
        // A nesting bomb is refused at the limit, not by exhausting the stack.
        assert_eq!(code(&("81".repeat(100_000) + "00")), Some("cbor.too_deep"));
    }

    #[test]
    fn size_limits() {
        let mut long = Vec::new();
        write_bytes(&mut long, &vec![0u8; MAX_STRING + 1]);
        assert_eq!(validate(&long).unwrap_err().code(), Code::CborTooLarge);
        let mut many = Vec::new();
        write_array(&mut many, MAX_ENTRIES + 1);
        many.extend(std::iter::repeat_n(0u8, MAX_ENTRIES + 1));
        assert_eq!(validate(&many).unwrap_err().code(), Code::CborTooLarge);
    }

    #[test]
    fn writer_emits_shortest_form() {
        for value in [
            0u64,
            23,
            24,
            255,
            256,
            65535,
            65536,
            u32::MAX as u64,
            u32::MAX as u64 + 1,
            u64::MAX,
        ] {
            let mut out = Vec::new();
            write_head(&mut out, 0, value);
            let reference = to_vec(&ciborium::Value::Integer(value.into()));
            assert_eq!(out, reference, "{value}");
            assert_eq!(validate(&out), Ok(()));
        }
    }

    #[test]
    fn writer_agrees_with_ciborium() {
        for value in [0i64, 1, 23, 24, -1, -24, -25, -256, -257, -65537, i64::MIN, i64::MAX] {
            let mut out = Vec::new();
            write_int(&mut out, value);
            assert_eq!(out, to_vec(&ciborium::Value::Integer(value.into())), "{value}");
        }
        let mut out = Vec::new();
        write_map(&mut out, 2);
        write_int(&mut out, 1);
        write_text(&mut out, "a");
        write_int(&mut out, -1);
        write_array(&mut out, 1);
        write_bytes(&mut out, b"b");
        let reference = ciborium::Value::Map(vec![
            (ciborium::Value::Integer(1.into()), ciborium::Value::Text("a".into())),
            (
                ciborium::Value::Integer((-1).into()),
                ciborium::Value::Array(vec![ciborium::Value::Bytes(b"b".to_vec())]),
            ),
        ]);
        assert_eq!(out, to_vec(&reference));
        assert_eq!(validate(&out), Ok(()));
    }
}
