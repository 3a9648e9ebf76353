//! `keybound policy report`: decision records summed up per audience, rule
//! and role (spec/delegation.md §8.3).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::{DecisionRecord, Denial, Outcome, WorkflowSelector};

/// Decision records summed up.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Decision records counted (of the workflow, when one was named).
    pub decisions: u64,
    /// Per audience, sorted.
    pub audiences: Vec<AudienceReport>,
}

/// The decisions of one service.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AudienceReport {
    /// The service.
    pub audience: String,
    /// Per deciding rule, sorted by name; the requests no rule matched last.
    pub rules: Vec<RuleReport>,
}

/// The decisions of one rule, or of no rule (`rule` null).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RuleReport {
    /// The deciding rule; `None`: rules exist but none matched the action.
    pub rule: Option<String>,
    /// All requests.
    pub requests: u64,
    /// Those the rules allow.
    pub allowed: u64,
    /// Those the rules deny and permissive mode admitted: what enforcing would refuse.
    pub would_deny: u64,
    /// Those the rules deny and enforce mode refused.
    pub denied: u64,
    /// Why the rules deny (would-denies and denials), per reason.
    pub reasons: BTreeMap<Denial, u64>,
    /// The roles that would have allowed the requests refused for a
    /// missing role (any one of them).
    pub missing_roles: Vec<String>,
    /// Per role held by the callers.
    pub roles: BTreeMap<String, RoleCounts>,
    /// The subjects, sorted.
    pub subjects: Vec<String>,
    /// The current actors of delegated requests, sorted.
    pub actors: Vec<String>,
}

/// The requests made holding one role.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RoleCounts {
    /// All of them.
    pub requests: u64,
    /// Those permissive mode admitted although the rules deny them.
    pub would_deny: u64,
    /// Those enforce mode refused.
    pub denied: u64,
}

#[derive(Default)]
struct RuleSums {
    report: RuleReport,
    missing: BTreeSet<String>,
    subjects: BTreeSet<String>,
    actors: BTreeSet<String>,
}

/// Sums up `records`, only those of `workflow` when one is named.
pub fn report(records: &[DecisionRecord], workflow: Option<WorkflowSelector<'_>>) -> Report {
    let mut sums: BTreeMap<&str, BTreeMap<(bool, Option<&str>), RuleSums>> = BTreeMap::new();
    let mut decisions = 0;
    for r in records {
        if workflow.is_some_and(|w| !r.in_workflow(w)) {
            continue;
        }
        decisions += 1;
        // No rule sorts after every rule.
        let key = (r.rule.is_none(), r.rule.as_deref());
        let s = sums.entry(&r.audience).or_default().entry(key).or_default();
        let report = &mut s.report;
        report.requests += 1;
        match r.outcome {
            Outcome::Allow => report.allowed += 1,
            Outcome::WouldDeny => report.would_deny += 1,
            Outcome::Deny => report.denied += 1,
        }
        if r.outcome != Outcome::Allow
            && let Some(reason) = r.reason
        {
            *report.reasons.entry(reason).or_default() += 1;
            if reason == Denial::MissingRole {
                s.missing.extend(r.roles_allowing.iter().cloned());
            }
        }
        for role in &r.roles_held {
            let counts = report.roles.entry(role.clone()).or_default();
            counts.requests += 1;
            counts.would_deny += u64::from(r.outcome == Outcome::WouldDeny);
            counts.denied += u64::from(r.outcome == Outcome::Deny);
        }
        s.subjects.insert(r.subject.clone());
        if let Some(actor) = r.current_actor() {
            s.actors.insert(actor.to_owned());
        }
    }
    let audiences = sums
        .into_iter()
        .map(|(audience, rules)| AudienceReport {
            audience: audience.to_owned(),
            rules: rules
                .into_iter()
                .map(|((_, rule), s)| RuleReport {
                    rule: rule.map(str::to_owned),
                    missing_roles: s.missing.into_iter().collect(),
                    subjects: s.subjects.into_iter().collect(),
                    actors: s.actors.into_iter().collect(),
                    ..s.report
                })
                .collect(),
        })
        .collect();
    Report { decisions, audiences }
}
