//! Authorization policy: which roles an action needs, enforced, or run
//! permissively to learn what a workflow needs.
//!
//! ```toml
//! mode = "permissive"     # enforce | permissive | off      (default enforce)
//! unmatched = "deny"      # deny | allow: actions no rule names (default deny)
//!
//! [[rule]]
//! name = "list servers"               # optional; defaults to "GET /v2/servers"
//! method = "GET"                      # optional; any method when absent
//! path = "/v2/servers"                # segments; {id} or * = one segment, ** = the rest
//! roles = ["reader", "member"]        # required: any one of them; [] = any authenticated caller
//!
//! [[rule]]
//! operation = "compute:create_server" # a named operation, checked by the handler
//!                                     # with `keybound::http::PolicyHandle::authorize`
//! roles = ["member"]
//! ```
//!
//! Rules are tried in order; the first that matches the action decides.
//! In permissive mode a request the policy would deny is allowed and a
//! decision record is written; in enforce mode it is refused (403
//! `policy.denied`) and recorded; `off` allows everything and records
//! nothing. A small rule table rather than a general policy engine: the
//! permissive records need to name the deciding rule and the roles that would
//! have allowed the action, which this table knows directly.

mod records;

#[cfg(feature = "http")]
pub use records::TracingRecords;
pub use records::{JsonLinesFile, MemoryRecords, RecordSink};

use serde::Deserialize;
use serde_json::json;

use crate::error::{Code, Error, Result, err};
use crate::token::VerifiedToken;
use crate::verify::{BearerRequest, VerifiedRequest};

/// How decisions are applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Mode {
    /// Deny what the policy denies (and record it).
    Enforce,
    /// Allow everything, record what the policy would deny.
    Permissive,
    /// No policy checks at all.
    Off,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Permissive => "permissive",
            Mode::Off => "off",
        }
    }
}

/// What happens to actions that no rule names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unmatched {
    /// Deny them (the default).
    Deny,
    /// Allow them.
    Allow,
}

/// An action to authorize.
#[derive(Clone, Copy, Debug)]
pub enum Action<'a> {
    /// An HTTP request: method and path (no query).
    Http {
        /// Method.
        method: &'a str,
        /// Path, already normalised.
        path: &'a str,
    },
    /// A named operation, checked by a handler.
    Operation(&'a str),
}

impl Action<'_> {
    fn to_json(self) -> serde_json::Value {
        match self {
            Action::Http { method, path } => json!({"method": method, "path": path}),
            Action::Operation(name) => json!({"operation": name}),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Any,
    Rest,
}

#[derive(Clone, Debug)]
struct Rule {
    name: String,
    method: Option<String>,
    path: Option<Vec<Segment>>,
    operation: Option<String>,
    roles: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    name: Option<String>,
    method: Option<String>,
    path: Option<String>,
    operation: Option<String>,
    /// Required: a forgotten `roles` must not silently mean "anyone".
    roles: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    mode: Option<Mode>,
    unmatched: Option<Unmatched>,
    #[serde(default)]
    rule: Vec<RuleFile>,
}

fn parse_pattern(pattern: &str) -> Result<Vec<Segment>> {
    let Some(rest) = pattern.strip_prefix('/') else {
        return err(
            Code::PolicyInvalid,
            format!("path pattern {pattern:?} must start with '/'"),
        );
    };
    let parts: Vec<&str> = rest.split('/').collect();
    let mut segments = Vec::with_capacity(parts.len());
    for (i, part) in parts.iter().enumerate() {
        segments.push(match *part {
            "**" if i + 1 == parts.len() => Segment::Rest,
            "**" => {
                return err(
                    Code::PolicyInvalid,
                    format!("in {pattern:?}, ** may only be the last segment"),
                );
            }
            "*" => Segment::Any,
            p if p.starts_with('{') && p.ends_with('}') && p.len() > 2 => Segment::Any,
            p if p.contains(['{', '}', '*']) => {
                return err(
                    Code::PolicyInvalid,
                    format!("segment {p:?} of {pattern:?} is not a literal, {{name}}, * or **"),
                );
            }
            p => Segment::Literal(p.to_owned()),
        });
    }
    Ok(segments)
}

fn path_matches(pattern: &[Segment], path: &str) -> bool {
    let Some(rest) = path.strip_prefix('/') else {
        return false;
    };
    let mut parts = rest.split('/');
    for segment in pattern {
        match segment {
            Segment::Rest => return true,
            Segment::Any => match parts.next() {
                Some(p) if !p.is_empty() => {}
                _ => return false,
            },
            Segment::Literal(l) => {
                if parts.next() != Some(l.as_str()) {
                    return false;
                }
            }
        }
    }
    parts.next().is_none()
}

/// The outcome of evaluating the rules, before the mode is applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Evaluation {
    /// Whether the rules allow the action.
    pub allowed: bool,
    /// The rule that decided, if any.
    pub rule: Option<String>,
    /// The roles that would allow the action (empty when no rule matched).
    pub roles_allowing: Vec<String>,
}

