//! The latest value of every exported series, keyed by family name and rendered label set.
//!
//! Delta points are folded into a running cumulative value when they continue the stored one
//! (their start time is the stored point's time); a later start is a restart and replaces the
//! value; an earlier start overlaps what was already counted and is dropped. Series that are not
//! updated within `metric_expiration` are removed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The Prometheus metric type of a family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Gauge,
    Counter,
    Histogram,
    Summary,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
            Kind::Histogram => "histogram",
            Kind::Summary => "summary",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Temporality {
    /// Each point replaces the stored one (cumulative sums, gauges, summaries).
    Cumulative,
    Delta,
}

/// A rendered label set (`a="x",b="y"`, sorted by name, values escaped). `key` is the form with
/// names as they are (quoted when they are not legacy names, which only a UTF-8 translation
/// strategy produces); `escaped` is the underscore-escaped form for scrapers that do not accept
/// UTF-8 names, present only when it differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Labels {
    pub key: String,
    pub escaped: Option<String>,
}

impl Labels {
    pub fn get(&self, utf8: bool) -> &str {
        match &self.escaped {
            Some(e) if !utf8 => e,
            _ => &self.key,
        }
    }
}

/// What `target_info` needs to know about the resource a series came from.
#[derive(Debug)]
pub struct Resource {
    /// `job` and `instance`; empty when the resource has neither (no `target_info` then).
    pub key: String,
    pub labels: Labels,
}

/// A classic histogram: sorted, distinct finite (or -Inf) upper bounds and the count of each
/// bucket (not cumulative); the `+Inf` bucket is `count`.
#[derive(Debug, Clone, PartialEq)]
pub struct Hist {
    pub bounds: Vec<f64>,
    pub counts: Vec<u64>,
    pub sum: f64,
    pub count: u64,
}

impl Hist {
    /// From OTLP explicit bounds: sorted, a repeated bound keeps its first bucket, a missing
    /// bucket count is 0, a `+Inf` or NaN bound is left to the implicit `+Inf` bucket.
    pub fn from_otlp(bounds: &[f64], counts: &[u64], sum: f64, count: u64) -> Hist {
        let mut pairs: Vec<(f64, u64)> = bounds
            .iter()
            .enumerate()
            .filter(|(_, b)| !b.is_nan() && **b != f64::INFINITY)
            .map(|(i, b)| (*b, counts.get(i).copied().unwrap_or(0)))
            .collect();
        pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
        pairs.dedup_by(|later, earlier| later.0 == earlier.0);
        Hist {
            bounds: pairs.iter().map(|p| p.0).collect(),
            counts: pairs.iter().map(|p| p.1).collect(),
            sum,
            count,
        }
    }

    fn add(&mut self, other: &Hist) -> bool {
        if self.bounds != other.bounds {
            return false;
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a = a.saturating_add(*b);
        }
        self.sum += other.sum;
        self.count = self.count.saturating_add(other.count);
        true
    }
}

/// One side (positive or negative) of an exponential histogram.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ExpBuckets {
    pub offset: i32,
    pub counts: Vec<u64>,
}

impl ExpBuckets {
    fn downscale(&self, by: i32) -> ExpBuckets {
        if by <= 0 || self.counts.is_empty() {
            return self.clone();
        }
        // An arithmetic shift floors, which is the index mapping for every sign.
        let by = by.min(31);
        let first = self.offset >> by;
        let last = (self.offset.saturating_add(self.counts.len() as i32 - 1)) >> by;
        let mut counts = vec![0u64; (last - first + 1) as usize];
        for (i, c) in self.counts.iter().enumerate() {
            let idx = self.offset.saturating_add(i as i32) >> by;
            counts[(idx - first) as usize] += c;
        }
        ExpBuckets {
            offset: first,
            counts,
        }
    }

