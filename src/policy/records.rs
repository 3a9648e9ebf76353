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

/// Keeps records in memory (tests, the demo, `keybound policy learn`).
#[derive(Debug, Default)]
pub struct MemoryRecords(Mutex<Vec<serde_json::Value>>);

impl MemoryRecords {
    /// An empty sink.
    pub fn new() -> Self {
        Self::default()
    }

    /// All records so far.
    pub fn records(&self) -> Vec<serde_json::Value> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl RecordSink for MemoryRecords {
    fn record(&self, record: &serde_json::Value) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(record.clone());
    }
}
