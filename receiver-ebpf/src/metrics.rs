//! HTTP request metrics from spans: duration and body-size histograms per process, method,
//! status and route, aggregated in memory with cumulative temporality and exported as one
//! OTLP request whenever the caller asks (its metrics interval).
//!
//! Cardinality is capped: past `max_series` new attribute sets go to one overflow series per
//! process and span kind, marked `otel.metric.overflow=true` as the OpenTelemetry SDKs do, and
//! every measurement that lands there is counted.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use pipeline_core::otlp::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use pipeline_core::otlp::tonic::common::v1::KeyValue;
use pipeline_core::otlp::tonic::metrics::v1::{
    metric, AggregationTemporality, Histogram, HistogramDataPoint, Metric, ResourceMetrics,
    ScopeMetrics,
};

use crate::http::FastHash;
use crate::spans::{
    kv_bool, kv_int, kv_str, normalize_method, scope, ProcessMeta, SpanKind, SpanRecord,
};

/// OBI's default duration buckets, in seconds.
pub const DURATION_BOUNDS: [f64; 15] = [
    0.0, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];
/// OBI's default body-size buckets, in bytes.
pub const SIZE_BOUNDS: [f64; 10] = [
    0.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0,
];

#[derive(Debug, Clone)]
pub struct MetricsConfig {
    /// Most attribute sets (series) kept, over all processes and kinds.
    pub max_series: usize,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig { max_series: 5000 }
    }
}

#[derive(Debug, Clone)]
struct Hist {
    counts: Vec<u64>,
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
}

impl Hist {
    fn new(bounds: &[f64]) -> Hist {
        Hist {
            counts: vec![0; bounds.len() + 1],
            count: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }

    /// Bucket i holds values in (bounds[i-1], bounds[i]], the last one everything above.
    fn record(&mut self, bounds: &[f64], v: f64) {
        let i = bounds.partition_point(|b| *b < v);
        self.counts[i] += 1;
        self.count += 1;
        self.sum += v;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }

    fn point(
        &self,
        bounds: &[f64],
        attrs: &[KeyValue],
        start: u64,
        now: u64,
    ) -> HistogramDataPoint {
        HistogramDataPoint {
            attributes: attrs.to_vec(),
            start_time_unix_nano: start,
            time_unix_nano: now,
            count: self.count,
            sum: Some(self.sum),
            bucket_counts: self.counts.clone(),
            explicit_bounds: bounds.to_vec(),
            min: (self.count > 0).then_some(self.min),
            max: (self.count > 0).then_some(self.max),
            ..Default::default()
        }
    }
}

#[derive(Debug)]
struct Series {
    pid: u32,
    kind: SpanKind,
    /// `None` for an overflow series.
    key: Option<(GroupKey, String)>,
    attrs: Vec<KeyValue>,
    start_unix_nano: u64,
    duration: Hist,
    request_size: Hist,
    response_size: Hist,
}

/// Attributes other than the route, which is looked up by `&str` in a nested map so a known
/// series costs no allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct GroupKey {
    pid: u32,
    kind: SpanKind,
    method: &'static str,
    status: u16,
}

pub struct HttpMetrics {
    max_series: usize,
    /// Group keys are bounded and come from the kernel and the method table: a fast hash.
    /// Routes come from peers: the default, DoS-resistant one.
    index: HashMap<GroupKey, HashMap<String, usize>, FastHash>,
    overflow: HashMap<(u32, SpanKind), usize>,
    series: Vec<Series>,
    processes: HashMap<u32, Arc<ProcessMeta>, FastHash>,
    gone: HashSet<u32>,
    overflowed: u64,
    /// The series the last span went to, by its group key: spans come in runs of the same
    /// series, and this skips hashing the route for them.
    last: Option<(GroupKey, usize)>,
}

fn static_method(m: &str) -> &'static str {
    match normalize_method(m) {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "CONNECT" => "CONNECT",
        "OPTIONS" => "OPTIONS",
        "TRACE" => "TRACE",
        "PATCH" => "PATCH",
        "QUERY" => "QUERY",
        _ => crate::spans::OTHER_METHOD,
    }
}

