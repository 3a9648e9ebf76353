//! Decision records: one JSON object per line (spec/delegation.md §8.3).

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use serde::{Deserialize, Serialize};

use super::{Denial, Mode};
use crate::error::{Code, Error, Result, err};

/// What became of the request a [`DecisionRecord`] is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The rules allow it.
    Allow,
    /// The rules deny it; permissive mode admitted it.
    WouldDeny,
    /// The rules deny it; enforce mode refused it (`policy.denied`).
    Deny,
}

/// The action of a [`DecisionRecord`]: `{"method", "path"}` or `{"operation"}`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RecordedAction {
    /// A request's method and path (no query).
    Http {
        /// Method.
        method: String,
        /// Path.
        path: String,
    },
    /// A named operation a handler checked.
    Operation {
        /// The operation's name.
        operation: String,
    },
}

impl std::fmt::Display for RecordedAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecordedAction::Http { method, path } => write!(f, "{method} {path}"),
            RecordedAction::Operation { operation } => write!(f, "operation {operation}"),
        }
    }
}

/// One policy decision (`"event": "policy_decision"`), as the policy writes
/// it and as `keybound policy report` and `learn` read it: the one encoder
/// and decoder of the record. Members unknown to this version are ignored
/// when reading.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename = "policy_decision")]
pub struct DecisionRecord {
    /// When, Unix seconds (the verifier's clock).
    pub time: u64,
    /// `enforce` or `permissive`.
    pub mode: Mode,
    /// What became of the request.
    pub outcome: Outcome,
    /// The token's issuer.
    pub issuer: String,
    /// The token's audience: the service that decided.
    pub audience: String,
    /// The token's subject (for a delegated request, the trustor).
    pub subject: String,
    /// The scope's domain.
    #[serde(default)]
    pub domain: Option<String>,
    /// The scope's project.
    #[serde(default)]
    pub project: Option<String>,
    /// The token's roles.
    pub roles_held: Vec<String>,
    /// The trust the token was minted from; null when not delegated.
    #[serde(default)]
    pub trust_id: Option<String>,
    /// The actor chain, current actor first; empty when not delegated.
    pub actors: Vec<String>,
    /// The workflow id of the request's verified routing slip, base64url.
    #[serde(default)]
    pub workflow_id: Option<String>,
    /// The request's `KB-Workflow` header, for learning and reports only
    /// (unsigned: never for a decision).
    #[serde(default)]
    pub workflow: Option<String>,
    /// What was decided on.
    pub action: RecordedAction,
    /// The rule that decided; null when none matched.
    #[serde(default)]
    pub rule: Option<String>,
    /// Why the rules deny it; null when they allow it.
    #[serde(default)]
    pub reason: Option<Denial>,
    /// The deciding rule's roles (any one allows it); empty when no rule
    /// matched or the rule allows any caller.
    pub roles_allowing: Vec<String>,
}

impl DecisionRecord {
    /// The record as the JSON object a [`RecordSink`] receives.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("a decision record is plain JSON")
    }

    /// `project@domain`, when the token was scoped to a project.
    pub fn qualified_project(&self) -> Option<String> {
        match (&self.project, &self.domain) {
            (Some(project), Some(domain)) => Some(format!("{project}@{domain}")),
            (Some(project), None) => Some(project.clone()),
            _ => None,
        }
    }

    /// Whether the record belongs to `workflow`. Ids match only the verified
    /// slip's workflow id and labels only the unsigned `KB-Workflow` label,
    /// so a label chosen to equal some run's id never joins that run.
    pub fn in_workflow(&self, workflow: WorkflowSelector<'_>) -> bool {
        match workflow {
            WorkflowSelector::Label(label) => self.workflow.as_deref() == Some(label),
            WorkflowSelector::Id(id) => self.workflow_id.as_deref() == Some(id),
        }
    }

    /// The current actor of a delegated request.
    pub fn current_actor(&self) -> Option<&str> {
        self.actors.first().map(String::as_str)
    }
}

