//! Workplans (spec/delegation.md §9): the vectors of test-vectors/workplans/
//! through the library, and `keybound workplan check` as the built binary.
#![cfg(feature = "policy")]

use keybound::Code;
use keybound::delegation::workplan::Workplan;
use keybound::names::ProjectName;
use serde_json::{Value, json};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/test-vectors/workplans");

fn index() -> Vec<Value> {
    let text = std::fs::read_to_string(format!("{DIR}/index.json")).unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(doc["version"], 1);
    doc["workplans"].as_array().unwrap().clone()
}

/// Every vector gives its outcome: valid plans the trust requests listed,
/// invalid ones `workplan.invalid` at the line listed; every file of the
/// directory is in the index.
#[test]
fn workplan_vectors_give_their_expected_outcome() {
    let vectors = index();
    let mut failures = Vec::new();
    for v in &vectors {
        let file = v["file"].as_str().unwrap();
        let text = std::fs::read_to_string(format!("{DIR}/{file}")).unwrap();
        match (v["expected"].as_str().unwrap(), Workplan::check(&text)) {
            ("valid", Ok(plan)) => {
                let project = ProjectName::parse(v["project"].as_str().unwrap()).unwrap();
                let trusts = plan.trust_requests(&project, v["now"].as_u64().unwrap()).unwrap();
                let got: Vec<Value> = trusts
                    .iter()
                    .map(|t| {
                        json!({"trustee": t.trustee, "audience": t.audience, "project": t.project,
                        "roles": t.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
                        "expires_at": t.expires_at, "uses": t.uses, "redelegation": t.redelegation})
                    })
                    .collect();
                if got != *v["trust_requests"].as_array().unwrap() {
                    failures.push(format!("{file}: trust requests {got:?}"));
                }
                // The one encoder gives back the same plan.
                assert_eq!(Workplan::parse(&plan.to_toml()).unwrap(), plan, "{file}");
            }
            ("workplan.invalid", Err(problems)) => {
                let line = v["line"].as_u64().unwrap() as usize;
                if problems[0].line != line {
                    failures.push(format!(
                        "{file}: first problem at line {}, not {line}: {problems:?}",
                        problems[0].line
                    ));
                }
                let e = Workplan::parse(&text).unwrap_err();
                assert_eq!(e.code(), Code::WorkplanInvalid);
                assert!(
                    e.message().starts_with(&format!("line {line}, column ")),
                    "{file}: {}",
                    e.message()
                );
            }
            (expected, got) => failures.push(format!("{file}: expected {expected}, got {got:?}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let mut listed: Vec<&str> = vectors.iter().map(|v| v["file"].as_str().unwrap()).collect();
    listed.sort_unstable();
    let mut files = Vec::new();
    for sub in ["valid", "invalid"] {
        for entry in std::fs::read_dir(format!("{DIR}/{sub}")).unwrap() {
            files.push(format!("{sub}/{}", entry.unwrap().file_name().to_string_lossy()));
        }
    }
    files.sort_unstable();
    assert_eq!(files, listed, "files and index.json disagree");
}

/// The check names each problem, not just the first, with what is wrong.
#[test]
fn a_workplan_with_several_problems_lists_them_all() {
    let text = "version = 1\nname = \"p\"\ndescription = \"d\"\n[[delegation]]\ntrustee = \"heat\"\n\
                audience = \"https://nova.example\"\nroles = [\"member\", \"member\"]\nuses = 0\n";
    let problems = Workplan::check(text).unwrap_err();
    let got: Vec<(usize, &str)> = problems.iter().map(|p| (p.line, p.message.as_str())).collect();
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(got[0].0, 5);
    assert!(got[0].1.contains("must be name@domain"), "{got:?}");
    assert_eq!(got[1], (7, "role member is listed twice"));
    assert_eq!(got[2], (8, "`uses` is 0; it must be 1 to 1000000000"));
    // Text over 64 KiB is refused before it is parsed.
    let big = format!("{text}# {}\n", "x".repeat(64 * 1024));
    assert!(
        Workplan::check(&big).unwrap_err()[0]
            .message
            .contains("the limit is 65536")
    );
}

#[cfg(feature = "cli")]
mod cli {
    use super::*;

    fn check(args: &[&str]) -> std::process::Output {
        std::process::Command::new(assert_cmd::cargo::cargo_bin!("keybound"))
            .args(["workplan", "check"])
            .args(args)
            .output()
            .unwrap()
    }

    #[test]
    fn workplan_check_summarises_a_valid_plan() {
        let file = format!("{DIR}/valid/deploy-instance.toml");
        let out = check(&[&file]);
        assert_eq!(out.status.code(), Some(0));
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(
            text.contains("valid workplan deploy-instance with 3 delegations"),
            "{text}"
        );
        assert!(
            text.contains("nova-compute@service at https://glance.example: reader; lifetime 3600 s"),
            "{text}"
        );
        let out = check(&["--json", &file]);
        assert_eq!(out.status.code(), Some(0));
        let json: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(json["valid"], true);
        assert_eq!(json["delegations"][2]["roles"], json!(["member", "advsvc"]));
        assert_eq!(json["delegations"][2]["redelegation"], 1);
    }

    #[test]
    fn workplan_check_names_the_line_of_each_problem_and_exits_1() {
        let file = format!("{DIR}/invalid/roles-empty.toml");
        let out = check(&[&file]);
        assert_eq!(out.status.code(), Some(1));
        let stderr = String::from_utf8(out.stderr).unwrap();
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 2, "{stderr}");
        assert!(lines[0].starts_with(&format!("{file}:7:")), "{stderr}");
        assert!(lines[0].contains("`roles` must list 1 to 16 roles"), "{stderr}");
        assert!(lines[1].starts_with("error: workplan.invalid: "), "{stderr}");
        let out = check(&["--json", &format!("{DIR}/invalid/unknown-delegation-key.toml")]);
        assert_eq!(out.status.code(), Some(1));
        let json: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(json["valid"], false);
        assert_eq!(json["code"], "workplan.invalid");
        assert_eq!(json["problems"][0]["line"], 8);
        assert!(json["problems"][0]["message"].as_str().unwrap().contains("expires_at"));
        // A file that is not there is an I/O error, not an invalid plan.
        let out = check(&["/nonexistent/plan.toml"]);
        assert_eq!(out.status.code(), Some(1));
        assert!(String::from_utf8(out.stderr).unwrap().starts_with("error: cli.io: "));
    }
}