impl HttpMetrics {
    pub fn new(config: MetricsConfig) -> HttpMetrics {
        HttpMetrics {
            max_series: config.max_series,
            index: HashMap::default(),
            overflow: HashMap::new(),
            series: Vec::new(),
            processes: HashMap::default(),
            gone: HashSet::new(),
            overflowed: 0,
            last: None,
        }
    }

    /// Series currently kept (overflow series included).
    pub fn series_count(&self) -> usize {
        self.series.len()
    }

    /// Measurements recorded into an overflow series because of the cap.
    pub fn overflowed(&self) -> u64 {
        self.overflowed
    }

    pub fn record(&mut self, span: &SpanRecord) {
        let pid = span.process.info.pid;
        match self.processes.get(&pid) {
            Some(p) if Arc::ptr_eq(p, &span.process) => {}
            _ => {
                self.processes.insert(pid, span.process.clone());
            }
        }
        let key = GroupKey {
            pid,
            kind: span.kind,
            method: static_method(&span.exchange.method),
            status: span.status,
        };
        let same = |(k, i): &(GroupKey, usize)| {
            *k == key
                && matches!(&self.series[*i].key, Some((_, r)) if r.as_str() == span.route.as_str())
        };
        let idx = match self.last.as_ref().filter(|l| same(l)) {
            Some(&(_, i)) => i,
            None => {
                let i = match self
                    .index
                    .get(&key)
                    .and_then(|m| m.get(span.route.as_str()))
                {
                    Some(&i) => i,
                    None => self.new_series(key, &span.route, span.start_unix_nano),
                };
                self.last = Some((key, i));
                i
            }
        };
        let s = &mut self.series[idx];
        s.duration
            .record(&DURATION_BOUNDS, span.total_ns() as f64 / 1e9);
        s.request_size
            .record(&SIZE_BOUNDS, span.exchange.request_body_size as f64);
        s.response_size
            .record(&SIZE_BOUNDS, span.exchange.response_body_size as f64);
    }

    pub fn record_all(&mut self, spans: &[SpanRecord]) {
        for s in spans {
            self.record(s);
        }
    }

    fn new_series(&mut self, key: GroupKey, route: &str, start: u64) -> usize {
        if self.series.len() >= self.max_series {
            self.overflowed += 1;
            if let Some(&i) = self.overflow.get(&(key.pid, key.kind)) {
                return i;
            }
            let attrs = vec![kv_bool("otel.metric.overflow", true)];
            let i = self.push_series(key.pid, key.kind, None, attrs, start);
            self.overflow.insert((key.pid, key.kind), i);
            return i;
        }
        let mut attrs = vec![kv_str("http.request.method", key.method)];
        if key.status != 0 {
            attrs.push(kv_int("http.response.status_code", i64::from(key.status)));
        }
        attrs.push(kv_str("http.route", route));
        let i = self.push_series(
            key.pid,
            key.kind,
            Some((key, route.to_string())),
            attrs,
            start,
        );
        self.index
            .entry(key)
            .or_default()
            .insert(route.to_string(), i);
        i
    }

    fn push_series(
        &mut self,
        pid: u32,
        kind: SpanKind,
        key: Option<(GroupKey, String)>,
        attrs: Vec<KeyValue>,
        start: u64,
    ) -> usize {
        self.series.push(Series {
            pid,
            kind,
            key,
            attrs,
            start_unix_nano: start,
            duration: Hist::new(&DURATION_BOUNDS),
            request_size: Hist::new(&SIZE_BOUNDS),
            response_size: Hist::new(&SIZE_BOUNDS),
        });
        self.series.len() - 1
    }

    /// The process exited: its series are exported once more, then dropped.
    pub fn remove_process(&mut self, pid: u32) {
        self.gone.insert(pid);
    }