/// Which records make up one workflow run: those carrying its `KB-Workflow`
/// label (runs before slips exist), or those whose verified routing slip has
/// its workflow id (base64url).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkflowSelector<'a> {
    /// The unsigned `KB-Workflow` label.
    Label(&'a str),
    /// The workflow id of a verified routing slip.
    Id(&'a str),
}

impl std::fmt::Display for WorkflowSelector<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WorkflowSelector::Label(label) => write!(f, "{label}"),
            WorkflowSelector::Id(id) => write!(f, "id {id}"),
        }
    }
}

/// The longest record line [`read_decision_records`] accepts: 64 KiB.
pub const MAX_RECORD_LINE: usize = 64 * 1024;
/// The most decision records one report or learning run reads: 1,000,000.
pub const MAX_RECORDS: usize = 1_000_000;
/// The most bytes of decision records one report or learning run keeps:
/// 256 MiB (a million records of 64 KiB each would not fit in memory).
pub const MAX_RECORD_BYTES: u64 = 256 * 1024 * 1024;

/// What [`read_decision_records`] found.
#[derive(Clone, Debug, Default)]
pub struct RecordsRead {
    /// The decision records, in file order.
    pub decisions: Vec<DecisionRecord>,
    /// Lines holding other events (`bearer_use`, …), which are not decisions.
    pub other_events: u64,
    /// Malformed lines skipped (only with `skip_bad`).
    pub skipped: u64,
    /// Bytes of the decision records kept, against [`MAX_RECORD_BYTES`].
    pub decision_bytes: u64,
}

/// Reads JSON-lines decision records from `input` (named `source` in
/// errors) into `into`. Blank lines are ignored; an object whose `event`
/// is not `policy_decision` is counted in `other_events`. A line that is
/// not a JSON object, a decision record with a member missing or of the
/// wrong type, or a line over [`MAX_RECORD_LINE`] bytes is
/// `policy.record_invalid` naming the source and line, or, with
/// `skip_bad`, counted in `skipped`. More than [`MAX_RECORDS`] decisions, or
/// more than [`MAX_RECORD_BYTES`] of them, in all is `policy.limit`.
pub fn read_decision_records(
    input: &mut dyn BufRead,
    source: &str,
    skip_bad: bool,
    into: &mut RecordsRead,
) -> Result<()> {
    read_records_within(input, source, skip_bad, into, MAX_RECORD_BYTES)
}

