//! Target-URI normalisation (RFC 3986 §6.2.2 and §6.2.3) for `htu`.
//!
//! The result is `scheme "://" host [":" port] path ["?" query]`:
//!
//! * scheme and host lower-cased; only `http` and `https`;
//! * default ports (80, 443) and empty ports removed, other ports without
//!   leading zeros;
//! * percent-encoding: triplets of unreserved characters decoded, all other
//!   triplets upper-cased;
//! * dot segments removed; an empty path becomes `/`; a trailing slash is kept;
//! * the query kept (an empty `?` too), the fragment dropped;
//! * userinfo, non-ASCII characters and characters outside RFC 3986 refused
//!   (`proof.htu_invalid`): a homoglyph host or `user@host` never matches.

use crate::cbor::MAX_STRING;
use crate::error::{Code, Result, err};

fn invalid<T>(why: impl std::fmt::Display) -> Result<T> {
    err(Code::ProofHtuInvalid, format!("not a valid http(s) target URI: {why}"))
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn is_allowed(b: u8) -> bool {
    is_unreserved(b)
        || matches!(
            b,
            b':' | b'/'
                | b'?'
                | b'#'
                | b'['
                | b']'
                | b'@'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b'%'
        )
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Appends `part` with percent-encoding normalised; `lower` lower-cases
/// letters outside triplets (for the host).
fn push_percent_normalised(out: &mut String, part: &str, lower: bool) -> Result<()> {
    let bytes = part.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let (Some(h), Some(l)) = (
                bytes.get(i + 1).and_then(|b| hex_value(*b)),
                bytes.get(i + 2).and_then(|b| hex_value(*b)),
            ) else {
                return invalid("a '%' is not followed by two hex digits");
            };
            let decoded = h << 4 | l;
            if is_unreserved(decoded) {
                out.push(if lower { decoded.to_ascii_lowercase() } else { decoded } as char);
            } else {
                out.push('%');
                out.push(char::from(b"0123456789ABCDEF"[usize::from(h)]));
                out.push(char::from(b"0123456789ABCDEF"[usize::from(l)]));
            }
            i += 3;
        } else {
            out.push(if lower { b.to_ascii_lowercase() } else { b } as char);
            i += 1;
        }
    }
    Ok(())
}

