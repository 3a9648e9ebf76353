//! Signing and verifying keys (Ed25519, P-256), their COSE_Key encoding
//! (RFC 9052 §7, RFC 9053 §7), thumbprints (RFC 9679) and key files.
//!
//! ```cddl
//! COSE_Key_OKP = { 1 => 1, ? 2 => bstr, ? 3 => -8, ? 4 => [+ int], -1 => 6, -2 => bstr .size 32, ? -4 => bstr .size 32 }
//! COSE_Key_EC2 = { 1 => 2, ? 2 => bstr, ? 3 => -7, ? 4 => [+ int], -1 => 1, -2 => bstr .size 32, -3 => bstr .size 32, ? -4 => bstr .size 32 }
//! ```
//!
//! A [`PublicKey`] can only hold a valid point: Ed25519 keys must be
//! canonically encoded and not of small order (weak), P-256 keys must be on the
//! curve. Secrets live only in [`SigningKey`], which is zeroized on drop and
//! whose `Debug` shows the algorithm and thumbprint, never key bytes.

mod file;

pub use file::{read_signing_key_file, write_signing_key_file};
// Key sets live with the key sources in `keyset`; also reachable from here.
#[doc(no_inline)]
pub use crate::keyset::{KeySet, MAX_KEYSET_SIZE};

use std::fmt;

use ed25519_dalek::Signer as _;
use p256::ecdsa::signature::Verifier as _;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::cbor::{self, Label, Reader};
use crate::encoding::b64url_encode;
use crate::error::{Code, Error, Result, err};

/// COSE algorithm identifiers supported by the profile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Algorithm {
    /// EdDSA with Ed25519 (COSE -8), verified with `verify_strict`.
    EdDSA,
    /// ECDSA with P-256 and SHA-256 (COSE -7), signatures as r‖s (64 bytes).
    ES256,
}

impl Algorithm {
    /// The COSE algorithm identifier.
    pub const fn cose_id(self) -> i64 {
        match self {
            Algorithm::EdDSA => -8,
            Algorithm::ES256 => -7,
        }
    }

    /// Looks up a COSE algorithm identifier.
    pub fn from_cose_id(id: i64) -> Option<Self> {
        match id {
            -8 => Some(Algorithm::EdDSA),
            -7 => Some(Algorithm::ES256),
            _ => None,
        }
    }

    /// The name used in the CLI and JSON output (`ed25519`, `es256`).
    pub const fn name(self) -> &'static str {
        match self {
            Algorithm::EdDSA => "ed25519",
            Algorithm::ES256 => "es256",
        }
    }

    /// Parses `ed25519`/`eddsa` or `es256`/`p256`, case-insensitively.
    pub fn from_name(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "ed25519" | "eddsa" => Some(Algorithm::EdDSA),
            "es256" | "p256" | "p-256" => Some(Algorithm::ES256),
            _ => None,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Algorithm::EdDSA => "EdDSA",
            Algorithm::ES256 => "ES256",
        })
    }
}

/// The RFC 9679 COSE Key Thumbprint (SHA-256): the identity of a key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Thumbprint(pub [u8; 32]);

impl Thumbprint {
    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for Thumbprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&b64url_encode(&self.0))
    }
}

impl fmt::Debug for Thumbprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Thumbprint({self})")
    }
}

#[derive(Clone)]
enum PublicInner {
    Ed25519(ed25519_dalek::VerifyingKey),
    P256(p256::ecdsa::VerifyingKey),
}

/// A verified-valid public key with its thumbprint computed once.
#[derive(Clone)]
pub struct PublicKey {
    inner: PublicInner,
    thumbprint: Thumbprint,
}

impl PartialEq for PublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.thumbprint == other.thumbprint
    }
}
impl Eq for PublicKey {}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({}, {})", self.algorithm(), self.thumbprint)
    }
}

