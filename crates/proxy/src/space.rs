//! What the VMs of one filter share, across worker threads and versions:
//! shared data (key-value with compare-and-swap), shared queues and
//! metrics. A new version of the filter takes over its predecessor's space.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::{Mutex, PoisonError, Weak};

use crate::vm::VmSlot;

/// Bounds on what filters may keep here. Shared data and the queued items
/// each have a budget of bytes, which counts what the host spends on an
/// entry or an item beyond its bytes (`ENTRY_COST`), so that many tiny
/// entries cannot hold much more memory than their budget says.
const MAX_SHARED_DATA: usize = 16 << 20;
const MAX_QUEUED: usize = 16 << 20;
const ENTRY_COST: usize = 96;
const MAX_QUEUES: usize = 64;
const MAX_QUEUE_ITEMS: usize = 1024;
const MAX_QUEUE_ITEM: usize = 64 << 10;
const MAX_METRICS: usize = 1024;
const MAX_NAME: usize = 256;

/// Histogram buckets, in the filter's own unit.
const BUCKETS: [u64; 12] = [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 5000, 10000];

/// The space of one named filter.
#[derive(Default)]
pub struct FilterSpace {
    data: Mutex<SharedData>,
    queues: Mutex<Queues>,
    metrics: Mutex<Vec<Metric>>,
}

#[derive(Default)]
struct SharedData {
    entries: HashMap<String, (Vec<u8>, u32)>,
    size: usize,
    cas: u32,
}

#[derive(Default)]
struct Queues {
    list: Vec<Queue>,
    /// What the items of every queue cost, against `MAX_QUEUED`.
    bytes: usize,
}

struct Queue {
    name: String,
    items: VecDeque<Vec<u8>>,
    /// The VM whose root context registered the queue last, told of each
    /// item through `proxy_on_queue_ready` on its own thread.
    owner: Option<QueueOwner>,
}

pub(crate) struct QueueOwner {
    pub(crate) vm: VmSlot,
    pub(crate) root: u32,
    pub(crate) runtime: tokio::runtime::Handle,
}

/// A metric a filter defined.
struct Metric {
    kind: MetricKind,
    name: String,
    value: i64,
    /// Histograms: counts per bucket (the last is +Inf), and the sum.
    buckets: Vec<u64>,
    sum: u64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

/// What a queue operation found.
pub(crate) enum QueueResult<T> {
    Ok(T),
    NotFound,
    Empty,
    Full,
}

impl FilterSpace {
    pub(crate) fn get_data(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        self.data
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entries
            .get(key)
            .cloned()
    }

    /// Sets `key`; `cas` 0 sets unconditionally, otherwise it must be the
    /// entry's current one. `Err(true)` on a mismatch, `Err(false)` when the
    /// space is full.
    pub(crate) fn set_data(&self, key: &str, value: &[u8], cas: u32) -> Result<(), bool> {
        let mut data = self.data.lock().unwrap_or_else(PoisonError::into_inner);
        let old = data.entries.get(key).map(|(v, c)| (v.len(), *c));
        if cas != 0 && old.map(|(_, c)| c) != Some(cas) {
            return Err(true);
        }
        let freed = old.map_or(0, |(len, _)| len + key.len() + ENTRY_COST);
        let size = data.size - freed + key.len() + value.len() + ENTRY_COST;
        if size > MAX_SHARED_DATA {
            return Err(false);
        }
        data.size = size;
        data.cas = data.cas.wrapping_add(1).max(1);
        let cas = data.cas;
        data.entries.insert(key.to_string(), (value.to_vec(), cas));
        Ok(())
    }

    /// The queue's id (its index plus one), made if need be; `owner` is told
    /// of new items from now on.
    pub(crate) fn register_queue(&self, name: &str, owner: Option<QueueOwner>) -> Option<u32> {
        let queues = &mut self
            .queues
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .list;
        if let Some(index) = queues.iter().position(|q| q.name == name) {
            if owner.is_some() {
                queues[index].owner = owner;
            }
            return Some(index as u32 + 1);
        }
        if queues.len() >= MAX_QUEUES || name.len() > MAX_NAME {
            return None;
        }
        queues.push(Queue {
            name: name.to_string(),
            items: VecDeque::new(),
            owner,
        });
        Some(queues.len() as u32)
    }

