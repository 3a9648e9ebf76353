//! Trust requests (spec/delegation.md §3): the JSON body of `POST
//! /v1/trusts` and `POST /v1/admin/trusts`, and the checks TC1–TC3, which
//! need no database. The issuer runs TC4–TC6 against its store.

use serde::{Deserialize, Serialize};

use crate::error::{Code, Error, Result, err};
use crate::names::{Name, ProjectName, UserName, check_audience};

/// The largest redelegation allowance (Keystone's `max_redelegation_count`).
pub const MAX_REDELEGATION: u64 = 3;
// A chain has at most 1 + MAX_REDELEGATION trusts, one actor each; services
// refuse longer actor chains (step D3).
const _: () = assert!(MAX_REDELEGATION as usize + 1 == crate::token::MAX_DELEGATION_CHAIN);

/// The most roles one trust delegates.
pub const MAX_ROLES: usize = 16;
/// The most audiences one trust is restricted to.
pub const MAX_AUDIENCES: usize = 16;

/// A trust request (spec/delegation.md §3): what the issuer decodes and the
/// client encodes (as `client::NewTrust`). Absent members take the issuer's
/// defaults.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "issuer", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TrustRequest {
    /// `name@domain` of the user who may use the trust
    pub trustee: String,
    /// the project's name; absent with `parent` (a child is on its parent's project)
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// the project's domain; default the trustor's
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// the roles to delegate, at least one
    pub roles: Vec<String>,
    /// the services (audiences) tokens from the trust may name; absent: any registered service
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audiences: Option<Vec<String>>,
    /// Unix seconds; default now + the issuer's max trust lifetime (or none)
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
    /// how many mints; default the issuer's max trust uses (or unlimited)
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uses: Option<u64>,
    /// further levels of redelegation the trustee may create, 0 (default) to 3
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redelegation: Option<u64>,
    /// the trust this one is redelegated from (the caller must be its trustee)
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
}

/// A trust request by an administrator, who names the trustor; the other
/// members are those of [`TrustRequest`].
#[derive(Clone, Debug, Deserialize)]
#[cfg_attr(feature = "issuer", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct AdminTrustRequest {
    /// `name@domain` of the user who delegates
    pub trustor: String,
    pub trustee: String,
    pub project: Option<String>,
    pub domain: Option<String>,
    pub roles: Vec<String>,
    pub audiences: Option<Vec<String>>,
    pub expires_at: Option<u64>,
    pub uses: Option<u64>,
    pub redelegation: Option<u64>,
    pub parent: Option<String>,
}

impl AdminTrustRequest {
    /// The trustor (unchecked) and the request it makes.
    pub fn split(self) -> (String, TrustRequest) {
        (
            self.trustor,
            TrustRequest {
                trustee: self.trustee,
                project: self.project,
                domain: self.domain,
                roles: self.roles,
                audiences: self.audiences,
                expires_at: self.expires_at,
                uses: self.uses,
                redelegation: self.redelegation,
                parent: self.parent,
            },
        )
    }
}

/// The deployment's ceilings (spec/delegation.md §1).
#[derive(Clone, Copy, Debug, Default)]
pub struct Ceilings {
    /// The longest a trust may live, in seconds; `None`: no ceiling.
    pub max_lifetime: Option<u64>,
    /// The most uses a trust may have; `None`: no ceiling.
    pub max_uses: Option<u64>,
}

/// What a trust is on: a project, or the project of the trust it is
/// redelegated from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TrustBase {
    /// A trust of the trustor's own roles on this project.
    Project(ProjectName),
    /// A redelegation of this trust (a well-formed trust id).
    Parent(String),
}

/// A trust request that passed TC1–TC3: names typed, rules and ceilings
/// checked. What it asks of the store (TC4–TC6) is still to be checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustDraft {
    /// The trustee.
    pub trustee: UserName,
    /// The roles, sorted, distinct, 1 to [`MAX_ROLES`].
    pub roles: Vec<String>,
    /// The audiences, sorted, distinct, 1 to [`MAX_AUDIENCES`]; empty: any.
    pub audiences: Vec<String>,
    /// The project, or the parent trust.
    pub base: TrustBase,
    /// The expiry asked for (later than now, within the ceiling).
    pub expires_at: Option<i64>,
    /// The latest expiry the ceiling allows (the default when none is asked).
    pub latest_expiry: Option<i64>,
    /// The uses (asked, or the ceiling), `None`: unlimited.
    pub uses: Option<i64>,
    /// The redelegation allowance, 0 to [`MAX_REDELEGATION`].
    pub redelegation: i64,
}

/// A trust id: 22 base64url characters. Anything else names no trust
/// (`trust.not_found`), and is refused before the database is asked.
pub fn check_trust_id(id: &str) -> Result<()> {
    if id.len() != 22 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return err(Code::TrustNotFound, "a trust id is 22 base64url characters");
    }
    Ok(())
}

