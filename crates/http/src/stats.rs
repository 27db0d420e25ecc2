//! What an app has served: counts by status, a latency histogram, requests
//! in flight and the time of the last one. Kept apart from [`crate::App`]
//! so that one record spans an app's versions (and, under `tern host`, its
//! loads and unloads). A few atomics per request; one small lock for the
//! status counts.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The upper bounds of the latency histogram's buckets, in seconds.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// An app's request figures. Cheap to share: hand the same one to each
/// version of the app.
#[derive(Default)]
pub struct AppStats {
    in_flight: AtomicU64,
    /// Milliseconds since the Unix epoch; 0 before the first request.
    last_request: AtomicU64,
    /// Requests answered, by status.
    statuses: Mutex<Vec<(u16, u64)>>,
    /// Requests whose duration fell at or below each bound, not summed
    /// (one count per bucket; [`Latency::cumulative`] sums them).
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    over: AtomicU64,
    total_micros: AtomicU64,
}

/// A request being served: counted in flight until dropped.
pub struct InFlight(Arc<AppStats>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The latency histogram as Prometheus shows it.
pub struct Latency {
    /// For each of [`LATENCY_BUCKETS`], the requests that took at most that
    /// long.
    pub cumulative: [u64; LATENCY_BUCKETS.len()],
    /// Every request.
    pub count: u64,
    /// Their durations added up.
    pub sum: Duration,
}

impl AppStats {
    /// A request arrived for the app.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        self.last_request.store(now, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// A request was answered with `status` after `duration`.
    pub fn finish(&self, status: u16, duration: Duration) {
        {
            let mut statuses = self.statuses.lock().unwrap_or_else(|e| e.into_inner());
            match statuses.iter_mut().find(|(s, _)| *s == status) {
                Some((_, count)) => *count += 1,
                None => statuses.push((status, 1)),
            }
        }
        let seconds = duration.as_secs_f64();
        match LATENCY_BUCKETS.iter().position(|&bound| seconds <= bound) {
            Some(i) => self.buckets[i].fetch_add(1, Ordering::Relaxed),
            None => self.over.fetch_add(1, Ordering::Relaxed),
        };
        let micros = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
        self.total_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// Requests being served now.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Requests answered so far.
    pub fn requests(&self) -> u64 {
        self.by_status().iter().map(|(_, n)| n).sum()
    }

    /// When the last request arrived; `None` before the first.
    pub fn last_request(&self) -> Option<SystemTime> {
        match self.last_request.load(Ordering::Relaxed) {
            0 => None,
            millis => Some(UNIX_EPOCH + Duration::from_millis(millis)),
        }
    }

    /// Requests answered, by status, in status order.
    pub fn by_status(&self) -> Vec<(u16, u64)> {
        let mut statuses = self
            .statuses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        statuses.sort_unstable();
        statuses
    }

    /// The latency histogram.
    pub fn latency(&self) -> Latency {
        let mut cumulative = [0; LATENCY_BUCKETS.len()];
        let mut running = 0;
        for (i, bucket) in self.buckets.iter().enumerate() {
            running += bucket.load(Ordering::Relaxed);
            cumulative[i] = running;
        }
        Latency {
            cumulative,
            count: running + self.over.load(Ordering::Relaxed),
            sum: Duration::from_micros(self.total_micros.load(Ordering::Relaxed)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_statuses_latency_and_requests_in_flight() {
        let stats = Arc::new(AppStats::default());
        let first = stats.begin();
        let second = stats.begin();
        assert_eq!(stats.in_flight(), 2);
        stats.finish(200, Duration::from_micros(300));
        drop(first);
        stats.finish(503, Duration::from_secs(20));
        drop(second);
        stats.finish(200, Duration::from_millis(30));
        assert_eq!(stats.in_flight(), 0);
        assert_eq!(stats.by_status(), [(200, 2), (503, 1)]);
        assert_eq!(stats.requests(), 3);
        assert!(stats.last_request().is_some());
        let latency = stats.latency();
        assert_eq!(latency.count, 3);
        assert_eq!(latency.cumulative[0], 1, "0.3ms is within 0.5ms");
        assert_eq!(latency.cumulative[LATENCY_BUCKETS.len() - 1], 2);
        assert_eq!(latency.sum, Duration::from_micros(20_030_300));
    }
}
