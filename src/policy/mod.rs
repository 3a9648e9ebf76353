//! Authorization policy: which roles an action needs, enforced, or run
//! permissively to learn what a workflow needs.
//!
//! ```toml
//! mode = "permissive"     # enforce | permissive | off      (default enforce)
//! unmatched = "deny"      # deny | allow: actions no rule names (default deny)
//! delegated = "deny"      # deny | allow: delegated requests, for rules that
//!                         # do not say (default deny)
//! record = "all"          # all | denials: which decisions are recorded
//!                         # (default: all when permissive, denials when enforcing)
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
//!
//! [[rule]]
//! method = "POST"
//! path = "/volumes"
//! roles = ["member"]
//! delegated = "allow"                 # optional: deny | allow (default: the top-level `delegated`)
//! actors = ["nova-compute@service"]   # optional: who may act; needs delegated = "allow"
//!
//! [[rule]]
//! path = "/v2/servers/**"
//! roles = ["member"]
//! origins = ["https://canton.example", "https://stoughton.example"]
//!                                     # optional: whose users; see below
//! ```
//!
//! **Federated requests** (tokens an issuer exchanged for a peer's user,
//! spec/federation.md) carry the peer as origin issuer. `origins` restricts
//! a rule to the users first authenticated by those issuers: a token's
//! origin is its origin issuer, or its own issuer when it has none (a
//! local user). Without `origins` a rule does not look at the origin: the
//! roles a federated token carries are the ones its issuer granted here.
//! The origin is the token issuer's claim: with several trusted issuers,
//! each is trusted for the origins it asserts.
//!
//! **Delegated requests** (tokens minted from a trust, spec/delegation.md)
//! are refused by every rule unless it — or the top-level `delegated` —
//! says `allow`: a policy written before delegation existed does not start
//! admitting work done on a user's behalf by someone else, and a deployer
//! opens exactly the actions a workflow needs (Keystone allows trust tokens
//! wherever their roles match; write `delegated = "allow"` at the top for
//! that). `actors` restricts a rule's delegated requests to those current
//! actors, compared byte for byte with the **first** actor of the chain
//! only: inner actors are history and grant nothing (catalog DL-10). A
//! delegated request's roles are the delegated roles, matched as usual.
//! Requests that are not delegated ignore both keys. Unmatched actions
//! admit delegated requests only if both `unmatched` and the top-level
//! `delegated` say `allow`.
//!
//! Rules are tried in order; the first that matches the action decides.
//! In permissive mode a request the policy would deny is allowed; in
//! enforce mode it is refused (403 `policy.denied`); `off` allows
//! everything and records nothing. Each decision writes a
//! [`DecisionRecord`] (`outcome` `allow`, `would_deny` or `deny`): every
//! decision in permissive mode, so that `keybound policy learn` sees what a
//! workflow did, and only the denials in enforce mode, unless `record`
//! says otherwise. A small rule table rather than a general policy engine: the
//! permissive records need to name the deciding rule and the roles that would
//! have allowed the action, which this table knows directly.

pub mod learn;
mod records;
pub mod report;

#[cfg(feature = "http")]
pub use records::TracingRecords;
pub use records::{
    DecisionRecord, JsonLinesFile, MAX_RECORD_BYTES, MAX_RECORD_LINE, MAX_RECORDS, MemoryRecords, Outcome, RecordSink,
    RecordedAction, RecordsRead, WorkflowSelector, read_decision_records,
};

use serde::{Deserialize, Serialize};

use crate::delegation::slip::VerifiedSlip;
use crate::error::{Code, Error, Result, err};
use crate::token::VerifiedToken;
use crate::verify::{BearerRequest, VerifiedRequest};

/// How decisions are applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
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

/// Which decisions are recorded (top-level key `record`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordScope {
    /// Every decision: the default in permissive mode, where learning needs them.
    All,
    /// Only the decisions the rules deny: the default in enforce mode.
    Denials,
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
    fn recorded(self) -> RecordedAction {
        match self {
            Action::Http { method, path } => RecordedAction::Http {
                method: method.to_owned(),
                path: path.to_owned(),
            },
            Action::Operation(name) => RecordedAction::Operation {
                operation: name.to_owned(),
            },
        }
    }
}

