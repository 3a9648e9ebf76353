//! `keybound inspect`: shows what is inside a token or proof.
//!
//! Two decoders look at the same bytes. A lenient one (ciborium) shows any
//! COSE_Sign1 CWT, foreign ones included; the strict keybound profile check
//! ([`crate::danger::insecure_decode_token`]) says whether keybound would
//! even parse it. Nothing here is a verification: no issuer, audience or time
//! is checked, and only with `--key` is the signature.

use std::path::PathBuf;
use std::process::ExitCode;

use ciborium::Value;
use serde_json::{Map, Value as Json};

use super::input::{self, Encoding};
use super::render::{self, error_json, insert_unique, int};
use super::{CliError, EXIT_FAILURE, EXIT_USAGE, print_stdout};
use crate::danger::{check_token_signature, insecure_decode_token};
use crate::encoding::hex_encode;
use crate::key::{Algorithm, PublicKey};
use crate::token::LABEL_KEYBOUND;
use crate::{Code, Error};

pub(crate) const ABOUT: &str = "Decode a token or proof (COSE_Sign1 CWT) and print it as JSON";

pub(crate) const LONG_ABOUT: &str = "\
Decode a token or proof (COSE_Sign1 CWT) and print it as JSON.

INPUT is a file, or stdin when omitted or `-`, holding the token in raw binary, hex or base64url \
(at most 64 KiB). Tagged (61, 18, 61(18(…))) and untagged COSE_Sign1 are accepted, foreign CWTs too.

The output is one JSON object: type (token or proof), tags, protected and unprotected headers by name, \
claims by name (byte strings as hex; keybound's private claims under \"keybound\"; unknown labels as \
strings; tags as {\"tag\": n, \"value\": …}), the signature (hex), profile (\"ok\" when keybound's strict \
profile accepts the token, otherwise the error code and message) and signature_check.

With --key the token's signature is checked with that public key (a COSE_Key file or literal, in CBOR, \
hex or base64url; a private key file works too): signature_check is then \"valid\" or \"invalid\", \
otherwise \"unchecked\". Proofs sign over the token and the request body, so they are checked by \
`keybound verify`, not here. Nothing else (issuer, audience, expiry) is verified.

Exit status: 0 decoded (signature valid or unchecked), 1 signature invalid, 2 not a decodable COSE_Sign1 \
(then stdout holds {\"error\": code, \"message\": …} and stderr one error line).";

pub(crate) const EXAMPLES: &str = "\
Examples:
  keybound inspect token.b64
  echo \"$TOKEN\" | keybound inspect
  keybound inspect --key issuer.pub token.cbor
  keybound inspect --compact - < token.hex";

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The token or proof: a file in binary, hex or base64url; stdin when omitted or `-`.
    #[arg(value_name = "INPUT")]
    input: Option<PathBuf>,

    /// Check the token signature with this public COSE_Key (file or literal; CBOR, hex or base64url).
    #[arg(long, value_name = "KEY")]
    key: Option<String>,

    /// Print JSON (the default and only format; accepted for symmetry with other commands).
    #[arg(long)]
    json: bool,

    /// Print the JSON on one line instead of indented.
    #[arg(long)]
    compact: bool,
}

pub(crate) fn run(args: Args) -> Result<ExitCode, CliError> {
    // JSON is the only output; `--json` just says so.
    let _ = args.json;
    let key = args
        .key
        .as_deref()
        .map(|k| input::public_key_arg(k, "--key"))
        .transpose()?;
    let report = match inspect(args.input.as_deref(), key.as_ref()) {
        Ok(report) => report,
        Err(e) => {
            // Undecodable input: say so on stdout too, for scripts reading JSON.
            print_stdout(&error_json(e.code(), e.message()).to_string())?;
            return Err(e);
        }
    };
    let text = if args.compact {
        report.json.to_string()
    } else {
        serde_json::to_string_pretty(&report.json)
            .map_err(|e| CliError::new(super::CODE_INTERNAL, e.to_string(), EXIT_FAILURE))?
    };
    print_stdout(&text)?;
    Ok(if report.signature == Check::Invalid {
        ExitCode::from(EXIT_FAILURE)
    } else {
        ExitCode::SUCCESS
    })
}

/// The result of a signature check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Check {
    Valid,
    Invalid,
    Unchecked,
}

impl Check {
    fn as_str(self) -> &'static str {
        match self {
            Check::Valid => "valid",
            Check::Invalid => "invalid",
            Check::Unchecked => "unchecked",
        }
    }
}

struct Report {
    json: Json,
    signature: Check,
}

/// A COSE_Sign1 as decoded leniently.
struct Sign1View {
    tags: Vec<u64>,
    protected_bytes: Vec<u8>,
    protected: Result<Value, Error>,
    unprotected: Value,
    /// `None` for a detached payload (nil).
    payload: Option<Vec<u8>>,
    signature: Value,
}

