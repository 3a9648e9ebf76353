//! Steps D1–D5 (spec/verification.md §4a): the structure of a delegated
//! token, checked offline after T12, on the signed claims alone (a trust id
//! and an actor chain are only ever read from the payload: DL-09).
//!
//! A service cannot see the trust itself (the issuer re-checks it at every
//! mint, spec/delegation.md §4); it checks what the issuer guarantees of
//! every token it mints from one: trust id and actor chain together, only in
//! service tokens, at most [`MAX_DELEGATION_CHAIN`] actors, each the
//! issuer's own user (a name, no `iss`), none the subject and none twice.
//! A token that passes is a plain token or a delegated one that a handler
//! and the policy can rely on: the current actor (the first) is the key
//! holder, the subject the trustor; inner actors are history (DL-10).

use crate::error::{Code, Result, err};
use crate::token::{Claims, MAX_DELEGATION_CHAIN, TokenKind};
use crate::verify::token::truncate;

/// D1–D5 on claims whose signature and times were checked (T1–T12).
pub(crate) fn check(claims: &Claims) -> Result<()> {
    let chain = &claims.actor_chain;
    // D1: both or neither. T4 already refused an empty chain (and one over
    // the wire limit of 8).
    match (claims.trust_id.as_deref(), chain.is_empty()) {
        (None, true) => return Ok(()),
        (Some(""), _) => return err(Code::DelegationIncomplete, "the trust id (5) is empty"),
        (Some(_), true) => {
            return err(
                Code::DelegationIncomplete,
                "the token names a trust (5) but no actor chain (6): a delegated token says who acts",
            );
        }
        (None, false) => {
            return err(
                Code::DelegationIncomplete,
                "the token has an actor chain (6) but no trust id (5): a delegated token names its trust",
            );
        }
        (Some(_), false) => {}
    }
    // D2
    if claims.kind != TokenKind::Service {
        return err(
            Code::DelegationKind,
            "a session token carries a trust id or actor chain; only service tokens are delegated",
        );
    }
    // D3
    if chain.len() > MAX_DELEGATION_CHAIN {
        return err(
            Code::DelegationTooDeep,
            format!(
                "the actor chain has {} actors; a chain of trusts has at most {MAX_DELEGATION_CHAIN}",
                chain.len()
            ),
        );
    }
    // D4
    for (i, actor) in chain.iter().enumerate() {
        if actor.sub.is_empty() {
            return err(Code::DelegationActorInvalid, format!("actor {i} has an empty name"));
        }
        if let Some(iss) = &actor.iss {
            return err(
                Code::DelegationActorInvalid,
                format!(
                    "actor {i} ({:?}) names an issuer of its own ({:?}); actors are the token issuer's users",
                    truncate(&actor.sub),
                    truncate(iss)
                ),
            );
        }
    }
    // D5
    for (i, actor) in chain.iter().enumerate() {
        if actor.sub == claims.sub {
            return err(
                Code::DelegationCycle,
                format!("actor {i} is the subject {:?} itself", truncate(&claims.sub)),
            );
        }
        if let Some(j) = chain[..i].iter().position(|earlier| earlier.sub == actor.sub) {
            return err(
                Code::DelegationCycle,
                format!("{:?} is actor {j} and actor {i}", truncate(&actor.sub)),
            );
        }
    }
    Ok(())
}
