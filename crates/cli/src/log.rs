//! The server's log on stderr: one line per request and per line of guest
//! output, as text or JSON.

use std::io::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

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

pub struct LogSink {
    format: LogFormat,
}

impl LogSink {
    pub fn new(format: LogFormat) -> Self {
        LogSink { format }
    }

    /// Writes one whole line with a single write, so lines from
    /// concurrent requests never interleave.
    fn write(&self, mut line: String) {
        line.push('\n');
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }
}

impl EventSink for LogSink {
    fn request(&self, r: &AccessRecord<'_>) {
        let time = timestamp(SystemTime::now());
        let millis = r.duration.as_secs_f64() * 1e3;
        let line = match self.format {
            LogFormat::Text => {
                let mut line = format!(
                    "{time} {} {} {} {} {millis:.2}ms {}",
                    r.id,
                    r.method,
                    r.path,
                    r.status,
                    r.component.unwrap_or("-")
                );
                if let Some(error) = &r.error {
                    line.push_str(" error: ");
                    line.push_str(error);
                }
                line
            }
            LogFormat::Json => json!({
                "time": time,
                "id": r.id.to_string(),
                "method": r.method,
                "path": r.path,
                "status": r.status,
                "duration_ms": (millis * 1000.0).round() / 1000.0,
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
            LogFormat::Text => format!(
                "{time} {} {} {}: {}",
                g.request, g.component, g.stream, g.text
            ),
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

    fn server_error(&self, message: &str) {
        let line = match self.format {
            LogFormat::Text => format!("{} error: {message}", timestamp(SystemTime::now())),
            LogFormat::Json => json!({
                "time": timestamp(SystemTime::now()),
                "error": message,
            })
            .to_string(),
        };
        self.write(line);
    }
}

/// RFC 3339 UTC with milliseconds, e.g. `2026-11-21T09:05:03.041Z`.
fn timestamp(now: SystemTime) -> String {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
/// algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
}
