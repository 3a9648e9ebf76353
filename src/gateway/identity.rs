//! The identity a gateway hands to the service behind it (spec/gateway.md
//! §4): plain headers a service in any language can read, and one header,
//! `X-Keybound-Identity`, with an HMAC-SHA256 over all of them, the request's
//! method and target, and the time, under a secret the gateway and the
//! service share. This is the only encoder of that format;
//! [`Identity::check_fields`] is its verifier, for services written in Rust,
//! tests and `fuzz/`. Neither needs an HTTP stack.

use hmac::{KeyInit, Mac};
use subtle::ConstantTimeEq;

use crate::encoding::{b64url_decode, b64url_encode};
use crate::error::{Code, Error, Result, err};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// Every identity header starts with this; the gateway removes all incoming
/// headers that do, so a client cannot send its own.
pub const PREFIX: &str = "x-keybound-";
/// `name@domain` of the subject (for a delegated request, the trustor).
pub const SUBJECT: &str = "x-keybound-subject";
/// The project's domain, empty for a token without a project.
pub const DOMAIN: &str = "x-keybound-domain";
/// The project, empty for a token without a project.
pub const PROJECT: &str = "x-keybound-project";
/// The roles, comma-separated, empty for none.
pub const ROLES: &str = "x-keybound-roles";
/// The trust id of a delegated request, else empty.
pub const TRUST: &str = "x-keybound-trust";
/// The actor chain of a delegated request, current actor first,
/// comma-separated `name@domain`, else empty.
pub const ACTORS: &str = "x-keybound-actors";
/// The token's issuer (for a federated request, the exchanging issuer).
pub const ISSUER: &str = "x-keybound-issuer";
/// The token's expiry, Unix seconds.
pub const EXPIRES: &str = "x-keybound-expires";
/// The RFC 9679 thumbprint (hex) of the client key the request was proven with.
pub const KEY: &str = "x-keybound-key";
/// `proof` when the request carried a verified proof, `bearer` when it was
/// admitted on its token alone (bearer-rollout mode).
pub const PROOF: &str = "x-keybound-proof";
/// The assertion over the others: `v1 t=<unix seconds> mac=<base64url>`.
pub const ASSERTION: &str = "x-keybound-identity";

/// The fields in the order the MAC covers them.
const FIELDS: [&str; 10] = [
    SUBJECT, DOMAIN, PROJECT, ROLES, TRUST, ACTORS, ISSUER, EXPIRES, KEY, PROOF,
];

/// Shortest identity secret, in bytes.
pub const MIN_SECRET_LEN: usize = 32;
/// Largest identity header value the checker reads, in bytes.
const MAX_VALUE_LEN: usize = 4096;

/// What the gateway verified about a request, as the service sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// `name@domain`.
    pub subject: String,
    /// The project's domain.
    pub domain: Option<String>,
    /// The project.
    pub project: Option<String>,
    /// The roles.
    pub roles: Vec<String>,
    /// The trust of a delegated request.
    pub trust: Option<String>,
    /// The actor chain, current actor first.
    pub actors: Vec<String>,
    /// The token's issuer.
    pub issuer: String,
    /// The token's expiry, Unix seconds.
    pub expires_at: u64,
    /// Hex thumbprint of the client key.
    pub key_thumbprint: String,
    /// Whether a proof was verified (false: bearer rollout).
    pub proven: bool,
}

impl Identity {
    fn values(&self) -> [String; 10] {
        [
            self.subject.clone(),
            self.domain.clone().unwrap_or_default(),
            self.project.clone().unwrap_or_default(),
            self.roles.join(","),
            self.trust.clone().unwrap_or_default(),
            self.actors.join(","),
            self.issuer.clone(),
            self.expires_at.to_string(),
            self.key_thumbprint.clone(),
            if self.proven { "proof" } else { "bearer" }.to_owned(),
        ]
    }

