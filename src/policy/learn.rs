//! `keybound policy learn`: from the decision records of one workflow run,
//! the roles each principal needed and the workplan of its delegations
//! (spec/delegation.md §9.5).
//!
//! The least set of roles for a principal or a hop is the hitting set of its
//! requests' `roles_allowing` (each request needs one of them) named by the
//! fewest rules of all the policies given ([`Policy::rules_naming`]: a
//! trust's roles, like a role assignment, count at every service), then the
//! one of fewest roles, then the first by name.
//! Exact: the search is bounded by [`MAX_CANDIDATE_ROLES`].

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::{DecisionRecord, Denial, Policy, RecordedAction, WorkflowSelector};
use crate::delegation::workplan::{Delegation, Workplan};
use crate::error::{Code, Error, Result, err};
use crate::names::{Name, UserName};

/// The most distinct roles the search for one principal or hop considers.
pub const MAX_CANDIDATE_ROLES: usize = 20;

/// What one workflow run needed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Learned {
    /// The workflow: its label, or `id ` and its slip's workflow id.
    pub workflow: String,
    /// Its decision records.
    pub decisions: u64,
    /// (a) The roles each principal needed for its own (not delegated)
    /// requests, per subject and project.
    pub assignments: Vec<Assignment>,
    /// (b) Per hop, the least roles its delegated requests needed.
    pub hops: Vec<Hop>,
    /// Requests that no role would allow: the policy, not a role, must change.
    pub unallowable: Vec<Unallowable>,
    /// The workplan of the hops; `None` when the run made no delegated request.
    #[serde(skip)]
    pub workplan: Option<Workplan>,
}

/// The roles one principal needed on one project.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Assignment {
    /// The principal (`name@domain`).
    pub subject: String,
    /// `project@domain`; `None` for requests without a project.
    pub project: Option<String>,
    /// The least roles allowing every request; empty when none was needed.
    pub roles: Vec<String>,
    /// Its requests.
    pub requests: u64,
}

/// One hop: a trustee acting at an audience on a project.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Hop {
    /// The current actor of the hop's requests.
    pub trustee: String,
    /// The service.
    pub audience: String,
    /// `project@domain` of the delegated tokens.
    pub project: Option<String>,
    /// The least roles allowing every request of the hop.
    pub roles: Vec<String>,
    /// Its requests.
    pub requests: u64,
}

/// Requests that no set of roles would allow.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Unallowable {
    /// The service.
    pub audience: String,
    /// The action.
    pub action: RecordedAction,
    /// The subject.
    pub subject: String,
    /// The current actor, for a delegated request.
    pub actor: Option<String>,
    /// The deciding rule; `None` when none matched.
    pub rule: Option<String>,
    /// `no_rule_matched`, `delegation_denied` or `actor_not_allowed`.
    pub reason: Denial,
    /// How many such requests.
    pub requests: u64,
}

/// What one principal or hop's requests need: for each request that needs a
/// role, the roles of which it needs one, and the audiences they went to.
#[derive(Default)]
struct Needs<'a> {
    sets: Vec<&'a [String]>,
    held: BTreeSet<&'a str>,
    requests: u64,
}