    pub(crate) fn resolve_queue(&self, name: &str) -> Option<u32> {
        let queues = self.queues.lock().unwrap_or_else(PoisonError::into_inner);
        let index = queues.list.iter().position(|q| q.name == name)?;
        Some(index as u32 + 1)
    }

    pub(crate) fn dequeue(&self, id: u32) -> QueueResult<Vec<u8>> {
        let queues = &mut *self.queues.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(queue) = queue_mut(&mut queues.list, id) else {
            return QueueResult::NotFound;
        };
        match queue.items.pop_front() {
            Some(item) => {
                queues.bytes -= item.len() + ENTRY_COST;
                QueueResult::Ok(item)
            }
            None => QueueResult::Empty,
        }
    }

    /// Adds an item; the owner is told on its own thread.
    pub(crate) fn enqueue(&self, id: u32, item: Vec<u8>) -> QueueResult<()> {
        let queues = &mut *self.queues.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(queue) = queue_mut(&mut queues.list, id) else {
            return QueueResult::NotFound;
        };
        let cost = item.len() + ENTRY_COST;
        if queue.items.len() >= MAX_QUEUE_ITEMS
            || item.len() > MAX_QUEUE_ITEM
            || queues.bytes + cost > MAX_QUEUED
        {
            return QueueResult::Full;
        }
        queues.bytes += cost;
        queue.items.push_back(item);
        if let Some(owner) = &queue.owner {
            let (vm, root) = (owner.vm.clone(), owner.root);
            // Never inline: the owner may be the VM making this call.
            owner.runtime.spawn(async move {
                if let Some(vm) = vm.get().and_then(Weak::upgrade) {
                    let mut locked = vm.lock().unwrap_or_else(PoisonError::into_inner);
                    locked.on_queue_ready(root, id);
                    crate::filter::follow_up(&vm, &mut locked);
                }
            });
        }
        QueueResult::Ok(())
    }

    /// Defines a metric, or finds the one of that name and kind.
    pub(crate) fn define_metric(&self, kind: MetricKind, name: &str) -> Option<u32> {
        let mut metrics = self.metrics.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(index) = metrics
            .iter()
            .position(|m| m.name == name && m.kind == kind)
        {
            return Some(index as u32 + 1);
        }
        if metrics.len() >= MAX_METRICS || name.is_empty() || name.len() > MAX_NAME {
            return None;
        }
        metrics.push(Metric {
            kind,
            name: name.to_string(),
            value: 0,
            buckets: vec![0; BUCKETS.len() + 1],
            sum: 0,
        });
        Some(metrics.len() as u32)
    }

    /// Adds to a counter or gauge; `None` for an unknown id, `Some(false)`
    /// for a histogram or a counter going down.
    pub(crate) fn increment_metric(&self, id: u32, offset: i64) -> Option<bool> {
        let mut metrics = self.metrics.lock().unwrap_or_else(PoisonError::into_inner);
        let metric = metric_mut(&mut metrics, id)?;
        match metric.kind {
            MetricKind::Histogram => Some(false),
            MetricKind::Counter if offset < 0 => Some(false),
            _ => {
                metric.value = metric.value.saturating_add(offset);
                Some(true)
            }
        }
    }

    /// Sets a counter or gauge, or records a histogram sample.
    pub(crate) fn record_metric(&self, id: u32, value: u64) -> Option<()> {
        let mut metrics = self.metrics.lock().unwrap_or_else(PoisonError::into_inner);
        let metric = metric_mut(&mut metrics, id)?;
        if metric.kind == MetricKind::Histogram {
            let bucket = BUCKETS
                .iter()
                .position(|&bound| value <= bound)
                .unwrap_or(BUCKETS.len());
            metric.buckets[bucket] += 1;
            metric.sum = metric.sum.saturating_add(value);
        } else {
            metric.value = i64::try_from(value).unwrap_or(i64::MAX);
        }
        Some(())
    }

    /// A counter's or gauge's value, or a histogram's sample count.
    pub(crate) fn get_metric(&self, id: u32) -> Option<u64> {
        let mut metrics = self.metrics.lock().unwrap_or_else(PoisonError::into_inner);
        let metric = metric_mut(&mut metrics, id)?;
        Some(match metric.kind {
            MetricKind::Histogram => metric.buckets.iter().sum(),
            _ => metric.value.max(0) as u64,
        })
    }

