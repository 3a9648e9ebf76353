//! Workplans (spec/delegation.md §9): the delegations one workflow needs,
//! as a versioned TOML file that people write and review and that
//! `keybound policy learn` writes.
//!
//! [`Workplan::check`] parses a file and lists every problem with its line;
//! [`Workplan::to_toml`] is the one encoder; [`Workplan::trust_requests`]
//! turns a plan into the trusts a user creates to run it.

use std::fmt;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::trust_request::TrustRequest;
use crate::error::{Code, Error, Result};
use crate::names::{Name, ProjectName, UserName, check_audience};

/// The only version of the format.
pub const VERSION: i64 = 1;
/// The largest workplan file: 64 KiB.
pub const MAX_TEXT: usize = 64 * 1024;
/// The most delegations in one plan.
pub const MAX_DELEGATIONS: usize = 32;
/// The most roles in one delegation.
pub const MAX_ROLES: usize = 16;
/// The longest description, in bytes.
pub const MAX_DESCRIPTION: usize = 1024;
/// The shortest `lifetime`, seconds.
pub const MIN_LIFETIME: u64 = 60;
/// The longest `lifetime`: 10 years (3650 days), the ceiling of the
/// issuer's `max_trust_lifetime`.
pub const MAX_LIFETIME: u64 = 315_360_000;
/// The most `uses`, the ceiling of the issuer's `max_trust_uses`.
pub const MAX_USES: u64 = 1_000_000_000;
/// The largest `redelegation` (spec/delegation.md §5).
pub const MAX_REDELEGATION: u8 = 3;

/// A checked workplan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workplan {
    /// Its name (a [`Name`]).
    pub name: Name,
    /// What the workflow does, for the people who run the plan.
    pub description: String,
    /// One per hop, in the file's order; (trustee, audience) pairs distinct.
    pub delegations: Vec<Delegation>,
}

/// One hop of a workplan: a trust for `trustee`, used at `audience`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delegation {
    /// Who acts for the user at this hop.
    pub trustee: UserName,
    /// The one service the trustee calls with the trust's tokens.
    pub audience: String,
    /// The roles to delegate: 1 to [`MAX_ROLES`], distinct, in the file's order.
    pub roles: Vec<Name>,
    /// Seconds from the moment the plan is run until the trust expires;
    /// `None`: the issuer's default.
    pub lifetime: Option<u64>,
    /// Tokens that may be minted from the trust; `None`: the issuer's default.
    pub uses: Option<u64>,
    /// Levels of redelegation the trustee may create (0 to 3).
    pub redelegation: u8,
}

/// A trust that running a plan asks for: [`Workplan::trust_requests`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedTrust {
    /// The trustee.
    pub trustee: UserName,
    /// The audience of the hop: the trust is restricted to it, and the routing slip names it.
    pub audience: String,
    /// The project the user runs the plan on.
    pub project: ProjectName,
    /// The roles, sorted.
    pub roles: Vec<Name>,
    /// `now + lifetime`; `None` without a lifetime.
    pub expires_at: Option<u64>,
    /// As in the plan.
    pub uses: Option<u64>,
    /// As in the plan.
    pub redelegation: u8,
}

impl PlannedTrust {
    /// The body of `POST /v1/trusts` (§3) for this trust: restricted to the
    /// hop's audience alone.
    pub fn request(&self) -> TrustRequest {
        TrustRequest {
            trustee: self.trustee.to_string(),
            project: Some(self.project.name.to_string()),
            domain: Some(self.project.domain.to_string()),
            roles: self.roles.iter().map(ToString::to_string).collect(),
            audiences: Some(vec![self.audience.clone()]),
            expires_at: self.expires_at,
            uses: self.uses,
            redelegation: Some(u64::from(self.redelegation)),
            parent: None,
        }
    }
}

/// One problem of a workplan file, at a line and column (from 1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The line.
    pub line: usize,
    /// The column, in characters.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}: {}", self.line, self.column, self.message)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileShape {
    version: Option<Spanned<i64>>,
    name: Option<Spanned<String>>,
    description: Option<Spanned<String>>,
    delegation: Option<Vec<Spanned<DelegationShape>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DelegationShape {
    trustee: Option<Spanned<String>>,
    audience: Option<Spanned<String>>,
    roles: Option<Spanned<Vec<Spanned<String>>>>,
    lifetime: Option<Spanned<i64>>,
    uses: Option<Spanned<i64>>,
    redelegation: Option<Spanned<i64>>,
}

/// The encoder's view: the same members, in the order of the spec.
#[derive(Serialize)]
struct Encoded<'a> {
    version: i64,
    name: &'a str,
    description: &'a str,
    delegation: Vec<EncodedDelegation<'a>>,
}

