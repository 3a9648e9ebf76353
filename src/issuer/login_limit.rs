//! The per-source rate limit of `POST /v1/login` (issuer.md §5.5): a keyed
//! GCRA limiter (`governor`) whose key is the client address, taken from
//! the TCP peer, or from `X-Forwarded-For` when the peer is a trusted proxy.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::time::Duration;

use axum::http::HeaderMap;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use ipnet::IpNet;

/// Above this many tracked sources, the limiter forgets the sources whose
/// budget is full again before it tracks a new one; a minute's job does the
/// same in any case.
const RETAIN_THRESHOLD: usize = 16_384;

/// Per-source login budget.
pub(crate) struct LoginLimiter {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    trusted_proxies: Vec<IpNet>,
}

impl LoginLimiter {
    /// `per_minute` logins a minute per source, `burst` at once; both ≥ 1
    /// (checked with the configuration).
    pub(crate) fn new(per_minute: u32, burst: u32, trusted_proxies: Vec<IpNet>) -> Self {
        let one = NonZeroU32::MIN;
        let quota = Quota::per_minute(NonZeroU32::new(per_minute).unwrap_or(one))
            .allow_burst(NonZeroU32::new(burst).unwrap_or(one));
        LoginLimiter {
            limiter: DefaultKeyedRateLimiter::keyed(quota),
            trusted_proxies,
        }
    }

    /// The client address of a request from `peer` with `headers`.
    pub(crate) fn source(&self, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = canonical(peer.ip());
        if !self.is_trusted(client) {
            return client;
        }
        // The right-most address that is not a trusted proxy: each proxy
        // appends the address it received from; entries left of an
        // untrusted hop are whatever the client chose to send.
        let hops: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .collect();
        for hop in hops.iter().rev() {
            match hop.trim().parse::<IpAddr>() {
                Ok(addr) => client = canonical(addr),
                // An entry that is not an address: keep the last trusted hop.
                Err(_) => return client,
            }
            if !self.is_trusted(client) {
                break;
            }
        }
        client
    }

    /// `Err(wait)` when `source` has used its budget.
    pub(crate) fn check(&self, source: IpAddr) -> Result<(), Duration> {
        if self.limiter.len() >= RETAIN_THRESHOLD {
            self.retain_recent();
        }
        self.limiter
            .check_key(&bucket(source))
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    /// Forgets the sources whose budget is full again.
    pub(crate) fn retain_recent(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    fn is_trusted(&self, addr: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|net| net.contains(&addr))
    }
}

/// IPv4-mapped IPv6 addresses as IPv4, so that a list of IPv4 proxies holds
/// on a dual-stack listener.
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    }
}

/// The key of a source: an IPv4 address, or the /64 of an IPv6 address (one
/// host usually holds a whole /64).
fn bucket(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(prefix))
        }
        v4 => v4,
    }
}

/// Parses a trusted proxy: an IP address or a CIDR network.
pub fn parse_trusted_proxy(text: &str) -> Option<IpNet> {
    let text = text.trim();
    text.parse::<IpNet>()
        .ok()
        .or_else(|| text.parse::<IpAddr>().ok().map(IpNet::from))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(trusted: &[&str]) -> LoginLimiter {
        LoginLimiter::new(60, 2, trusted.iter().map(|t| parse_trusted_proxy(t).unwrap()).collect())
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append("x-forwarded-for", v.parse().unwrap());
        }
        headers
    }

    #[test]
    fn the_source_is_the_right_most_untrusted_hop() {
        let l = limiter(&["127.0.0.1", "10.0.0.0/8"]);
        let proxy: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let from = |h: &[&str]| l.source(proxy, &xff(h)).to_string();
        assert_eq!(from(&["6.6.6.6, 1.2.3.4, 10.1.1.1"]), "1.2.3.4");
        assert_eq!(from(&["6.6.6.6", "1.2.3.4"]), "1.2.3.4");
        assert_eq!(from(&["10.0.0.2, 10.1.1.1"]), "10.0.0.2");
        assert_eq!(from(&["1.2.3.4, junk"]), "127.0.0.1");
        assert_eq!(from(&[]), "127.0.0.1");
        let stranger: SocketAddr = "192.0.2.7:9".parse().unwrap();
        assert_eq!(l.source(stranger, &xff(&["1.2.3.4"])).to_string(), "192.0.2.7");
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:9".parse().unwrap();
        assert_eq!(l.source(mapped, &xff(&["1.2.3.4"])).to_string(), "1.2.3.4");
    }

    #[test]
    fn an_ipv6_64_shares_one_budget() {
        let l = limiter(&[]);
        for host in ["2001:db8::1", "2001:db8::2"] {
            assert!(l.check(host.parse().unwrap()).is_ok());
        }
        assert!(l.check("2001:db8::3".parse().unwrap()).is_err());
        assert!(l.check("2001:db8:0:1::1".parse().unwrap()).is_ok());
    }

    #[test]
    fn proxies_parse_as_addresses_or_networks() {
        assert_eq!(parse_trusted_proxy("10.0.0.1").unwrap().to_string(), "10.0.0.1/32");
        assert_eq!(parse_trusted_proxy("fd00::/8").unwrap().to_string(), "fd00::/8");
        assert!(parse_trusted_proxy("10.0.0.0/33").is_none());
        assert!(parse_trusted_proxy("proxy.example").is_none());
    }
}
