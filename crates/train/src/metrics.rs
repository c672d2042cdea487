//! `metrics.jsonl`: one JSON object per logged step, appended as training goes and cut back to
//! a checkpoint's step on resume, so a resumed run's file equals an uninterrupted run's.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::error::{Result, TrainError};
use crate::store::write_atomic;

/// Appends metric lines to a file.
pub struct MetricsLog {
    path: PathBuf,
    file: std::fs::File,
}

impl MetricsLog {
    /// Opens `path` for appending, first dropping every line whose `step` is above `keep_up_to`
    /// (all lines when `None`).
    pub fn open(path: &Path, keep_up_to: Option<usize>) -> Result<Self> {
        let kept = match (keep_up_to, std::fs::read_to_string(path)) {
            (Some(step), Ok(text)) => text
                .lines()
                .filter(|l| serde_json::from_str::<Value>(l).ok().and_then(|v| v.get("step").and_then(Value::as_u64)).is_some_and(|s| s as usize <= step))
                .map(|l| format!("{l}\n"))
                .collect::<String>(),
            _ => String::new(),
        };
        write_atomic(path, kept.as_bytes())?;
        let file = std::fs::OpenOptions::new().append(true).open(path).map_err(|e| TrainError::io(path, e))?;
        Ok(Self { path: path.into(), file })
    }

    pub fn write(&mut self, record: &Map<String, Value>) -> Result<()> {
        let line = serde_json::to_string(record).expect("metrics are plain JSON");
        writeln!(self.file, "{line}").and_then(|_| self.file.flush()).map_err(|e| TrainError::io(&self.path, e))
    }
}

/// Reads all records of a `metrics.jsonl` (lines that do not parse are skipped).
pub fn read_metrics(path: &Path) -> Result<Vec<Map<String, Value>>> {
    let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
    Ok(text.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).filter_map(|v| v.as_object().cloned()).collect())
}

/// A JSON number, or null for NaN / infinity (JSON has no such numbers).
pub fn number(v: f64) -> Value {
    serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)
}