/// [`read_decision_records`] with a ceiling of `max_bytes` (tests use a small one).
fn read_records_within(
    input: &mut dyn BufRead,
    source: &str,
    skip_bad: bool,
    into: &mut RecordsRead,
    max_bytes: u64,
) -> Result<()> {
    let mut line = Vec::new();
    for number in 1u64.. {
        line.clear();
        let read = std::io::Read::take(&mut *input, MAX_RECORD_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
            .map_err(|e| {
                Error::new(
                    Code::PolicyRecordInvalid,
                    format!("{source}: cannot read line {number}: {e}"),
                )
            })?;
        if read == 0 {
            return Ok(());
        }
        let problem = if line.len() > MAX_RECORD_LINE && line.last() != Some(&b'\n') {
            // Skip the rest of the overlong line.
            loop {
                let (done, used) = {
                    let buf = input
                        .fill_buf()
                        .map_err(|e| Error::new(Code::PolicyRecordInvalid, format!("{source}: line {number}: {e}")))?;
                    match buf.iter().position(|&b| b == b'\n') {
                        Some(at) => (true, at + 1),
                        None => (buf.is_empty(), buf.len()),
                    }
                };
                input.consume(used);
                if done {
                    break;
                }
            }
            Some(format!("longer than {MAX_RECORD_LINE} bytes"))
        } else {
            match parse_line(&line) {
                Ok(Line::Blank) => None,
                Ok(Line::Other) => {
                    into.other_events += 1;
                    None
                }
                Ok(Line::Decision(record)) => {
                    if into.decisions.len() >= MAX_RECORDS {
                        return err(
                            Code::PolicyLimit,
                            format!("{source} line {number}: more than {MAX_RECORDS} decision records"),
                        );
                    }
                    into.decision_bytes += line.len() as u64;
                    if into.decision_bytes > max_bytes {
                        return err(
                            Code::PolicyLimit,
                            format!(
                                "{source} line {number}: more than {max_bytes} bytes of decision records; select fewer files"
                            ),
                        );
                    }
                    into.decisions.push(*record);
                    None
                }
                Err(why) => Some(why),
            }
        };
        if let Some(why) = problem {
            if !skip_bad {
                return err(
                    Code::PolicyRecordInvalid,
                    format!("{source} line {number}: {why} (--skip-bad skips such lines)"),
                );
            }
            into.skipped += 1;
        }
    }
    Ok(())
}

enum Line {
    Blank,
    Other,
    Decision(Box<DecisionRecord>),
}

fn parse_line(line: &[u8]) -> std::result::Result<Line, String> {
    let text = std::str::from_utf8(line).map_err(|_| "not UTF-8".to_owned())?.trim();
    if text.is_empty() {
        return Ok(Line::Blank);
    }
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let Some(object) = value.as_object() else {
        return Err("not a JSON object".to_owned());
    };
    match object.get("event").and_then(serde_json::Value::as_str) {
        Some("policy_decision") => {}
        // Denials recorded before decision records existed: not silently
        // counted as other events, which would make a report look empty.
        Some("policy_denial") => {
            return Err(
                "a denial record of the older format (`policy_denial`), without the roles that would allow it \
                 or a workflow: record the workflow again with this version"
                    .to_owned(),
            );
        }
        _ => return Ok(Line::Other),
    }
    serde_json::from_value(value)
        .map(|r| Line::Decision(Box::new(r)))
        .map_err(|e| format!("not a decision record: {e}"))
}

/// Where decision records go.
pub trait RecordSink: Send + Sync {
    /// Writes one record. Must not fail the request: sinks report their own
    /// I/O errors (through tracing) and carry on.
    fn record(&self, record: &serde_json::Value);
}

/// Appends records to a file as JSON lines, written by a thread of its own
/// so that no request waits for the disk. Records queue (bounded, see
/// [`JsonLinesFile::DEFAULT_QUEUE`]); when the queue is full a record is
/// dropped and counted ([`JsonLinesFile::dropped_counter`]), never waited
/// for. The writer flushes whenever the queue is empty. Dropping the sink
/// writes everything queued and waits for the writer, so a clean shutdown
/// loses no record.
pub struct JsonLinesFile {
    queue: Option<SyncSender<String>>,
    writer: Option<JoinHandle<()>>,
    dropped: Arc<AtomicU64>,
    path: PathBuf,
}

impl std::fmt::Debug for JsonLinesFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JsonLinesFile({})", self.path.display())
    }
}

impl JsonLinesFile {
    /// Records queued for the writer by [`JsonLinesFile::open`].
    pub const DEFAULT_QUEUE: usize = 10_000;

    /// Opens (creating if needed) `path` for appending, with a queue of
    /// [`Self::DEFAULT_QUEUE`] records.
    pub fn open(path: &Path) -> Result<Self> {
        Self::with_queue(path, Self::DEFAULT_QUEUE)
    }

