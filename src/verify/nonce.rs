//! Stateless server nonces (RFC 9449 §8, without per-client state).
//!
//! `nonce = epoch (4 bytes, big-endian) ‖ tag (16 bytes)`, where
//! `epoch = ⌊now / epoch_seconds⌋` and `tag` is HKDF-SHA256-Expand of a
//! service secret with info `"keybound-nonce-v1" ‖ len(aud) ‖ aud ‖ epoch`.
//! Replicas sharing the secret agree without talking to each other; nonces of
//! the current and the previous epoch are accepted, and those of the next
//! epoch during its last [`DEFAULT_NONCE_SKEW`] seconds before it begins (a
//! replica whose clock is a little ahead may already hand them out).

use hkdf::Hkdf;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::error::{Code, Result, err};
use crate::proof::NonceValidator;

/// Length of a nonce.
pub const NONCE_LEN: usize = 20;
/// Default epoch length: a nonce lives 60 to 120 seconds (up to 125 with the
/// default clock skew allowance).
pub const DEFAULT_NONCE_EPOCH: u64 = 60;
/// Default clock difference between replicas tolerated for next-epoch nonces.
pub const DEFAULT_NONCE_SKEW: u64 = 5;

/// Issues and checks stateless nonces for one audience.
pub struct NonceService {
    prk: Hkdf<Sha256>,
    audience: String,
    epoch_seconds: u64,
    skew: u64,
}

impl std::fmt::Debug for NonceService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "NonceService({:?}, epoch {} s, secret [redacted])",
            self.audience, self.epoch_seconds
        )
    }
}

impl NonceService {
    /// A nonce service keyed by `secret` (at least 32 bytes) for `audience`.
    pub fn new(secret: &[u8], audience: impl Into<String>, epoch_seconds: u64) -> Result<Self> {
        if secret.len() < 32 {
            return err(Code::ConfigInvalid, "a nonce secret must be at least 32 bytes");
        }
        if epoch_seconds == 0 {
            return err(Code::ConfigInvalid, "the nonce epoch must be at least one second");
        }
        Ok(NonceService {
            prk: Hkdf::<Sha256>::new(Some(b"keybound-nonce-v1"), secret),
            audience: audience.into(),
            epoch_seconds,
            skew: DEFAULT_NONCE_SKEW.min(epoch_seconds),
        })
    }

    /// How far ahead another replica's clock may be: a nonce of the next
    /// epoch is accepted from `skew` seconds before that epoch begins
    /// (default [`DEFAULT_NONCE_SKEW`]; 0 turns it off). At most one epoch.
    pub fn clock_skew(mut self, seconds: u64) -> Self {
        self.skew = seconds.min(self.epoch_seconds);
        self
    }

    fn epoch(&self, now: u64) -> u32 {
        (now / self.epoch_seconds) as u32
    }

    fn tag(&self, epoch: u32) -> [u8; 16] {
        let mut info = Vec::with_capacity(32 + self.audience.len());
        info.extend_from_slice(b"keybound-nonce-v1");
        info.extend_from_slice(&(self.audience.len() as u32).to_be_bytes());
        info.extend_from_slice(self.audience.as_bytes());
        info.extend_from_slice(&epoch.to_be_bytes());
        let mut tag = [0u8; 16];
        // 16 bytes is far below HKDF's output limit.
        self.prk.expand(&info, &mut tag).expect("16-byte HKDF output");
        tag
    }

    /// The nonce to hand out at `now`.
    pub fn current(&self, now: u64) -> Vec<u8> {
        let epoch = self.epoch(now);
        [&epoch.to_be_bytes()[..], &self.tag(epoch)].concat()
    }
}

impl NonceValidator for NonceService {
    fn is_valid(&self, nonce: &[u8], now: u64) -> bool {
        if nonce.len() != NONCE_LEN {
            return false;
        }
        let epoch = u32::from_be_bytes([nonce[0], nonce[1], nonce[2], nonce[3]]);
        let current = self.epoch(now);
        let ahead = self.epoch(now.saturating_add(self.skew));
        if epoch != current && epoch.checked_add(1) != Some(current) && epoch != ahead {
            return false;
        }
        self.tag(epoch).ct_eq(&nonce[4..]).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_and_previous_epoch_only() {
        let s = NonceService::new(&[7; 32], "https://nova.example", 60).unwrap();
        let n = s.current(6000);
        assert!(s.is_valid(&n, 6000));
        assert!(s.is_valid(&n, 6059 + 60));
        assert!(!s.is_valid(&n, 6000 + 120));
        assert!(!s.is_valid(&n, 5999 - DEFAULT_NONCE_SKEW));
        // A replica whose clock is up to the skew behind already accepts it.
        assert!(s.is_valid(&n, 6000 - DEFAULT_NONCE_SKEW));
        let strict = NonceService::new(&[7; 32], "https://nova.example", 60)
            .unwrap()
            .clock_skew(0);
        assert!(!strict.is_valid(&n, 5999));
        let mut forged = n.clone();
        forged[10] ^= 1;
        assert!(!s.is_valid(&forged, 6000));
        let other = NonceService::new(&[7; 32], "https://glance.example", 60).unwrap();
        assert!(!other.is_valid(&n, 6000), "a nonce of another audience");
        let other_secret = NonceService::new(&[8; 32], "https://nova.example", 60).unwrap();
        assert!(!other_secret.is_valid(&n, 6000));
        assert!(NonceService::new(&[7; 16], "a", 60).is_err());
    }
}
