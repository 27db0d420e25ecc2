//! The server's log on stderr: one line per request and per line of guest
//! output, as text or JSON, and Tern's own lines (start, routes, reloads,
//! shutdown, errors) in the same format.

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;
use tern_http::{AccessRecord, EventSink, GuestLine};

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// `TIME ID METHOD PATH STATUS DURATION COMPONENT`, for people
    Text,
    /// One JSON object per line, for log pipelines
    Json,
}

/// Which requests get an access-log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AccessLog {
    /// Every request
    All,
    /// Only requests that failed with a reason (a guest's trap, a limit, an
    /// upstream that did not answer): the lines an operator acts on
    Errors,
}

/// The format of Tern's own lines, once a serving command has chosen one.
static FORMAT: OnceLock<LogFormat> = OnceLock::new();

/// Makes [`say`] write in `format` from now on.
pub fn set_format(format: LogFormat) {
    let _ = FORMAT.set(format);
}

/// Prints Tern's own `text` on stderr, a line at a time: as it is, or with
/// `--log-format json` as one JSON object per line, so that every line a
/// log pipeline reads parses.
pub fn say(text: &str) {
    let mut out = String::with_capacity(text.len() + 1);
    for line in text.lines() {
        match FORMAT.get() {
            Some(LogFormat::Json) => {
                let object = json!({ "time": timestamp(SystemTime::now()), "message": line });
                let _ = writeln!(out, "{object}");
            }
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    let _ = std::io::stderr().lock().write_all(out.as_bytes());
}

pub struct LogSink {
    format: LogFormat,
    access: AccessLog,
    pending: Arc<Pending>,
}

/// Lines not yet written. Under load, one write carries many lines instead
/// of a syscall per request; a line waits at most [`LATENCY`].
#[derive(Default)]
struct Pending {
    lines: Mutex<Vec<u8>>,
    /// Signalled when the first line arrives in an empty buffer.
    arrived: Condvar,
}

/// The longest a line waits in the buffer.
const LATENCY: Duration = Duration::from_millis(20);

/// Past this many bytes the buffer is written at once.
const HIGH_WATER: usize = 32 << 10;

impl Pending {
    fn lock(&self) -> MutexGuard<'_, Vec<u8>> {
        self.lines.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes what is buffered; whole lines only, so lines never interleave.
    fn flush(lines: &mut Vec<u8>) {
        if !lines.is_empty() {
            let _ = std::io::stderr().lock().write_all(lines);
            lines.clear();
        }
    }
}

impl LogSink {
    pub fn new(format: LogFormat, access: AccessLog) -> Self {
        let pending = Arc::new(Pending::default());
        let writer = pending.clone();
        // Without the writer thread lines are still written, by `flush`
        // or past the high-water mark; losing it only delays them.
        let _ = std::thread::Builder::new()
            .name("tern-log".into())
            .spawn(move || {
                loop {
                    let mut lines = writer.lock();
                    while lines.is_empty() {
                        lines = writer
                            .arrived
                            .wait(lines)
                            .unwrap_or_else(|e| e.into_inner());
                    }
                    drop(lines);
                    // Let more lines gather, then write them together.
                    std::thread::sleep(LATENCY);
                    Pending::flush(&mut writer.lock());
                }
            });
        LogSink {
            format,
            access,
            pending,
        }
    }

    /// Writes every buffered line now.
    /// A line of the server's own: `TIME PREFIX MESSAGE` as text, or
    /// `{"time", KEY: MESSAGE}` as JSON.
    fn server_line(&self, prefix: &str, key: &str, message: &str) {
        let line = match self.format {
            LogFormat::Text => {
                let mut line = format!("{} {prefix}", timestamp(SystemTime::now()));
                push_escaped(&mut line, message);
                line
            }
            LogFormat::Json => json!({
                "time": timestamp(SystemTime::now()),
                key: message,
            })
            .to_string(),
        };
        self.write(line);
    }

    pub fn flush(&self) {
        Pending::flush(&mut self.pending.lock());
    }

    fn write(&self, mut line: String) {
        line.push('\n');
        let mut lines = self.pending.lock();
        let was_empty = lines.is_empty();
        lines.extend_from_slice(line.as_bytes());
        if lines.len() >= HIGH_WATER {
            Pending::flush(&mut lines);
        } else if was_empty {
            self.pending.arrived.notify_one();
        }
    }
}

impl Drop for LogSink {
    fn drop(&mut self) {
        self.flush();
    }
}

impl EventSink for LogSink {
    fn request(&self, r: &AccessRecord<'_>) {
        if self.access == AccessLog::Errors && r.error.is_none() {
            return;
        }
        let now = SystemTime::now();
        let line = match self.format {
            LogFormat::Text => {
                // Built by hand, not with `format!`: this runs once per
                // request on the serving thread.
                let mut line = String::with_capacity(96 + r.path.len());
                push_timestamp(&mut line, now);
                line.push(' ');
                let _ = write!(line, "{}", r.id);
                for part in [r.method, r.path] {
                    line.push(' ');
                    line.push_str(part);
                }
                line.push(' ');
                // What the client saw: a status, or the connection closing.
                if r.aborted {
                    line.push_str("aborted");
                } else {
                    push_uint(&mut line, u64::from(r.status), 3);
                }
                line.push(' ');
                push_millis(&mut line, r.duration);
                line.push(' ');
                line.push_str(r.component.unwrap_or("-"));
                if let Some(error) = &r.error {
                    line.push_str(" error: ");
                    push_escaped(&mut line, error);
                }
                line
            }
            LogFormat::Json => json!({
                "time": timestamp(now),
                "id": r.id.to_string(),
                "method": r.method,
                "path": r.path,
                "status": (!r.aborted).then_some(r.status),
                "aborted": r.aborted,
                "duration_ms": (r.duration.as_secs_f64() * 1e6).round() / 1000.0,
                "component": r.component,
                "error": r.error,
            })
            .to_string(),
        };
        self.write(line);
    }

    fn guest_output(&self, g: &GuestLine<'_>) {
        let time = timestamp(SystemTime::now());
        let line = match self.format {
            LogFormat::Text => {
                let mut line = format!("{time} {} {} {}: ", g.request, g.component, g.stream);
                push_escaped(&mut line, g.text);
                line
            }
            LogFormat::Json => json!({
                "time": time,
                "id": g.request.to_string(),
                "component": g.component,
                "stream": g.stream,
                "message": g.text,
            })
            .to_string(),
        };
        self.write(line);
    }

    fn event(&self, message: &str) {
        self.server_line("", "event", message);
    }

    fn server_error(&self, message: &str) {
        self.server_line("error: ", "error", message);
    }
}

/// Appends `text` with its control characters escaped (`\n`, `\r`, `\t`,
/// `\u{1b}`), so text a guest chose (a trap message, a function name, its
/// output) cannot start a line of its own or repaint the terminal.
fn push_escaped(out: &mut String, text: &str) {
    if !text.chars().any(char::is_control) {
        out.push_str(text);
        return;
    }
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
}

/// RFC 3339 UTC with milliseconds, e.g. `2026-11-21T09:05:03.041Z`.
fn timestamp(now: SystemTime) -> String {
    let mut out = String::with_capacity(24);
    push_timestamp(&mut out, now);
    out
}

fn push_timestamp(out: &mut String, now: SystemTime) {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = tern_manifest::civil_from_days(days as i64);
    push_uint(out, year.max(0) as u64, 4);
    for (sep, value) in [('-', month), ('-', day)] {
        out.push(sep);
        push_uint(out, u64::from(value), 2);
    }
    for (sep, value) in [('T', rem / 3600), (':', rem % 3600 / 60), (':', rem % 60)] {
        out.push(sep);
        push_uint(out, value, 2);
    }
    out.push('.');
    push_uint(out, u64::from(since.subsec_millis()), 3);
    out.push('Z');
}

/// A duration as milliseconds with two decimals, e.g. `0.09ms`.
fn push_millis(out: &mut String, duration: Duration) {
    let hundredths = (duration.as_micros() + 5) / 10;
    push_uint(out, u64::try_from(hundredths / 100).unwrap_or(u64::MAX), 1);
    out.push('.');
    push_uint(out, (hundredths % 100) as u64, 2);
    out.push_str("ms");
}

/// `value` in decimal, zero-padded to at least `width` digits.
fn push_uint(out: &mut String, mut value: u64, width: usize) {
    let mut digits = [b'0'; 20];
    let mut start = digits.len();
    while value > 0 || start == digits.len() {
        start -= 1;
        digits[start] = b'0' + (value % 10) as u8;
        value /= 10;
    }
    start = start.min(digits.len() - width.min(digits.len()));
    out.extend(digits[start..].iter().map(|&d| char::from(d)));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn control_characters_are_escaped() {
        let mut out = String::new();
        push_escaped(&mut out, "a\nb\r\t\u{1b}[2Jc");
        assert_eq!(out, "a\\nb\\r\\t\\u{1b}[2Jc");
        let mut plain = String::new();
        push_escaped(&mut plain, "plain text");
        assert_eq!(plain, "plain text");
    }

    #[test]
    fn timestamps() {
        let cases = [
            (0, "1970-01-01T00:00:00.000Z"),
            (951_782_400_500, "2000-02-29T00:00:00.500Z"),
            (1_795_302_303_041, "2026-11-21T23:05:03.041Z"),
        ];
        for (millis, expected) in cases {
            let t = UNIX_EPOCH + Duration::from_millis(millis);
            assert_eq!(timestamp(t), expected);
        }
    }

    #[test]
    fn durations_in_milliseconds() {
        let cases = [
            (0, "0.00ms"),
            (4, "0.00ms"),
            (5, "0.01ms"),
            (94, "0.09ms"),
            (1_234, "1.23ms"),
            (30_000_000, "30000.00ms"),
        ];
        for (micros, expected) in cases {
            let mut out = String::new();
            push_millis(&mut out, Duration::from_micros(micros));
            assert_eq!(out, expected);
        }
    }
}