fn inspect(path: Option<&std::path::Path>, key: Option<&PublicKey>) -> Result<Report, CliError> {
    let raw = input::read_input(path)?;
    let (bytes, encoding) = input::decode_input(&raw).map_err(|e| CliError::with_exit(e, EXIT_USAGE))?;
    drop(raw);
    let mut notes: Vec<String> = Vec::new();
    let view = parse_lenient(&bytes, &mut notes).map_err(|e| CliError::with_exit(e, EXIT_USAGE))?;

    let mut out = Map::new();
    let mut input = Map::new();
    input.insert("encoding".into(), Encoding::as_str(encoding).into());
    input.insert("bytes".into(), bytes.len().into());
    out.insert("input".into(), Json::Object(input));
    out.insert("tags".into(), view.tags.iter().copied().map(Json::from).collect());
    out.insert(
        "protected".into(),
        match &view.protected {
            Ok(v) => render::header_map(v),
            Err(e) => {
                let mut m = Map::new();
                m.insert("error".into(), e.code().as_str().into());
                m.insert("message".into(), e.message().into());
                m.insert("raw".into(), hex_encode(&view.protected_bytes).into());
                Json::Object(m)
            }
        },
    );
    out.insert("unprotected".into(), render::header_map(&view.unprotected));
    out.insert("signature".into(), render::value(&view.signature));

    // The payload: a claims map, or a proof's field map.
    let payload_map = match &view.payload {
        None => {
            notes.push("the payload is detached (nil)".into());
            None
        }
        Some(payload) => match decode_one(payload) {
            Ok((Value::Map(entries), trailing)) => {
                if trailing > 0 {
                    notes.push(format!("{trailing} bytes follow the payload's claims map"));
                }
                Some(entries)
            }
            Ok((other, _)) => {
                notes.push(format!("the payload is not a claims map but {}", kind_of(&other)));
                out.insert("payload".into(), hex_encode(payload).into());
                None
            }
            Err(e) => {
                notes.push(format!("the payload is not CBOR: {}", e.message()));
                out.insert("payload".into(), hex_encode(payload).into());
                None
            }
        },
    };
    let is_proof = payload_map.as_deref().is_some_and(looks_like_proof);
    out.insert("type".into(), if is_proof { "proof" } else { "token" }.into());
    out.insert(
        "claims".into(),
        match &payload_map {
            Some(entries) if is_proof => proof_fields(entries),
            Some(entries) => token_claims(entries),
            None => Json::Null,
        },
    );

    // The strict profile, as keybound would parse it.
    let profile = if is_proof {
        notes.push("the proof profile is checked by `keybound verify`, together with its token".into());
        Json::from("unchecked")
    } else {
        match insecure_decode_token(&bytes) {
            Ok(_) => Json::from("ok"),
            Err(e) => error_json(e.code().as_str(), e.message()),
        }
    };
    out.insert("profile".into(), profile);

    let signature = match key {
        None => Check::Unchecked,
        Some(_) if is_proof => {
            notes.push(
                "proofs are checked by `keybound verify`: they sign over the token and body hashes, which are not part of the proof"
                    .into(),
            );
            Check::Unchecked
        }
        Some(key) => {
            let (check, error) = check_signature(&bytes, &view, key, &mut notes);
            if let Some(e) = error {
                out.insert("signature_error".into(), error_json(e.code().as_str(), e.message()));
            }
            check
        }
    };
    out.insert("signature_check".into(), signature.as_str().into());
    if !notes.is_empty() {
        out.insert("notes".into(), notes.into_iter().map(Json::from).collect());
    }
    Ok(Report {
        json: Json::Object(out),
        signature,
    })
}

/// Decodes one CBOR item, returning it and how many bytes follow it.
fn decode_one(bytes: &[u8]) -> Result<(Value, usize), Error> {
    let mut rest = bytes;
    let value: Value = ciborium::from_reader(&mut rest).map_err(|e| {
        let message = match e {
            ciborium::de::Error::Io(_) => "the input ends in the middle of an item".to_owned(),
            ciborium::de::Error::Syntax(offset) => {
                format!("not well-formed CBOR at offset {offset}")
            }
            ciborium::de::Error::Semantic(Some(offset), what) => {
                format!("{what} at offset {offset}")
            }
            ciborium::de::Error::Semantic(None, what) => what,
            ciborium::de::Error::RecursionLimitExceeded => "items are nested too deeply".to_owned(),
        };
        Error::new(Code::CborMalformed, message)
    })?;
    Ok((value, rest.len()))
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Integer(_) => "an integer",
        Value::Bytes(_) => "a byte string",
        Value::Float(_) => "a float",
        Value::Text(_) => "a text string",
        Value::Bool(_) => "a boolean",
        Value::Null => "null",
        Value::Tag(..) => "a tagged item",
        Value::Array(_) => "an array",
        Value::Map(_) => "a map",
        _ => "an unsupported item",
    }
}

