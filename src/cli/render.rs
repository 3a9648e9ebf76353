//! CBOR values rendered as JSON for people: byte strings as hex, tags as
//! `{"tag": n, "value": …}`, map labels as strings, and the COSE names of
//! header parameters, algorithms and key parameters where they are known.
//!
//! Rendering never fails: whatever ciborium decoded can be shown.

use ciborium::Value;
use serde_json::{Map, Value as Json};

use crate::encoding::hex_encode;
use crate::key::PublicKey;

/// An integer, if `v` is one.
pub(crate) fn int(v: &Value) -> Option<i128> {
    match v {
        Value::Integer(i) => Some(i128::from(*i)),
        _ => None,
    }
}

/// A JSON number where it fits, a decimal string where it does not.
fn integer(i: i128) -> Json {
    if let Ok(n) = i64::try_from(i) {
        Json::from(n)
    } else if let Ok(n) = u64::try_from(i) {
        Json::from(n)
    } else {
        Json::String(i.to_string())
    }
}

/// Any CBOR value, generically.
pub(crate) fn value(v: &Value) -> Json {
    match v {
        Value::Integer(i) => integer(i128::from(*i)),
        Value::Bytes(b) => Json::String(hex_encode(b)),
        Value::Float(f) => serde_json::Number::from_f64(*f).map_or_else(|| Json::String(f.to_string()), Json::Number),
        Value::Text(t) => Json::String(t.clone()),
        Value::Bool(b) => Json::Bool(*b),
        Value::Null => Json::Null,
        Value::Tag(tag, inner) => {
            let mut m = Map::new();
            m.insert("tag".into(), Json::from(*tag));
            m.insert("value".into(), value(inner));
            Json::Object(m)
        }
        Value::Array(items) => Json::Array(items.iter().map(value).collect()),
        Value::Map(entries) => {
            let mut m = Map::new();
            for (k, v) in entries {
                insert_unique(&mut m, label(k), value(v));
            }
            Json::Object(m)
        }
        _ => Json::String("(unsupported CBOR value)".into()),
    }
}

/// A map label as a JSON object key: integers and text as they are, anything
/// else as its compact JSON rendering.
pub(crate) fn label(k: &Value) -> String {
    match k {
        Value::Integer(i) => i128::from(*i).to_string(),
        Value::Text(t) => t.clone(),
        other => value(other).to_string(),
    }
}

/// Inserts without losing a value when a map has a key twice (which the
/// strict profile refuses, but inspect still shows): later ones get `#2`, `#3`….
pub(crate) fn insert_unique(m: &mut Map<String, Json>, key: String, v: Json) {
    if !m.contains_key(&key) {
        m.insert(key, v);
        return;
    }
    let mut n = 2;
    while m.contains_key(&format!("{key}#{n}")) {
        n += 1;
    }
    m.insert(format!("{key}#{n}"), v);
}

/// The name of a COSE algorithm (IANA COSE Algorithms registry), if known.
pub(crate) fn alg_name(id: i128) -> Option<&'static str> {
    Some(match id {
        -8 => "EdDSA",
        -7 => "ES256",
        -9 => "ESP256",
        -19 => "Ed25519",
        -35 => "ES384",
        -36 => "ES512",
        -37 => "PS256",
        -38 => "PS384",
        -39 => "PS512",
        -47 => "ES256K",
        -53 => "Ed448",
        -257 => "RS256",
        -258 => "RS384",
        -259 => "RS512",
        4 => "HMAC 256/64",
        5 => "HMAC 256/256",
        6 => "HMAC 384/384",
        7 => "HMAC 512/512",
        _ => return None,
    })
}

/// An algorithm value: its name where known, otherwise as it is.
fn alg(v: &Value) -> Json {
    match int(v).and_then(alg_name) {
        Some(name) => Json::String(name.into()),
        None => value(v),
    }
}

/// The name of a COSE header parameter (RFC 9052 §3.1, RFC 9360, RFC 9597).
fn header_name(label: i128) -> Option<&'static str> {
    Some(match label {
        1 => "alg",
        2 => "crit",
        3 => "content_type",
        4 => "kid",
        5 => "IV",
        6 => "Partial_IV",
        7 => "counter_signature",
        15 => "CWT_Claims",
        16 => "typ",
        32 => "x5bag",
        33 => "x5chain",
        34 => "x5t",
        35 => "x5u",
        _ => return None,
    })
}