/// The denial of an action no rule names: `no rule for GET /v2/servers`,
/// `no rule for operation "compute:resize"` (at most 200 characters of the
/// path or name).
fn no_rule_for(action: Action<'_>) -> String {
    let cut = |s: &str| -> String {
        let mut out: String = s.chars().take(200).collect();
        if out.len() < s.len() {
            out.push('…');
        }
        out
    };
    match action {
        Action::Http { method, path } => format!("no rule for {} {}", cut(method), cut(path)),
        Action::Operation(name) => format!("no rule for operation {:?}", cut(name)),
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Any,
    Rest,
}

/// Whether delegated requests (tokens minted from a trust) are admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Delegated {
    /// Refuse them (the default).
    Deny,
    /// Judge them by their roles (and `actors`) like any other.
    Allow,
}

/// Why the rules deny an action.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Denial {
    /// The matching rule needs a role the caller does not hold.
    MissingRole,
    /// No rule names the action and unmatched actions are denied.
    NoRuleMatched,
    /// The request is delegated and the deciding rule (or, for an
    /// unmatched action, the policy) does not allow delegated requests.
    DelegationDenied,
    /// The request is delegated and its current actor is not one of the
    /// rule's `actors`.
    ActorNotAllowed,
    /// The subject was first authenticated by an issuer that is not one of
    /// the rule's `origins`.
    OriginNotAllowed,
}

impl Denial {
    /// The `reason` of decision records: `missing_role`, `no_rule_matched`,
    /// `delegation_denied`, `actor_not_allowed`, `origin_not_allowed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Denial::MissingRole => "missing_role",
            Denial::NoRuleMatched => "no_rule_matched",
            Denial::DelegationDenied => "delegation_denied",
            Denial::ActorNotAllowed => "actor_not_allowed",
            Denial::OriginNotAllowed => "origin_not_allowed",
        }
    }
}

#[derive(Clone, Debug)]
struct Rule {
    name: String,
    method: Option<String>,
    path: Option<Vec<Segment>>,
    operation: Option<String>,
    roles: Vec<String>,
    delegated: Delegated,
    /// Current actors allowed to make delegated requests; `None`: any.
    actors: Option<Vec<String>>,
    /// Origin issuers whose users the rule admits; `None`: any.
    origins: Option<Vec<String>>,
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
    delegated: Option<Delegated>,
    actors: Option<Vec<String>>,
    origins: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    mode: Option<Mode>,
    unmatched: Option<Unmatched>,
    delegated: Option<Delegated>,
    record: Option<RecordScope>,
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
    /// Why the action is denied; `None` when it is allowed.
    pub denial: Option<Denial>,
}

/// A loaded policy.
#[derive(Clone, Debug)]
pub struct Policy {
    mode: Mode,
    unmatched: Unmatched,
    delegated: Delegated,
    /// `None`: the mode's default.
    record: Option<RecordScope>,
    rules: Vec<Rule>,
}