#[derive(Serialize)]
struct EncodedDelegation<'a> {
    trustee: String,
    audience: &'a str,
    roles: Vec<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lifetime: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    uses: Option<u64>,
    #[serde(skip_serializing_if = "is_zero")]
    redelegation: u8,
}

fn is_zero(n: &u8) -> bool {
    *n == 0
}

/// Line and column (from 1) of byte `offset` of `text`.
fn position(text: &str, offset: usize) -> (usize, usize) {
    let mut at = offset.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Collects problems, each at the position of a span.
struct Problems<'a> {
    text: &'a str,
    found: Vec<Problem>,
}

impl Problems<'_> {
    fn at(&mut self, offset: usize, message: impl Into<String>) {
        let (line, column) = position(self.text, offset);
        self.found.push(Problem {
            line,
            column,
            message: message.into(),
        });
    }

    /// `value`, or a problem "missing `key`" at `offset` (its table).
    fn required<'v, T>(
        &mut self,
        value: &'v Option<Spanned<T>>,
        key: &str,
        offset: usize,
        what: &str,
    ) -> Option<&'v Spanned<T>> {
        if value.is_none() {
            self.at(offset, format!("{what} has no `{key}`"));
        }
        value.as_ref()
    }

    /// A name, or a problem at its span.
    fn name(&mut self, kind: &str, value: &Spanned<String>) -> Option<Name> {
        Name::parse(kind, value.get_ref())
            .map_err(|e| self.at(value.span().start, e.message().to_owned()))
            .ok()
    }

    /// An integer in `min..=max`, or a problem at its span.
    fn bounded(&mut self, key: &str, value: &Spanned<i64>, min: u64, max: u64) -> Option<u64> {
        let n = *value.get_ref();
        match u64::try_from(n) {
            Ok(n) if (min..=max).contains(&n) => Some(n),
            _ => {
                self.at(value.span().start, format!("`{key}` is {n}; it must be {min} to {max}"));
                None
            }
        }
    }
}

impl Workplan {
    /// Parses and checks a workplan, listing every problem found (a TOML
    /// or type error stops the parse, so it comes alone).
    pub fn check(text: &str) -> std::result::Result<Workplan, Vec<Problem>> {
        let mut problems = Problems {
            text,
            found: Vec::new(),
        };
        if text.len() > MAX_TEXT {
            problems.at(
                0,
                format!("the workplan is {} bytes; the limit is {MAX_TEXT}", text.len()),
            );
            return Err(problems.found);
        }
        let file: FileShape = match toml::from_str(text) {
            Ok(file) => file,
            Err(e) => {
                let offset = e.span().map_or(0, |s| s.start);
                problems.at(offset, e.message().trim().to_owned());
                return Err(problems.found);
            }
        };
        let end = text.len();
        if let Some(version) = problems.required(&file.version, "version", 0, "the workplan")
            && *version.get_ref() != VERSION
        {
            problems.at(
                version.span().start,
                format!(
                    "version {} is not supported; this is version {VERSION}",
                    version.get_ref()
                ),
            );
        }
        let name = problems
            .required(&file.name, "name", 0, "the workplan")
            .and_then(|n| problems.name("workplan", n));
        let description = problems.required(&file.description, "description", 0, "the workplan");
        if let Some(d) = description {
            let text = d.get_ref();
            if text.trim().is_empty()
                || text.len() > MAX_DESCRIPTION
                || text.chars().any(|c| c.is_control() && c != '\n')
            {
                problems.at(
                    d.span().start,
                    format!("`description` must be 1 to {MAX_DESCRIPTION} bytes of text without control characters"),
                );
            }
        }
        let shapes = file.delegation.unwrap_or_default();
        if shapes.is_empty() {
            problems.at(end, "the workplan has no [[delegation]]");
        }
        if let Some(extra) = shapes.get(MAX_DELEGATIONS) {
            problems.at(
                extra.span().start,
                format!(
                    "more than {MAX_DELEGATIONS} delegations (this is number {})",
                    MAX_DELEGATIONS + 1
                ),
            );
        }
        let mut delegations = Vec::with_capacity(shapes.len());
        for shape in &shapes {
            if let Some(d) = Self::check_delegation(&mut problems, shape) {
                let pair = |o: &Delegation| o.trustee == d.trustee && o.audience == d.audience;
                if delegations.iter().any(pair) {
                    problems.at(
                        shape.span().start,
                        format!(
                            "{} at {} is delegated twice: one delegation per trustee and audience",
                            d.trustee, d.audience
                        ),
                    );
                }
                delegations.push(d);
            }
        }
        match (name, description) {
            (Some(name), Some(description)) if problems.found.is_empty() => Ok(Workplan {
                name,
                description: description.get_ref().clone(),
                delegations,
            }),
            _ => Err(problems.found),
        }
    }