    /// Opens `path` for appending, queueing at most `records` (at least one)
    /// for the writer.
    pub fn with_queue(path: &Path, records: usize) -> Result<Self> {
        let cannot = |e: std::io::Error| {
            Error::new(
                Code::PolicyInvalid,
                format!("cannot open the record file {}: {e}", path.display()),
            )
        };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(cannot)?;
        let (queue, lines) = std::sync::mpsc::sync_channel(records.max(1));
        let shown = path.to_owned();
        let writer = std::thread::Builder::new()
            .name("keybound-records".into())
            .spawn(move || write_lines(&lines, file, &shown))
            .map_err(cannot)?;
        Ok(JsonLinesFile {
            queue: Some(queue),
            writer: Some(writer),
            dropped: Arc::new(AtomicU64::new(0)),
            path: path.to_owned(),
        })
    }

    /// The number of records dropped because the queue was full, as a
    /// counter that can back a metric (it outlives the sink).
    pub fn dropped_counter(&self) -> Arc<AtomicU64> {
        self.dropped.clone()
    }
}

/// The writer thread: one line per record, flushed when nothing more is
/// queued; ends when the sink is dropped and the queue is empty.
fn write_lines(lines: &Receiver<String>, file: std::fs::File, path: &Path) {
    // Each write call holds whole lines, so other processes appending to the
    // same file never split one.
    let mut out = std::io::BufWriter::new(file);
    let report = |result: std::io::Result<()>| {
        if let Err(e) = result {
            #[cfg(feature = "http")]
            tracing::error!(path = %path.display(), error = %e, "cannot write a decision record");
            #[cfg(not(feature = "http"))]
            let _ = (e, path);
        }
    };
    while let Ok(line) = lines.recv() {
        report(out.write_all(line.as_bytes()));
        while let Ok(line) = lines.try_recv() {
            report(out.write_all(line.as_bytes()));
        }
        report(out.flush());
    }
}

impl RecordSink for JsonLinesFile {
    fn record(&self, record: &serde_json::Value) {
        let mut line = record.to_string();
        line.push('\n');
        let sent = self.queue.as_ref().is_some_and(|queue| queue.try_send(line).is_ok());
        if !sent {
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            #[cfg(feature = "http")]
            if dropped.is_power_of_two() {
                tracing::warn!(path = %self.path.display(), dropped, "decision records dropped: the writer cannot keep up with them");
            }
            #[cfg(not(feature = "http"))]
            let _ = dropped;
        }
    }
}

impl Drop for JsonLinesFile {
    fn drop(&mut self) {
        // Closing the queue lets the writer finish what is queued and stop.
        drop(self.queue.take());
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// Keeps the most recent records in memory (tests, the demo). Bounded: when
/// full, the oldest record is dropped and counted, so a flood of denials can
/// never exhaust memory.
#[derive(Debug)]
pub struct MemoryRecords {
    inner: Mutex<MemoryInner>,
    capacity: usize,
}

#[derive(Debug, Default)]
struct MemoryInner {
    records: std::collections::VecDeque<serde_json::Value>,
    dropped: u64,
}

impl Default for MemoryRecords {
    fn default() -> Self {
        Self::with_capacity(Self::DEFAULT_CAPACITY)
    }
}

impl MemoryRecords {
    /// Records kept by [`MemoryRecords::new`].
    pub const DEFAULT_CAPACITY: usize = 10_000;

    /// An empty sink keeping the last [`Self::DEFAULT_CAPACITY`] records.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty sink keeping the last `capacity` records (at least one).
    pub fn with_capacity(capacity: usize) -> Self {
        MemoryRecords {
            inner: Mutex::new(MemoryInner::default()),
            capacity: capacity.max(1),
        }
    }

    /// The records kept, oldest first.
    pub fn records(&self) -> Vec<serde_json::Value> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.records.iter().cloned().collect()
    }

    /// How many records were dropped because the sink was full.
    pub fn dropped(&self) -> u64 {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).dropped
    }
}

impl RecordSink for MemoryRecords {
    fn record(&self, record: &serde_json::Value) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if inner.records.len() >= self.capacity {
            inner.records.pop_front();
            inner.dropped += 1;
        }
        inner.records.push_back(record.clone());
    }
}