    /// Everything recorded so far (cumulative), one `ResourceMetrics` per process; `None` when
    /// nothing was ever recorded.
    pub fn export(&mut self, now_unix_nano: u64) -> Option<ExportMetricsServiceRequest> {
        if self.series.is_empty() {
            self.gone.clear();
            return None;
        }
        let mut pids: Vec<u32> = Vec::new();
        for s in &self.series {
            if !pids.contains(&s.pid) {
                pids.push(s.pid);
            }
        }
        let mut resource_metrics = Vec::with_capacity(pids.len());
        for pid in pids {
            let mut metrics = Vec::new();
            for kind in [SpanKind::Server, SpanKind::Client] {
                let of_kind: Vec<&Series> = self
                    .series
                    .iter()
                    .filter(|s| s.pid == pid && s.kind == kind)
                    .collect();
                if of_kind.is_empty() {
                    continue;
                }
                let side = match kind {
                    SpanKind::Server => "server",
                    SpanKind::Client => "client",
                };
                let hist =
                    |name: &str,
                     desc: &str,
                     unit: &str,
                     pick: &dyn Fn(&Series) -> HistogramDataPoint| Metric {
                        name: name.into(),
                        description: desc.into(),
                        unit: unit.into(),
                        data: Some(metric::Data::Histogram(Histogram {
                            data_points: of_kind.iter().map(|s| pick(s)).collect(),
                            aggregation_temporality: AggregationTemporality::Cumulative as i32,
                        })),
                        ..Default::default()
                    };
                metrics.push(hist(
                    &format!("http.{side}.request.duration"),
                    &format!("Duration of HTTP {side} requests."),
                    "s",
                    &|s| {
                        s.duration.point(
                            &DURATION_BOUNDS,
                            &s.attrs,
                            s.start_unix_nano,
                            now_unix_nano,
                        )
                    },
                ));
                metrics.push(hist(
                    &format!("http.{side}.request.body.size"),
                    &format!("Size of HTTP {side} request bodies."),
                    "By",
                    &|s| {
                        s.request_size.point(
                            &SIZE_BOUNDS,
                            &s.attrs,
                            s.start_unix_nano,
                            now_unix_nano,
                        )
                    },
                ));
                metrics.push(hist(
                    &format!("http.{side}.response.body.size"),
                    &format!("Size of HTTP {side} response bodies."),
                    "By",
                    &|s| {
                        s.response_size.point(
                            &SIZE_BOUNDS,
                            &s.attrs,
                            s.start_unix_nano,
                            now_unix_nano,
                        )
                    },
                ));
            }
            resource_metrics.push(ResourceMetrics {
                resource: self.processes.get(&pid).map(|p| p.resource.clone()),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(scope()),
                    metrics,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            });
        }
        self.drop_gone();
        Some(ExportMetricsServiceRequest { resource_metrics })
    }

    fn drop_gone(&mut self) {
        if self.gone.is_empty() {
            return;
        }
        let gone = std::mem::take(&mut self.gone);
        self.series.retain(|s| !gone.contains(&s.pid));
        self.last = None;
        for pid in &gone {
            self.processes.remove(pid);
        }
        // Indices point into `series`: rebuild them.
        self.index.clear();
        self.overflow.clear();
        for (i, s) in self.series.iter().enumerate() {
            match &s.key {
                None => {
                    self.overflow.insert((s.pid, s.kind), i);
                }
                Some((key, route)) => {
                    self.index.entry(*key).or_default().insert(route.clone(), i);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linker::ParentKind;
    use crate::model::{ConnKey, HttpExchange, Outcome, Role, Tuple};
    use crate::spans::{HostInfo, ProcessInfo};
    use pipeline_core::otlp::tonic::common::v1::any_value::Value;

    const MS: u64 = 1_000_000;

    fn meta(pid: u32) -> Arc<ProcessMeta> {
        let info = ProcessInfo {
            pid,
            exe_name: format!("svc{pid}"),
            ..ProcessInfo::default()
        };
        Arc::new(ProcessMeta::new(info, &HostInfo::default(), "sonde"))
    }

    fn span(
        process: &Arc<ProcessMeta>,
        kind: SpanKind,
        method: &str,
        status: u16,
        route: &str,
        total: u64,
        sizes: (u64, u64),
    ) -> SpanRecord {
        SpanRecord {
            kind,
            trace_id: [1; 16],
            span_id: [2; 8],
            parent_span_id: None,
            trace_flags: 1,
            parent: ParentKind::None,
            process: process.clone(),
            peer_service: None,
            path: route.into(),
            route: route.into(),
            status,
            start_unix_nano: 1_000 * MS,
            request_start_unix_nano: 1_000 * MS,
            end_unix_nano: 1_000 * MS + total,
            exchange: Box::new(HttpExchange {
                conn: ConnKey {
                    pid: process.info.pid,
                    sock_id: 1,
                },
                tid: 1,
                role: Role::Server,
                tuple: Tuple {
                    local: "127.0.0.1:80".parse().expect("addr"),
                    remote: "127.0.0.1:5000".parse().expect("addr"),
                },
                seq: 0,
                method: method.into(),
                target: route.into(),
                version: "HTTP/1.1".into(),
                host: None,
                traceparent: None,
                user_agent: None,
                status,
                request_body_size: sizes.0,
                response_body_size: sizes.1,
                request_head_size: 0,
                response_head_size: 0,
                conn_start_ts: None,
                request_start_ts: 0,
                response_start_ts: 0,
                end_ts: 0,
                outcome: Outcome::Complete,
                comm: "x".into(),
            }),
        }
    }

    fn attrs(p: &HistogramDataPoint) -> Vec<(String, String)> {
        p.attributes
            .iter()
            .map(|kv| {
                let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                    Some(Value::StringValue(s)) => s.clone(),
                    Some(Value::IntValue(i)) => i.to_string(),
                    Some(Value::BoolValue(b)) => b.to_string(),
                    other => format!("{other:?}"),
                };
                (kv.key.clone(), v)
            })
            .collect()
    }

    fn histogram<'a>(req: &'a ExportMetricsServiceRequest, rm: usize, name: &str) -> &'a Metric {
        req.resource_metrics[rm].scope_metrics[0]
            .metrics
            .iter()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("no {name}"))
    }