    fn merge(&self, other: &ExpBuckets) -> ExpBuckets {
        if self.counts.is_empty() {
            return other.clone();
        }
        if other.counts.is_empty() {
            return self.clone();
        }
        let first = self.offset.min(other.offset);
        let end =
            (self.offset + self.counts.len() as i32).max(other.offset + other.counts.len() as i32);
        let mut counts = vec![0u64; (end - first) as usize];
        for side in [self, other] {
            for (i, c) in side.counts.iter().enumerate() {
                counts[(side.offset - first) as usize + i] += c;
            }
        }
        ExpBuckets {
            offset: first,
            counts,
        }
    }
}

/// An exponential histogram, kept as such so deltas of different scales can be merged.
#[derive(Debug, Clone, PartialEq)]
pub struct ExpHist {
    pub scale: i32,
    pub zero_count: u64,
    pub zero_threshold: f64,
    pub positive: ExpBuckets,
    pub negative: ExpBuckets,
    pub sum: f64,
    pub count: u64,
}

impl ExpHist {
    fn add(&mut self, other: &ExpHist) {
        let scale = self.scale.min(other.scale);
        let pos_a = self.positive.downscale(self.scale - scale);
        let neg_a = self.negative.downscale(self.scale - scale);
        let pos_b = other.positive.downscale(other.scale - scale);
        let neg_b = other.negative.downscale(other.scale - scale);
        self.positive = pos_a.merge(&pos_b);
        self.negative = neg_a.merge(&neg_b);
        self.scale = scale;
        self.zero_count = self.zero_count.saturating_add(other.zero_count);
        self.zero_threshold = self.zero_threshold.max(other.zero_threshold);
        self.sum += other.sum;
        self.count = self.count.saturating_add(other.count);
    }