impl PublicKey {
    /// Builds an Ed25519 key from its 32-byte encoding, refusing
    /// non-canonical encodings and weak (small-order) points.
    pub fn ed25519_from_bytes(x: &[u8]) -> Result<Self> {
        let bytes: &[u8; 32] = x.try_into().map_err(|_| {
            Error::new(
                Code::KeyInvalid,
                format!("Ed25519 public key is {} bytes, not 32", x.len()),
            )
        })?;
        if let Some(key) = decoded_keys::get(bytes) {
            return Ok(key);
        }
        if !is_canonical_y(bytes) {
            return err(
                Code::KeyInvalid,
                "Ed25519 public key is not canonically encoded (y ≥ p)",
            );
        }
        let key = ed25519_dalek::VerifyingKey::from_bytes(bytes)
            .map_err(|_| Error::new(Code::KeyInvalid, "Ed25519 public key is not a curve point"))?;
        if key.is_weak() {
            return err(
                Code::KeyWeak,
                "Ed25519 public key has small order (a weak key): refused",
            );
        }
        let key = Self::from_inner(PublicInner::Ed25519(key));
        decoded_keys::put(*bytes, &key);
        Ok(key)
    }

    /// Builds a P-256 key from its affine coordinates (32 bytes each).
    pub fn p256_from_coordinates(x: &[u8], y: &[u8]) -> Result<Self> {
        if x.len() != 32 || y.len() != 32 {
            return err(
                Code::KeyInvalid,
                format!("P-256 coordinates are {} and {} bytes, not 32", x.len(), y.len()),
            );
        }
        let mut sec1 = [0u8; 65];
        sec1[0] = 4;
        sec1[1..33].copy_from_slice(x);
        sec1[33..].copy_from_slice(y);
        let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1)
            .map_err(|_| Error::new(Code::KeyInvalid, "P-256 public key is not a point on the curve"))?;
        Ok(Self::from_inner(PublicInner::P256(key)))
    }

    fn from_inner(inner: PublicInner) -> Self {
        let mut key = PublicKey {
            inner,
            thumbprint: Thumbprint([0; 32]),
        };
        key.thumbprint = Thumbprint(Sha256::digest(key.encode_cose_key(None, false)).into());
        key
    }

    /// The algorithm this key is pinned to.
    pub fn algorithm(&self) -> Algorithm {
        match self.inner {
            PublicInner::Ed25519(_) => Algorithm::EdDSA,
            PublicInner::P256(_) => Algorithm::ES256,
        }
    }

    /// The RFC 9679 thumbprint.
    pub fn thumbprint(&self) -> &Thumbprint {
        &self.thumbprint
    }

    /// The default key id: the first 4 bytes of the thumbprint. Kids are not
    /// security-relevant (RFC 9052 §3.1); a key set refuses duplicates.
    pub fn default_kid(&self) -> Vec<u8> {
        self.thumbprint.0[..4].to_vec()
    }

    /// Verifies `signature` over `message`: Ed25519 with `verify_strict`,
    /// ES256 over SHA-256 with a 64-byte r‖s signature.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        match &self.inner {
            PublicInner::Ed25519(key) => {
                let Ok(bytes) = <&[u8; 64]>::try_from(signature) else {
                    return false;
                };
                key.verify_strict(message, &ed25519_dalek::Signature::from_bytes(bytes))
                    .is_ok()
            }
            PublicInner::P256(key) => {
                if signature.len() != 64 {
                    return false;
                }
                let Ok(sig) = p256::ecdsa::Signature::from_slice(signature) else {
                    return false;
                };
                key.verify(message, &sig).is_ok()
            }
        }
    }

    /// The public COSE_Key, deterministically encoded, optionally with a kid
    /// and the `alg` parameter.
    pub fn to_cose_key(&self, kid: Option<&[u8]>) -> Vec<u8> {
        self.encode_cose_key(kid, true)
    }

    /// Encodes the COSE_Key. Without kid and alg this is exactly the RFC 9679
    /// thumbprint input: only the required parameters, in deterministic order.
    fn encode_cose_key(&self, kid: Option<&[u8]>, with_alg: bool) -> Vec<u8> {
        let (x, y) = self.coordinates();
        encode_cose_key_parts(self.algorithm(), kid, with_alg, &x, y.as_ref().map(|y| &y[..]), None)
    }

    fn coordinates(&self) -> ([u8; 32], Option<[u8; 32]>) {
        match &self.inner {
            PublicInner::Ed25519(key) => (key.to_bytes(), None),
            PublicInner::P256(key) => {
                let point = key.to_sec1_point(false);
                let bytes = point.as_bytes();
                let mut x = [0u8; 32];
                let mut y = [0u8; 32];
                x.copy_from_slice(&bytes[1..33]);
                y.copy_from_slice(&bytes[33..65]);
                (x, Some(y))
            }
        }
    }

    /// Decodes a public COSE_Key (strict profile). A key carrying the private
    /// parameter `d` is refused: it belongs in a key file, not here.
    pub fn from_cose_key(bytes: &[u8]) -> Result<Self> {
        cbor::validate(bytes)?;
        let parts = CoseKeyParts::read(&mut Reader::new(bytes))?;
        parts.into_public()
    }
}