    fn points(m: &Metric) -> &[HistogramDataPoint] {
        match &m.data {
            Some(metric::Data::Histogram(h)) => {
                assert_eq!(
                    h.aggregation_temporality,
                    AggregationTemporality::Cumulative as i32
                );
                &h.data_points
            }
            other => panic!("not a histogram: {other:?}"),
        }
    }

    #[test]
    fn histograms_per_attribute_set_cumulative() {
        let p = meta(1);
        let mut m = HttpMetrics::new(MetricsConfig::default());
        assert!(m.export(5_000 * MS).is_none(), "nothing recorded yet");
        m.record(&span(
            &p,
            SpanKind::Server,
            "GET",
            200,
            "/a",
            3 * MS,
            (0, 100),
        ));
        m.record(&span(
            &p,
            SpanKind::Server,
            "GET",
            200,
            "/a",
            5 * MS,
            (0, 40),
        ));
        m.record(&span(
            &p,
            SpanKind::Server,
            "GET",
            200,
            "/a",
            12 * MS,
            (10, 9000),
        ));
        m.record(&span(&p, SpanKind::Server, "GET", 404, "/a", MS, (0, 0)));
        m.record(&span(
            &p,
            SpanKind::Client,
            "PROPFIND",
            503,
            "/b",
            20 * 1_000 * MS,
            (0, 0),
        ));
        assert_eq!(m.series_count(), 3);

        let req = m.export(5_000 * MS).expect("export");
        assert_eq!(req.resource_metrics.len(), 1);
        let res = req.resource_metrics[0].resource.as_ref().expect("resource");
        assert!(res.attributes.iter().any(|kv| kv.key == "service.name"));
        let names: Vec<&str> = req.resource_metrics[0].scope_metrics[0]
            .metrics
            .iter()
            .map(|m| m.name.as_str())
            .collect();
        assert_eq!(
            names,
            [
                "http.server.request.duration",
                "http.server.request.body.size",
                "http.server.response.body.size",
                "http.client.request.duration",
                "http.client.request.body.size",
                "http.client.response.body.size",
            ]
        );

        let dur = histogram(&req, 0, "http.server.request.duration");
        assert_eq!(dur.unit, "s");
        let pts = points(dur);
        assert_eq!(pts.len(), 2);
        let ok = &pts[0];
        assert_eq!(
            attrs(ok),
            [
                ("http.request.method".to_string(), "GET".to_string()),
                ("http.response.status_code".into(), "200".into()),
                ("http.route".into(), "/a".into()),
            ]
        );
        assert_eq!(ok.count, 3);
        assert_eq!(ok.explicit_bounds, DURATION_BOUNDS.to_vec());
        // 3 ms and 5 ms fall in (0, .005], 12 ms in (.01, .025].
        let mut want = vec![0u64; 16];
        want[1] = 2;
        want[3] = 1;
        assert_eq!(ok.bucket_counts, want);
        assert!((ok.sum.expect("sum") - 0.020).abs() < 1e-12);
        assert_eq!(ok.min, Some(0.003));
        assert_eq!(ok.max, Some(0.012));
        assert_eq!(ok.start_time_unix_nano, 1_000 * MS);
        assert_eq!(ok.time_unix_nano, 5_000 * MS);

        let resp = points(histogram(&req, 0, "http.server.response.body.size"));
        assert_eq!(
            histogram(&req, 0, "http.server.response.body.size").unit,
            "By"
        );
        // 100 -> (64,128], 40 -> (32,64], 9000 -> above 8192.
        let mut want = vec![0u64; 11];
        want[2] = 1;
        want[3] = 1;
        want[10] = 1;
        assert_eq!(resp[0].bucket_counts, want);
        // A zero-byte body lands in the first bucket, (-inf, 0].
        assert_eq!(resp[1].bucket_counts[0], 1);

        let client = points(histogram(&req, 0, "http.client.request.duration"));
        assert_eq!(
            client[0].bucket_counts[15], 1,
            "20 s is above the last bound"
        );
        assert_eq!(
            attrs(&client[0])[0],
            ("http.request.method".to_string(), "_OTHER".to_string())
        );

        // Cumulative: the next export still counts everything.
        m.record(&span(
            &p,
            SpanKind::Server,
            "GET",
            200,
            "/a",
            3 * MS,
            (0, 0),
        ));
        let req = m.export(10_000 * MS).expect("export");
        let pts = points(histogram(&req, 0, "http.server.request.duration"));
        assert_eq!(pts[0].count, 4);
        assert_eq!(pts[0].start_time_unix_nano, 1_000 * MS);
    }

