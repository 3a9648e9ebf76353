//! `keybound policy report|learn` and `keybound workplan check`: what
//! permissive services recorded, and the workplans learned from it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde_json::json;

use super::{CliError, EXIT_FAILURE, print_stdout};
use crate::delegation::workplan::{self, Problem, Workplan};
use crate::error::Code;
use crate::policy::learn::{Learned, learn};
use crate::policy::report::{Report, report};
use crate::policy::{Policy, RecordsRead, WorkflowSelector, read_decision_records};

pub(crate) const POLICY_ABOUT: &str =
    "Summarise decision records (report) and learn a workflow's roles and workplan from them (learn)";
pub(crate) const POLICY_LONG: &str = "\
Read the decision records of services protected by keybound (JSON lines, as written by a record file: \
spec/delegation.md §8.3) and summarise them, or learn from one workflow's records what it needs.

Run the services in permissive mode, which records every decision, send the workflow's requests with a \
KB-Workflow header, then: `report` counts per service, rule and role the requests, the ones enforcing would \
refuse (would deny) and the roles they lacked; `learn` gives the roles each user needed and a workplan with \
the least roles for each delegation (spec/delegation.md §9). A malformed line is an error naming its file \
and line (policy.record_invalid), unless --skip-bad counts and skips it.";
pub(crate) const POLICY_EXAMPLES: &str = "\
Examples:
  keybound policy report glance-records.jsonl cinder-records.jsonl
  keybound policy report --json --workflow deploy-1 records/*.jsonl
  keybound policy learn records/*.jsonl --workflow deploy-1 --policy https://glance.example=glance.toml --out plan.toml";

/// `keybound policy`.
#[derive(Debug, clap::Args)]
pub(crate) struct PolicyArgs {
    #[command(subcommand)]
    action: PolicyAction,
}

#[derive(Debug, clap::Subcommand)]
enum PolicyAction {
    /// Per service, rule and role: requests, would-denies, missing roles, subjects and actors
    #[command(
        after_help = "Examples:\n  keybound policy report records.jsonl\n  keybound policy report --json --workflow deploy-1 a.jsonl b.jsonl"
    )]
    Report(ReportArgs),
    /// The roles one workflow needed, and the workplan of its delegations
    #[command(
        after_help = "Examples:\n  keybound policy learn records.jsonl --workflow deploy-1 --out deploy.toml\n  keybound policy learn records.jsonl --workflow deploy-1 --out deploy.toml \\\n      --policy https://glance.example=glance.toml --policy https://cinder.example=cinder.toml"
    )]
    Learn(LearnArgs),
}

#[derive(Debug, clap::Args)]
struct RecordsArgs {
    /// Decision-record files (JSON lines); - for stdin
    #[arg(required = true, value_name = "RECORDS")]
    records: Vec<PathBuf>,
    /// Skip and count malformed lines instead of stopping at the first
    #[arg(long)]
    skip_bad: bool,
    /// Print the result as JSON
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct ReportArgs {
    #[command(flatten)]
    input: RecordsArgs,
    #[command(flatten)]
    workflow: WorkflowArgs,
}

/// Which records are one workflow run. A label matches only labels and an id
/// only slip ids: an unsigned label never joins a verified run.
#[derive(Debug, clap::Args)]
#[group(multiple = false)]
struct WorkflowArgs {
    /// The workflow's KB-Workflow label (the header a run sends before it has a slip)
    #[arg(long, value_name = "LABEL")]
    workflow: Option<String>,
    /// The workflow id of the run's routing slip (base64url, as `keybound workplan run` prints it)
    #[arg(long, value_name = "ID")]
    workflow_id: Option<String>,
}

impl WorkflowArgs {
    fn selector(&self) -> Option<WorkflowSelector<'_>> {
        match (&self.workflow, &self.workflow_id) {
            (Some(label), _) => Some(WorkflowSelector::Label(label)),
            (None, Some(id)) => Some(WorkflowSelector::Id(id)),
            (None, None) => None,
        }
    }
}

#[derive(Debug, clap::Args)]
struct LearnArgs {
    #[command(flatten)]
    input: RecordsArgs,
    /// The workflow to learn: --workflow LABEL or --workflow-id ID (one is required)
    #[command(flatten)]
    workflow: WorkflowArgs,
    /// The policy of a service, for the tie-break between equally small role sets (one per audience learned from)
    #[arg(long = "policy", value_name = "AUDIENCE=FILE")]
    policies: Vec<String>,
    /// The workplan's name (default: the workflow)
    #[arg(long)]
    name: Option<String>,
    /// The workplan's description
    #[arg(long)]
    description: Option<String>,
    /// Write the workplan to this file instead of stdout
    #[arg(long)]
    out: Option<PathBuf>,
}

pub(crate) fn policy(args: PolicyArgs) -> Result<ExitCode, CliError> {
    match args.action {
        PolicyAction::Report(a) => run_report(a),
        PolicyAction::Learn(a) => run_learn(a),
    }
}

fn read_records(args: &RecordsArgs) -> Result<RecordsRead, CliError> {
    let mut read = RecordsRead::default();
    for path in &args.records {
        let shown = path.display().to_string();
        let mut input: Box<dyn std::io::BufRead> = if shown == "-" {
            Box::new(std::io::stdin().lock())
        } else {
            let file = std::fs::File::open(path).map_err(|e| CliError::io(format!("cannot open {shown}: {e}")))?;
            Box::new(std::io::BufReader::new(file))
        };
        read_decision_records(&mut *input, &shown, args.skip_bad, &mut read)?;
    }
    Ok(read)
}

fn run_report(args: ReportArgs) -> Result<ExitCode, CliError> {
    let read = read_records(&args.input)?;
    let summary = report(&read.decisions, args.workflow.selector());
    if args.input.json {
        let mut out = serde_json::to_value(&summary).map_err(|e| CliError::io(e.to_string()))?;
        out["other_events"] = json!(read.other_events);
        out["skipped"] = json!(read.skipped);
        out["workflow"] = json!(args.workflow.selector().map(|w| w.to_string()));
        print_stdout(&out.to_string())?;
    } else {
        print_stdout(report_table(&summary, &read).trim_end())?;
    }
    Ok(ExitCode::SUCCESS)
}

/// At most `max` names, then how many more.
fn some_of(names: &[String], max: usize) -> String {
    match names.len() {
        0 => "-".to_owned(),
        n if n <= max => names.join(", "),
        n => format!("{} +{}", names[..max].join(", "), n - max),
    }
}

/// The report for people: one block per audience, one row per rule.
fn report_table(summary: &Report, read: &RecordsRead) -> String {
    let mut out = format!(
        "{} decision records ({} other events, {} malformed lines skipped)\n",
        summary.decisions, read.other_events, read.skipped
    );
    for audience in &summary.audiences {
        let _ = writeln!(out, "\n{}", audience.audience);
        let mut rows = vec![[
            "RULE".to_owned(),
            "REQUESTS".to_owned(),
            "ALLOWED".to_owned(),
            "WOULD DENY".to_owned(),
            "DENIED".to_owned(),
            "WHY".to_owned(),
            "MISSING (ONE OF)".to_owned(),
            "ROLES HELD".to_owned(),
            "SUBJECTS".to_owned(),
            "ACTORS".to_owned(),
        ]];
        for rule in &audience.rules {
            let why = rule
                .reasons
                .iter()
                .map(|(reason, n)| format!("{} {n}", reason.as_str()))
                .collect::<Vec<_>>();
            let held = rule
                .roles
                .iter()
                .map(|(role, c)| format!("{role} {}", c.requests))
                .collect::<Vec<_>>();
            let count = |n: u64| if n == 0 { "-".to_owned() } else { n.to_string() };
            rows.push([
                rule.rule.clone().unwrap_or_else(|| "(no rule matched)".to_owned()),
                rule.requests.to_string(),
                count(rule.allowed),
                count(rule.would_deny),
                count(rule.denied),
                some_of(&why, 4),
                some_of(&rule.missing_roles, 4),
                some_of(&held, 4),
                some_of(&rule.subjects, 2),
                some_of(&rule.actors, 2),
            ]);
        }
        let widths: Vec<usize> = (0..10)
            .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
            .collect();
        for row in rows {
            let cells: Vec<String> = row.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
            let _ = writeln!(out, "  {}", cells.join("  ").trim_end());
        }
    }
    out
}

fn run_learn(args: LearnArgs) -> Result<ExitCode, CliError> {
    let mut policies = BTreeMap::new();
    for given in &args.policies {
        let Some((audience, file)) = given.split_once('=') else {
            return Err(CliError::usage(format!(
                "--policy {given:?}: write AUDIENCE=FILE (see --help)"
            )));
        };
        let policy = Policy::from_file(Path::new(file))
            .map_err(|e| CliError::from(e).context(&format!("--policy {audience}")))?;
        policies.insert(audience.to_owned(), policy);
    }
    let read = read_records(&args.input)?;
    let Some(workflow) = args.workflow.selector() else {
        return Err(CliError::usage(
            "learn needs the run: --workflow LABEL or --workflow-id ID (see --help)",
        ));
    };
    let name = args.name.clone().unwrap_or_else(|| match workflow {
        WorkflowSelector::Label(label) => label.to_owned(),
        WorkflowSelector::Id(id) => format!("workflow-{id}"),
    });
    let description = args.description.clone().unwrap_or_else(|| {
        format!("Learned by keybound policy learn from the decision records of workflow {workflow}")
    });
    let learned = learn(&read.decisions, workflow, &policies, &name, &description).map_err(|e| {
        if e.code() == Code::ConfigInvalid {
            CliError::usage(e.message())
        } else {
            CliError::from(e)
        }
    })?;
    let plan = learned.workplan.as_ref().map(Workplan::to_toml);
    if let (Some(out), Some(plan)) = (&args.out, &plan) {
        std::fs::write(out, plan).map_err(|e| CliError::io(format!("cannot write {}: {e}", out.display())))?;
    }
    if args.input.json {
        let mut out = serde_json::to_value(&learned).map_err(|e| CliError::io(e.to_string()))?;
        out["workplan"] = json!(plan);
        out["skipped"] = json!(read.skipped);
        print_stdout(&out.to_string())?;
    } else {
        eprint!("{}", learn_summary(&learned, read.skipped));
        if let (None, Some(plan)) = (&args.out, &plan) {
            print_stdout(plan.trim_end())?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What learn found, for people (on stderr: stdout holds the workplan).
fn learn_summary(learned: &Learned, skipped: u64) -> String {
    let mut out = format!(
        "workflow {}: {} decision records ({skipped} malformed lines skipped)\n",
        learned.workflow, learned.decisions
    );
    let roles = |roles: &[String]| {
        if roles.is_empty() {
            "no role".to_owned()
        } else {
            roles.join(", ")
        }
    };
    out.push_str("role assignments needed (requests not delegated):\n");
    for a in &learned.assignments {
        let project = a.project.as_deref().unwrap_or("(no project)");
        let _ = writeln!(
            out,
            "  {} on {project}: {} ({} requests)",
            a.subject,
            roles(&a.roles),
            a.requests
        );
    }
    out.push_str("delegations (the workplan):\n");
    for h in &learned.hops {
        let project = h.project.as_deref().unwrap_or("(no project)");
        let _ = writeln!(
            out,
            "  {} at {} on {project}: {} ({} requests)",
            h.trustee,
            h.audience,
            roles(&h.roles),
            h.requests
        );
    }
    if learned.hops.is_empty() {
        out.push_str("  none: no delegated request, so no workplan\n");
    }
    if !learned.unallowable.is_empty() {
        out.push_str("requests no role would allow (change the policy, not the roles):\n");
        for u in &learned.unallowable {
            let via = u.actor.as_deref().map(|a| format!(" via {a}")).unwrap_or_default();
            let _ = writeln!(
                out,
                "  {} {} by {}{via}: {} ({} requests)",
                u.audience,
                u.action,
                u.subject,
                u.reason.as_str(),
                u.requests
            );
        }
    }
    out
}

pub(crate) const WORKPLAN_ABOUT: &str = "Check or run a workplan file: the delegations a workflow needs";
pub(crate) const WORKPLAN_LONG: &str = "\
Work with workplans (spec/delegation.md §9): TOML files listing, for each hop of a workflow, the trustee, \
the audience and the roles to delegate, as written by `keybound policy learn` or by hand.

`check` validates one and lists every problem with its line and column (workplan.invalid, exit 1), or \
prints a summary (exit 0).

`run` (as the user who delegates; needs a login) checks the file, then asks the issuer to create every \
trust of the plan on the project at once (all or none; a role you do not hold is refused, naming it) and \
prints the routing slip that the workflow carries in the KB-Slip header (spec/delegation.md §10, §11).";
pub(crate) const WORKPLAN_EXAMPLES: &str = "\
Examples:
  keybound workplan check deploy.toml
  keybound workplan check --json deploy.toml
  keybound workplan run deploy.toml --project turing@stoughton";

/// `keybound workplan`.
#[derive(Debug, clap::Args)]
pub(crate) struct WorkplanArgs {
    #[command(subcommand)]
    action: WorkplanAction,
}

#[derive(Debug, clap::Subcommand)]
enum WorkplanAction {
    /// Validate a workplan: every problem with its line, or a summary
    #[command(
        after_help = "Examples:\n  keybound workplan check deploy.toml\n  keybound workplan check deploy.toml --json"
    )]
    Check {
        /// The workplan file
        file: PathBuf,
        /// Print the result as JSON
        #[arg(long)]
        json: bool,
    },
    /// Create every trust of a workplan at once and print its routing slip (needs a login)
    #[command(
        after_help = "Examples:\n  keybound workplan run deploy.toml --project turing@stoughton\n  keybound workplan run deploy.toml --project turing --json"
    )]
    Run {
        /// The workplan file
        file: PathBuf,
        /// The project the trusts are on, project@domain (or a project of your own domain)
        #[arg(long)]
        project: String,
        /// Print the issuer's JSON (the trusts, the slip, times in Unix seconds)
        #[arg(long)]
        json: bool,
        /// Config directory
        #[arg(long, env = "KEYBOUND_CONFIG_DIR")]
        config_dir: Option<PathBuf>,
    },
}

pub(crate) fn workplan(args: WorkplanArgs) -> Result<ExitCode, CliError> {
    match args.action {
        WorkplanAction::Check { file, json } => check(&file, json),
        WorkplanAction::Run {
            file,
            project,
            json,
            config_dir,
        } => run(&file, &project, json, config_dir.as_deref()),
    }
}

/// `keybound workplan run`: the plan, checked here, run by the issuer.
fn run(file: &Path, project: &str, as_json: bool, config_dir: Option<&Path>) -> Result<ExitCode, CliError> {
    let shown = file.display().to_string();
    let plan = match read_plan(file)?
        .map_err(|p| vec![p])
        .and_then(|text| Workplan::check(&text))
    {
        Ok(plan) => plan,
        Err(problems) => {
            for p in &problems {
                eprintln!("{shown}:{}:{}: {}", p.line, p.column, p.message);
            }
            return Err(CliError::new(
                Code::WorkplanInvalid.as_str(),
                format!("{shown} is not a valid workplan (see `keybound workplan check`)"),
                EXIT_FAILURE,
            ));
        }
    };
    let dir = super::session::config_dir(config_dir)?;
    let client = super::session::client(&dir)?;
    let rt = super::session::runtime()?;
    let project = match project.split_once('@') {
        Some(_) => crate::names::ProjectName::parse(project)?,
        None => {
            let session = client.session().ok_or_else(|| {
                crate::error::Error::new(Code::ClientNoSession, "not logged in: run keybound login first")
            })?;
            let me = crate::names::UserName::parse(&session.subject)?;
            crate::names::ProjectName::new(crate::names::Name::parse("project", project)?, me.domain)
        }
    };
    let now = crate::verify::Clock::now(&crate::verify::SystemClock);
    let answer = rt.block_on(client.run_workplan(&plan.run_request(&project, now)?))?;
    if as_json {
        print_stdout(&answer.to_string())?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = format!(
        "ran workplan {} on {project}: workflow id {}, slip expires {}",
        plan.name,
        answer["workflow_id"].as_str().unwrap_or("-"),
        answer["expires_at"]
            .as_i64()
            .map_or_else(|| "-".to_owned(), super::render::utc)
    );
    for t in answer["trusts"].as_array().into_iter().flatten() {
        let _ = write!(
            out,
            "\n  trust {} for {} at {}: {}",
            t["id"].as_str().unwrap_or("-"),
            t["trustee"].as_str().unwrap_or("-"),
            t["audiences"][0].as_str().unwrap_or("-"),
            t["roles"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| r.as_str())
                .collect::<Vec<_>>()
                .join(",")
        );
    }
    let _ = write!(out, "\nKB-Slip: {}", answer["slip"].as_str().unwrap_or("-"));
    print_stdout(&out)?;
    Ok(ExitCode::SUCCESS)
}

/// The file's text, at most one byte over the limit (so that the check can say it is too large).
fn read_plan(file: &Path) -> Result<Result<String, Problem>, CliError> {
    let shown = file.display();
    let opened = std::fs::File::open(file).map_err(|e| CliError::io(format!("cannot open {shown}: {e}")))?;
    let mut bytes = Vec::new();
    opened
        .take(workplan::MAX_TEXT as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| CliError::io(format!("cannot read {shown}: {e}")))?;
    let problem = |message: String| Problem {
        line: 1,
        column: 1,
        message,
    };
    if bytes.len() > workplan::MAX_TEXT {
        return Ok(Err(problem(format!(
            "the workplan is over {} bytes",
            workplan::MAX_TEXT
        ))));
    }
    Ok(String::from_utf8(bytes).map_err(|_| problem("the workplan is not UTF-8".to_owned())))
}

fn check(file: &Path, as_json: bool) -> Result<ExitCode, CliError> {
    let shown = file.display().to_string();
    let checked = read_plan(file)?
        .map_err(|p| vec![p])
        .and_then(|text| Workplan::check(&text));
    match checked {
        Ok(plan) => {
            if as_json {
                let delegations: Vec<_> = plan
                    .delegations
                    .iter()
                    .map(|d| {
                        json!({"trustee": d.trustee, "audience": d.audience,
                        "roles": d.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
                        "lifetime": d.lifetime, "uses": d.uses, "redelegation": d.redelegation})
                    })
                    .collect();
                let out = json!({"file": shown, "valid": true, "name": plan.name.as_str(),
                    "description": plan.description, "delegations": delegations});
                print_stdout(&out.to_string())?;
            } else {
                let mut out = format!(
                    "{shown}: valid workplan {} with {} delegations",
                    plan.name,
                    plan.delegations.len()
                );
                for d in &plan.delegations {
                    let roles: Vec<&str> = d.roles.iter().map(|r| r.as_str()).collect();
                    let _ = write!(out, "\n  {} at {}: {}", d.trustee, d.audience, roles.join(", "));
                    if let Some(lifetime) = d.lifetime {
                        let _ = write!(out, "; lifetime {lifetime} s");
                    }
                    if let Some(uses) = d.uses {
                        let _ = write!(out, "; {uses} uses");
                    }
                    if d.redelegation > 0 {
                        let _ = write!(out, "; redelegation {}", d.redelegation);
                    }
                }
                print_stdout(&out)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(problems) => {
            if as_json {
                let out = json!({"file": shown, "valid": false, "code": Code::WorkplanInvalid.as_str(), "problems": problems});
                print_stdout(&out.to_string())?;
                return Ok(ExitCode::from(EXIT_FAILURE));
            }
            for p in &problems {
                eprintln!("{shown}:{}:{}: {}", p.line, p.column, p.message);
            }
            Err(CliError::new(
                Code::WorkplanInvalid.as_str(),
                match problems.len() {
                    1 => format!("{shown} has 1 problem"),
                    n => format!("{shown} has {n} problems"),
                },
                EXIT_FAILURE,
            ))
        }
    }
}