    /// The identity headers and their assertion for a request `method
    /// path_and_query`, at `now`, under `secret`: (lower-case name, value)
    /// pairs in the order of spec/gateway.md §4.1, assertion last. A value
    /// that is not printable ASCII, or starts or ends with a space (HTTP
    /// would trim it in transit), is refused.
    pub fn to_fields(
        &self,
        secret: &[u8],
        method: &str,
        path_and_query: &str,
        now: u64,
    ) -> Result<Vec<(&'static str, String)>> {
        let values = self.values();
        for (name, value) in FIELDS.iter().zip(&values) {
            if !value.bytes().all(|b| (0x20..0x7f).contains(&b)) || value.starts_with(' ') || value.ends_with(' ') {
                return err(Code::GatewayBadIdentity, format!("{name} is not a header value"));
            }
        }
        let mac = mac(secret, method, path_and_query, now, &values)?;
        let mut fields: Vec<(&'static str, String)> = FIELDS.into_iter().zip(values).collect();
        fields.push((ASSERTION, format!("v1 t={now} mac={}", b64url_encode(&mac))));
        Ok(fields)
    }

    /// [`Identity::to_fields`] as a header map.
    #[cfg(feature = "http")]
    pub fn to_headers(&self, secret: &[u8], method: &str, path_and_query: &str, now: u64) -> Result<http::HeaderMap> {
        let fields = self.to_fields(secret, method, path_and_query, now)?;
        let mut headers = http::HeaderMap::with_capacity(fields.len());
        for (name, value) in fields {
            let value = http::HeaderValue::try_from(value)
                .map_err(|_| Error::new(Code::GatewayBadIdentity, format!("{name} is not a header value")))?;
            headers.insert(http::HeaderName::from_static(name), value);
        }
        Ok(headers)
    }

    /// Checks a request's identity headers against their assertion: the MAC
    /// under `secret` for `method path_and_query`, and a time at most
    /// `max_age` seconds from `now` either way. `headers` are the request's
    /// (name, value) pairs, names in lower case; others than the identity's
    /// are ignored. Refuses with `gateway.bad_identity`.
    pub fn check_fields(
        headers: &[(&str, &[u8])],
        secret: &[u8],
        method: &str,
        path_and_query: &str,
        now: u64,
        max_age: u64,
    ) -> Result<Identity> {
        let bad = |why: &str| Error::new(Code::GatewayBadIdentity, why.to_owned());
        let values = checked_values(headers, secret, method, path_and_query, now, max_age)?;
        let list = |v: &str| -> Vec<String> {
            if v.is_empty() {
                Vec::new()
            } else {
                v.split(',').map(str::to_owned).collect()
            }
        };
        let opt = |v: &str| (!v.is_empty()).then(|| v.to_owned());
        let [
            subject,
            domain,
            project,
            roles,
            trust,
            actors,
            issuer,
            expires,
            key,
            proof,
        ] = values;
        Ok(Identity {
            subject,
            domain: opt(&domain),
            project: opt(&project),
            roles: list(&roles),
            trust: opt(&trust),
            actors: list(&actors),
            issuer,
            expires_at: expires
                .parse()
                .ok()
                .filter(|_| expires.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| bad("x-keybound-expires is not a number"))?,
            key_thumbprint: key,
            proven: match proof.as_str() {
                "proof" => true,
                "bearer" => false,
                _ => return Err(bad("x-keybound-proof is neither proof nor bearer")),
            },
        })
    }

    /// [`Identity::check_fields`] on a header map.
    #[cfg(feature = "http")]
    pub fn check(
        headers: &http::HeaderMap,
        secret: &[u8],
        method: &str,
        path_and_query: &str,
        now: u64,
        max_age: u64,
    ) -> Result<Identity> {
        let fields: Vec<(&str, &[u8])> = headers
            .iter()
            .filter(|(name, _)| name.as_str().starts_with(PREFIX))
            .map(|(name, value)| (name.as_str(), value.as_bytes()))
            .collect();
        Identity::check_fields(&fields, secret, method, path_and_query, now, max_age)
    }
}

/// The ten field values of `headers` once the assertion's format, time and
/// MAC check (spec/gateway.md §4.2); what they mean is not looked at.
fn checked_values(
    headers: &[(&str, &[u8])],
    secret: &[u8],
    method: &str,
    path_and_query: &str,
    now: u64,
    max_age: u64,
) -> Result<[String; 10]> {
    let bad = |why: &str| Error::new(Code::GatewayBadIdentity, why.to_owned());
    // A missing header reads as empty: proxies may drop empty headers, and
    // the MAC covers the value either way (spec/gateway.md §4.2).
    let one = |name: &str| -> Result<String> {
        let mut all = headers.iter().filter(|(n, _)| *n == name);
        let Some((_, value)) = all.next() else {
            return Ok(String::new());
        };
        if all.next().is_some() {
            return Err(bad(&format!("{name} twice")));
        }
        if value.len() > MAX_VALUE_LEN {
            return Err(bad(&format!("{name} too long")));
        }
        if !value.iter().all(|b| (0x20..0x7f).contains(b)) {
            return Err(bad(&format!("{name} is not printable ASCII")));
        }
        Ok(String::from_utf8_lossy(value).into_owned())
    };
    let assertion = one(ASSERTION)?;
    if assertion.is_empty() {
        return Err(bad("no x-keybound-identity header"));
    }
    let mut parts = assertion.split(' ');
    let (Some("v1"), Some(t), Some(m), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(bad("the assertion is not `v1 t=… mac=…`"));
    };
    let t: u64 = t
        .strip_prefix("t=")
        .filter(|t| !t.is_empty() && t.len() <= 20 && t.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| bad("the assertion's time is not a number"))?;
    let given = m
        .strip_prefix("mac=")
        .and_then(|m| b64url_decode(m).ok())
        .ok_or_else(|| bad("the assertion's mac is not base64url"))?;
    if t.abs_diff(now) > max_age {
        return Err(bad("the assertion is too old (or from the future)"));
    }
    let mut values: [String; 10] = Default::default();
    for (value, name) in values.iter_mut().zip(FIELDS) {
        *value = one(name)?;
    }
    let expected = mac(secret, method, path_and_query, t, &values)?;
    if !bool::from(expected.as_slice().ct_eq(&given)) {
        return Err(bad("the assertion's mac does not match"));
    }
    Ok(values)
}

/// Whether the assertion's format, time and MAC check (for the vectors'
/// `mac` outcome).
#[cfg(feature = "testkit")]
pub(crate) fn assertion_checks(
    headers: &[(&str, &[u8])],
    secret: &[u8],
    method: &str,
    path_and_query: &str,
    now: u64,
    max_age: u64,
) -> bool {
    checked_values(headers, secret, method, path_and_query, now, max_age).is_ok()
}

/// The MAC over any values (for vectors whose values the encoder refuses).
#[cfg(feature = "testkit")]
pub(crate) fn vector_mac(secret: &[u8], method: &str, path_and_query: &str, t: u64, values: &[String; 10]) -> Vec<u8> {
    mac(secret, method, path_and_query, t, values).expect("a vector secret is long enough")
}

/// HMAC-SHA256 over `keybound-identity-v1`, the time, the method, the
/// target and each field as `name:value`, one per line (spec/gateway.md §4.2).
fn mac(secret: &[u8], method: &str, path_and_query: &str, t: u64, values: &[String; 10]) -> Result<Vec<u8>> {
    if secret.len() < MIN_SECRET_LEN {
        return err(
            Code::GatewayBadIdentity,
            format!("the identity secret must be at least {MIN_SECRET_LEN} bytes"),
        );
    }
    let mut input = format!("keybound-identity-v1\n{t}\n{method}\n{path_and_query}\n");
    for (name, value) in FIELDS.iter().zip(values) {
        input.push_str(name);
        input.push(':');
        input.push_str(value);
        input.push('\n');
    }
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(secret)
        .map_err(|_| Error::new(Code::GatewayBadIdentity, "bad identity secret"))?;
    mac.update(input.as_bytes());
    Ok(mac.finalize().into_bytes().to_vec())
}

#[cfg(all(test, feature = "http"))]
mod tests {
    use super::*;
    use http::{HeaderMap, HeaderName, HeaderValue};