impl Policy {
    /// Parses a policy from TOML text.
    pub fn from_toml(text: &str) -> Result<Self> {
        let file: PolicyFile =
            toml::from_str(text).map_err(|e| Error::new(Code::PolicyInvalid, format!("policy: {e}")).with_source(e))?;
        let default_delegated = file.delegated.unwrap_or(Delegated::Deny);
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
            let delegated = r.delegated.unwrap_or(default_delegated);
            if let Some(actors) = &r.actors {
                if actors.is_empty() || actors.iter().any(String::is_empty) {
                    return err(
                        Code::PolicyInvalid,
                        format!(
                            "rule {} has an empty `actors` list or name: list who may act, or remove `actors`",
                            i + 1
                        ),
                    );
                }
                if delegated == Delegated::Deny {
                    return err(
                        Code::PolicyInvalid,
                        format!(
                            "rule {} names `actors` but refuses delegated requests: add `delegated = \"allow\"`",
                            i + 1
                        ),
                    );
                }
            }
            if r.origins
                .as_ref()
                .is_some_and(|o| o.is_empty() || o.iter().any(String::is_empty))
            {
                return err(
                    Code::PolicyInvalid,
                    format!(
                        "rule {} has an empty `origins` list or issuer: list whose users it admits, or remove `origins`",
                        i + 1
                    ),
                );
            }
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
                delegated,
                actors: r.actors,
                origins: r.origins,
            });
        }
        Ok(Policy {
            mode: file.mode.unwrap_or(Mode::Enforce),
            unmatched: file.unmatched.unwrap_or(Unmatched::Deny),
            delegated: default_delegated,
            record: file.record,
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

    /// Which decisions are recorded: the `record` key, else every decision
    /// in permissive mode and the denials in enforce mode.
    pub fn record_scope(&self) -> RecordScope {
        self.record.unwrap_or(match self.mode {
            Mode::Permissive => RecordScope::All,
            _ => RecordScope::Denials,
        })
    }

    /// How powerful `roles` are here: the number of rules that name at
    /// least one of them. `keybound policy learn` breaks ties toward the
    /// roles named by the fewest rules.
    pub fn rules_naming(&self, roles: &[String]) -> usize {
        self.rules
            .iter()
            .filter(|rule| rule.roles.iter().any(|r| roles.contains(r)))
            .count()
    }

    /// Evaluates the rules for a caller holding `roles`, in a request that
    /// is not delegated.
    pub fn evaluate(&self, roles: &[String], action: Action<'_>) -> Evaluation {
        self.evaluate_as(roles, None, action)
    }

    /// Evaluates the rules for a caller holding `roles`; `current_actor` is
    /// `Some` (the first actor of the chain) for a delegated request. Inner
    /// actors are not an argument: they decide nothing (DL-10).
    pub fn evaluate_as(&self, roles: &[String], current_actor: Option<&str>, action: Action<'_>) -> Evaluation {
        self.evaluate_from(roles, current_actor, None, action)
    }

    /// [`Policy::evaluate_as`] for a subject whose origin issuer is
    /// `origin` (the token's origin issuer, else its issuer). A rule with
    /// `origins` denies when the origin is not given.
    pub fn evaluate_from(
        &self,
        roles: &[String],
        current_actor: Option<&str>,
        origin: Option<&str>,
        action: Action<'_>,
    ) -> Evaluation {
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
        let denial = match (rule, current_actor) {
            (Some(rule), Some(_)) if rule.delegated == Delegated::Deny => Some(Denial::DelegationDenied),
            (Some(rule), Some(actor)) if rule.actors.as_ref().is_some_and(|a| !a.iter().any(|a| a == actor)) => {
                Some(Denial::ActorNotAllowed)
            }
            (Some(rule), _)
                if rule
                    .origins
                    .as_ref()
                    .is_some_and(|o| origin.is_none_or(|origin| !o.iter().any(|allowed| allowed == origin))) =>
            {
                Some(Denial::OriginNotAllowed)
            }
            (Some(rule), _) if !(rule.roles.is_empty() || rule.roles.iter().any(|r| roles.contains(r))) => {
                Some(Denial::MissingRole)
            }
            (Some(_), _) => None,
            (None, _) if self.unmatched == Unmatched::Deny => Some(Denial::NoRuleMatched),
            (None, Some(_)) if self.delegated == Delegated::Deny => Some(Denial::DelegationDenied),
            (None, _) => None,
        };
        Evaluation {
            allowed: denial.is_none(),
            rule: rule.map(|r| r.name.clone()),
            roles_allowing: rule.map(|r| r.roles.clone()).unwrap_or_default(),
            denial,
        }
    }

    /// Applies the policy to a verified request: evaluates, writes a
    /// decision record (every decision or only denials, see
    /// [`Policy::record_scope`]), and refuses in enforce mode. `workflow`
    /// (the request's workflow id, for the record only) decides nothing.
    /// Only a request with a verified proof; a request admitted without one
    /// in bearer rollout mode goes through [`Policy::authorize_bearer`].
    pub fn authorize(
        &self,
        request: &VerifiedRequest,
        action: Action<'_>,
        workflow: Option<&str>,
        records: &dyn RecordSink,
        now: u64,
    ) -> Result<()> {
        self.decide(request.token(), request.slip(), action, workflow, records, now)
    }

    /// As [`Policy::authorize`], for a request admitted without a proof in
    /// bearer rollout mode (its token's roles, the same rules): for the
    /// routes that opted in to bearer requests, and for the layer's own
    /// check of such requests.
    pub fn authorize_bearer(
        &self,
        request: &BearerRequest,
        action: Action<'_>,
        workflow: Option<&str>,
        records: &dyn RecordSink,
        now: u64,
    ) -> Result<()> {
        self.decide(request.token(), request.slip(), action, workflow, records, now)
    }

    fn decide(
        &self,
        token: &VerifiedToken,
        slip: Option<&VerifiedSlip>,
        action: Action<'_>,
        workflow: Option<&str>,
        records: &dyn RecordSink,
        now: u64,
    ) -> Result<()> {
        if self.mode == Mode::Off {
            return Ok(());
        }
        let origin = token.claims().origin_issuer.as_deref().unwrap_or(token.issuer());
        let evaluation = self.evaluate_from(token.roles(), token.current_actor(), Some(origin), action);
        let enforced = self.mode == Mode::Enforce;
        let outcome = match evaluation.denial {
            None => Outcome::Allow,
            Some(_) if enforced => Outcome::Deny,
            Some(_) => Outcome::WouldDeny,
        };
        if outcome != Outcome::Allow || self.record_scope() == RecordScope::All {
            let record = DecisionRecord {
                time: now,
                mode: self.mode,
                outcome,
                issuer: token.issuer().to_owned(),
                audience: token.audience().to_owned(),
                subject: token.subject().to_owned(),
                domain: token.domain().map(str::to_owned),
                project: token.project().map(str::to_owned),
                roles_held: token.roles().to_vec(),
                trust_id: token.trust_id().map(str::to_owned),
                actors: token.actor_chain().iter().map(|a| a.sub.clone()).collect(),
                workflow_id: slip.map(VerifiedSlip::workflow_id_base64url),
                workflow: workflow.map(str::to_owned),
                action: action.recorded(),
                rule: evaluation.rule.clone(),
                reason: evaluation.denial,
                roles_allowing: evaluation.roles_allowing.clone(),
            };
            records.record(&record.to_json());
        }
        let Some(denial) = evaluation.denial else {
            return Ok(());
        };
        if !enforced {
            return Ok(());
        }
        let why = match (&evaluation.rule, denial) {
            (Some(rule), Denial::DelegationDenied) => format!("rule {rule:?} does not allow delegated requests"),
            (Some(rule), Denial::ActorNotAllowed) => format!(
                "rule {rule:?} does not allow {:?} to act for others",
                token.current_actor().unwrap_or_default()
            ),
            (Some(rule), Denial::OriginNotAllowed) => {
                format!("rule {rule:?} does not admit users first authenticated by {origin:?}")
            }
            (Some(rule), _) => format!(
                "rule {rule:?} requires one of the roles {:?}",
                evaluation.roles_allowing
            ),
            (None, Denial::DelegationDenied) => "no rule allows this delegated action".to_owned(),
            (None, _) => no_rule_for(action),
        };
        // No rule named the action at all: saying so tells the client only
        // what it sent, and keeps it from hunting for a missing role.
        let detail = matches!((&evaluation.rule, denial), (None, Denial::NoRuleMatched)).then(|| why.clone());
        let denied = Error::new(Code::PolicyDenied, why);
        Err(match detail {
            Some(detail) => denied.with_client_detail(detail),
            None => denied,
        })
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
    fn an_action_no_rule_names_is_said_as_sent() {
        let get = Action::Http {
            method: "GET",
            path: "/v2/server",
        };
        assert_eq!(no_rule_for(get), "no rule for GET /v2/server");
        assert_eq!(
            no_rule_for(Action::Operation("compute:resize")),
            "no rule for operation \"compute:resize\""
        );
        let long = "/x".repeat(150);
        let said = no_rule_for(Action::Http {
            method: "GET",
            path: &long,
        });
        assert!(said.ends_with('…') && said.chars().count() < 220, "{said}");
        let p = Policy::from_toml(POLICY).unwrap();
        assert_eq!(p.evaluate(&roles(&["admin"]), get).denial, Some(Denial::NoRuleMatched));
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
                roles_allowing: roles(&["reader"]),
                denial: Some(Denial::MissingRole),
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
                roles_allowing: vec![],
                denial: Some(Denial::NoRuleMatched),
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
    fn delegated_requests_need_a_rule_that_allows_them() {
        let p = Policy::from_toml(
            r#"
[[rule]]
method = "POST"
path = "/volumes"
roles = ["member"]
delegated = "allow"
actors = ["nova-compute@service"]
[[rule]]
method = "GET"
path = "/volumes"
roles = ["member"]
[[rule]]
method = "DELETE"
path = "/volumes"
roles = ["member"]
delegated = "allow"
"#,
        )
        .unwrap();
        let post = Action::Http {
            method: "POST",
            path: "/volumes",
        };
        let get = Action::Http {
            method: "GET",
            path: "/volumes",
        };
        let delete = Action::Http {
            method: "DELETE",
            path: "/volumes",
        };
        let member = roles(&["member"]);
        let nova = Some("nova-compute@service");
        // Requests that are not delegated ignore `delegated` and `actors`.
        assert!(p.evaluate(&member, post).allowed);
        assert!(p.evaluate(&member, get).allowed);
        assert!(p.evaluate_as(&member, nova, post).allowed);
        assert_eq!(
            p.evaluate_as(&member, Some("heat@service"), post).denial,
            Some(Denial::ActorNotAllowed)
        );
        assert_eq!(
            p.evaluate_as(&roles(&["reader"]), nova, post).denial,
            Some(Denial::MissingRole)
        );
        // A rule that does not say refuses delegated requests (the default).
        let refused = p.evaluate_as(&member, nova, get);
        assert_eq!(refused.denial, Some(Denial::DelegationDenied));
        assert!(!refused.allowed);
        // `delegated = "allow"` without `actors`: any current actor.
        assert!(p.evaluate_as(&member, Some("heat@service"), delete).allowed);
        // Unmatched actions: delegated requests need the top-level allow too.
        let open = Policy::from_toml("unmatched = \"allow\"").unwrap();
        assert!(open.evaluate(&[], post).allowed);
        assert_eq!(open.evaluate_as(&[], nova, post).denial, Some(Denial::DelegationDenied));
        let keystone = Policy::from_toml(
            "unmatched = \"allow\"\ndelegated = \"allow\"\n[[rule]]\npath = \"/a\"\nroles = [\"admin\"]\n",
        )
        .unwrap();
        assert!(keystone.evaluate_as(&[], nova, post).allowed);
        let a = Action::Http {
            method: "GET",
            path: "/a",
        };
        assert!(keystone.evaluate_as(&roles(&["admin"]), nova, a).allowed);
        assert_eq!(keystone.evaluate_as(&member, nova, a).denial, Some(Denial::MissingRole));
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
            "delegated = \"sometimes\"",
            "[[rule]]\npath = \"/a\"\nroles = []\nactors = [\"heat@service\"]",
            "[[rule]]\npath = \"/a\"\nroles = []\ndelegated = \"deny\"\nactors = [\"heat@service\"]",
            "delegated = \"allow\"\n[[rule]]\npath = \"/a\"\nroles = []\nactors = []",
            "[[rule]]\npath = \"/a\"\nroles = []\ndelegated = \"allow\"\nactors = [\"\"]",
        ] {
            assert_eq!(Policy::from_toml(bad).unwrap_err().code(), Code::PolicyInvalid, "{bad}");
        }
    }
}
