//! Decision records: one JSON object per line.

use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use crate::error::{Code, Error, Result};

/// Where decision records go.
pub trait RecordSink: Send + Sync {
    /// Writes one record. Must not fail the request: sinks report their own
    /// I/O errors (through tracing) and carry on.
    fn record(&self, record: &serde_json::Value);
}

/// Appends records to a file as JSON lines, flushed per record.
pub struct JsonLinesFile {
    file: Mutex<std::fs::File>,
    path: std::path::PathBuf,
}

impl std::fmt::Debug for JsonLinesFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JsonLinesFile({})", self.path.display())
    }
}

impl JsonLinesFile {
    /// Opens (creating if needed) `path` for appending.
    pub fn open(path: &Path) -> Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| {
                Error::new(
                    Code::PolicyInvalid,
                    format!("cannot open the record file {}: {e}", path.display()),
                )
            })?;
        Ok(JsonLinesFile {
            file: Mutex::new(file),
            path: path.to_owned(),
        })
    }
}

impl RecordSink for JsonLinesFile {
    fn record(&self, record: &serde_json::Value) {
        let mut line = record.to_string();
        line.push('\n');
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        // One write call per line keeps concurrent appends whole.
        if let Err(e) = file.write_all(line.as_bytes()) {
            #[cfg(feature = "http")]
            tracing::error!(path = %self.path.display(), error = %e, "cannot write a decision record");
            #[cfg(not(feature = "http"))]
            let _ = e;
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
