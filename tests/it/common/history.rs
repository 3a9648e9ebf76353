//! Recorded histories of the fault suite and their offline checker
//! (security-catalog.md §4: generate traffic, record every operation and
//! its result, inject one fault, check the history against I1–I6).
//!
//! A history is a list of JSON objects, one a line in a file. Each is one
//! operation a client made, or one observation the test made afterwards:
//!
//! | member | meaning |
//! |---|---|
//! | `kind` | `login`, `mint`, `admin_write`, `trust_write`, `proof` (a first use), `replay` (a proof sent again, on purpose), `readback` (what the store holds, read after the faults), `audit` (the audit log, read after the faults), `fault` (what the test did, for the reader) |
//! | `client` | who made it (`admin`, `minter-1`, `prober-0`, …) |
//! | `replica` | where it was sent: `lb` (a balancer) or a replica's name |
//! | `proof` | the proof's id: key thumbprint and jti, hex |
//! | `token` | `{cti, iat, exp, nbf, aud: [..]}` of the token minted or used |
//! | `name`, `action` | an admin or trust write: the object's name and the audit action it must leave |
//! | `start_ms`, `end_ms` | Unix milliseconds around the operation |
//! | `status`, `code` | the HTTP status (0: no answer) and the keybound code |
//! | `valid` | a proof request the client expects to be accepted (a valid token, a fresh proof) |
//! | `names` (readback) | the objects present; `source`: `admin_api` or `db` |
//! | `entries` (audit) | `[{id, time, actor, action, target, outcome}]` |
//!
//! Shared by the integration tests (`crate::common::history`) and by
//! `examples/check_history.rs`, which checks a kept history file offline;
//! only `serde_json` and the standard library, so that both can use it.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A history being recorded by several clients at once.
#[derive(Clone, Default)]
pub struct Recorder {
    ops: Arc<Mutex<Vec<Value>>>,
}

impl Recorder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends one operation or observation (a JSON object).
    pub fn record(&self, op: Value) {
        self.ops.lock().unwrap().push(op);
    }

    /// A fault the test injected, for whoever reads the history.
    pub fn fault(&self, what: &str) {
        let now = now_ms();
        self.record(json!({"kind": "fault", "client": "test", "name": what, "start_ms": now, "end_ms": now}));
    }

    pub fn ops(&self) -> Vec<Value> {
        self.ops.lock().unwrap().clone()
    }

    /// The history as JSON lines.
    pub fn to_json_lines(&self) -> String {
        self.ops().iter().map(|op| format!("{op}\n")).collect()
    }

    /// Writes the history where `KEYBOUND_FAULTS_KEEP` (a directory) says,
    /// as `NAME.jsonl`, so that a run can be checked again offline with
    /// `cargo run --example check_history -- FILE`.
    pub fn keep(&self, name: &str) {
        if let Some(dir) = std::env::var_os("KEYBOUND_FAULTS_KEEP") {
            let path = std::path::Path::new(&dir).join(format!("{name}.jsonl"));
            let _ = std::fs::create_dir_all(&dir);
            std::fs::write(&path, self.to_json_lines()).unwrap();
            eprintln!("history kept in {}", path.display());
        }
    }
}

/// Parses a JSON-lines history.
pub fn parse_json_lines(text: &str) -> Result<Vec<Value>, String> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| serde_json::from_str(l).map_err(|e| format!("line {}: {e}", i + 1)))
        .collect()
}

/// What the checker is told about the deployment the history came from.
#[derive(Clone, Debug)]
pub struct Model {
    /// Verifier leeway in seconds (I2).
    pub leeway: u64,
    /// Longest lifetime of a service token in seconds (I5).
    pub max_lifetime: u64,
    /// Codes a `valid` request may be refused with in this scenario (a
    /// documented fail-closed answer such as `replay.store_unavailable`);
    /// any other refusal of a valid request is a violation (I6, and FL-04's
    /// "0 failed requests for valid tokens").
    pub allowed_refusals: Vec<String>,
    /// Whether acknowledged writes must be found in a readback (I3).
    pub check_writes: bool,
}