/// Learns from `records` what workflow `workflow` needed. `policies` holds
/// the policy of every audience the workflow's records name
/// (`config.invalid` otherwise), and any others, for the tie-break: a role
/// named by fewer rules of all of them is less powerful. The workplan is named
/// `plan_name` and described by `description`.
pub fn learn(
    records: &[DecisionRecord],
    workflow: WorkflowSelector<'_>,
    policies: &BTreeMap<String, Policy>,
    plan_name: &str,
    description: &str,
) -> Result<Learned> {
    let mine: Vec<&DecisionRecord> = records.iter().filter(|r| r.in_workflow(workflow)).collect();
    if mine.is_empty() {
        return err(
            Code::PolicyLearnEmpty,
            format!("no decision record of workflow {workflow} (of {} read)", records.len()),
        );
    }
    let policy = |audience: &str| {
        policies.get(audience).ok_or_else(|| {
            Error::new(
                Code::ConfigInvalid,
                format!("no policy for audience {audience}: pass --policy {audience}=FILE"),
            )
        })
    };
    let mut principals: BTreeMap<(&str, Option<String>), Needs<'_>> = BTreeMap::new();
    let mut hops: BTreeMap<(&str, &str, Option<String>), Needs<'_>> = BTreeMap::new();
    let mut unallowable: BTreeMap<Unallowable, u64> = BTreeMap::new();
    // A workplan is run by one user: the delegated requests of one run all
    // name that user as trustor (the token's subject).
    let mut trustor: Option<&str> = None;
    for r in &mine {
        policy(&r.audience)?;
        if r.current_actor().is_some() {
            match trustor {
                None => trustor = Some(&r.subject),
                Some(first) if first != r.subject => {
                    return err(
                        Code::PolicyLearnConflict,
                        format!(
                            "workflow {workflow} holds delegations from {first} and from {}: a workplan is run by one user; learn from one run",
                            r.subject
                        ),
                    );
                }
                Some(_) => {}
            }
        }
        if let Some(
            reason @ (Denial::NoRuleMatched
            | Denial::DelegationDenied
            | Denial::ActorNotAllowed
            | Denial::OriginNotAllowed),
        ) = r.reason
        {
            let key = Unallowable {
                audience: r.audience.clone(),
                action: r.action.clone(),
                subject: r.subject.clone(),
                actor: r.current_actor().map(str::to_owned),
                rule: r.rule.clone(),
                reason,
                requests: 0,
            };
            *unallowable.entry(key).or_default() += 1;
            continue;
        }
        let needs = match r.current_actor() {
            Some(actor) => hops.entry((actor, &r.audience, r.qualified_project())).or_default(),
            None => principals.entry((&r.subject, r.qualified_project())).or_default(),
        };
        needs.requests += 1;
        needs.held.extend(r.roles_held.iter().map(String::as_str));
        // A rule without roles (or an unmatched action the policy allows)
        // needs no role.
        if r.rule.is_some() && !r.roles_allowing.is_empty() {
            needs.sets.push(&r.roles_allowing);
        }
    }

    let named = |roles: &[String]| -> usize { policies.values().map(|p| p.rules_naming(roles)).sum() };
    let mut assignments = Vec::with_capacity(principals.len());
    for ((subject, project), needs) in principals {
        let roles = least_roles(&needs.sets, &named).map_err(|e| context(e, subject))?;
        assignments.push(Assignment {
            subject: subject.to_owned(),
            project,
            roles,
            requests: needs.requests,
        });
    }

    let mut learned_hops = Vec::with_capacity(hops.len());
    for ((trustee, audience, project), needs) in hops {
        let what = format!("{trustee} at {audience}");
        // A hop's trust is restricted to its audience (§11), so power there
        // comes first; power anywhere else only breaks ties.
        let here = policy(audience)?;
        let power = |roles: &[String]| (here.rules_naming(roles), named(roles));
        let mut roles = least_roles(&needs.sets, &power).map_err(|e| context(e, &what))?;
        if roles.is_empty() {
            // Nothing needed a role, but a trust delegates at least one: the
            // least powerful role the hop held.
            let held: Vec<&str> = needs.held.iter().copied().collect();
            let Some(least) = held.iter().min_by_key(|role| (power(&[(**role).to_owned()]), **role)) else {
                return err(
                    Code::PolicyLearnEmpty,
                    format!(
                        "{what}: its delegated requests held no role and needed none, so there is nothing to delegate"
                    ),
                );
            };
            roles.push((*least).to_owned());
        }
        learned_hops.push(Hop {
            trustee: trustee.to_owned(),
            audience: audience.to_owned(),
            project,
            roles,
            requests: needs.requests,
        });
    }
    for pair in learned_hops.windows(2) {
        if pair[0].trustee == pair[1].trustee && pair[0].audience == pair[1].audience {
            return err(
                Code::PolicyLearnConflict,
                format!(
                    "{} acted at {} on projects {} and {}: a workplan is run on one project; learn from one run",
                    pair[0].trustee,
                    pair[0].audience,
                    pair[0].project.as_deref().unwrap_or("(none)"),
                    pair[1].project.as_deref().unwrap_or("(none)"),
                ),
            );
        }
    }

    let workplan = if learned_hops.is_empty() {
        None
    } else {
        Some(workplan(&learned_hops, plan_name, description)?)
    };
    Ok(Learned {
        workflow: workflow.to_string(),
        decisions: mine.len() as u64,
        assignments,
        hops: learned_hops,
        unallowable: unallowable
            .into_iter()
            .map(|(u, requests)| Unallowable { requests, ..u })
            .collect(),
        workplan,
    })
}

fn context(e: Error, what: &str) -> Error {
    Error::new(e.code(), format!("{what}: {}", e.message()))
}