    #[test]
    fn cardinality_is_capped_and_counted() {
        let p = meta(1);
        let mut m = HttpMetrics::new(MetricsConfig { max_series: 3 });
        for i in 0..10 {
            m.record(&span(
                &p,
                SpanKind::Server,
                "GET",
                200,
                &format!("/r{i}"),
                MS,
                (0, 0),
            ));
        }
        assert_eq!(m.series_count(), 4, "3 series plus one overflow series");
        assert_eq!(m.overflowed(), 7);
        // Known series keep counting normally.
        m.record(&span(&p, SpanKind::Server, "GET", 200, "/r0", MS, (0, 0)));
        assert_eq!(m.overflowed(), 7);
        let req = m.export(2_000 * MS).expect("export");
        let pts = points(histogram(&req, 0, "http.server.request.duration"));
        let over = pts
            .iter()
            .find(|p| attrs(p) == [("otel.metric.overflow".to_string(), "true".to_string())])
            .expect("overflow series");
        assert_eq!(over.count, 7);
        assert_eq!(pts.iter().map(|p| p.count).sum::<u64>(), 11);
    }

    #[test]
    fn exited_processes_are_exported_once_more_then_dropped() {
        let (a, b) = (meta(1), meta(2));
        let mut m = HttpMetrics::new(MetricsConfig::default());
        m.record(&span(&a, SpanKind::Server, "GET", 200, "/a", MS, (0, 0)));
        m.record(&span(&b, SpanKind::Server, "GET", 200, "/b", MS, (0, 0)));
        m.record(&span(&b, SpanKind::Server, "GET", 500, "/b", MS, (0, 0)));
        m.remove_process(1);
        let req = m.export(2_000 * MS).expect("export");
        assert_eq!(req.resource_metrics.len(), 2);
        assert_eq!(m.series_count(), 2);
        // The survivors' series still work after the index is rebuilt.
        m.record(&span(&b, SpanKind::Server, "GET", 500, "/b", MS, (0, 0)));
        assert_eq!(m.series_count(), 2);
        let req = m.export(3_000 * MS).expect("export");
        assert_eq!(req.resource_metrics.len(), 1);
        let pts = points(histogram(&req, 0, "http.server.request.duration"));
        assert_eq!(pts.iter().map(|p| p.count).collect::<Vec<_>>(), [1, 2]);
    }
}
