//! JSON request bodies: the one decoder of every JSON object keybound reads
//! from a client (issuer requests, trust requests), with errors that never
//! quote a value.

use serde::de::DeserializeOwned;

use crate::error::{Code, Error, Result, err};

/// Decodes `body`, which must be one JSON object, into `T`; any failure is
/// `issuer.bad_request` naming its category, the member if serde names one,
/// and the position.
pub(crate) fn decode_object<T: DeserializeOwned>(body: &[u8]) -> Result<T> {
    // serde's messages can quote the offending value (a password given as a
    // number, say): keep only its category and position, never the value.
    let bad = |e: serde_json::Error| {
        let what = match e.classify() {
            serde_json::error::Category::Io | serde_json::error::Category::Eof => "is truncated",
            serde_json::error::Category::Syntax => "is not valid JSON",
            serde_json::error::Category::Data => "has a missing, unknown, duplicated or mistyped member",
        };
        let field = data_error_field(&e.to_string());
        Error::new(
            Code::IssuerBadRequest,
            format!(
                "the request body {what}{field} (line {}, column {})",
                e.line(),
                e.column()
            ),
        )
    };
    // serde would also read a struct from an array: only objects are requests.
    // (Deserialising straight into the struct keeps its refusal of duplicate members.)
    if body.trim_ascii_start().first() != Some(&b'{') {
        return err(Code::IssuerBadRequest, "the request body must be a JSON object");
    }
    serde_json::from_slice(body).map_err(bad)
}

/// How a request type of ours starts the message of a member it refuses
/// while deserialising: `invalid field `name`: reason`.
pub(crate) const INVALID_FIELD: &str = "invalid field `";

/// The member a serde data error names (`missing field `x``, `unknown field
/// `x``, `duplicate field `x``), as ` (`x`)`; empty otherwise. Field names come
/// from our own request types or are the client's member names, never values.
fn data_error_field(message: &str) -> String {
    // A member our own type refused (`invalid field `x`: why`, from a
    // `TryFrom` of ours): the reason is our text, never the value.
    if let Some(rest) = message.strip_prefix(INVALID_FIELD)
        && let Some((field, reason)) = rest.split_once("`: ")
        && field.len() <= 64
        && field.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        let reason = reason.split(" at line ").next().unwrap_or_default();
        return format!(": `{field}` ({reason})");
    }
    for prefix in ["missing field `", "unknown field `", "duplicate field `"] {
        if let Some(rest) = message.strip_prefix(prefix)
            && let Some((field, _)) = rest.split_once('`')
            && field.len() <= 64
            && field.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return format!(": `{field}`");
        }
    }
    String::new()
}