/// Any COSE_Sign1: tags, then `[bstr, map, bstr / nil, bstr]`.
fn parse_lenient(bytes: &[u8], notes: &mut Vec<String>) -> Result<Sign1View, Error> {
    let (mut value, trailing) = decode_one(bytes)?;
    if trailing > 0 {
        notes.push(format!("{trailing} bytes follow the COSE_Sign1"));
    }
    let mut tags = Vec::new();
    while let Value::Tag(tag, inner) = value {
        tags.push(tag);
        value = *inner;
    }
    let structure = |what: String| Error::new(Code::CoseStructure, what);
    let items = match value {
        Value::Array(items) if items.len() == 4 => items,
        Value::Array(items) => {
            return Err(structure(format!(
                "not a COSE_Sign1: an array of {} items, not 4",
                items.len()
            )));
        }
        other => {
            return Err(structure(format!(
                "not a COSE_Sign1: {}, not an array of four items",
                kind_of(&other)
            )));
        }
    };
    let [protected, unprotected, payload, signature]: [Value; 4] =
        items.try_into().map_err(|_| structure("not a COSE_Sign1".into()))?;
    let Value::Bytes(protected_bytes) = protected else {
        return Err(structure(format!(
            "not a COSE_Sign1: the protected header is {}, not a byte string",
            kind_of(&protected)
        )));
    };
    if !matches!(unprotected, Value::Map(_)) {
        return Err(structure(format!(
            "not a COSE_Sign1: the unprotected header is {}, not a map",
            kind_of(&unprotected)
        )));
    }
    let payload = match payload {
        Value::Bytes(p) => Some(p),
        Value::Null => None,
        other => {
            return Err(structure(format!(
                "not a COSE_Sign1: the payload is {}, not a byte string",
                kind_of(&other)
            )));
        }
    };
    if !matches!(signature, Value::Bytes(_)) {
        // COSE_Sign (tag 98) has an array of signatures here.
        return Err(structure(format!(
            "not a COSE_Sign1: the signature is {}, not a byte string",
            kind_of(&signature)
        )));
    }
    let protected = if protected_bytes.is_empty() {
        Ok(Value::Map(Vec::new()))
    } else {
        decode_one(&protected_bytes).map(|(v, trailing)| {
            if trailing > 0 {
                notes.push(format!("{trailing} bytes follow the protected header map"));
            }
            v
        })
    };
    Ok(Sign1View {
        tags,
        protected_bytes,
        protected,
        unprotected,
        payload,
        signature,
    })
}

fn get(entries: &[(Value, Value)], label: i128) -> Option<&Value> {
    entries.iter().find(|(k, _)| int(k) == Some(label)).map(|(_, v)| v)
}

/// A keybound proof: labels 1 to 6, `tkh` (5) and `bdh` (6) 4-byte byte
/// strings, and no `cnf` (8).
fn looks_like_proof(entries: &[(Value, Value)]) -> bool {
    let hint = |label| matches!(get(entries, label), Some(Value::Bytes(b)) if b.len() == crate::proof::HINT_LEN);
    (1..=6).all(|label| get(entries, label).is_some()) && hint(5) && hint(6) && get(entries, 8).is_none()
}

