//! COSE_KeySet: an issuer's public keys, each with a `kid`, and the key-set
//! document an issuer publishes (spec/formats.md §6.1).
//!
//! ```cddl
//! KeySetDocument = COSE_KeySet / SequencedKeySet
//! COSE_KeySet = [+ COSE_Key]   ; every key has kid (2); kids are unique
//! SequencedKeySet = { 1 => uint .ge 1, 2 => [* COSE_Key] }   ; [] withdraws every key
//! ```

use std::sync::Arc;

use crate::cbor::{self, Reader};
use crate::error::{Code, Error, Result, err};
use crate::key::{CoseKeyParts, PublicKey};

/// Largest key set accepted, in bytes: room for dozens of keys.
pub const MAX_KEYSET_SIZE: usize = 64 * 1024;

/// The public keys of one issuer, looked up by `kid`, with the sequence
/// number the issuer published them under (0: none, a bare COSE_KeySet).
#[derive(Clone, Debug, Default)]
pub struct KeySet {
    keys: Vec<(Vec<u8>, Arc<PublicKey>)>,
    sequence: u64,
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

    /// The same keys under `sequence` (spec/formats.md §6.1): the issuer
    /// raises it whenever the set changes, and verifiers refuse a set with a
    /// lower one than they have seen (`keyset.rollback`).
    pub fn with_sequence(mut self, sequence: u64) -> Self {
        self.sequence = sequence;
        self
    }

    /// The sequence number (0 for a bare COSE_KeySet).
    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    /// Whether this set may replace `held`, the set a source holds (K3
    /// step 6): not when its sequence is lower (`keyset.rollback`, catalog
    /// FD-05); an equal sequence may.
    pub fn may_replace(&self, held: &KeySet) -> Result<()> {
        if self.sequence < held.sequence {
            return err(
                Code::KeySetRollback,
                format!(
                    "a key set of sequence {} does not replace the one of sequence {} held: keeping the last good set",
                    self.sequence, held.sequence
                ),
            );
        }
        Ok(())
    }

    /// True for a sequenced document with no key: the issuer withdrew every
    /// key, and no token of it verifies any more (catalog FD-04).
    pub fn is_withdrawn(&self) -> bool {
        self.sequence > 0 && self.keys.is_empty()
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

    /// Encodes the key-set document: the bare COSE_KeySet (each key with
    /// kid and alg) when the sequence is 0, else `{1: sequence, 2: keys}`.
    pub fn to_cbor(&self) -> Vec<u8> {
        let mut out = Vec::new();
        if self.sequence > 0 {
            cbor::write_map(&mut out, 2);
            cbor::write_uint(&mut out, 1);
            cbor::write_uint(&mut out, self.sequence);
            cbor::write_uint(&mut out, 2);
        }
        cbor::write_array(&mut out, self.keys.len());
        for (kid, key) in &self.keys {
            out.extend_from_slice(&key.to_cose_key(Some(kid)));
        }
        out
    }

    /// Decodes a key-set document (spec/verification.md K3): a bare
    /// COSE_KeySet, or a sequenced one (`{1: sequence ≥ 1, 2: keys}`, whose
    /// key array may be empty: a withdrawal). An entry is skipped
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
        let mut sequence = 0;
        if let Some(entries) = r.map() {
            // Deterministic encoding: exactly 1 then 2.
            if entries != 2 || r.uint() != Some(1) {
                return err(
                    Code::KeySetInvalid,
                    "a sequenced key set is the map {1: sequence, 2: keys}",
                );
            }
            sequence = match r.uint() {
                Some(n) if n >= 1 => n,
                _ => {
                    return err(
                        Code::KeySetInvalid,
                        "a key-set sequence is an unsigned integer of at least 1",
                    );
                }
            };
            if r.uint() != Some(2) {
                return err(
                    Code::KeySetInvalid,
                    "a sequenced key set is the map {1: sequence, 2: keys}",
                );
            }
        }
        let Some(count) = r.array() else {
            return err(Code::KeySetInvalid, "a COSE_KeySet is an array of COSE_Keys");
        };
        let mut set = KeySet::new().with_sequence(sequence);
        if count == 0 && sequence > 0 {
            return Ok(set);
        }
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
    fn sequenced_sets_round_trip_and_may_withdraw_every_key() {
        let a = SigningKey::derive(Algorithm::EdDSA, b"s", b"a").unwrap();
        let set = KeySet::new()
            .with(b"a".to_vec(), a.public_key().clone())
            .unwrap()
            .with_sequence(7);
        let bytes = set.to_cbor();
        assert_eq!(&bytes[..5], &[0xa2, 0x01, 0x07, 0x02, 0x81]);
        let decoded = KeySet::from_cbor(&bytes).unwrap();
        assert_eq!(decoded.sequence(), 7);
        assert!(decoded.get(b"a").is_some() && !decoded.is_withdrawn());
        // Sequence 0 is the bare COSE_KeySet: one encoding per document.
        assert_eq!(set.clone().with_sequence(0).to_cbor()[0], 0x81);
        let withdrawn = KeySet::from_cbor(&[0xa2, 0x01, 0x09, 0x02, 0x80]).unwrap();
        assert!(withdrawn.is_withdrawn() && withdrawn.sequence() == 9);
        for bad in [
            &[0xa2, 0x01, 0x00, 0x02, 0x80][..],         // sequence 0
            &[0xa1, 0x01, 0x01],                         // no keys
            &[0xa3, 0x01, 0x01, 0x02, 0x80, 0x03, 0x00], // another label
            &[0xa2, 0x01, 0x20, 0x02, 0x80],             // negative sequence
        ] {
            assert_eq!(
                KeySet::from_cbor(bad).unwrap_err().code(),
                Code::KeySetInvalid,
                "{bad:02x?}"
            );
        }
        // Labels out of order are not deterministic CBOR (the strict profile).
        let unordered = KeySet::from_cbor(&[0xa2, 0x02, 0x80, 0x01, 0x01]).unwrap_err();
        assert_eq!(unordered.code(), Code::CborNotDeterministic);
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