/// Writes each record as one `tracing` event (target `keybound::records`,
/// level WARN, field `record` holding the JSON line): the default of the HTTP
/// layer and the issuer, so records reach the service's log without holding
/// memory. Use [`JsonLinesFile`] for a file of its own.
#[cfg(feature = "http")]
#[derive(Debug, Default, Clone, Copy)]
pub struct TracingRecords;

#[cfg(feature = "http")]
impl RecordSink for TracingRecords {
    fn record(&self, record: &serde_json::Value) {
        tracing::warn!(target: "keybound::records", record = %record, "decision record");
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn record(i: usize) -> serde_json::Value {
        serde_json::json!({"decision": "deny", "n": i})
    }

    fn decision() -> DecisionRecord {
        DecisionRecord {
            time: 1,
            mode: Mode::Permissive,
            outcome: Outcome::WouldDeny,
            issuer: "https://issuer.example".into(),
            audience: "https://glance.example".into(),
            subject: "ayoung@stoughton".into(),
            domain: Some("stoughton".into()),
            project: Some("turing".into()),
            roles_held: vec!["member".into()],
            trust_id: None,
            actors: vec![],
            workflow_id: None,
            workflow: Some("deploy-1".into()),
            action: RecordedAction::Http {
                method: "GET".into(),
                path: "/v2/images/1".into(),
            },
            rule: Some("GET /v2/images/{id}".into()),
            reason: Some(Denial::MissingRole),
            roles_allowing: vec!["reader".into()],
        }
    }

    fn read(text: &[u8], skip_bad: bool) -> Result<RecordsRead> {
        let mut out = RecordsRead::default();
        read_decision_records(&mut std::io::Cursor::new(text), "records.jsonl", skip_bad, &mut out)?;
        Ok(out)
    }

    /// What the policy writes, the reader reads back; other events are
    /// counted, not decisions.
    #[test]
    fn decision_records_round_trip_and_other_events_are_counted() {
        let line = decision().to_json().to_string();
        assert!(line.contains("\"event\":\"policy_decision\""), "{line}");
        let text = format!("{line}\n\n{{\"event\":\"bearer_use\",\"subject\":\"x\"}}\n{line}");
        let got = read(text.as_bytes(), false).unwrap();
        assert_eq!(got.decisions, vec![decision(), decision()]);
        assert_eq!((got.other_events, got.skipped), (1, 0));
    }

    /// A denial record of the format before decision records is refused
    /// (or skipped, counted) by name, never taken for another event.
    #[test]
    fn records_of_the_older_denial_format_are_named_not_ignored() {
        let old = r#"{"event":"policy_denial","subject":"ayoung@stoughton","path":"/v2/images/1"}"#;
        let refused = read(old.as_bytes(), false).unwrap_err();
        assert_eq!(refused.code(), Code::PolicyRecordInvalid);
        assert!(refused.message().contains("policy_denial"), "{}", refused.message());
        let skipped = read(old.as_bytes(), true).unwrap();
        assert_eq!((skipped.other_events, skipped.skipped), (0, 1));
    }

    /// The bytes of decision records are bounded across files, not only
    /// their number: past the ceiling a run stops with policy.limit.
    #[test]
    fn decision_records_are_bounded_in_bytes_across_files() {
        let line = format!("{}\n", decision().to_json());
        let text = line.repeat(3);
        let mut into = RecordsRead::default();
        let ceiling = (line.len() * 4) as u64;
        read_records_within(&mut std::io::Cursor::new(&text), "a.jsonl", false, &mut into, ceiling).unwrap();
        assert_eq!(
            (into.decisions.len(), into.decision_bytes),
            (3, (line.len() * 3) as u64)
        );
        let refused =
            read_records_within(&mut std::io::Cursor::new(&text), "b.jsonl", false, &mut into, ceiling).unwrap_err();
        assert_eq!(refused.code(), Code::PolicyLimit);
        assert!(
            refused.message().starts_with("b.jsonl line 2:"),
            "{}",
            refused.message()
        );
        assert!(MAX_RECORD_BYTES >= 64 * MAX_RECORD_LINE as u64);
    }

    /// Malformed lines name the file and line, or are counted with skip_bad;
    /// an overlong line is refused without reading it whole into a record.
    #[test]
    fn malformed_record_lines_name_their_line_or_are_skipped() {
        let good = decision().to_json().to_string();
        let mut missing = decision().to_json();
        missing.as_object_mut().unwrap().remove("roles_allowing");
        let long = format!(
            "{{\"event\":\"policy_decision\",\"x\":\"{}\"}}",
            "a".repeat(MAX_RECORD_LINE)
        );
        for (bad, why) in [
            ("not json".to_owned(), "not JSON"),
            ("[1,2]".to_owned(), "not a JSON object"),
            (missing.to_string(), "roles_allowing"),
            (good.replace("\"would_deny\"", "\"maybe\""), "not a decision record"),
            (long, "longer than 65536 bytes"),
        ] {
            let text = format!("{good}\n{bad}\n{good}\n");
            let e = read(text.as_bytes(), false).unwrap_err();
            assert_eq!(e.code(), Code::PolicyRecordInvalid, "{bad:.40}");
            assert!(e.message().starts_with("records.jsonl line 2: "), "{}", e.message());
            assert!(e.message().contains(why), "{}", e.message());
            let skipped = read(text.as_bytes(), true).unwrap();
            assert_eq!((skipped.decisions.len(), skipped.skipped), (2, 1), "{bad:.40}");
        }
        let e = read(b"\xff\xfe\n", false).unwrap_err();
        assert!(e.message().contains("line 1: not UTF-8"), "{}", e.message());
    }

    /// Dropping the sink writes every queued record before it returns.
    #[test]
    fn a_clean_shutdown_loses_no_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("records.jsonl");
        let sink = JsonLinesFile::with_queue(&path, 50_000).unwrap();
        let counter = sink.dropped_counter();
        for i in 0..50_000 {
            sink.record(&record(i));
        }
        drop(sink);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 50_000);
        assert!(lines.iter().enumerate().all(|(i, l)| *l == record(i)));
        assert_eq!(counter.load(Ordering::Relaxed), 0);
    }

    /// A writer that cannot keep up (a FIFO nobody reads) never blocks
    /// `record`: the queue fills, further records are dropped and counted,
    /// and everything that was queued still arrives.
    #[cfg(unix)]
    #[test]
    fn a_full_queue_drops_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("records.fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
        assert!(made.success());
        // The reader opens the FIFO (so the sink's open does not block) but
        // reads only when told to.
        let (start_reading, go) = std::sync::mpsc::channel::<()>();
        let reader = {
            let fifo = fifo.clone();
            std::thread::spawn(move || {
                let mut file = std::fs::File::open(&fifo).unwrap();
                go.recv().unwrap();
                let mut text = String::new();
                file.read_to_string(&mut text).unwrap();
                text
            })
        };
        let sink = JsonLinesFile::with_queue(&fifo, 100).unwrap();
        let counter = sink.dropped_counter();
        // A pipe holds 64 KiB (about 2,000 of these lines); the queue 100.
        let total = 20_000;
        let began = std::time::Instant::now();
        for i in 0..total {
            sink.record(&record(i));
        }
        assert!(
            began.elapsed() < std::time::Duration::from_secs(5),
            "record waited for the writer"
        );
        let dropped = counter.load(Ordering::Relaxed);
        assert!(dropped >= 10_000, "only {dropped} dropped");
        start_reading.send(()).unwrap();
        drop(sink);
        let written = reader.join().unwrap().lines().count() as u64;
        assert_eq!(written + counter.load(Ordering::Relaxed), total as u64);
    }
}