impl Default for Model {
    fn default() -> Self {
        Model {
            leeway: 30,
            max_lifetime: 300,
            allowed_refusals: Vec::new(),
            check_writes: true,
        }
    }
}

/// The checker's verdict: each violation as a sentence naming its
/// invariant, and the figures of the run.
#[derive(Debug, Default)]
pub struct Report {
    pub violations: Vec<String>,
    pub figures: BTreeMap<String, u64>,
}

impl Report {
    pub fn figure(&self, name: &str) -> u64 {
        self.figures.get(name).copied().unwrap_or(0)
    }

    fn add(&mut self, name: &str, n: u64) {
        *self.figures.entry(name.to_owned()).or_default() += n;
    }

    /// One line per figure, then one per violation.
    pub fn summary(&self) -> String {
        let mut out: String = self.figures.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
        for v in &self.violations {
            out.push_str(&format!("VIOLATION {v}\n"));
        }
        out
    }
}

fn s<'a>(op: &'a Value, key: &str) -> Option<&'a str> {
    op.get(key).and_then(Value::as_str)
}

fn n(op: &Value, key: &str) -> u64 {
    op.get(key).and_then(Value::as_u64).unwrap_or(0)
}

fn accepted(op: &Value) -> bool {
    (200..300).contains(&n(op, "status"))
}