/// A COSE header map, parameters by name where known.
pub(crate) fn header_map(v: &Value) -> Json {
    let Value::Map(entries) = v else {
        return value(v);
    };
    let mut m = Map::new();
    for (k, v) in entries {
        let (key, rendered) = match int(k).and_then(|l| header_name(l).map(|name| (l, name))) {
            Some((1, name)) => (name.to_owned(), alg(v)),
            Some((_, name)) => (name.to_owned(), value(v)),
            None => (label(k), value(v)),
        };
        insert_unique(&mut m, key, rendered);
    }
    Json::Object(m)
}

/// A COSE_Key, parameters by name, with its RFC 9679 thumbprint when it is a
/// key keybound supports. A private `d` is never shown.
pub(crate) fn cose_key(v: &Value) -> Json {
    let Value::Map(entries) = v else {
        return value(v);
    };
    let get = |label: i128| entries.iter().find(|(k, _)| int(k) == Some(label)).map(|(_, v)| v);
    let kty = get(1).and_then(int);
    let mut m = Map::new();
    for (k, v) in entries {
        let (key, rendered) = match int(k) {
            Some(1) => ("kty".to_owned(), named(v, kty_name)),
            Some(2) => ("kid".to_owned(), value(v)),
            Some(3) => ("alg".to_owned(), alg(v)),
            Some(4) => ("key_ops".to_owned(), value(v)),
            Some(-1) => ("crv".to_owned(), named(v, |c| crv_name(kty, c))),
            Some(-2) => ("x".to_owned(), value(v)),
            Some(-3) => ("y".to_owned(), value(v)),
            Some(-4) => ("d".to_owned(), Json::String("(private key present; not shown)".into())),
            _ => (label(k), value(v)),
        };
        insert_unique(&mut m, key, rendered);
    }
    let bytes = |v: Option<&Value>| match v {
        Some(Value::Bytes(b)) => Some(b.clone()),
        _ => None,
    };
    let public = match (kty, get(-1).and_then(int), bytes(get(-2)), bytes(get(-3))) {
        (Some(1), Some(6), Some(x), None) => Some(PublicKey::ed25519_from_bytes(&x)),
        (Some(2), Some(1), Some(x), Some(y)) => Some(PublicKey::p256_from_coordinates(&x, &y)),
        _ => None,
    };
    match public {
        Some(Ok(key)) => {
            m.insert("thumbprint".into(), Json::String(key.thumbprint().to_string()));
        }
        Some(Err(e)) => {
            m.insert("thumbprint".into(), Json::Null);
            m.insert("key_error".into(), error_json(e.code().as_str(), e.message()));
        }
        None => {
            m.insert("thumbprint".into(), Json::Null);
        }
    }
    Json::Object(m)
}

fn named(v: &Value, name: impl Fn(i128) -> Option<&'static str>) -> Json {
    match int(v).and_then(name) {
        Some(n) => Json::String(n.into()),
        None => value(v),
    }
}

fn kty_name(kty: i128) -> Option<&'static str> {
    Some(match kty {
        1 => "OKP",
        2 => "EC2",
        3 => "RSA",
        4 => "Symmetric",
        _ => return None,
    })
}

fn crv_name(kty: Option<i128>, crv: i128) -> Option<&'static str> {
    Some(match (kty, crv) {
        (Some(2), 1) => "P-256",
        (Some(2), 2) => "P-384",
        (Some(2), 3) => "P-521",
        (Some(2), 8) => "secp256k1",
        (Some(1), 4) => "X25519",
        (Some(1), 5) => "X448",
        (Some(1), 6) => "Ed25519",
        (Some(1), 7) => "Ed448",
        _ => return None,
    })
}

