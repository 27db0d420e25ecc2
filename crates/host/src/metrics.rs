//! `GET /metrics`: the host and each app in Prometheus' text format
//! (version 0.0.4).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use tern_http::LATENCY_BUCKETS;

use crate::{Entry, Host, read};

/// The content type of [`render`]'s text.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Every metric, now.
pub(crate) fn render(host: &Host) -> String {
    let entries: Vec<_> = read(&host.inner.apps).values().cloned().collect();
    let mut out = String::new();
    family(&mut out, "tern_host_apps", "gauge", "Apps deployed.");
    let loaded = entries
        .iter()
        .filter(|e| e.current.load().is_some())
        .count();
    let _ = writeln!(out, "tern_host_apps {}", entries.len());
    family(
        &mut out,
        "tern_host_apps_loaded",
        "gauge",
        "Apps loaded now.",
    );
    let _ = writeln!(out, "tern_host_apps_loaded {loaded}");
    family(
        &mut out,
        "tern_host_pool_slots_in_use",
        "gauge",
        "Instances alive now, across apps.",
    );
    let _ = writeln!(
        out,
        "tern_host_pool_slots_in_use {}",
        host.inner.pools.slots_in_use()
    );
    family(
        &mut out,
        "tern_host_resident_memory_bytes",
        "gauge",
        "Resident memory of the host process.",
    );
    let _ = writeln!(out, "tern_host_resident_memory_bytes {}", resident_bytes());

    let apps = || entries.iter().map(|e| (label(&e.name), e));
    family(
        &mut out,
        "tern_app_requests_total",
        "counter",
        "Requests answered, by status.",
    );
    for (app, entry) in apps() {
        for (status, count) in entry.stats.by_status() {
            let _ = writeln!(
                out,
                "tern_app_requests_total{{app=\"{app}\",status=\"{status}\"}} {count}"
            );
        }
    }
    family(
        &mut out,
        "tern_app_request_duration_seconds",
        "histogram",
        "From the request head to the guest's end.",
    );
    for (app, entry) in apps() {
        let latency = entry.stats.latency();
        for (bound, count) in LATENCY_BUCKETS.iter().zip(latency.cumulative) {
            let _ = writeln!(
                out,
                "tern_app_request_duration_seconds_bucket{{app=\"{app}\",le=\"{bound}\"}} {count}"
            );
        }
        let _ = writeln!(
            out,
            "tern_app_request_duration_seconds_bucket{{app=\"{app}\",le=\"+Inf\"}} {}\n\
             tern_app_request_duration_seconds_sum{{app=\"{app}\"}} {}\n\
             tern_app_request_duration_seconds_count{{app=\"{app}\"}} {}",
            latency.count,
            latency.sum.as_secs_f64(),
            latency.count
        );
    }
    family(
        &mut out,
        "tern_app_in_flight",
        "gauge",
        "Requests being served now.",
    );
    for (app, entry) in apps() {
        let _ = writeln!(
            out,
            "tern_app_in_flight{{app=\"{app}\"}} {}",
            entry.stats.in_flight()
        );
    }
    let counters: [(&str, &str, Counter); 3] = [
        (
            "tern_app_cold_starts_total",
            "First requests that loaded the app.",
            |e| &e.cold_starts,
        ),
        (
            "tern_app_loads_total",
            "Times the app was loaded (deploys included).",
            |e| &e.loads,
        ),
        (
            "tern_app_unloads_total",
            "Times the app was unloaded when idle.",
            |e| &e.unloads,
        ),
    ];
    for (name, help, counter) in counters {
        family(&mut out, name, "counter", help);
        for (app, entry) in apps() {
            let value = counter(entry).load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}{{app=\"{app}\"}} {value}");
        }
    }
    // What each loaded app's proxy-wasm filters define.
    let mut families = tern_http::MetricFamilies::default();
    for entry in &entries {
        if let Some(app) = entry.current.load_full() {
            app.filter_metrics(&mut families);
        }
    }
    families.render(&mut out);
    out
}

/// One of an app's counters.
type Counter = fn(&Entry) -> &AtomicU64;

/// The `HELP` and `TYPE` lines that open a metric family.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A label value: app names are DNS labels, but escape as the format asks.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The process's resident set, from `/proc/self/status` (0 where there is
/// none).
fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib * 1024)
        })
        .unwrap_or(0)
}