/// Checks `history` against I1, I2, I3, I5 and I6 (security-catalog.md §4).
pub fn check(history: &[Value], model: &Model) -> Report {
    let mut report = Report::default();
    let kind = |op: &Value| s(op, "kind").unwrap_or("").to_owned();

    // I1: no proof accepted twice, whichever replicas answered.
    let mut uses: HashMap<&str, Vec<&Value>> = HashMap::new();
    for op in history {
        let k = kind(op);
        if k == "proof" || k == "replay" {
            report.add(&format!("{k}s_sent"), 1);
            if accepted(op) {
                report.add(&format!("{k}s_accepted"), 1);
                if let Some(id) = s(op, "proof") {
                    uses.entry(id).or_default().push(op);
                }
            } else {
                let code = s(op, "code").unwrap_or("none");
                report.add(&format!("{k}s_refused.{}.{code}", n(op, "status")), 1);
            }
        }
    }
    let mut twice = 0;
    for (id, ops) in &uses {
        if ops.len() > 1 {
            twice += 1;
            let replicas: Vec<&str> = ops.iter().map(|op| s(op, "replica").unwrap_or("?")).collect();
            report.violations.push(format!(
                "I1: proof {id} accepted {} times (at {})",
                ops.len(),
                replicas.join(", ")
            ));
        }
    }
    report.add("proofs_accepted_twice", twice);

    // I2: no token accepted after exp + leeway or before nbf - leeway. The
    // answer came between start and end: accepted after exp + leeway if it
    // started after it, before nbf - leeway if it ended before it.
    for op in history {
        let k = kind(op);
        if (k == "proof" || k == "replay") && accepted(op) {
            let Some(token) = op.get("token") else { continue };
            let (start, end) = (n(op, "start_ms") / 1000, n(op, "end_ms").div_ceil(1000));
            let exp = n(token, "exp");
            if start > exp + model.leeway {
                report.violations.push(format!(
                    "I2: token {} (exp {exp}) accepted at {start}, {} s after exp + leeway",
                    s(token, "cti").unwrap_or("?"),
                    start - exp - model.leeway
                ));
            }
            if let Some(nbf) = token.get("nbf").and_then(Value::as_u64)
                && end + model.leeway < nbf
            {
                report.violations.push(format!(
                    "I2: token {} (nbf {nbf}) accepted at {end}, before nbf - leeway",
                    s(token, "cti").unwrap_or("?")
                ));
            }
        }
    }

    // I5: every issued token lives at most max_lifetime, for one audience.
    for op in history.iter().filter(|op| kind(op) == "mint") {
        report.add("mints_sent", 1);
        if !accepted(op) {
            report.add(
                &format!("mints_refused.{}.{}", n(op, "status"), s(op, "code").unwrap_or("none")),
                1,
            );
            continue;
        }
        report.add("mints_acknowledged", 1);
        let Some(token) = op.get("token") else {
            report.violations.push(format!(
                "I5: an acknowledged mint at {} recorded no token",
                n(op, "start_ms")
            ));
            continue;
        };
        let (iat, exp) = (n(token, "iat"), n(token, "exp"));
        let cti = s(token, "cti").unwrap_or("?");
        if exp.saturating_sub(iat) > model.max_lifetime || exp < iat {
            report.violations.push(format!(
                "I5: token {cti} lives {} s (exp {exp} - iat {iat}), over {}",
                exp as i128 - iat as i128,
                model.max_lifetime
            ));
        }
        let auds = token.get("aud").and_then(Value::as_array).map_or(0, Vec::len);
        if auds != 1 {
            report
                .violations
                .push(format!("I5: token {cti} has {auds} audiences, not one"));
        }
    }

    // I6 (and FL-04): a valid request is accepted, or refused only with a
    // code the scenario allows (a fail-closed answer).
    for op in history.iter().filter(|op| kind(op) == "proof") {
        if op.get("valid").and_then(Value::as_bool) == Some(true) && !accepted(op) {
            let code = s(op, "code").unwrap_or("none");
            if model.allowed_refusals.iter().any(|c| c == code) {
                report.add("valid_refused_allowed", 1);
            } else {
                report.add("valid_refused_unexpected", 1);
                report.violations.push(format!(
                    "I6: valid request {} at {} ({}) refused with {} {code}",
                    s(op, "proof").unwrap_or("?"),
                    s(op, "replica").unwrap_or("?"),
                    n(op, "start_ms"),
                    n(op, "status")
                ));
            }
        }
    }

    // I3: every acknowledged write is present after the faults, with its
    // audit entry; every acknowledged mint's minute entry exists.
    let writes: Vec<&Value> = history
        .iter()
        .filter(|op| matches!(kind(op).as_str(), "admin_write" | "trust_write"))
        .collect();
    for op in &writes {
        report.add(&format!("{}s_sent", kind(op)), 1);
    }
    let acked: Vec<&Value> = writes.iter().copied().filter(|op| accepted(op)).collect();
    report.add("writes_acknowledged", acked.len() as u64);
    if model.check_writes && !acked.is_empty() {
        let last_write = acked.iter().map(|op| n(op, "end_ms")).max().unwrap_or(0);
        let readback = history
            .iter()
            .filter(|op| kind(op) == "readback" && n(op, "start_ms") >= last_write)
            .max_by_key(|op| n(op, "start_ms"));
        match readback {
            None => report
                .violations
                .push("I3: acknowledged writes but no readback after them".to_owned()),
            Some(readback) => {
                let present: BTreeSet<&str> = readback
                    .get("names")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                let mut lost = 0;
                for op in &acked {
                    let name = s(op, "name").unwrap_or("");
                    if !present.contains(name) {
                        lost += 1;
                        report.violations.push(format!(
                            "I3: acknowledged {} {name} (answered at {}) is not in the readback ({})",
                            s(op, "action").unwrap_or("write"),
                            n(op, "end_ms"),
                            s(readback, "source").unwrap_or("?")
                        ));
                    }
                }
                report.add("writes_lost", lost);
            }
        }
    }
    if let Some(audit) = history
        .iter()
        .filter(|op| kind(op) == "audit")
        .max_by_key(|op| n(op, "start_ms"))
    {
        let entries: Vec<&Value> = audit
            .get("entries")
            .and_then(Value::as_array)
            .map(|a| a.iter().collect())
            .unwrap_or_default();
        report.add("audit_entries", entries.len() as u64);
        let mut ids: Vec<u64> = entries.iter().map(|e| n(e, "id")).collect();
        ids.sort_unstable();
        let distinct: BTreeSet<u64> = ids.iter().copied().collect();
        if distinct.len() != ids.len() {
            report.violations.push(format!(
                "I3: audit ids repeat ({} entries, {} ids)",
                ids.len(),
                distinct.len()
            ));
        }
        // Gaps are reported, not refused: PostgreSQL's BIGSERIAL spends an
        // id on every rolled-back insert and on every upsert of a mint
        // minute, so ids are increasing but not dense there.
        if let (Some(first), Some(last)) = (ids.first(), ids.last()) {
            report.add("audit_id_gaps", (last - first + 1) - distinct.len() as u64);
        }
        let mut ok_by_target: HashMap<(&str, &str), u64> = HashMap::new();
        for e in &entries {
            if s(e, "outcome") == Some("ok") {
                ok_by_target.insert((s(e, "action").unwrap_or(""), s(e, "target").unwrap_or("")), n(e, "id"));
            }
        }
        let mut missing = 0;
        let mut order: Vec<(u64, u64, u64, &str)> = Vec::new();
        for op in &acked {
            let (action, name) = (s(op, "action").unwrap_or(""), s(op, "name").unwrap_or(""));
            match ok_by_target.get(&(action, name)) {
                None => {
                    missing += 1;
                    report
                        .violations
                        .push(format!("I3: acknowledged {action} {name} has no audit entry"));
                }
                Some(id) => order.push((n(op, "start_ms"), n(op, "end_ms"), *id, name)),
            }
        }
        report.add("audit_missing", missing);
        // The log's order agrees with real time: a write answered before
        // another began has the smaller id.
        let mut disordered = 0;
        for (_, a_end, a_id, a_name) in &order {
            for (b_start, _, b_id, b_name) in &order {
                if a_end < b_start && a_id > b_id {
                    disordered += 1;
                    if disordered <= 10 {
                        report.violations.push(format!(
                            "I3: audit entry {b_id} of {b_name} is older than entry {a_id} of {a_name}, answered before {b_name} was asked"
                        ));
                    }
                }
            }
        }
        report.add("audit_out_of_order", disordered);
        // Mints: the minute entry of every acknowledged mint exists (its
        // count may lag by the coalescing interval, never the entry).
        let minutes: BTreeSet<(&str, u64)> = entries
            .iter()
            .filter(|e| s(e, "action") == Some("token.mint"))
            .map(|e| (s(e, "target").unwrap_or(""), n(e, "time")))
            .collect();
        let mut mints_unaudited = 0;
        for op in history.iter().filter(|op| kind(op) == "mint" && accepted(op)) {
            let Some(token) = op.get("token") else { continue };
            let aud = token
                .get("aud")
                .and_then(Value::as_array)
                .and_then(|a| a.first())
                .and_then(Value::as_str)
                .unwrap_or("");
            let minute = n(token, "iat") / 60 * 60;
            // The issuer stamps the entry with its own minute: the token's
            // iat, or the minute before when the mint straddled it.
            if !minutes.contains(&(aud, minute)) && !minutes.contains(&(aud, minute.saturating_sub(60))) {
                mints_unaudited += 1;
                report.violations.push(format!(
                    "I3: acknowledged mint {} for {aud} (minute {minute}) has no token.mint entry",
                    s(token, "cti").unwrap_or("?")
                ));
            }
        }
        report.add("mints_unaudited", mints_unaudited);
    } else if model.check_writes && !acked.is_empty() {
        report
            .violations
            .push("I3: acknowledged writes but the audit log was not read".to_owned());
    }
    report
}