    /// The same counts as a classic histogram. Exponential bucket boundaries are exact powers
    /// of the base, so the classic buckets hold exactly the same observations; only the
    /// bucket layout is fixed per point instead of shared by the family.
    pub fn to_classic(&self) -> Hist {
        // Bucket `i` covers (base^i, base^(i+1)] with base = 2^(2^-scale).
        let step = 2f64.powi(-self.scale);
        let bound = |i: i32| (f64::from(i) * step).exp2();
        let mut bounds: Vec<f64> = Vec::new();
        let mut counts: Vec<u64> = Vec::new();
        let mut push = |le: f64, c: u64| {
            if le.is_nan() || le == f64::INFINITY {
                return;
            }
            match bounds.last() {
                // A non-increasing bound (a zero threshold wider than the first bucket, or
                // bounds that collapsed in floating point) joins the previous bucket.
                Some(last) if le <= *last => {
                    if let Some(prev) = counts.last_mut() {
                        *prev += c;
                    }
                }
                _ => {
                    bounds.push(le);
                    counts.push(c);
                }
            }
        };
        let neg = &self.negative;
        for (i, c) in neg.counts.iter().enumerate().rev() {
            push(-bound(neg.offset.saturating_add(i as i32)), *c);
        }
        if self.zero_count > 0 || !neg.counts.is_empty() {
            push(self.zero_threshold, self.zero_count);
        }
        let pos = &self.positive;
        for (i, c) in pos.counts.iter().enumerate() {
            push(
                bound(pos.offset.saturating_add(i as i32).saturating_add(1)),
                *c,
            );
        }
        Hist {
            bounds,
            counts,
            sum: self.sum,
            count: self.count,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SummaryValue {
    /// (quantile, value), sorted by quantile.
    pub quantiles: Vec<(f64, f64)>,
    pub sum: f64,
    pub count: u64,
}

/// One incoming data point, already named and labelled.
#[derive(Debug)]
pub enum Point {
    Number(f64),
    Histogram(Hist),
    Exponential(ExpHist),
    Summary(SummaryValue),
    /// The sender marked the series as gone (`NoRecordedValue`).
    Stale,
}

#[derive(Debug)]
pub struct Update {
    pub family: Arc<str>,
    pub kind: Kind,
    pub help: Arc<str>,
    pub labels: Labels,
    pub resource: Arc<Resource>,
    pub temporality: Temporality,
    pub start_ns: u64,
    pub time_ns: u64,
    pub point: Point,
}

#[derive(Debug, Clone)]
pub enum Value {
    Number(f64),
    Histogram(Hist),
    /// The exponential form (for merging deltas) and its classic rendering.
    Exponential(ExpHist, Hist),
    Summary(SummaryValue),
}

impl Value {
    fn from_point(p: Point) -> Option<Value> {
        Some(match p {
            Point::Number(v) => Value::Number(v),
            Point::Histogram(h) => Value::Histogram(h),
            Point::Exponential(e) => {
                let classic = e.to_classic();
                Value::Exponential(e, classic)
            }
            Point::Summary(s) => Value::Summary(s),
            Point::Stale => return None,
        })
    }

    /// Adds a delta; false when the shapes do not match (the caller then replaces).
    fn add(&mut self, p: &Point) -> bool {
        match (self, p) {
            (Value::Number(a), Point::Number(b)) => {
                *a += b;
                true
            }
            (Value::Histogram(a), Point::Histogram(b)) => a.add(b),
            (Value::Exponential(a, classic), Point::Exponential(b)) => {
                a.add(b);
                *classic = a.to_classic();
                true
            }
            _ => false,
        }
    }
}

#[derive(Debug)]
pub struct Series {
    pub escaped: Option<String>,
    pub resource: Arc<Resource>,
    pub start_ns: u64,
    pub time_ns: u64,
    pub updated: Instant,
    pub value: Value,
}

#[derive(Debug)]
pub struct Family {
    pub kind: Kind,
    pub help: Arc<str>,
    /// By the `key` form of the labels.
    pub series: BTreeMap<String, Series>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The family already exists with another Prometheus type.
    TypeConflict,
    /// Older than the stored point.
    OutOfOrder,
    /// A delta starting before the end of what was already accumulated.
    MisalignedDelta,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Stored,
    Removed,
    Dropped(DropReason),
}

#[derive(Debug)]
pub struct Store {
    pub families: BTreeMap<Arc<str>, Family>,
    last_sweep: Instant,
}

impl Store {
    pub fn new(now: Instant) -> Store {
        Store {
            families: BTreeMap::new(),
            last_sweep: now,
        }
    }

    pub fn series_count(&self) -> usize {
        self.families.values().map(|f| f.series.len()).sum()
    }

    pub fn apply(&mut self, u: Update, now: Instant) -> Outcome {
        if matches!(u.point, Point::Stale) {
            if let Some(f) = self.families.get_mut(&*u.family) {
                f.series.remove(&u.labels.key);
                if f.series.is_empty() {
                    self.families.remove(&*u.family);
                }
            }
            return Outcome::Removed;
        }
        let fam = self
            .families
            .entry(u.family.clone())
            .or_insert_with(|| Family {
                kind: u.kind,
                help: u.help.clone(),
                series: BTreeMap::new(),
            });
        if fam.kind != u.kind {
            return Outcome::Dropped(DropReason::TypeConflict);
        }
        let Some(series) = fam.series.get_mut(&u.labels.key) else {
            if let Some(value) = Value::from_point(u.point) {
                fam.series.insert(
                    u.labels.key,
                    Series {
                        escaped: u.labels.escaped,
                        resource: u.resource,
                        start_ns: u.start_ns,
                        time_ns: u.time_ns,
                        updated: now,
                        value,
                    },
                );
            }
            return Outcome::Stored;
        };
        match u.temporality {
            Temporality::Cumulative => {
                if u.time_ns < series.time_ns {
                    return Outcome::Dropped(DropReason::OutOfOrder);
                }
                series.start_ns = u.start_ns;
            }
            Temporality::Delta => {
                if u.start_ns == series.time_ns && series.value.add(&u.point) {
                    series.time_ns = u.time_ns;
                    series.updated = now;
                    series.resource = u.resource;
                    return Outcome::Stored;
                }
                if u.start_ns < series.time_ns {
                    return Outcome::Dropped(DropReason::MisalignedDelta);
                }
                // A gap (or a new bucket layout) means the sender restarted: start over.
                series.start_ns = u.start_ns;
            }
        }
        if let Some(value) = Value::from_point(u.point) {
            series.value = value;
        }
        series.time_ns = u.time_ns;
        series.updated = now;
        series.resource = u.resource;
        Outcome::Stored
    }

    /// Removes series not updated for longer than `ttl`; returns how many.
    pub fn sweep(&mut self, now: Instant, ttl: Duration) -> usize {
        let mut removed = 0;
        self.families.retain(|_, f| {
            let before = f.series.len();
            f.series
                .retain(|_, s| now.saturating_duration_since(s.updated) <= ttl);
            removed += before - f.series.len();
            !f.series.is_empty()
        });
        self.last_sweep = now;
        removed
    }

    /// Sweeping walks every series, so consume does it only now and then; a scrape always does.
    pub fn sweep_due(&self, now: Instant, ttl: Duration) -> bool {
        now.saturating_duration_since(self.last_sweep) >= ttl.min(Duration::from_secs(10))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upd(kind: Kind, t: Temporality, start: u64, time: u64, point: Point) -> Update {
        Update {
            family: Arc::from("f"),
            kind,
            help: Arc::from(""),
            labels: Labels {
                key: "a=\"1\"".into(),
                escaped: None,
            },
            resource: Arc::new(Resource {
                key: String::new(),
                labels: Labels {
                    key: String::new(),
                    escaped: None,
                },
            }),
            temporality: t,
            start_ns: start,
            time_ns: time,
            point,
        }
    }

    fn number(s: &Store) -> f64 {
        match &s.families["f"].series["a=\"1\""].value {
            Value::Number(v) => *v,
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn deltas_accumulate_reset_and_drop_overlaps() {
        let now = Instant::now();
        let mut s = Store::new(now);
        let d = Temporality::Delta;
        assert_eq!(
            s.apply(upd(Kind::Counter, d, 0, 10, Point::Number(2.0)), now),
            Outcome::Stored
        );
        assert_eq!(
            s.apply(upd(Kind::Counter, d, 10, 20, Point::Number(3.0)), now),
            Outcome::Stored
        );
        assert_eq!(number(&s), 5.0);
        // Overlaps what was already counted (a resend): dropped.
        assert_eq!(
            s.apply(upd(Kind::Counter, d, 10, 20, Point::Number(3.0)), now),
            Outcome::Dropped(DropReason::MisalignedDelta)
        );
        assert_eq!(number(&s), 5.0);
        // A gap: the sender restarted.
        s.apply(upd(Kind::Counter, d, 30, 40, Point::Number(1.0)), now);
        assert_eq!(number(&s), 1.0);
        assert_eq!(s.families["f"].series["a=\"1\""].start_ns, 30);
    }

    #[test]
    fn cumulative_keeps_the_latest_and_conflicts_are_refused() {
        let now = Instant::now();
        let mut s = Store::new(now);
        let c = Temporality::Cumulative;
        s.apply(upd(Kind::Gauge, c, 0, 20, Point::Number(2.0)), now);
        assert_eq!(
            s.apply(upd(Kind::Gauge, c, 0, 10, Point::Number(9.0)), now),
            Outcome::Dropped(DropReason::OutOfOrder)
        );
        assert_eq!(number(&s), 2.0);
        assert_eq!(
            s.apply(upd(Kind::Counter, c, 0, 30, Point::Number(9.0)), now),
            Outcome::Dropped(DropReason::TypeConflict)
        );
        assert_eq!(
            s.apply(upd(Kind::Gauge, c, 0, 30, Point::Stale), now),
            Outcome::Removed
        );
        assert!(s.families.is_empty());
    }

    #[test]
    fn delta_histograms_add_when_bounds_match() {
        let now = Instant::now();
        let mut s = Store::new(now);
        let d = Temporality::Delta;
        let h = |counts: &[u64], bounds: &[f64]| {
            Point::Histogram(Hist::from_otlp(bounds, counts, 1.5, counts.iter().sum()))
        };
        s.apply(
            upd(Kind::Histogram, d, 0, 10, h(&[1, 2, 3], &[1.0, 2.0])),
            now,
        );
        s.apply(
            upd(Kind::Histogram, d, 10, 20, h(&[1, 0, 1], &[1.0, 2.0])),
            now,
        );
        let get = |s: &Store| match &s.families["f"].series["a=\"1\""].value {
            Value::Histogram(h) => h.clone(),
            v => panic!("{v:?}"),
        };
        assert_eq!(get(&s).counts, vec![2, 2]);
        assert_eq!(get(&s).count, 8);
        assert_eq!(get(&s).sum, 3.0);
        // New bounds: the layout changed, so start over with the new point.
        s.apply(upd(Kind::Histogram, d, 20, 30, h(&[4, 1], &[5.0])), now);
        assert_eq!(get(&s).bounds, vec![5.0]);
        assert_eq!(get(&s).count, 5);
    }

    #[test]
    fn explicit_bounds_are_sorted_and_deduplicated() {
        let h = Hist::from_otlp(&[2.0, 1.0, 2.0, f64::INFINITY], &[5, 6, 7, 8, 9], 0.0, 35);
        assert_eq!(h.bounds, vec![1.0, 2.0]);
        assert_eq!(h.counts, vec![6, 5]);
    }

    #[test]
    fn exponential_histograms_become_exact_classic_buckets() {
        let e = ExpHist {
            scale: 0,
            zero_count: 1,
            zero_threshold: 0.0,
            positive: ExpBuckets {
                offset: 0,
                counts: vec![2, 3],
            },
            negative: ExpBuckets {
                offset: 1,
                counts: vec![4],
            },
            sum: 0.0,
            count: 10,
        };
        let c = e.to_classic();
        // negative bucket 1 = [-4, -2), zero, (1, 2], (2, 4]
        assert_eq!(c.bounds, vec![-2.0, 0.0, 2.0, 4.0]);
        assert_eq!(c.counts, vec![4, 1, 2, 3]);
    }

    #[test]
    fn exponential_deltas_merge_across_scales() {
        let mut a = ExpHist {
            scale: 1,
            zero_count: 0,
            zero_threshold: 0.0,
            positive: ExpBuckets {
                offset: -1,
                counts: vec![1, 1, 1, 1],
            },
            negative: ExpBuckets::default(),
            sum: 1.0,
            count: 4,
        };
        let b = ExpHist {
            scale: 0,
            zero_count: 2,
            zero_threshold: 0.001,
            positive: ExpBuckets {
                offset: 1,
                counts: vec![5],
            },
            negative: ExpBuckets::default(),
            sum: 2.0,
            count: 7,
        };
        a.add(&b);
        assert_eq!(a.scale, 0);
        // scale 1 indexes -1,0,1,2 -> scale 0 indexes -1,0,0,1
        assert_eq!(
            a.positive,
            ExpBuckets {
                offset: -1,
                counts: vec![1, 2, 6]
            }
        );
        assert_eq!(a.count, 11);
        assert_eq!(a.zero_count, 2);
        assert_eq!(a.zero_threshold, 0.001);
    }

    #[test]
    fn sweep_removes_what_was_not_updated() {
        let now = Instant::now();
        let mut s = Store::new(now);
        s.apply(
            upd(
                Kind::Gauge,
                Temporality::Cumulative,
                0,
                1,
                Point::Number(1.0),
            ),
            now,
        );
        assert_eq!(
            s.sweep(now + Duration::from_secs(60), Duration::from_secs(300)),
            0
        );
        assert_eq!(s.series_count(), 1);
        assert_eq!(
            s.sweep(now + Duration::from_secs(301), Duration::from_secs(300)),
            1
        );
        assert!(s.families.is_empty());
    }
}