/// Ed25519 keys already decoded, by their encoding. Decompressing a point
/// costs about 4 µs (a tenth of a signature check), and a client presents the
/// same `cnf` key in every token it gets: a new token from a known client
/// then costs two signature checks and little else. Only valid, non-weak
/// keys are kept, and an entry is exactly what decoding would produce again.
pub(crate) mod decoded_keys {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};

    use super::PublicKey;

    const CAPACITY: usize = 4096;

    fn cache() -> &'static Mutex<HashMap<[u8; 32], PublicKey>> {
        static CACHE: OnceLock<Mutex<HashMap<[u8; 32], PublicKey>>> = OnceLock::new();
        CACHE.get_or_init(|| Mutex::new(HashMap::with_capacity(CAPACITY)))
    }

    pub(super) fn get(bytes: &[u8; 32]) -> Option<PublicKey> {
        cache().lock().ok()?.get(bytes).cloned()
    }

    /// Whether the key encoded as `bytes` is cached.
    #[cfg(test)]
    pub(crate) fn contains(bytes: &[u8; 32]) -> bool {
        cache().lock().is_ok_and(|map| map.contains_key(bytes))
    }

    pub(super) fn put(bytes: [u8; 32], key: &PublicKey) {
        if let Ok(mut map) = cache().lock() {
            // A flood of new keys only costs the decoding it would cost anyway.
            if map.len() >= CAPACITY {
                map.clear();
            }
            map.insert(bytes, key.clone());
        }
    }
}

/// RFC 8032 §5.1.3: the encoded y (sign bit cleared) must be below
/// p = 2^255 − 19. A byte comparison, instead of re-compressing the point,
/// saves a field inversion on every cold verification. (The other
/// non-canonical encodings, x = 0 with the sign bit set, are the points with
/// y = ±1: small order, refused as weak.)
fn is_canonical_y(bytes: &[u8; 32]) -> bool {
    const P: [u8; 32] = {
        let mut p = [0xff; 32];
        p[0] = 0xed;
        p[31] = 0x7f;
        p
    };
    let mut y = *bytes;
    y[31] &= 0x7f;
    for i in (0..32).rev() {
        if y[i] != P[i] {
            return y[i] < P[i];
        }
    }
    false
}

/// The parameters of a COSE_Key as read from the wire.
#[derive(Default)]
pub(crate) struct CoseKeyParts<'a> {
    kty: Option<i64>,
    pub(crate) kid: Option<&'a [u8]>,
    alg: Option<i64>,
    key_ops: Option<Vec<i64>>,
    crv: Option<i64>,
    x: Option<&'a [u8]>,
    y: Option<&'a [u8]>,
    d: Option<&'a [u8]>,
    compressed: bool,
}

const KTY_OKP: i64 = 1;
const KTY_EC2: i64 = 2;
const CRV_P256: i64 = 1;
const CRV_ED25519: i64 = 6;
const KEY_OP_SIGN: i64 = 1;
const KEY_OP_VERIFY: i64 = 2;