    /// Adds the filter's metrics to `families`, named `proxy_wasm_NAME`
    /// (the name's other characters made `_`) and labelled with `labels`
    /// (`app="shop",filter="auth"`).
    pub fn write_metrics(&self, families: &mut MetricFamilies, labels: &str) {
        for metric in self
            .metrics
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            let name: String = metric
                .name
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect();
            let name = format!("proxy_wasm_{name}");
            let kind = match metric.kind {
                MetricKind::Counter => "counter",
                MetricKind::Gauge => "gauge",
                MetricKind::Histogram => "histogram",
            };
            let (family_kind, out) = families
                .0
                .entry(name.clone())
                .or_insert_with(|| (kind, String::new()));
            // One name, two kinds (two filters disagreeing): the first wins.
            if *family_kind != kind {
                continue;
            }
            if metric.kind != MetricKind::Histogram {
                let _ = writeln!(out, "{name}{{{labels}}} {}", metric.value);
                continue;
            }
            let mut total = 0;
            for (i, count) in metric.buckets.iter().enumerate() {
                total += count;
                let le = BUCKETS.get(i).map_or("+Inf".to_string(), u64::to_string);
                let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {total}");
            }
            let _ = writeln!(out, "{name}_sum{{{labels}}} {}", metric.sum);
            let _ = writeln!(out, "{name}_count{{{labels}}} {total}");
        }
    }
}

/// Metrics of many filters (and apps), grouped by name so that each
/// family is written once, as Prometheus' text format requires.
#[derive(Default)]
pub struct MetricFamilies(BTreeMap<String, (&'static str, String)>);

impl MetricFamilies {
    /// The families in Prometheus' text format (version 0.0.4).
    pub fn render(&self, out: &mut String) {
        for (name, (kind, samples)) in &self.0 {
            let _ = writeln!(out, "# TYPE {name} {kind}");
            out.push_str(samples);
        }
    }
}

fn queue_mut(queues: &mut [Queue], id: u32) -> Option<&mut Queue> {
    queues.get_mut(usize::try_from(id).ok()?.checked_sub(1)?)
}

fn metric_mut(metrics: &mut [Metric], id: u32) -> Option<&mut Metric> {
    metrics.get_mut(usize::try_from(id).ok()?.checked_sub(1)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queued_items_share_one_budget_across_queues() {
        let space = FilterSpace::default();
        let ids: Vec<u32> = (0..MAX_QUEUES)
            .map(|q| space.register_queue(&format!("q{q}"), None).unwrap())
            .collect();
        let mut queued = 0;
        while let QueueResult::Ok(()) =
            space.enqueue(ids[queued % ids.len()], vec![7; MAX_QUEUE_ITEM])
        {
            queued += 1;
        }
        // Far below each queue's own cap: the budget stopped it.
        assert_eq!(queued, MAX_QUEUED / (MAX_QUEUE_ITEM + ENTRY_COST));
        assert!(
            matches!(space.dequeue(ids[0]), QueueResult::Ok(item) if item.len() == MAX_QUEUE_ITEM)
        );
        assert!(matches!(
            space.enqueue(ids[9], vec![7; MAX_QUEUE_ITEM]),
            QueueResult::Ok(())
        ));
        assert!(matches!(
            space.enqueue(ids[9], vec![7; MAX_QUEUE_ITEM]),
            QueueResult::Full
        ));
    }

    #[test]
    fn tiny_shared_data_entries_are_charged_what_they_cost() {
        let space = FilterSpace::default();
        let mut entries = 0usize;
        while space.set_data(&entries.to_string(), b"", 0).is_ok() {
            entries += 1;
        }
        assert!(entries < MAX_SHARED_DATA / ENTRY_COST, "{entries}");
        assert!(entries > MAX_SHARED_DATA / (ENTRY_COST + 8), "{entries}");
        // Replacing an entry frees what it held.
        assert!(space.set_data("0", b"x", 0).is_ok());
        assert!(space.set_data("0", b"", 0).is_ok());
    }
}