/// An integer of the request as stored (the database keeps i64).
fn stored_int(n: u64, what: &str) -> Result<i64> {
    i64::try_from(n).map_err(|_| Error::new(Code::TrustOverLimit, format!("{what} is too large")))
}

/// Sorted, distinct names of `kind`, at most `max`.
fn name_list(kind: &str, names: &[String], max: usize) -> Result<Vec<String>> {
    if names.len() > max {
        return err(Code::TrustInvalid, format!("a trust has at most {max} {kind}s"));
    }
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        out.push(Name::parse(kind, name)?.as_str().to_owned());
    }
    out.sort();
    out.dedup();
    Ok(out)
}

impl TrustRequest {
    /// Decodes a request body (one JSON object; `issuer.bad_request`).
    pub fn from_json(body: &[u8]) -> Result<Self> {
        crate::json::decode_object(body)
    }

    /// TC1–TC3 of spec/delegation.md §3 for a trust by `trustor` at `now`
    /// (Unix seconds): the first failing check answers.
    pub fn check(&self, trustor: &UserName, now: u64, ceilings: Ceilings) -> Result<TrustDraft> {
        let now = stored_int(now, "now")?;
        // TC1 names.
        let trustee = UserName::parse(&self.trustee)?;
        let roles = name_list("role", &self.roles, MAX_ROLES)?;
        let audiences = match &self.audiences {
            None => None,
            Some(list) => {
                if list.len() > MAX_AUDIENCES {
                    return err(
                        Code::TrustInvalid,
                        format!("a trust names at most {MAX_AUDIENCES} audiences"),
                    );
                }
                for audience in list {
                    check_audience(audience)?;
                }
                let mut list = list.clone();
                list.sort();
                list.dedup();
                Some(list)
            }
        };
        let base = match (&self.project, &self.parent) {
            (Some(p), None) => {
                let project = Name::parse("project", p)?;
                let domain = match &self.domain {
                    Some(d) => Name::parse("domain", d)?,
                    None => trustor.domain.clone(),
                };
                TrustBase::Project(ProjectName::new(project, domain))
            }
            (None, None) => return err(Code::TrustInvalid, "a trust needs a project (or a parent)"),
            (_, Some(parent)) => {
                if self.project.is_some() || self.domain.is_some() {
                    return err(
                        Code::TrustInvalid,
                        "a redelegated trust is on its parent's project: give no project or domain",
                    );
                }
                check_trust_id(parent)?;
                TrustBase::Parent(parent.clone())
            }
        };
        // TC2 the trust's own rules.
        if roles.is_empty() {
            return err(Code::TrustInvalid, "a trust delegates at least one role");
        }
        if audiences.as_ref().is_some_and(Vec::is_empty) {
            return err(Code::TrustInvalid, "audiences, when given, names at least one service");
        }
        let audiences = audiences.unwrap_or_default();
        if &trustee == trustor {
            return err(Code::TrustInvalid, "the trustee is the trustor");
        }
        let redelegation = self.redelegation.unwrap_or(0);
        if redelegation > MAX_REDELEGATION {
            return err(
                Code::TrustInvalid,
                format!("the redelegation allowance is 0 to {MAX_REDELEGATION}, not {redelegation}"),
            );
        }
        if self.uses == Some(0) {
            return err(Code::TrustInvalid, "a trust has at least one use");
        }
        let expires_at = self.expires_at.map(|e| stored_int(e, "expires_at")).transpose()?;
        if expires_at.is_some_and(|e| e <= now) {
            return err(Code::TrustInvalid, "expires_at is not in the future");
        }
        // TC3 the deployment's ceilings: refused, never clamped.
        let latest_expiry = ceilings
            .max_lifetime
            .map(|s| now.saturating_add(i64::try_from(s).unwrap_or(i64::MAX)));
        if let (Some(asked), Some(latest)) = (expires_at, latest_expiry)
            && asked > latest
        {
            return err(
                Code::TrustOverLimit,
                format!(
                    "a trust lives at most {} s: expires_at is at most {latest}",
                    latest - now
                ),
            );
        }
        if let (Some(asked), Some(max)) = (self.uses, ceilings.max_uses)
            && asked > max
        {
            return err(Code::TrustOverLimit, format!("a trust has at most {max} uses"));
        }
        let uses = self
            .uses
            .or(ceilings.max_uses)
            .map(|n| stored_int(n, "uses"))
            .transpose()?;
        Ok(TrustDraft {
            trustee,
            roles,
            audiences,
            base,
            expires_at,
            latest_expiry,
            uses,
            redelegation: redelegation as i64,
        })
    }
}