/// A loaded policy.
#[derive(Clone, Debug)]
pub struct Policy {
    mode: Mode,
    unmatched: Unmatched,
    rules: Vec<Rule>,
}

impl Policy {
    /// Parses a policy from TOML text.
    pub fn from_toml(text: &str) -> Result<Self> {
        let file: PolicyFile =
            toml::from_str(text).map_err(|e| Error::new(Code::PolicyInvalid, format!("policy: {e}")).with_source(e))?;
        let mut rules = Vec::with_capacity(file.rule.len());
        for (i, r) in file.rule.into_iter().enumerate() {
            if r.path.is_none() && r.operation.is_none() {
                return err(
                    Code::PolicyInvalid,
                    format!("rule {} names neither a path nor an operation", i + 1),
                );
            }
            if r.path.is_none() && r.method.is_some() {
                return err(Code::PolicyInvalid, format!("rule {} has a method but no path", i + 1));
            }
            let Some(roles) = r.roles else {
                return err(
                    Code::PolicyInvalid,
                    format!(
                        "rule {} has no `roles`: list the roles that allow it, or write `roles = []` to allow any authenticated caller",
                        i + 1
                    ),
                );
            };
            let method = r.method.map(|m| m.to_ascii_uppercase());
            let name = r.name.unwrap_or_else(|| match (&method, &r.path, &r.operation) {
                (_, None, Some(op)) => op.clone(),
                (Some(m), Some(p), _) => format!("{m} {p}"),
                (None, Some(p), _) => format!("* {p}"),
                (_, None, None) => unreachable!("checked above"),
            });
            rules.push(Rule {
                name,
                method,
                path: r.path.as_deref().map(parse_pattern).transpose()?,
                operation: r.operation,
                roles,
            });
        }
        Ok(Policy {
            mode: file.mode.unwrap_or(Mode::Enforce),
            unmatched: file.unmatched.unwrap_or(Unmatched::Deny),
            rules,
        })
    }

