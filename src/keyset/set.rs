//! COSE_KeySet: an issuer's public keys, each with a `kid`.
//!
//! ```cddl
//! COSE_KeySet = [+ COSE_Key]   ; every key has kid (2); kids are unique
//! ```

use std::sync::Arc;

use crate::cbor::{self, Reader};
use crate::error::{Code, Error, Result, err};
use crate::key::{CoseKeyParts, PublicKey};

/// Largest key set accepted, in bytes: room for dozens of keys.
pub const MAX_KEYSET_SIZE: usize = 64 * 1024;

/// The public keys of one issuer, looked up by `kid`.
#[derive(Clone, Debug, Default)]
pub struct KeySet {
    keys: Vec<(Vec<u8>, Arc<PublicKey>)>,
}

impl KeySet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a key under `kid`, refusing a kid that is already present.
    pub fn insert(&mut self, kid: Vec<u8>, key: PublicKey) -> Result<()> {
        if kid.is_empty() {
            return err(Code::KeySetInvalid, "a key set entry needs a non-empty kid");
        }
        if self.get(&kid).is_some() {
            return err(
                Code::KeySetInvalid,
                format!("two keys share the kid {}", crate::encoding::hex_encode(&kid)),
            );
        }
        self.keys.push((kid, Arc::new(key)));
        Ok(())
    }

    /// Builder-style [`KeySet::insert`].
    pub fn with(mut self, kid: Vec<u8>, key: PublicKey) -> Result<Self> {
        self.insert(kid, key)?;
        Ok(self)
    }

    /// The key with this kid.
    pub fn get(&self, kid: &[u8]) -> Option<&Arc<PublicKey>> {
        self.keys.iter().find(|(k, _)| k == kid).map(|(_, key)| key)
    }

    /// All (kid, key) pairs, in set order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &Arc<PublicKey>)> {
        self.keys.iter().map(|(kid, key)| (kid.as_slice(), key))
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when the set holds no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Encodes the set as a COSE_KeySet (each key with kid and alg).
    pub fn to_cbor(&self) -> Vec<u8> {
        let mut out = Vec::new();
        cbor::write_array(&mut out, self.keys.len());
        for (kid, key) in &self.keys {
            out.extend_from_slice(&key.to_cose_key(Some(kid)));
        }
        out
    }

    /// Decodes a COSE_KeySet (spec/verification.md K3). An entry is skipped
    /// by its kid when its kty is neither OKP nor EC2 (then nothing but the
    /// kid is read), or when it is an OKP or EC2 key this profile cannot use
    /// (`key.unsupported`: another curve or alg, a compressed EC2 point), so
    /// an issuer can add a new key without breaking older verifiers; any
    /// other defect refuses the whole set, as do duplicate kids, private
    /// keys, or a set with no usable key.
    pub fn from_cbor(bytes: &[u8]) -> Result<Self> {
        if bytes.len() > MAX_KEYSET_SIZE {
            return err(
                Code::CborTooLarge,
                format!("key set is {} bytes; the limit is {MAX_KEYSET_SIZE}", bytes.len()),
            );
        }
        cbor::validate(bytes)?;
        let mut r = Reader::new(bytes);
        let Some(count) = r.array() else {
            return err(Code::KeySetInvalid, "a COSE_KeySet is an array of COSE_Keys");
        };
        let mut set = KeySet::new();
        for index in 0..count {
            let parts = CoseKeyParts::read(&mut r).map_err(|e| in_entry(index, e))?;
            let Some(kid) = parts.kid.map(<[u8]>::to_vec) else {
                return err(Code::KeySetInvalid, format!("key {index} of the set has no kid"));
            };
            match parts.into_public() {
                Ok(key) => set.insert(kid, key)?,
                Err(e) if e.code() == Code::KeyUnsupported => continue,
                Err(e) => return Err(in_entry(index, e)),
            }
        }
        if set.is_empty() {
            return err(Code::KeySetInvalid, "the key set holds no usable key");
        }
        Ok(set)
    }
}