impl<'a> CoseKeyParts<'a> {
    /// Reads one COSE_Key map from validated CBOR.
    pub(crate) fn read(r: &mut Reader<'a>) -> Result<Self> {
        let Some(entries) = r.map() else {
            return err(
                Code::KeyMalformed,
                format!("a COSE_Key is a map, found {}", r.describe_next()),
            );
        };
        let mut parts = CoseKeyParts::default();
        for index in 0..entries {
            // Labels are sorted, so kty (1) comes first: of a key type this
            // profile does not know only the kid is read, whatever its other
            // parameters look like (RSA `n` at -1, symmetric `k` at -1, …),
            // so a key set can skip the entry by its kid.
            if index > 0 && parts.kty.is_some_and(|k| k != KTY_OKP && k != KTY_EC2) {
                match r.label() {
                    Some(Label::Int(2)) => {
                        let kid = r.bytes().ok_or_else(|| {
                            Error::new(Code::KeyMalformed, "COSE_Key parameter kid (2) has the wrong type")
                        })?;
                        parts.kid = Some(kid);
                    }
                    // The label was read; skip its value.
                    Some(_) => {
                        r.raw_item();
                    }
                    // An unreadable label is not consumed: skip it and its value.
                    None => {
                        r.raw_item();
                        r.raw_item();
                    }
                }
                continue;
            }
            let label = r.label();
            let bad = |what: &str| {
                Error::new(
                    Code::KeyMalformed,
                    format!("COSE_Key parameter {what} has the wrong type"),
                )
            };
            match label {
                Some(Label::Int(1)) => parts.kty = Some(r.int().ok_or_else(|| bad("kty (1)"))?),
                Some(Label::Int(2)) => parts.kid = Some(r.bytes().ok_or_else(|| bad("kid (2)"))?),
                Some(Label::Int(3)) => parts.alg = Some(r.int().ok_or_else(|| bad("alg (3)"))?),
                Some(Label::Int(4)) => {
                    let n = r.array().ok_or_else(|| bad("key_ops (4)"))?;
                    let ops = (0..n)
                        .map(|_| r.int().ok_or_else(|| bad("key_ops (4)")))
                        .collect::<Result<Vec<_>>>()?;
                    parts.key_ops = Some(ops);
                }
                Some(Label::Int(-1)) => parts.crv = Some(r.int().ok_or_else(|| bad("crv (-1)"))?),
                Some(Label::Int(-2)) => parts.x = Some(r.bytes().ok_or_else(|| bad("x (-2)"))?),
                Some(Label::Int(-3)) => {
                    if r.bool().is_some() {
                        parts.compressed = true;
                    } else {
                        parts.y = Some(r.bytes().ok_or_else(|| bad("y (-3)"))?)
                    }
                }
                Some(Label::Int(-4)) => parts.d = Some(r.bytes().ok_or_else(|| bad("d (-4)"))?),
                Some(other) => {
                    return err(
                        Code::KeyMalformed,
                        format!("COSE_Key parameter {other} is not part of the profile"),
                    );
                }
                None => return err(Code::KeyMalformed, "COSE_Key label is not an integer or text"),
            }
        }
        Ok(parts)
    }

    fn algorithm(&self) -> Result<Algorithm> {
        if let Some(kty) = self.kty.filter(|k| *k != KTY_OKP && *k != KTY_EC2) {
            return err(
                Code::KeyUnsupported,
                format!("key type {kty} is not supported (OKP/Ed25519 or EC2/P-256)"),
            );
        }
        let alg = match (self.kty, self.crv) {
            (Some(KTY_OKP), Some(CRV_ED25519)) => Algorithm::EdDSA,
            (Some(KTY_EC2), Some(CRV_P256)) => Algorithm::ES256,
            (None, _) => return err(Code::KeyMalformed, "COSE_Key has no kty (1)"),
            (_, None) => return err(Code::KeyMalformed, "COSE_Key has no crv (-1)"),
            (Some(kty), Some(crv)) => {
                return err(
                    Code::KeyUnsupported,
                    format!("key type {kty} with curve {crv} is not supported (OKP/Ed25519 or EC2/P-256)"),
                );
            }
        };
        if let Some(id) = self.alg
            && id != alg.cose_id()
        {
            return err(
                Code::KeyUnsupported,
                format!(
                    "COSE_Key alg {id} does not match its key type ({alg} is {})",
                    alg.cose_id()
                ),
            );
        }
        if alg == Algorithm::EdDSA && (self.y.is_some() || self.compressed) {
            return err(Code::KeyMalformed, "OKP key has a y coordinate");
        }
        // Checked after the pair: a compressed point is a known key type in
        // an encoding this profile does not take, so a key set skips it.
        if self.compressed {
            return err(
                Code::KeyUnsupported,
                "compressed EC2 points (y as a bool) are not supported",
            );
        }
        Ok(alg)
    }