/// `{"error": code, "message": message}`.
/// Unix seconds as UTC in ISO 8601 (`2026-12-02T04:23:46Z`).
pub(crate) fn utc(unix: i64) -> String {
    // Howard Hinnant's days-to-civil, for the proleptic Gregorian calendar.
    let (days, secs) = (unix.div_euclid(86_400), unix.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// A JSON time member (Unix seconds or null) for people.
fn time_member(v: &Json, none: &str) -> String {
    v.as_i64().map_or_else(|| none.to_owned(), utc)
}

/// A JSON array of strings, comma-separated (`none` when empty or absent).
fn list_member(v: &Json, none: &str) -> String {
    let items: Vec<&str> = v.as_array().into_iter().flatten().filter_map(Json::as_str).collect();
    if items.is_empty() {
        none.to_owned()
    } else {
        items.join(",")
    }
}

/// One trust (the issuer's JSON, spec/delegation.md §1) for people.
pub(crate) fn trust_text(t: &Json) -> String {
    let text = |k: &str| t[k].as_str().unwrap_or("-").to_owned();
    let uses = t["remaining_uses"]
        .as_i64()
        .map_or_else(|| "unlimited".to_owned(), |n| n.to_string());
    [
        format!("trust         {}", text("id")),
        format!("trustor       {}", text("trustor")),
        format!("trustee       {}", text("trustee")),
        format!("project       {}", text("project")),
        format!("roles         {}", list_member(&t["roles"], "-")),
        format!(
            "audiences     {}",
            list_member(&t["audiences"], "any registered service")
        ),
        format!("expires       {}", time_member(&t["expires_at"], "never")),
        format!("uses left     {uses}"),
        format!("redelegation  {}", t["redelegation"].as_i64().unwrap_or(0)),
        format!("parent        {}", t["parent"].as_str().unwrap_or("-")),
        format!("created       {}", time_member(&t["created_at"], "-")),
    ]
    .join("\n")
}

/// A list of trusts for people: one line each.
pub(crate) fn trust_table(trusts: &Json) -> String {
    let rows = trusts.as_array().map(Vec::as_slice).unwrap_or_default();
    if rows.is_empty() {
        return "no trusts".to_owned();
    }
    let mut out = vec![format!(
        "{:<22}  {:<24}  {:<24}  {:<20}  {:<20}  {:<20}  {}",
        "ID", "TRUSTOR", "TRUSTEE", "PROJECT", "ROLES", "EXPIRES", "USES"
    )];
    for t in rows {
        out.push(format!(
            "{:<22}  {:<24}  {:<24}  {:<20}  {:<20}  {:<20}  {}",
            t["id"].as_str().unwrap_or("-"),
            t["trustor"].as_str().unwrap_or("-"),
            t["trustee"].as_str().unwrap_or("-"),
            t["project"].as_str().unwrap_or("-"),
            list_member(&t["roles"], "-"),
            time_member(&t["expires_at"], "never"),
            t["remaining_uses"]
                .as_i64()
                .map_or_else(|| "unlimited".to_owned(), |n| n.to_string()),
        ));
    }
    out.join("\n")
}

pub(crate) fn error_json(code: &str, message: &str) -> Json {
    let mut m = Map::new();
    m.insert("error".into(), Json::String(code.into()));
    m.insert("message".into(), Json::String(message.into()));
    Json::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_is_iso_8601() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc(1_763_803_600), "2025-11-22T09:26:40Z");
        assert_eq!(utc(-1), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn generic_values() {
        let v = Value::Map(vec![
            (Value::Integer((-70000).into()), Value::Bytes(vec![0xab, 0x01])),
            (
                Value::Text("t".into()),
                Value::Tag(1, Box::new(Value::Integer(5.into()))),
            ),
            (Value::Integer(1.into()), Value::Null),
            (Value::Integer(1.into()), Value::Bool(true)),
            (Value::Bytes(vec![1]), Value::Float(f64::NAN)),
            (Value::Integer(2.into()), Value::Integer(u64::MAX.into())),
        ]);
        let json = value(&v);
        assert_eq!(json["-70000"], "ab01");
        assert_eq!(json["t"]["tag"], 1);
        assert_eq!(json["t"]["value"], 5);
        assert_eq!(json["1"], Json::Null);
        assert_eq!(json["1#2"], true);
        assert_eq!(json["\"01\""], "NaN");
        assert_eq!(json["2"], u64::MAX);
    }
}