/// The most delegations (trusts, hops) one workplan run creates; a routing
/// slip holds as many hops.
pub const MAX_PLAN_DELEGATIONS: usize = 32;

/// One delegation of a workplan run: a trust restricted to one service.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "issuer", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PlanDelegation {
    /// `name@domain` of the user who acts at this hop
    pub trustee: String,
    /// the service it calls with tokens from the trust
    pub audience: String,
    /// the roles to delegate, at least one
    pub roles: Vec<String>,
    /// Unix seconds; default as for any trust
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
    /// how many mints; default as for any trust
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uses: Option<u64>,
    /// further levels of redelegation, 0 (default) to 3
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redelegation: Option<u64>,
}

/// A workplan run (spec/delegation.md §9): the trusts of one workflow, all
/// by the caller on one project, created at once; the answer carries the
/// routing slip that names them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "issuer", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct WorkplanRun {
    /// the workflow's name (the workplan's `name`)
    pub workflow: String,
    /// the project every trust is on
    pub project: String,
    /// the project's domain; default the caller's
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// 1 to 32 delegations, distinct by (trustee, audience)
    pub delegations: Vec<PlanDelegation>,
}

impl WorkplanRun {
    /// Decodes a request body (one JSON object; `issuer.bad_request`).
    pub fn from_json(body: &[u8]) -> Result<Self> {
        crate::json::decode_object(body)
    }

    /// The run's own rules (workflow name, 1 to [`MAX_PLAN_DELEGATIONS`]
    /// delegations, distinct hops: `trust.invalid`) and the trust request
    /// of each delegation, in order, each restricted to its audience.
    pub fn trust_requests(&self) -> Result<Vec<TrustRequest>> {
        Name::parse("workflow", &self.workflow)?;
        if self.delegations.is_empty() || self.delegations.len() > MAX_PLAN_DELEGATIONS {
            return err(
                Code::TrustInvalid,
                format!("a workplan run has 1 to {MAX_PLAN_DELEGATIONS} delegations"),
            );
        }
        let mut hops: Vec<(&str, &str)> = Vec::with_capacity(self.delegations.len());
        for d in &self.delegations {
            if hops.contains(&(d.trustee.as_str(), d.audience.as_str())) {
                return err(
                    Code::TrustInvalid,
                    format!(
                        "two delegations for {:?} calling {:?}: merge their roles",
                        crate::verify::token::truncate(&d.trustee),
                        crate::verify::token::truncate(&d.audience)
                    ),
                );
            }
            hops.push((&d.trustee, &d.audience));
        }
        Ok(self
            .delegations
            .iter()
            .map(|d| TrustRequest {
                trustee: d.trustee.clone(),
                project: Some(self.project.clone()),
                domain: self.domain.clone(),
                roles: d.roles.clone(),
                audiences: Some(vec![d.audience.clone()]),
                expires_at: d.expires_at,
                uses: d.uses,
                redelegation: d.redelegation,
                parent: None,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ayoung() -> UserName {
        UserName::parse("ayoung@stoughton").unwrap()
    }

    fn request(json: &str) -> Result<TrustDraft> {
        TrustRequest::from_json(json.as_bytes())?.check(&ayoung(), 1000, Ceilings::default())
    }

    #[test]
    fn roles_and_audiences_are_sorted_and_distinct() {
        let draft = request(
            r#"{"trustee":"heat@service","project":"turing","roles":["member","admin","member"],
               "audiences":["https://nova.example","https://cinder.example","https://nova.example"]}"#,
        )
        .unwrap();
        assert_eq!(draft.roles, ["admin", "member"]);
        assert_eq!(draft.audiences, ["https://cinder.example", "https://nova.example"]);
        assert_eq!(
            draft.base,
            TrustBase::Project(ProjectName::parse("turing@stoughton").unwrap())
        );
    }

    #[test]
    fn an_empty_audience_list_is_refused() {
        let e =
            request(r#"{"trustee":"heat@service","project":"turing","roles":["member"],"audiences":[]}"#).unwrap_err();
        assert_eq!(e.code(), Code::TrustInvalid);
    }

    #[test]
    fn an_admin_request_names_the_trustor_beside_the_same_members() {
        let admin: AdminTrustRequest = crate::json::decode_object(
            br#"{"trustor":"ayoung@stoughton","trustee":"heat@service","project":"turing","roles":["member"]}"#,
        )
        .unwrap();
        let (trustor, request) = admin.split();
        assert_eq!(trustor, "ayoung@stoughton");
        assert_eq!(request.trustee, "heat@service");
        let unknown = crate::json::decode_object::<AdminTrustRequest>(
            br#"{"trustor":"a@b","trustee":"heat@service","project":"turing","roles":["member"],"extra":1}"#,
        );
        assert_eq!(unknown.unwrap_err().code(), Code::IssuerBadRequest);
    }
}