    fn check_key_ops(&self, needed: i64) -> Result<()> {
        match &self.key_ops {
            Some(ops) if !ops.contains(&needed) => err(
                Code::KeyWrongKind,
                format!(
                    "key_ops {ops:?} does not allow {}",
                    if needed == KEY_OP_SIGN { "sign" } else { "verify" }
                ),
            ),
            _ => Ok(()),
        }
    }

    pub(crate) fn into_public(self) -> Result<PublicKey> {
        let alg = self.algorithm()?;
        if self.d.is_some() {
            return err(
                Code::KeyWrongKind,
                "a private key (with d) was given where a public key is expected",
            );
        }
        self.check_key_ops(KEY_OP_VERIFY)?;
        let x = self
            .x
            .ok_or_else(|| Error::new(Code::KeyMalformed, "COSE_Key has no x (-2)"))?;
        match alg {
            Algorithm::EdDSA => PublicKey::ed25519_from_bytes(x),
            Algorithm::ES256 => {
                let y = self
                    .y
                    .ok_or_else(|| Error::new(Code::KeyMalformed, "EC2 key has no y (-3)"))?;
                PublicKey::p256_from_coordinates(x, y)
            }
        }
    }

    fn into_signing(self) -> Result<SigningKey> {
        let alg = self.algorithm()?;
        let d = self.d.ok_or_else(|| {
            Error::new(
                Code::KeyWrongKind,
                "a public key was given where a private key (with d) is expected",
            )
        })?;
        self.check_key_ops(KEY_OP_SIGN)?;
        let key = SigningKey::from_secret_bytes(alg, d)?;
        // The stored public parameters must belong to the secret.
        if let Some(x) = self.x {
            let (own_x, own_y) = key.public.coordinates();
            if x != own_x || self.y.is_some_and(|y| Some(y) != own_y.as_ref().map(|y| &y[..])) {
                return err(
                    Code::KeyInvalid,
                    "the public parameters of the key file do not match its secret",
                );
            }
        }
        Ok(key)
    }
}

/// Writes a COSE_Key in deterministic order (1, 2, 3, -1, -2, -3, -4).
fn encode_cose_key_parts(
    alg: Algorithm,
    kid: Option<&[u8]>,
    with_alg: bool,
    x: &[u8],
    y: Option<&[u8]>,
    d: Option<&[u8]>,
) -> Vec<u8> {
    let entries =
        3 + usize::from(kid.is_some()) + usize::from(with_alg) + usize::from(y.is_some()) + usize::from(d.is_some());
    let mut out = Vec::with_capacity(160);
    cbor::write_head(&mut out, 5, entries as u64);
    let (kty, crv) = match alg {
        Algorithm::EdDSA => (KTY_OKP, CRV_ED25519),
        Algorithm::ES256 => (KTY_EC2, CRV_P256),
    };
    out.extend_from_slice(&[0x01, kty as u8]);
    if let Some(kid) = kid {
        out.push(0x02);
        cbor::write_bytes(&mut out, kid);
    }
    if with_alg {
        out.extend_from_slice(&[0x03, (0x20 | (-1 - alg.cose_id())) as u8]);
    }
    out.extend_from_slice(&[0x20, crv as u8]);
    out.push(0x21);
    cbor::write_bytes(&mut out, x);
    if let Some(y) = y {
        out.push(0x22);
        cbor::write_bytes(&mut out, y);
    }
    if let Some(d) = d {
        out.push(0x23);
        cbor::write_bytes(&mut out, d);
    }
    out
}

enum SigningInner {
    Ed25519(ed25519_dalek::SigningKey),
    P256(p256::ecdsa::SigningKey),
}

/// A private signing key. Zeroized on drop (by the underlying crates);
/// `Debug` prints only the algorithm and the public thumbprint.
pub struct SigningKey {
    inner: SigningInner,
    public: PublicKey,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SigningKey({}, {}, [redacted])",
            self.public.algorithm(),
            self.public.thumbprint
        )
    }
}