    /// Reads a TOML policy file.
    pub fn from_file(path: &std::path::Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::new(Code::PolicyInvalid, format!("cannot read {}: {e}", path.display())).with_source(e)
        })?;
        Self::from_toml(&text)
    }

    /// The configured mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Overrides the mode (for example from a command-line flag).
    pub fn with_mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// Evaluates the rules for a caller holding `roles`.
    pub fn evaluate(&self, roles: &[String], action: Action<'_>) -> Evaluation {
        let rule = self.rules.iter().find(|rule| match action {
            Action::Http { method, path } => {
                // HEAD is GET without the body (axum serves it with the GET
                // handler), so a GET rule governs it too.
                rule.method
                    .as_deref()
                    .is_none_or(|m| m == method || (m == "GET" && method == "HEAD"))
                    && rule.path.as_deref().is_some_and(|p| path_matches(p, path))
            }
            Action::Operation(name) => rule.operation.as_deref() == Some(name),
        });
        match rule {
            Some(rule) => Evaluation {
                allowed: rule.roles.is_empty() || rule.roles.iter().any(|r| roles.contains(r)),
                rule: Some(rule.name.clone()),
                roles_allowing: rule.roles.clone(),
            },
            None => Evaluation {
                allowed: self.unmatched == Unmatched::Allow,
                rule: None,
                roles_allowing: Vec::new(),
            },
        }
    }

    /// Applies the policy to a verified request: evaluates, writes a record
    /// for every would-be denial, and refuses in enforce mode. Only a
    /// request with a verified proof; a request admitted without one in
    /// bearer rollout mode goes through [`Policy::authorize_bearer`].
    pub fn authorize(
        &self,
        request: &VerifiedRequest,
        action: Action<'_>,
        records: &dyn RecordSink,
        now: u64,
    ) -> Result<()> {
        self.decide(request.token(), action, records, now)
    }

    /// As [`Policy::authorize`], for a request admitted without a proof in
    /// bearer rollout mode (its token's roles, the same rules): for the
    /// routes that opted in to bearer requests, and for the layer's own
    /// check of such requests.
    pub fn authorize_bearer(
        &self,
        request: &BearerRequest,
        action: Action<'_>,
        records: &dyn RecordSink,
        now: u64,
    ) -> Result<()> {
        self.decide(request.token(), action, records, now)
    }

    fn decide(&self, token: &VerifiedToken, action: Action<'_>, records: &dyn RecordSink, now: u64) -> Result<()> {
        if self.mode == Mode::Off {
            return Ok(());
        }
        let evaluation = self.evaluate(token.roles(), action);
        if evaluation.allowed {
            return Ok(());
        }
        let enforced = self.mode == Mode::Enforce;
        records.record(&json!({
            "event": "policy_denial",
            "time": now,
            "mode": self.mode.as_str(),
            "decision": if enforced { "denied" } else { "allowed" },
            "issuer": token.issuer(),
            "subject": token.subject(),
            "actor_chain": token.actor_chain().iter().map(|a| json!({"sub": a.sub, "iss": a.iss})).collect::<Vec<_>>(),
            "audience": token.audience(),
            "domain": token.domain(),
            "project": token.project(),
            "trust_id": token.trust_id(),
            "action": action.to_json(),
            "roles_held": token.roles(),
            "rule": evaluation.rule,
            "reason": if evaluation.rule.is_some() { "missing_role" } else { "no_rule_matched" },
            "roles_allowing": evaluation.roles_allowing,
        }));
        if !enforced {
            return Ok(());
        }
        let why = match &evaluation.rule {
            Some(rule) => format!(
                "rule {rule:?} requires one of the roles {:?}",
                evaluation.roles_allowing
            ),
            None => "no rule allows this action".to_owned(),
        };
        err(Code::PolicyDenied, why)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = r#"
mode = "enforce"
[[rule]]
method = "GET"
path = "/v2/servers"
roles = ["reader", "member"]
[[rule]]
name = "server detail"
method = "GET"
path = "/v2/servers/{id}"
roles = ["reader"]
[[rule]]
method = "POST"
path = "/v2/servers"
roles = ["member"]
[[rule]]
path = "/public/**"
roles = []
[[rule]]
operation = "compute:resize"
roles = ["admin"]
"#;

    fn roles(r: &[&str]) -> Vec<String> {
        r.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn first_matching_rule_decides() {
        let p = Policy::from_toml(POLICY).unwrap();
        let get = |path| Action::Http { method: "GET", path };
        assert!(p.evaluate(&roles(&["reader"]), get("/v2/servers")).allowed);
        let e = p.evaluate(&roles(&["member"]), get("/v2/servers/42"));
        assert_eq!(
            e,
            Evaluation {
                allowed: false,
                rule: Some("server detail".into()),
                roles_allowing: roles(&["reader"])
            }
        );
        assert!(
            !p.evaluate(
                &roles(&["reader"]),
                Action::Http {
                    method: "POST",
                    path: "/v2/servers"
                }
            )
            .allowed
        );
        assert!(p.evaluate(&[], get("/public/a/b/c")).allowed);
        assert!(p.evaluate(&[], get("/public/")).allowed);
        let unmatched = p.evaluate(&roles(&["admin"]), get("/v2/flavors"));
        assert_eq!(
            unmatched,
            Evaluation {
                allowed: false,
                rule: None,
                roles_allowing: vec![]
            }
        );
        assert!(
            p.evaluate(&roles(&["admin"]), Action::Operation("compute:resize"))
                .allowed
        );
        assert!(
            !p.evaluate(&roles(&["member"]), Action::Operation("compute:resize"))
                .allowed
        );
        // {id} matches exactly one non-empty segment.
        assert!(!p.evaluate(&roles(&["reader"]), get("/v2/servers/42/extra")).allowed);
        assert!(!p.evaluate(&roles(&["reader"]), get("/v2/servers/")).allowed);
        // HEAD is governed by the GET rules.
        let head = |path| Action::Http { method: "HEAD", path };
        assert!(p.evaluate(&roles(&["reader"]), head("/v2/servers/42")).allowed);
        assert!(!p.evaluate(&roles(&["member"]), head("/v2/servers/42")).allowed);
    }

    #[test]
    fn bad_policies_are_refused() {
        for bad in [
            "mode = \"lenient\"",
            "[[rule]]\nroles = [\"a\"]",
            "[[rule]]\npath = \"v2\"",
            "[[rule]]\npath = \"/a/**/b\"",
            "[[rule]]\npath = \"/a\"\ncolour = \"red\"",
            "[[rule]]\nmethod = \"GET\"\noperation = \"x\"",
            "[[rule]]\npath = \"/a\"",
        ] {
            assert_eq!(Policy::from_toml(bad).unwrap_err().code(), Code::PolicyInvalid, "{bad}");
        }
    }
}
