//! `tern.Report`: what a call cost and how it ended.

use pyo3::prelude::*;

/// What a call cost and how it ended: instructions run, peak memory, wall
/// time, bytes in, out and logged, the log lines kept, and the limit that
/// stopped the call, if one did.
#[pyclass(module = "tern", frozen, get_all)]
pub(crate) struct Report {
    /// Instructions run (wasmtime fuel consumed).
    instructions: u64,
    /// The most linear memory the instance held, in bytes.
    peak_memory: u64,
    /// Wall time of the call in seconds, instantiation included.
    wall_time: f64,
    /// Bytes of input.
    input_bytes: u64,
    /// Bytes of output.
    output_bytes: u64,
    /// Bytes the plugin logged at the levels kept.
    log_bytes: u64,
    /// The log lines kept, as (level, message) tuples.
    logs: Vec<(String, String)>,
    /// Whether log lines were dropped at the log limit.
    logs_truncated: bool,
    /// The limit that stopped the call ("fuel", "timeout", "memory",
    /// "stack", "input size" or "output size"), or None.
    stopped_by: Option<String>,
}

#[pymethods]
impl Report {
    fn __repr__(&self) -> String {
        let stopped_by = match &self.stopped_by {
            Some(limit) => format!("'{limit}'"),
            None => "None".to_owned(),
        };
        let logs_truncated = if self.logs_truncated { "True" } else { "False" };
        format!(
            "Report(instructions={}, peak_memory={}, wall_time={:.6}, input_bytes={}, \
             output_bytes={}, log_bytes={}, logs_truncated={logs_truncated}, \
             stopped_by={stopped_by})",
            self.instructions,
            self.peak_memory,
            self.wall_time,
            self.input_bytes,
            self.output_bytes,
            self.log_bytes,
        )
    }
}

impl From<tern_plugin::Report> for Report {
    fn from(report: tern_plugin::Report) -> Self {
        Report {
            instructions: report.instructions,
            peak_memory: report.peak_memory,
            wall_time: report.wall_time.as_secs_f64(),
            input_bytes: report.input_bytes,
            output_bytes: report.output_bytes,
            log_bytes: report.log_bytes,
            logs: report
                .logs
                .into_iter()
                .map(|line| (line.level.to_string(), line.message))
                .collect(),
            logs_truncated: report.logs_truncated,
            stopped_by: report.stopped_by.map(|limit| limit.to_string()),
        }
    }
}