impl SigningKey {
    /// Generates a fresh key from the operating system's CSPRNG.
    pub fn generate(alg: Algorithm) -> Result<Self> {
        loop {
            let mut seed = Zeroizing::new([0u8; 32]);
            getrandom::fill(&mut seed[..]).map_err(|e| {
                Error::new(
                    Code::SystemRandomnessUnavailable,
                    format!("no randomness available: {e}"),
                )
                .with_source(e)
            })?;
            match Self::from_secret_bytes(alg, &seed[..]) {
                Ok(key) => return Ok(key),
                // A P-256 scalar of zero or ≥ n: astronomically rare; draw again.
                Err(_) if alg == Algorithm::ES256 => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Builds a key from its 32 secret bytes: the Ed25519 seed, or the P-256
    /// scalar (big-endian, 0 < d < n).
    pub fn from_secret_bytes(alg: Algorithm, secret: &[u8]) -> Result<Self> {
        let bytes: &[u8; 32] = secret.try_into().map_err(|_| {
            Error::new(
                Code::KeyInvalid,
                format!("private key is {} bytes, not 32", secret.len()),
            )
        })?;
        let (inner, public) = match alg {
            Algorithm::EdDSA => {
                let key = ed25519_dalek::SigningKey::from_bytes(bytes);
                let public = PublicKey::from_inner(PublicInner::Ed25519(key.verifying_key()));
                (SigningInner::Ed25519(key), public)
            }
            Algorithm::ES256 => {
                let key = p256::ecdsa::SigningKey::from_slice(bytes).map_err(|_| {
                    Error::new(
                        Code::KeyInvalid,
                        "P-256 private scalar is zero or not below the group order",
                    )
                })?;
                let public = PublicKey::from_inner(PublicInner::P256(*key.verifying_key()));
                (SigningInner::P256(key), public)
            }
        };
        Ok(SigningKey { inner, public })
    }

    /// Derives a key deterministically from `seed` material with HKDF-SHA256
    /// (RFC 5869). Used for per-epoch issuer keys and for test vectors.
    pub fn derive(alg: Algorithm, seed: &[u8], info: &[u8]) -> Result<Self> {
        let hk = hkdf::Hkdf::<Sha256>::new(Some(b"keybound key derivation v1"), seed);
        for counter in 0u8..=255 {
            let mut okm = Zeroizing::new([0u8; 32]);
            let mut full_info = info.to_vec();
            full_info.push(counter);
            hk.expand(&full_info, &mut okm[..])
                .map_err(|_| Error::new(Code::KeyInvalid, "HKDF output length is invalid"))?;
            if let Ok(key) = Self::from_secret_bytes(alg, &okm[..]) {
                return Ok(key);
            }
        }
        err(Code::KeyInvalid, "no valid key could be derived")
    }

    /// The algorithm of this key.
    pub fn algorithm(&self) -> Algorithm {
        self.public.algorithm()
    }

    /// The matching public key.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// Signs `message`: Ed25519 (deterministic), or ES256 with RFC 6979
    /// deterministic nonces, as 64-byte r‖s.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        match &self.inner {
            SigningInner::Ed25519(key) => key.sign(message).to_bytes().to_vec(),
            SigningInner::P256(key) => {
                let sig: p256::ecdsa::Signature = p256::ecdsa::signature::Signer::sign(key, message);
                sig.to_bytes().to_vec()
            }
        }
    }

    /// The private COSE_Key (with `alg`, optionally a kid), in a buffer that
    /// is zeroized when dropped.
    pub fn to_cose_key(&self, kid: Option<&[u8]>) -> Zeroizing<Vec<u8>> {
        let (x, y) = self.public.coordinates();
        let secret: Zeroizing<[u8; 32]> = Zeroizing::new(match &self.inner {
            SigningInner::Ed25519(key) => key.to_bytes(),
            SigningInner::P256(key) => key.to_bytes().into(),
        });
        Zeroizing::new(encode_cose_key_parts(
            self.algorithm(),
            kid,
            true,
            &x,
            y.as_ref().map(|y| &y[..]),
            Some(&secret[..]),
        ))
    }

    /// Decodes a private COSE_Key (strict profile).
    pub fn from_cose_key(bytes: &[u8]) -> Result<Self> {
        cbor::validate(bytes)?;
        CoseKeyParts::read(&mut Reader::new(bytes))?.into_signing()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoding::{hex_decode, hex_encode};

    #[test]
    fn rfc9679_thumbprint_known_answer() {
        // RFC 9679 §6 example key (EC2, P-256) and its thumbprint.
        let x = hex_decode("65eda5a12577c2bae829437fe338701a10aaa375e1bb5b5de108de439c08551d").unwrap();
        let y = hex_decode("1e52ed75701163f7f9e40ddf9f341b3dc9ba860af7e0ca7ca7e9eecd0084d19c").unwrap();
        let key = PublicKey::p256_from_coordinates(&x, &y).unwrap();
        assert_eq!(
            hex_encode(key.thumbprint().as_bytes()),
            "496bd8afadf307e5b08c64b0421bf9dc01528a344a43bda88fadd1669da253ec"
        );
    }

    #[test]
    fn cose_key_round_trip_and_coset_agreement() {
        for alg in [Algorithm::EdDSA, Algorithm::ES256] {
            let key = SigningKey::derive(alg, b"seed", b"round trip").unwrap();
            let public = key.public_key();
            let encoded = public.to_cose_key(Some(b"kid-1"));
            let decoded = PublicKey::from_cose_key(&encoded).unwrap();
            assert_eq!(&decoded, public);
            // coset reads what we write, with the same parameters.
            let via_coset = <coset::CoseKey as coset::CborSerializable>::from_slice(&encoded).unwrap();
            assert_eq!(via_coset.key_id, b"kid-1".to_vec());
            let private = key.to_cose_key(None);
            let back = SigningKey::from_cose_key(&private).unwrap();
            assert_eq!(back.public_key(), public);
            assert!(PublicKey::from_cose_key(&private).is_err_and(|e| e.code() == Code::KeyWrongKind));
            assert!(SigningKey::from_cose_key(&encoded).is_err_and(|e| e.code() == Code::KeyWrongKind));
        }
    }

    #[test]
    fn debug_prints_no_key_bytes() {
        for alg in [Algorithm::EdDSA, Algorithm::ES256] {
            let key = SigningKey::derive(alg, b"seed", b"debug").unwrap();
            let secret = key.to_cose_key(None);
            let d = &secret[secret.len() - 32..];
            let printed = format!("{key:?} {:?}", key.public_key());
            for needle in [hex_encode(d), hex_encode(&d[..8]), format!("{:?}", &d[..4])] {
                assert!(!printed.contains(&needle), "{printed}");
            }
            assert!(printed.contains("[redacted]"));
        }
    }

    #[test]
    fn weak_and_invalid_keys_are_refused() {
        let identity = hex_decode("0100000000000000000000000000000000000000000000000000000000000000").unwrap();
        let order8 = hex_decode("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa").unwrap();
        assert_eq!(
            PublicKey::ed25519_from_bytes(&identity).unwrap_err().code(),
            Code::KeyWeak
        );
        assert_eq!(
            PublicKey::ed25519_from_bytes(&order8).unwrap_err().code(),
            Code::KeyWeak
        );
        assert_eq!(
            PublicKey::ed25519_from_bytes(&[0u8; 31]).unwrap_err().code(),
            Code::KeyInvalid
        );
        // y = p + 2 would decode to the same point as y = 2 if it were accepted.
        let mut non_canonical = [0xff; 32];
        non_canonical[0] = 0xef;
        non_canonical[31] = 0x7f;
        assert_eq!(
            PublicKey::ed25519_from_bytes(&non_canonical).unwrap_err().code(),
            Code::KeyInvalid
        );
        assert!(is_canonical_y(&[0xec; 32].map(|b| b & 0x7f)));
        assert_eq!(
            PublicKey::p256_from_coordinates(&[0u8; 32], &[0u8; 32])
                .unwrap_err()
                .code(),
            Code::KeyInvalid
        );
    }

    #[test]
    fn signatures_verify_and_are_pinned_to_the_key() {
        for alg in [Algorithm::EdDSA, Algorithm::ES256] {
            let key = SigningKey::derive(alg, b"seed", b"sign").unwrap();
            let sig = key.sign(b"message");
            assert_eq!(sig.len(), 64);
            assert!(key.public_key().verify(b"message", &sig));
            assert!(!key.public_key().verify(b"messagf", &sig));
            let other = SigningKey::derive(alg, b"seed", b"other").unwrap();
            assert!(!other.public_key().verify(b"message", &sig));
            assert!(!key.public_key().verify(b"message", &sig[..63]));
        }
    }
}