fn in_entry(index: usize, e: Error) -> Error {
    Error::new(Code::KeySetInvalid, format!("key {index} of the set: {e}")).with_source(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::{Algorithm, SigningKey};

    #[test]
    fn entries_of_unknown_key_types_are_skipped_by_kid() {
        let a = SigningKey::derive(Algorithm::EdDSA, b"s", b"a").unwrap();
        let good = a.public_key().to_cose_key(Some(b"a"));
        // RSA (kty 3: n at -1, e at -2) and symmetric (kty 4: k at -1).
        let rsa = "a40103024372736120430100012143010001";
        let symmetric = "a30104024373796d2050000102030405060708090a0b0c0d0e0f";
        for other in [rsa, symmetric] {
            let other = crate::encoding::hex_decode(other).unwrap();
            let mut bytes = vec![0x82];
            bytes.extend_from_slice(&other);
            bytes.extend_from_slice(&good);
            let set = KeySet::from_cbor(&bytes).unwrap();
            assert_eq!(set.len(), 1);
            assert!(set.get(b"a").is_some());
        }
        // Without a kid the entry still refuses the set.
        let no_kid = crate::encoding::hex_decode("a201032043010001").unwrap();
        let mut bytes = vec![0x82];
        bytes.extend_from_slice(&no_kid);
        bytes.extend_from_slice(&good);
        assert_eq!(KeySet::from_cbor(&bytes).unwrap_err().code(), Code::KeySetInvalid);
    }

    #[test]
    fn compressed_ec2_entries_are_skipped_and_okp_with_y_refuses() {
        let a = SigningKey::derive(Algorithm::EdDSA, b"s", b"a").unwrap();
        let good = a.public_key().to_cose_key(Some(b"a"));
        let x = [7u8; 32];
        // {1: 2, 2: h'63', 3: -7, -1: 1, -2: x, -3: true}: EC2/P-256, compressed y.
        let mut compressed = vec![
            0xa6, 0x01, 0x02, 0x02, 0x41, b'c', 0x03, 0x26, 0x20, 0x01, 0x21, 0x58, 0x20,
        ];
        compressed.extend_from_slice(&x);
        compressed.extend_from_slice(&[0x22, 0xf5]);
        let set = KeySet::from_cbor(&[&[0x82][..], &compressed, &good].concat()).unwrap();
        assert_eq!(set.len(), 1);
        assert!(set.get(b"c").is_none());
        // An OKP key never has y, in either form: the set is refused.
        let mut okp_y = vec![0xa5, 0x01, 0x01, 0x02, 0x41, b'o', 0x20, 0x06, 0x21, 0x58, 0x20];
        okp_y.extend_from_slice(&x);
        okp_y.extend_from_slice(&[0x22, 0xf5]);
        let refused = KeySet::from_cbor(&[&[0x82][..], &okp_y, &good].concat()).unwrap_err();
        assert_eq!(refused.code(), Code::KeySetInvalid);
    }

    #[test]
    fn round_trip_and_duplicates() {
        let a = SigningKey::derive(Algorithm::EdDSA, b"s", b"a").unwrap();
        let b = SigningKey::derive(Algorithm::ES256, b"s", b"b").unwrap();
        let set = KeySet::new()
            .with(b"a".to_vec(), a.public_key().clone())
            .unwrap()
            .with(b"b".to_vec(), b.public_key().clone())
            .unwrap();
        let decoded = KeySet::from_cbor(&set.to_cbor()).unwrap();
        assert_eq!(decoded.get(b"b").unwrap().as_ref(), b.public_key());
        assert!(decoded.get(b"c").is_none());
        let mut dup = Vec::new();
        cbor::write_array(&mut dup, 2);
        dup.extend_from_slice(&a.public_key().to_cose_key(Some(b"x")));
        dup.extend_from_slice(&b.public_key().to_cose_key(Some(b"x")));
        assert_eq!(KeySet::from_cbor(&dup).unwrap_err().code(), Code::KeySetInvalid);
        assert_eq!(KeySet::from_cbor(&[0x80]).unwrap_err().code(), Code::KeySetInvalid);
    }
}