    fn check_delegation(problems: &mut Problems<'_>, shape: &Spanned<DelegationShape>) -> Option<Delegation> {
        let table = shape.span().start;
        let d = shape.get_ref();
        let what = "this delegation";
        let trustee = problems.required(&d.trustee, "trustee", table, what).and_then(|t| {
            UserName::parse(t.get_ref())
                .map_err(|e| problems.at(t.span().start, format!("`trustee`: {}", e.message())))
                .ok()
        });
        let audience = problems.required(&d.audience, "audience", table, what).and_then(|a| {
            check_audience(a.get_ref())
                .map_err(|e| problems.at(a.span().start, format!("`audience`: {}", e.message())))
                .ok()
                .map(|()| a.get_ref().clone())
        });
        let mut roles = Vec::new();
        let mut roles_ok = false;
        if let Some(list) = problems.required(&d.roles, "roles", table, what) {
            roles_ok = true;
            if list.get_ref().is_empty() || list.get_ref().len() > MAX_ROLES {
                problems.at(list.span().start, format!("`roles` must list 1 to {MAX_ROLES} roles"));
                roles_ok = false;
            }
            for role in list.get_ref().iter().take(MAX_ROLES) {
                match problems.name("role", role) {
                    Some(name) if roles.contains(&name) => {
                        problems.at(role.span().start, format!("role {name} is listed twice"));
                        roles_ok = false;
                    }
                    Some(name) => roles.push(name),
                    None => roles_ok = false,
                }
            }
        }
        let mut numbers_ok = true;
        let mut number = |key, value: &Option<Spanned<i64>>, min, max| {
            let n = problems.bounded(key, value.as_ref()?, min, max);
            numbers_ok &= n.is_some();
            n
        };
        let lifetime = number("lifetime", &d.lifetime, MIN_LIFETIME, MAX_LIFETIME);
        let uses = number("uses", &d.uses, 1, MAX_USES);
        let redelegation = number("redelegation", &d.redelegation, 0, u64::from(MAX_REDELEGATION)).unwrap_or(0);
        match (trustee, audience) {
            (Some(trustee), Some(audience)) if roles_ok && numbers_ok => Some(Delegation {
                trustee,
                audience,
                roles,
                lifetime,
                uses,
                redelegation: u8::try_from(redelegation).unwrap_or(MAX_REDELEGATION),
            }),
            _ => None,
        }
    }

    /// Parses and checks a workplan: `workplan.invalid` naming the first
    /// problem's line (and how many more there are).
    pub fn parse(text: &str) -> Result<Workplan> {
        Self::check(text).map_err(|problems| {
            let more = match problems.len() {
                0 | 1 => String::new(),
                n => format!(" (and {} more)", n - 1),
            };
            let first = problems
                .first()
                .map_or_else(|| "invalid".to_owned(), ToString::to_string);
            Error::new(Code::WorkplanInvalid, format!("{first}{more}"))
        })
    }

    /// A plan built in code (by `keybound policy learn`), checked by the
    /// rules of [`Workplan::check`]: its encoding parses back to it.
    pub fn new(name: Name, description: String, delegations: Vec<Delegation>) -> Result<Workplan> {
        let plan = Workplan {
            name,
            description,
            delegations,
        };
        let parsed = Self::parse(&plan.to_toml())?;
        Ok(parsed)
    }

    /// The plan as TOML: the one encoder of the format. `version`, `name`,
    /// `description`, then one `[[delegation]]` per hop; `lifetime` and
    /// `uses` only when set, `redelegation` only when not 0.
    pub fn to_toml(&self) -> String {
        let encoded = Encoded {
            version: VERSION,
            name: self.name.as_str(),
            description: &self.description,
            delegation: self
                .delegations
                .iter()
                .map(|d| EncodedDelegation {
                    trustee: d.trustee.to_string(),
                    audience: &d.audience,
                    roles: d.roles.iter().map(Name::as_str).collect(),
                    lifetime: d.lifetime,
                    uses: d.uses,
                    redelegation: d.redelegation,
                })
                .collect(),
        };
        toml::to_string(&encoded).expect("a workplan is plain TOML")
    }

    /// The trusts that running the plan on `project` at `now` asks for, one
    /// per delegation in the plan's order: `expires_at` = `now + lifetime`,
    /// roles sorted. The issuer checks them (spec/delegation.md §3);
    /// `workplan.invalid` only if `now + lifetime` overflows.
    pub fn trust_requests(&self, project: &ProjectName, now: u64) -> Result<Vec<PlannedTrust>> {
        self.delegations
            .iter()
            .map(|d| {
                let expires_at = match d.lifetime {
                    None => None,
                    Some(lifetime) => Some(now.checked_add(lifetime).ok_or_else(|| {
                        Error::new(Code::WorkplanInvalid, "the plan's lifetime runs past the end of time")
                    })?),
                };
                let mut roles = d.roles.clone();
                roles.sort();
                Ok(PlannedTrust {
                    trustee: d.trustee.clone(),
                    audience: d.audience.clone(),
                    project: project.clone(),
                    roles,
                    expires_at,
                    uses: d.uses,
                    redelegation: d.redelegation,
                })
            })
            .collect()
    }
}