/// RFC 3986 §5.2.4 remove_dot_segments, on a path that starts with '/'.
fn remove_dot_segments(path: &str) -> String {
    let mut output: Vec<&str> = Vec::new();
    let mut input = path;
    // Each iteration consumes one segment of the form "/seg".
    while !input.is_empty() {
        let rest = &input[1..];
        let end = rest.find('/').unwrap_or(rest.len());
        let segment = &rest[..end];
        input = &rest[end..];
        let last = input.is_empty();
        match segment {
            "." => {
                if last {
                    output.push("");
                }
            }
            ".." => {
                output.pop();
                if last {
                    output.push("");
                }
            }
            s => output.push(s),
        }
    }
    let mut out = String::with_capacity(path.len());
    for segment in output {
        out.push('/');
        out.push_str(segment);
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

/// Normalises an absolute http(s) URI for comparison.
pub fn normalize_uri(input: &str) -> Result<String> {
    if input.len() > MAX_STRING {
        return invalid(format!(
            "{} bytes is longer than the limit of {MAX_STRING}",
            input.len()
        ));
    }
    if let Some(bad) = input.bytes().find(|b| !is_allowed(*b)) {
        return invalid(format!("character 0x{bad:02x} is not allowed in a URI"));
    }
    let without_fragment = input.split('#').next().unwrap_or_default();
    let Some((scheme, rest)) = without_fragment.split_once(':') else {
        return invalid("no scheme");
    };
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "https" => 443,
        "http" => 80,
        _ => return invalid(format!("scheme {scheme:?} is not http or https")),
    };
    let Some(rest) = rest.strip_prefix("//") else {
        return invalid("no authority (expected \"//\" after the scheme)");
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path_and_query) = rest.split_at(authority_end);
    if authority.contains('@') {
        return invalid("userinfo (user@host) is not allowed");
    }
    let (host, port) = if authority.starts_with('[') {
        let Some(close) = authority.find(']') else {
            return invalid("unterminated IPv6 literal");
        };
        let after = &authority[close + 1..];
        let port = match after {
            "" => None,
            p if p.starts_with(':') => Some(&p[1..]),
            _ => return invalid("garbage after an IPv6 literal"),
        };
        (&authority[..=close], port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return invalid("empty host");
    }
    if let Some(literal) = host.strip_prefix('[') {
        let inner = &literal[..literal.len() - 1];
        if inner.is_empty() || !inner.bytes().all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.') {
            return invalid("malformed IPv6 literal");
        }
    } else if host.contains(['[', ']', ':']) {
        // A reg-name or IPv4 host has no ':' (RFC 3986 §3.2.2): in
        // `h:443:8443` only the last colon would be read as the port.
        return invalid("brackets or a colon outside an IPv6 literal");
    }
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_and_query, None),
    };
    let mut out = String::with_capacity(input.len() + 8);
    out.push_str(&scheme);
    out.push_str("://");
    push_percent_normalised(&mut out, host, true)?;
    if let Some(port) = port.filter(|p| !p.is_empty()) {
        if !port.bytes().all(|b| b.is_ascii_digit()) {
            return invalid(format!("port {port:?} is not a number"));
        }
        let digits = port.trim_start_matches('0');
        let value: u32 = if digits.is_empty() {
            0
        } else if digits.len() > 5 {
            u32::MAX
        } else {
            digits.parse().unwrap_or(u32::MAX)
        };
        if value > 65535 {
            return invalid(format!("port {port} is out of range"));
        }
        if value != default_port {
            out.push(':');
            out.push_str(&value.to_string());
        }
    }
    let mut normalised_path = String::with_capacity(path.len());
    push_percent_normalised(&mut normalised_path, path, false)?;
    if normalised_path.is_empty() {
        out.push('/');
    } else if normalised_path.contains("/.") {
        out.push_str(&remove_dot_segments(&normalised_path));
    } else {
        out.push_str(&normalised_path);
    }
    if let Some(query) = query {
        out.push('?');
        push_percent_normalised(&mut out, query, false)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> String {
        normalize_uri(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn rfc3986_normalisation() {
        assert_eq!(
            n("HTTPS://Nova.Example.COM/v2/servers"),
            "https://nova.example.com/v2/servers"
        );
        assert_eq!(n("https://nova.example:443/x"), "https://nova.example/x");
        assert_eq!(n("http://nova.example:80/x"), "http://nova.example/x");
        assert_eq!(n("https://nova.example:/x"), "https://nova.example/x");
        assert_eq!(n("https://nova.example:08443/x"), "https://nova.example:8443/x");
        assert_eq!(n("https://nova.example"), "https://nova.example/");
        assert_eq!(n("https://nova.example?a=1"), "https://nova.example/?a=1");
        assert_eq!(n("https://nova.example/a/./b/../c"), "https://nova.example/a/c");
        assert_eq!(n("https://nova.example/a/b/.."), "https://nova.example/a/");
        assert_eq!(n("https://nova.example/../../x"), "https://nova.example/x");
        assert_eq!(n("https://nova.example/%7euser"), "https://nova.example/~user");
        assert_eq!(n("https://nova.example/a%2fb"), "https://nova.example/a%2Fb");
        assert_eq!(n("https://nova.example/%2E%2E/x"), "https://nova.example/x");
        assert_eq!(
            n("https://nova.example/x?q=%7e%2f#frag"),
            "https://nova.example/x?q=~%2F"
        );
        assert_eq!(n("https://nova.example/x/"), "https://nova.example/x/");
        assert_eq!(n("https://[2001:DB8::1]:443/x"), "https://[2001:db8::1]/x");
        assert_eq!(n("https://[2001:db8::1]:8443/x"), "https://[2001:db8::1]:8443/x");
        assert_eq!(n("https://nova.example/x?"), "https://nova.example/x?");
        assert_eq!(n("https://nova.example/Resource"), "https://nova.example/Resource");
    }

    #[test]
    fn refuses_what_cannot_be_compared_safely() {
        for bad in [
            "ftp://nova.example/",
            "https:nova.example/x",
            "https://user@nova.example/x",
            "https://a@b@nova.example/x",
            "https://nova.example:99999/x",
            "https://nova.example:8x/x",
            "https://nova.example/a b",
            "https://nova.example/%zz",
            "https://nova.example/%4",
            "https://növa.example/",
            "https:///x",
            "https://[::1/x",
            "/relative",
        ] {
            assert_eq!(normalize_uri(bad).unwrap_err().code(), Code::ProofHtuInvalid, "{bad}");
        }
    }

    #[test]
    fn normalisation_is_idempotent() {
        for s in [
            "HTTPS://A.example:443/%7e/./x/../y?Q=%aa",
            "http://a.example:8080",
            "https://[::1]/",
        ] {
            let once = n(s);
            assert_eq!(n(&once), once);
        }
    }
}
