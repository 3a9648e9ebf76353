//! Routing-slip verification: steps S1–S8 of spec/delegation.md §10.4.
//!
//! S1–S3 parse ([`UnverifiedSlip`]); S4–S6 here check the issuer, the key,
//! the signature and the times with the verifier's own trusted issuers and
//! key sources (no second key cache); S7–S8 ([`VerifiedSlip::check_for`])
//! bind a verified slip to the request that carries it.

use std::sync::Arc;

use super::token::{IssuerKeys, truncate};
use crate::delegation::slip::{Hop, SLIP_AAD, SlipContent, UnverifiedSlip, WORKFLOW_ID_LEN};
use crate::encoding::b64url_encode;
use crate::error::{Code, Result, err};
use crate::key::Thumbprint;
use crate::token::VerifiedToken;

/// A routing slip whose issuer, signature and times were checked (S1–S6).
/// No public constructor: only the verifier makes one. It grants nothing by
/// itself; it tells a trustee which trust to mint its next hop's token from.
#[derive(Clone, Debug)]
pub struct VerifiedSlip {
    bytes: Arc<[u8]>,
    content: SlipContent,
    kid: Vec<u8>,
    issuer_key: Thumbprint,
}

impl VerifiedSlip {
    /// The issuer that signed it.
    pub fn issuer(&self) -> &str {
        &self.content.issuer
    }
    /// The workflow run's id: 16 random bytes.
    pub fn workflow_id(&self) -> &[u8; WORKFLOW_ID_LEN] {
        &self.content.workflow_id
    }
    /// The workflow id as 22 base64url characters, as decision records show it.
    pub fn workflow_id_base64url(&self) -> String {
        b64url_encode(&self.content.workflow_id)
    }
    /// The workflow's name (the workplan's).
    pub fn workflow(&self) -> &str {
        &self.content.workflow
    }
    /// `name@domain` of the user who ran the workflow and created its trusts.
    pub fn trustor(&self) -> &str {
        &self.content.trustor
    }
    /// When the issuer signed it.
    pub fn issued_at(&self) -> u64 {
        self.content.issued_at
    }
    /// When it stops being accepted (plus the leeway).
    pub fn expires_at(&self) -> u64 {
        self.content.expires_at
    }
    /// Every hop, in the issuer's order.
    pub fn hops(&self) -> &[Hop] {
        &self.content.hops
    }
    /// The hop in which `trustee` calls `audience`, if the slip has one
    /// (there is at most one).
    pub fn hop(&self, trustee: &str, audience: &str) -> Option<&Hop> {
        self.content
            .hops
            .iter()
            .find(|h| h.trustee == trustee && h.audience == audience)
    }
    /// The slip's bytes exactly as verified, to carry on (`KB-Slip`, a
    /// queued message), where the next service verifies them again.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
    /// [`Self::as_bytes`] in base64url, the `KB-Slip` header's value.
    pub fn to_base64url(&self) -> String {
        b64url_encode(&self.bytes)
    }
    /// The issuer key id that signed it.
    pub fn kid(&self) -> &[u8] {
        &self.kid
    }
    /// Thumbprint of the issuer key that signed it.
    pub fn issuer_key_thumbprint(&self) -> &Thumbprint {
        &self.issuer_key
    }

    /// Steps S7–S8: this slip belongs to the request whose verified token is
    /// `token` (the token passed T9, so its audience is this service's).
    /// S7: signed by the token's issuer for the token's subject, else
    /// `slip.wrong_trustor`. S8, for a delegated token: a hop names the
    /// token's trust, its current actor as trustee and this service as
    /// audience, else `slip.hop_mismatch`.
    pub fn check_for(&self, token: &VerifiedToken) -> Result<()> {
        let content = &self.content;
        if content.issuer != token.issuer() || content.trustor != token.subject() {
            return err(
                Code::SlipWrongTrustor,
                format!(
                    "the slip is for {:?} at {:?}; the request's subject is {:?} at {:?}",
                    content.trustor,
                    truncate(&content.issuer),
                    truncate(token.subject()),
                    truncate(token.issuer())
                ),
            );
        }
        let (Some(trust), Some(actor)) = (token.trust_id(), token.current_actor()) else {
            return Ok(());
        };
        let audience = token.audience();
        if content
            .hops
            .iter()
            .any(|h| h.trust_id == trust && h.trustee == actor && h.audience == audience)
        {
            return Ok(());
        }
        let why = match content.hops.iter().find(|h| h.trust_id == trust) {
            None => format!("no hop of the slip names trust {:?}", truncate(trust)),
            Some(_) => format!(
                "no hop of the slip has trust {:?} with trustee {:?} calling {:?}",
                truncate(trust),
                truncate(actor),
                truncate(audience)
            ),
        };
        err(Code::SlipHopMismatch, why)
    }
}

impl AsRef<[u8]> for VerifiedSlip {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

/// Steps S1–S6 at time `now` with clock `leeway`.
pub(crate) fn verify_slip(bytes: &[u8], issuers: &dyn IssuerKeys, leeway: u64, now: u64) -> Result<VerifiedSlip> {
    let slip = UnverifiedSlip::parse(bytes)?;
    // S4
    let Some(set) = issuers.key_set(slip.issuer()) else {
        return err(
            Code::SlipIssuerUnknown,
            format!("the slip's issuer {:?} is not trusted here", truncate(slip.issuer())),
        );
    };
    // S5
    let Some(key) = set.get(slip.kid()) else {
        return err(
            Code::SlipKeyUnknown,
            format!(
                "issuer {:?} has no key with the slip's kid {}",
                truncate(slip.issuer()),
                crate::encoding::hex_encode(&slip.kid()[..slip.kid().len().min(32)])
            ),
        );
    };
    if slip.alg() != key.algorithm() {
        return err(
            Code::SlipBadSignature,
            format!(
                "the slip's header says {} but the issuer key is {}",
                slip.alg(),
                key.algorithm()
            ),
        );
    }
    slip.sign1
        .verify(key, SLIP_AAD, Code::SlipBadSignature, Code::SlipBadSignature)
        .map_err(|_| {
            crate::Error::new(
                Code::SlipBadSignature,
                "the slip's signature does not verify with the issuer key named by its kid",
            )
        })?;
    // S6
    let content = &slip.content;
    if content.expires_at.saturating_add(leeway) < now {
        return err(
            Code::SlipExpired,
            format!(
                "the slip expired at {} and it is now {now} (leeway {leeway}s): the workflow run is over; run its workplan again",
                content.expires_at
            ),
        );
    }
    if content.issued_at > now.saturating_add(leeway) {
        return err(
            Code::SlipNotYetValid,
            format!(
                "the slip was issued at {} and it is now {now} ({}s in the future, leeway {leeway}s); check the clocks",
                content.issued_at,
                content.issued_at - now
            ),
        );
    }
    let kid = slip.kid().to_vec();
    Ok(VerifiedSlip {
        bytes: Arc::from(bytes),
        issuer_key: *key.thumbprint(),
        kid,
        content: slip.content,
    })
}