/// Renders a map whose integer labels have names; the rest generically.
fn named_map(entries: &[(Value, Value)], name: impl Fn(i128, &Value) -> Option<(&'static str, Json)>) -> Json {
    let mut m = Map::new();
    for (k, v) in entries {
        match int(k).and_then(|label| name(label, v)) {
            Some((key, rendered)) => insert_unique(&mut m, key.to_owned(), rendered),
            None => insert_unique(&mut m, render::label(k), render::value(v)),
        }
    }
    Json::Object(m)
}

fn token_claims(entries: &[(Value, Value)]) -> Json {
    named_map(entries, |label, v| {
        let name = match label {
            1 => "iss",
            2 => "sub",
            3 => "aud",
            4 => "exp",
            5 => "nbf",
            6 => "iat",
            7 => "cti",
            8 => return Some(("cnf", cnf(v))),
            l if l == i128::from(LABEL_KEYBOUND) => return Some(("keybound", keybound_claims(v))),
            _ => return None,
        };
        Some((name, render::value(v)))
    })
}

/// `cnf` (RFC 8747): keybound's `{1: COSE_Key}` is shown as the key itself;
/// other forms by member name.
fn cnf(v: &Value) -> Json {
    match v {
        Value::Map(entries) if entries.len() == 1 && int(&entries[0].0) == Some(1) => render::cose_key(&entries[0].1),
        Value::Map(entries) => named_map(entries, |label, v| match label {
            1 => Some(("COSE_Key", render::cose_key(v))),
            2 => Some(("Encrypted_COSE_Key", render::value(v))),
            3 => Some(("kid", render::value(v))),
            _ => None,
        }),
        other => render::value(other),
    }
}

/// The keybound private claims (label -65537).
fn keybound_claims(v: &Value) -> Json {
    use crate::token::label::kb;
    let Value::Map(entries) = v else {
        return render::value(v);
    };
    named_map(entries, |label, v| {
        let name = match i64::try_from(label).ok()? {
            kb::KIND => {
                let kind = match int(v) {
                    Some(1) => Json::from("session"),
                    Some(2) => Json::from("service"),
                    _ => render::value(v),
                };
                return Some(("kind", kind));
            }
            kb::DOMAIN => "domain",
            kb::PROJECT => "project",
            kb::ROLES => "roles",
            kb::TRUST_ID => "trust_id",
            kb::ACTOR_CHAIN => return Some(("actor_chain", actor_chain(v))),
            kb::ORIGIN_ISSUER => "origin_issuer",
            kb::INSTANCE => "instance",
            _ => return None,
        };
        Some((name, render::value(v)))
    })
}

fn actor_chain(v: &Value) -> Json {
    let Value::Array(actors) = v else {
        return render::value(v);
    };
    actors
        .iter()
        .map(|actor| match actor {
            Value::Map(entries) => named_map(entries, |label, v| match label {
                1 => Some(("sub", render::value(v))),
                2 => Some(("iss", render::value(v))),
                _ => None,
            }),
            other => render::value(other),
        })
        .collect()
}

fn proof_fields(entries: &[(Value, Value)]) -> Json {
    use crate::proof::label as p;
    named_map(entries, |label, v| {
        let name = match i64::try_from(label).ok()? {
            p::HTM => "htm",
            p::HTU => "htu",
            p::IAT => "iat",
            p::JTI => "jti",
            p::TKH => "tkh",
            p::BDH => "bdh",
            p::NONCE => "nonce",
            _ => return None,
        };
        Some((name, render::value(v)))
    })
}

/// Checks a token's signature: with the library when the token is within the
/// profile, otherwise over the received bytes as RFC 9052 §4.4 says, so that
/// foreign CWTs can be checked too.
fn check_signature(bytes: &[u8], view: &Sign1View, key: &PublicKey, notes: &mut Vec<String>) -> (Check, Option<Error>) {
    let strict = match check_token_signature(bytes, key) {
        Ok(()) => return (Check::Valid, None),
        Err(e) if matches!(e.code(), Code::CoseBadSignature | Code::CoseAlgMismatch) => {
            return (Check::Invalid, Some(e));
        }
        Err(e) => e,
    };
    let Some(payload) = &view.payload else {
        notes.push("a detached payload cannot be checked".into());
        return (Check::Unchecked, None);
    };
    notes.push(format!(
        "keybound cannot parse this token ({}); its signature was checked over the received bytes instead",
        strict.code()
    ));
    let header_alg = view
        .protected
        .as_ref()
        .ok()
        .and_then(|p| match p {
            Value::Map(entries) => get(entries, 1).and_then(int),
            _ => None,
        })
        .and_then(|id| i64::try_from(id).ok());
    if header_alg.and_then(Algorithm::from_cose_id) != Some(key.algorithm()) {
        let header = match header_alg {
            Some(id) => render::alg_name(i128::from(id)).map_or_else(|| id.to_string(), str::to_owned),
            None => "no usable protected alg".to_owned(),
        };
        let e = Error::new(
            Code::CoseAlgMismatch,
            format!("the header says {header} but the key is {}", key.algorithm()),
        );
        return (Check::Invalid, Some(e));
    }
    let Value::Bytes(signature) = &view.signature else {
        return (
            Check::Invalid,
            Some(Error::new(Code::CoseStructure, "the signature is not a byte string")),
        );
    };
    let mut tbs = Vec::with_capacity(32 + view.protected_bytes.len() + payload.len());
    crate::cbor::write_array(&mut tbs, 4);
    crate::cbor::write_text(&mut tbs, "Signature1");
    crate::cbor::write_bytes(&mut tbs, &view.protected_bytes);
    crate::cbor::write_bytes(&mut tbs, &[]);
    crate::cbor::write_bytes(&mut tbs, payload);
    if key.verify(&tbs, signature) {
        (Check::Valid, None)
    } else {
        (
            Check::Invalid,
            Some(Error::new(Code::CoseBadSignature, "the signature does not verify")),
        )
    }
}