/// The workplan of the learned hops, through [`Workplan::new`] (the same
/// checks and encoder as a file).
fn workplan(hops: &[Hop], plan_name: &str, description: &str) -> Result<Workplan> {
    let name = Name::parse("workplan", plan_name).map_err(|e| {
        Error::new(
            Code::WorkplanInvalid,
            format!("{} (name the plan with --name)", e.message()),
        )
    })?;
    let delegations = hops
        .iter()
        .map(|hop| {
            let invalid = |e: Error| {
                Error::new(
                    Code::WorkplanInvalid,
                    format!("{} at {}: {}", hop.trustee, hop.audience, e.message()),
                )
            };
            Ok(Delegation {
                trustee: UserName::parse(&hop.trustee).map_err(invalid)?,
                audience: hop.audience.clone(),
                roles: hop
                    .roles
                    .iter()
                    .map(|r| Name::parse("role", r))
                    .collect::<Result<_>>()
                    .map_err(invalid)?,
                lifetime: None,
                uses: None,
                redelegation: 0,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Workplan::new(name, description.to_owned(), delegations)
}

/// The least set of roles hitting every set of `needs`: fewest rules
/// naming them (`named`, which must not fall when a role is added), then
/// fewest roles, then first by name (sorted lists compared element by
/// element). Empty when `needs` is.
pub(crate) fn least_roles<K: Ord>(needs: &[&[String]], named: &dyn Fn(&[String]) -> K) -> Result<Vec<String>> {
    let candidates: Vec<&String> = needs
        .iter()
        .flat_map(|set| set.iter())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if candidates.len() > MAX_CANDIDATE_ROLES {
        return err(
            Code::PolicyLimit,
            format!(
                "{} candidate roles; the search considers at most {MAX_CANDIDATE_ROLES}",
                candidates.len()
            ),
        );
    }
    let bit = |role: &String| 1u32 << candidates.binary_search(&role).unwrap_or_default();
    let masks: BTreeSet<u32> = needs
        .iter()
        .map(|set| set.iter().map(bit).fold(0, |m, b| m | b))
        .collect();
    let names = |picked: &[usize]| picked.iter().map(|&i| candidates[i].clone()).collect::<Vec<_>>();
    if masks.is_empty() {
        return Ok(Vec::new());
    }
    let n = candidates.len();
    let hits = |mask: u32| masks.iter().all(|need| need & mask != 0);
    // Every size, smallest first, combinations in lexicographic order (the
    // order of their sorted role names): the least power wins, then the
    // fewest roles, then the first. Only minimal hitting sets are weighed:
    // power never falls when a role is added, so a set with a role it could
    // drop never beats the set without it.
    let mut best: Option<(K, Vec<usize>)> = None;
    for k in 1..=n {
        let mut picked: Vec<usize> = (0..k).collect();
        loop {
            let mask = picked.iter().fold(0u32, |m, &i| m | 1 << i);
            let minimal = hits(mask) && picked.iter().all(|&i| !hits(mask & !(1 << i)));
            if minimal {
                let power = named(&names(&picked));
                if best.as_ref().is_none_or(|(least, _)| power < *least) {
                    best = Some((power, picked.clone()));
                }
            }
            let Some(i) = (0..k).rev().find(|&i| picked[i] < n - k + i) else {
                break;
            };
            picked[i] += 1;
            for j in i + 1..k {
                picked[j] = picked[j - 1] + 1;
            }
        }
    }
    match best {
        Some((_, picked)) => Ok(names(&picked)),
        None => err(Code::PolicyLimit, "no set of the candidate roles meets every need"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(roles: &[&str]) -> Vec<String> {
        roles.iter().map(|r| r.to_string()).collect()
    }

    fn record(
        audience: &str,
        actor: Option<&str>,
        project: &str,
        rule: Option<&str>,
        allowing: &[&str],
    ) -> DecisionRecord {
        DecisionRecord {
            time: 1,
            mode: super::super::Mode::Permissive,
            outcome: super::super::Outcome::Allow,
            issuer: "https://issuer.example".into(),
            audience: audience.into(),
            subject: "ayoung@stoughton".into(),
            domain: Some("stoughton".into()),
            project: Some(project.into()),
            roles_held: set(&["member", "admin"]),
            trust_id: actor.map(|_| "2Qf3mV0cZ8bq1Xo4yT6wUg".into()),
            actors: actor.map(|a| vec![a.to_owned()]).unwrap_or_default(),
            workflow_id: None,
            workflow: Some("w".into()),
            action: RecordedAction::Operation { operation: "x".into() },
            rule: rule.map(str::to_owned),
            reason: None,
            roles_allowing: set(allowing),
        }
    }

    const W: WorkflowSelector<'static> = WorkflowSelector::Label("w");

    /// Labels match labels and slip ids match slip ids: a record whose
    /// unsigned label is a run's id is not part of that run; delegations from
    /// two trustors are not one run.
    #[test]
    fn a_run_is_selected_by_label_or_by_slip_id_never_across_and_has_one_trustor() {
        let nova = Some("nova-compute@service");
        let mut verified = record("https://a.example", nova, "turing", Some("x"), &[]);
        verified.workflow = None;
        verified.workflow_id = Some("AAAAAAAAAAAAAAAAAAAAAA".into());
        let mut forged = record("https://a.example", nova, "turing", Some("y"), &["admin"]);
        forged.workflow = Some("AAAAAAAAAAAAAAAAAAAAAA".into());
        let records = vec![verified.clone(), forged.clone()];
        let by_id = learn(
            &records,
            WorkflowSelector::Id("AAAAAAAAAAAAAAAAAAAAAA"),
            &policies(),
            "w",
            "d",
        )
        .unwrap();
        assert_eq!((by_id.decisions, by_id.hops[0].roles.clone()), (1, set(&["member"])));
        assert_eq!(by_id.workflow, "id AAAAAAAAAAAAAAAAAAAAAA");
        let by_label = learn(
            &records,
            WorkflowSelector::Label("AAAAAAAAAAAAAAAAAAAAAA"),
            &policies(),
            "w",
            "d",
        )
        .unwrap();
        assert_eq!(
            (by_label.decisions, by_label.hops[0].roles.clone()),
            (1, set(&["admin"]))
        );

        let mut other_user = record("https://b.example", nova, "turing", Some("x"), &[]);
        other_user.subject = "bob@stoughton".into();
        let mut policies = policies();
        policies.insert("https://b.example".into(), policies["https://a.example"].clone());
        let e = learn(
            &[record("https://a.example", nova, "turing", Some("x"), &[]), other_user],
            W,
            &policies,
            "w",
            "d",
        )
        .unwrap_err();
        assert_eq!(e.code(), Code::PolicyLearnConflict);
        assert!(e.message().contains("bob@stoughton"), "{}", e.message());

        // A hop that held no role and needed none has nothing to delegate.
        let mut empty = record("https://a.example", nova, "turing", Some("x"), &[]);
        empty.roles_held.clear();
        assert_eq!(
            learn(&[empty], W, &policies, "w", "d").unwrap_err().code(),
            Code::PolicyLearnEmpty
        );
    }

    fn policies() -> BTreeMap<String, Policy> {
        let policy = Policy::from_toml(
            "[[rule]]\noperation = \"x\"\nroles = []\n[[rule]]\noperation = \"y\"\nroles = [\"admin\"]\n",
        )
        .unwrap();
        BTreeMap::from([("https://a.example".to_owned(), policy)])
    }

    /// A hop's power is counted at its own audience first: `reader` opened
    /// at other services does not make it look stronger than `writer` at
    /// Glance, where the hop's trust is restricted to (spec/delegation.md
    /// §9.5). A principal's power counts every policy.
    #[test]
    fn a_hop_gets_the_weakest_roles_at_its_own_audience() {
        let glance = Policy::from_toml(
            "[[rule]]\noperation = \"show\"\nroles = [\"reader\", \"writer\"]\n[[rule]]\noperation = \"upload\"\nroles = [\"writer\"]\n",
        )
        .unwrap();
        let reads = |n: &str| {
            Policy::from_toml(&format!("[[rule]]\noperation = \"{n}1\"\nroles = [\"reader\"]\n[[rule]]\noperation = \"{n}2\"\nroles = [\"reader\"]\n")).unwrap()
        };
        let policies = BTreeMap::from([
            ("https://glance.example".to_owned(), glance),
            ("https://cinder.example".to_owned(), reads("c")),
            ("https://neutron.example".to_owned(), reads("n")),
        ]);
        let nova = Some("nova-compute@service");
        let hop = record(
            "https://glance.example",
            nova,
            "turing",
            Some("show"),
            &["reader", "writer"],
        );
        let learned = learn(&[hop], W, &policies, "w", "d").unwrap();
        assert_eq!(learned.hops[0].roles, set(&["reader"]));
        // The user's own reads at Glance: reader opens 5 rules in all, writer 2.
        let own = record(
            "https://glance.example",
            None,
            "turing",
            Some("show"),
            &["reader", "writer"],
        );
        let learned = learn(&[own], W, &policies, "w", "d").unwrap();
        assert_eq!(learned.assignments[0].roles, set(&["writer"]));
    }

    /// A hop that needed no role gets the weakest role it held; requests
    /// the policy refuses to delegated callers are reported; one trustee at
    /// one audience on two projects makes no one workplan.
    #[test]
    fn learning_reports_what_roles_cannot_fix_and_refuses_what_no_plan_holds() {
        let nova = Some("nova-compute@service");
        let mut refused = record("https://a.example", nova, "turing", Some("y"), &["admin"]);
        refused.reason = Some(Denial::DelegationDenied);
        let records = vec![record("https://a.example", nova, "turing", Some("x"), &[]), refused];
        let learned = learn(&records, W, &policies(), "w", "d").unwrap();
        assert_eq!(learned.hops[0].roles, set(&["member"]));
        assert_eq!(learned.unallowable.len(), 1);
        assert_eq!(learned.unallowable[0].reason, Denial::DelegationDenied);
        assert_eq!(learned.workplan.unwrap().delegations[0].roles[0].as_str(), "member");

        let two = vec![
            record("https://a.example", nova, "turing", Some("x"), &[]),
            record("https://a.example", nova, "lovelace", Some("x"), &[]),
        ];
        let e = learn(&two, W, &policies(), "w", "d").unwrap_err();
        assert_eq!(e.code(), Code::PolicyLearnConflict);
        assert_eq!(
            learn(&two, WorkflowSelector::Label("other"), &policies(), "w", "d")
                .unwrap_err()
                .code(),
            Code::PolicyLearnEmpty
        );
        let elsewhere = vec![record("https://b.example", None, "turing", Some("x"), &[])];
        assert_eq!(
            learn(&elsewhere, W, &policies(), "w", "d").unwrap_err().code(),
            Code::ConfigInvalid
        );
        // The workflow name must be a name to name the plan.
        let e = learn(&records, W, &policies(), "w:1", "d").unwrap_err();
        assert_eq!(e.code(), Code::WorkplanInvalid);
        assert!(e.message().contains("--name"), "{}", e.message());
    }

    #[test]
    fn the_least_set_is_the_weakest_then_the_smallest_then_the_first_by_name() {
        let none = |_: &[String]| 0;
        let (a, b, c) = (set(&["reader", "admin"]), set(&["writer", "admin"]), set(&["reader"]));
        // Equal power: one role beats two.
        assert_eq!(least_roles(&[&a, &b], &none).unwrap(), set(&["admin"]));
        // Least power first: two weak roles beat one powerful role.
        let admin_opens_more = |roles: &[String]| roles.iter().map(|r| if r == "admin" { 5 } else { 1 }).sum::<usize>();
        assert_eq!(
            least_roles(&[&a, &b], &admin_opens_more).unwrap(),
            set(&["reader", "writer"])
        );
        // reader is forced; then writer or admin: by power.
        let power = |roles: &[String]| roles.iter().map(|r| if r == "admin" { 10 } else { 1 }).sum::<usize>();
        assert_eq!(least_roles(&[&a, &b, &c], &power).unwrap(), set(&["reader", "writer"]));
        // Equal power: the first by name.
        assert_eq!(least_roles(&[&set(&["b", "a"])], &none).unwrap(), set(&["a"]));
        assert!(least_roles(&[], &none).unwrap().is_empty());
        let many: Vec<String> = (0..=MAX_CANDIDATE_ROLES).map(|i| format!("r{i}")).collect();
        assert_eq!(least_roles(&[&many], &none).unwrap_err().code(), Code::PolicyLimit);
        // Twenty candidates, each need a pair: exact and quick.
        let pairs: Vec<Vec<String>> = (0..10)
            .map(|i| set(&[&format!("a{i:02}"), &format!("b{i:02}")]))
            .collect();
        let needs: Vec<&[String]> = pairs.iter().map(Vec::as_slice).collect();
        let got = least_roles(&needs, &|r: &[String]| r.iter().filter(|r| r.starts_with('a')).count()).unwrap();
        assert_eq!(got.len(), 10);
        assert!(got.iter().all(|r| r.starts_with('b')), "{got:?}");
    }
}
