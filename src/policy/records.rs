//! Decision records: one JSON object per line.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::error::{Code, Error, Result};

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