    fn identity() -> Identity {
        Identity {
            subject: "ayoung@stoughton".into(),
            domain: Some("stoughton".into()),
            project: Some("turing".into()),
            roles: vec!["member".into(), "reader".into()],
            trust: None,
            actors: vec![],
            issuer: "https://issuer.example".into(),
            expires_at: 1_800_000_300,
            key_thumbprint: "ab".repeat(32),
            proven: true,
        }
    }

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn round_trip_and_every_change_is_refused() {
        let headers = identity()
            .to_headers(SECRET, "GET", "/v2/servers?x=1", 1_800_000_000)
            .unwrap();
        let back = Identity::check(&headers, SECRET, "GET", "/v2/servers?x=1", 1_800_000_010, 30).unwrap();
        assert_eq!(back, identity());
        let refused =
            |h: &HeaderMap, m: &str, p: &str, now: u64| Identity::check(h, SECRET, m, p, now, 30).unwrap_err().code();
        assert_eq!(
            refused(&headers, "POST", "/v2/servers?x=1", 1_800_000_000),
            Code::GatewayBadIdentity
        );
        assert_eq!(
            refused(&headers, "GET", "/v2/servers?x=2", 1_800_000_000),
            Code::GatewayBadIdentity
        );
        assert_eq!(
            refused(&headers, "GET", "/v2/servers?x=1", 1_800_000_031),
            Code::GatewayBadIdentity
        );
        for name in FIELDS {
            let mut changed = headers.clone();
            changed.insert(HeaderName::from_static(name), HeaderValue::from_static("admin"));
            assert_eq!(
                refused(&changed, "GET", "/v2/servers?x=1", 1_800_000_000),
                Code::GatewayBadIdentity,
                "{name}"
            );
            // A missing header reads as empty: refused unless it was empty.
            let mut missing = headers.clone();
            let was_empty = missing.remove(name).is_some_and(|v| v.is_empty());
            let outcome = Identity::check(&missing, SECRET, "GET", "/v2/servers?x=1", 1_800_000_000, 30);
            assert_eq!(outcome.is_ok(), was_empty, "{name}");
        }
        let other = Identity::check(
            &headers,
            b"another secret of thirty-two bytes!",
            "GET",
            "/v2/servers?x=1",
            1_800_000_000,
            30,
        );
        assert!(other.is_err());
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!(identity().to_headers(b"short", "GET", "/", 0).is_err());
    }
}