impl Workplan {
    /// The body of `POST /v1/workplans/run` (spec/delegation.md §11) for a
    /// run of the plan on `project` at `now`: one delegation per hop, with
    /// `expires_at` = `now + lifetime`.
    pub fn run_request(
        &self,
        project: &ProjectName,
        now: u64,
    ) -> Result<crate::delegation::trust_request::WorkplanRun> {
        use crate::delegation::trust_request::{PlanDelegation, WorkplanRun};
        let delegations = self
            .trust_requests(project, now)?
            .into_iter()
            .map(|t| PlanDelegation {
                trustee: t.trustee.to_string(),
                audience: t.audience,
                roles: t.roles.iter().map(|r| r.as_str().to_owned()).collect(),
                expires_at: t.expires_at,
                uses: t.uses,
                redelegation: Some(u64::from(t.redelegation)),
            })
            .collect();
        Ok(WorkplanRun {
            workflow: self.name.as_str().to_owned(),
            project: project.name.as_str().to_owned(),
            domain: Some(project.domain.as_str().to_owned()),
            delegations,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAN: &str = r#"version = 1
name = "deploy-instance"
description = "Launch a virtual machine"

[[delegation]]
trustee = "nova-compute@service"
audience = "https://glance.example"
roles = ["reader"]
lifetime = 3600

[[delegation]]
trustee = "nova-compute@service"
audience = "https://cinder.example"
roles = ["member", "creator"]
uses = 10
redelegation = 1
"#;

    fn lines(text: &str) -> Vec<(usize, String)> {
        Workplan::check(text)
            .unwrap_err()
            .into_iter()
            .map(|p| (p.line, p.message))
            .collect()
    }

    #[test]
    fn a_plan_parses_encodes_back_and_plans_its_trusts() {
        let plan = Workplan::parse(PLAN).unwrap();
        assert_eq!(plan.name.as_str(), "deploy-instance");
        assert_eq!(plan.delegations.len(), 2);
        assert_eq!(plan.delegations[1].redelegation, 1);
        assert_eq!(Workplan::parse(&plan.to_toml()).unwrap(), plan);
        assert_eq!(
            Workplan::new(plan.name.clone(), plan.description.clone(), plan.delegations.clone()).unwrap(),
            plan
        );
        let project = ProjectName::parse("turing@stoughton").unwrap();
        let trusts = plan.trust_requests(&project, 1_000).unwrap();
        assert_eq!(trusts[0].expires_at, Some(4_600));
        assert_eq!(trusts[1].expires_at, None);
        assert_eq!(trusts[1].uses, Some(10));
        let body = serde_json::to_value(trusts[0].request()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"trustee": "nova-compute@service", "project": "turing", "domain": "stoughton",
                "roles": ["reader"], "audiences": ["https://glance.example"], "expires_at": 4_600, "redelegation": 0})
        );
        let roles: Vec<&str> = trusts[1].roles.iter().map(Name::as_str).collect();
        assert_eq!(roles, ["creator", "member"]);
        assert_eq!(
            plan.trust_requests(&project, u64::MAX).unwrap_err().code(),
            Code::WorkplanInvalid
        );
    }

    #[test]
    fn every_problem_is_reported_with_its_line() {
        let bad = PLAN
            .replace("roles = [\"reader\"]", "roles = []")
            .replace("uses = 10", "uses = 0")
            .replace("redelegation = 1", "redelegation = 4");
        assert_eq!(
            lines(&bad),
            [
                (8, "`roles` must list 1 to 16 roles".to_owned()),
                (15, "`uses` is 0; it must be 1 to 1000000000".to_owned()),
                (16, "`redelegation` is 4; it must be 0 to 3".to_owned()),
            ]
        );
        let unknown = PLAN.replace("uses = 10", "colour = \"red\"");
        let found = lines(&unknown);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0, 15);
        assert!(found[0].1.contains("unknown field `colour`"), "{found:?}");
        let twice = PLAN.replace("cinder", "glance");
        assert_eq!(lines(&twice)[0].0, 11);
        let e = Workplan::parse(&bad).unwrap_err();
        assert_eq!(e.code(), Code::WorkplanInvalid);
        assert!(e.message().starts_with("line 8, column 9: "), "{}", e.message());
        assert!(e.message().ends_with("(and 2 more)"), "{}", e.message());
    }
}
