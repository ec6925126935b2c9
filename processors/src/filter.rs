//! `filter`: drops telemetry for which an OTTL condition is true, like the reference
//! collector's filter processor.
//!
//! Conditions are ORed; a matching item is DROPPED (this processor never "keeps only"). A scope
//! left without items and a resource left without scopes are removed; dropping every data point
//! of a metric drops the metric, dropping every event of a span keeps the span. A condition that
//! fails on an item does not drop it; `error_mode: propagate` refuses the whole payload instead.
//! If everything is dropped, the sender still gets success and nothing goes downstream.
//!
//! Conditions are compiled when the config is parsed, so a bad condition fails `validate` with
//! its config path and column. At run time a first, read-only pass decides what to drop; when
//! nothing is, the payload goes on exactly as received (still encoded, never copied). Only when
//! something is dropped is the data copied-on-write and rewritten. A condition that reads only
//! resource (or scope) fields is evaluated once per resource (scope) instead of once per item.

use std::fmt::Write as _;
use std::sync::Arc;

use async_trait::async_trait;
use ottl::{Condition, ContextKind, DataPoint, EvalContext, EvalError, PathStyle};
use pipeline_core::otlp::tonic::collector::logs::v1::ExportLogsServiceRequest;
use pipeline_core::otlp::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use pipeline_core::otlp::tonic::collector::trace::v1::ExportTraceServiceRequest;
use pipeline_core::otlp::tonic::metrics::v1::{metric, Metric};
use pipeline_core::telemetry::ProcessorMetrics;
use pipeline_core::{
    parse_component, ComponentError, ComponentId, ConfigError, ConsumeError, Consumer, Lifecycle,
    Payload, PipelineId, Processor, ProcessorConfig, ProcessorContext, ProcessorFactory, Signal,
    Validate,
};
use serde::Deserialize;

pub const FACTORY: ProcessorFactory = ProcessorFactory {
    type_name: "filter",
    signals: &[Signal::Traces, Signal::Metrics, Signal::Logs],
    parse: |v, path| Ok(Box::new(FilterConfig::parse(v, path)?)),
};

/// What a failing condition does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorMode {
    /// Keep the item, log the error (once per payload), go on.
    #[default]
    Ignore,
    /// Keep the item, say nothing.
    Silent,
    /// Refuse the payload with a permanent error.
    Propagate,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TraceConditions {
    pub resource: Vec<String>,
    pub span: Vec<String>,
    pub spanevent: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricConditions {
    pub metric: Vec<String>,
    pub datapoint: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConditions {
    pub log_record: Vec<String>,
}

/// An entry of `trace_conditions` / `metric_conditions` / `log_conditions`: a condition whose
/// context is inferred from its path prefixes, or a group sharing a context and error mode.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ConditionEntry {
    Condition(String),
    Group(ConditionGroup),
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConditionGroup {
    /// When set, the group's paths may omit the prefix of this context.
    #[serde(default)]
    pub context: Option<String>,
    pub conditions: Vec<String>,
    #[serde(default)]
    pub error_mode: Option<ErrorMode>,
}

/// The YAML shape.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilterSettings {
    pub error_mode: ErrorMode,
    pub traces: TraceConditions,
    pub metrics: MetricConditions,
    pub logs: LogConditions,
    pub trace_conditions: Vec<ConditionEntry>,
    pub metric_conditions: Vec<ConditionEntry>,
    pub log_conditions: Vec<ConditionEntry>,
}

impl Validate for FilterSettings {}

struct Cond {
    cond: Condition,
    mode: ErrorMode,
}

/// A signal's conditions, by the level of the OTLP tree they are evaluated at.
#[derive(Default)]
struct Levels {
    resource: Vec<Cond>,
    scope: Vec<Cond>,
    /// Spans, metrics or log records.
    item: Vec<Cond>,
    /// Span-event / data-point conditions that read nothing of the event or point: evaluated
    /// once per span / metric, and when true they drop all of its events / points.
    all_children: Vec<Cond>,
    /// Span events or data points.
    child: Vec<Cond>,
    /// `(context, source)` of every condition, for the start-up summary.
    summary: Vec<(ContextKind, String)>,
}

impl Levels {
    fn is_empty(&self) -> bool {
        self.summary.is_empty()
    }
    fn has_children(&self) -> bool {
        !self.child.is_empty() || !self.all_children.is_empty()
    }
    fn descend_item(&self) -> bool {
        !self.item.is_empty() || self.has_children()
    }
    fn descend_scope(&self) -> bool {
        !self.scope.is_empty() || self.descend_item()
    }

    fn add(&mut self, cond: Condition, mode: ErrorMode) {
        use ContextKind::*;
        self.summary
            .push((cond.context(), cond.source().to_string()));
        let reads = cond.reads_up_to();
        let c = Cond { cond, mode };
        match (c.cond.context(), reads) {
            (Resource, _) | (Scope | Span | Metric | Log, Resource) => self.resource.push(c),
            (Scope, _) | (Span | Metric | Log, Scope) => self.scope.push(c),
            (Span | Metric | Log, _) => self.item.push(c),
            (SpanEvent | DataPoint, r) if r == c.cond.context() => self.child.push(c),
            (SpanEvent | DataPoint, _) => self.all_children.push(c),
        }
    }
}

struct Compiled {
    traces: Levels,
    metrics: Levels,
    logs: Levels,
}

impl Compiled {
    fn for_signal(&self, s: Signal) -> &Levels {
        match s {
            Signal::Traces => &self.traces,
            Signal::Metrics => &self.metrics,
            Signal::Logs => &self.logs,
        }
    }
}

/// Parsed and compiled `filter` config. The compiled conditions are shared by every pipeline
/// the processor appears in.
pub struct FilterConfig {
    pub settings: FilterSettings,
    compiled: Arc<Compiled>,
}

fn ottl_signal(s: Signal) -> ottl::Signal {
    match s {
        Signal::Traces => ottl::Signal::Traces,
        Signal::Metrics => ottl::Signal::Metrics,
        Signal::Logs => ottl::Signal::Logs,
    }
}

fn cond_error(path: String, src: &str, e: impl std::fmt::Display) -> ConfigError {
    ConfigError::new(path, format!("{e} (condition: {src})"))
}

fn compile_legacy(
    levels: &mut Levels,
    list: &[String],
    context: ContextKind,
    mode: ErrorMode,
    path: &str,
) -> Result<(), ConfigError> {
    for (i, src) in list.iter().enumerate() {
        let c = Condition::parse(src, context)
            .map_err(|e| cond_error(format!("{path}[{i}]"), src, e))?;
        levels.add(c, mode);
    }
    Ok(())
}

fn compile_flat(
    levels: &mut Levels,
    entries: &[ConditionEntry],
    signal: Signal,
    default_mode: ErrorMode,
    path: &str,
) -> Result<(), ConfigError> {
    let os = ottl_signal(signal);
    for (i, entry) in entries.iter().enumerate() {
        match entry {
            ConditionEntry::Condition(src) => {
                let c = Condition::parse_inferred(src, os)
                    .map_err(|e| cond_error(format!("{path}[{i}]"), src, e))?;
                levels.add(c, default_mode);
            }
            ConditionEntry::Group(g) => {
                let gpath = format!("{path}[{i}]");
                let mode = g.error_mode.unwrap_or(default_mode);
                let (context, style) = match &g.context {
                    Some(name) => {
                        let k = ContextKind::from_name(name)
                            .filter(|k| os.contexts().contains(k))
                            .ok_or_else(|| {
                                let valid: Vec<&str> =
                                    os.contexts().iter().map(|k| k.name()).collect();
                                ConfigError::new(
                                    format!("{gpath}::context"),
                                    format!(
                                        "unknown context {name:?} for {signal}, valid options are: {}",
                                        valid.join(", ")
                                    ),
                                )
                            })?;
                        (k, PathStyle::Legacy)
                    }
                    None => {
                        // One context for the whole group: the deepest any condition needs.
                        let mut deepest: Option<ContextKind> = None;
                        for (j, src) in g.conditions.iter().enumerate() {
                            let k = ottl::infer_context(src, os).map_err(|e| {
                                cond_error(format!("{gpath}::conditions[{j}]"), src, e)
                            })?;
                            if deepest.is_none_or(|d| k.depth() > d.depth()) {
                                deepest = Some(k);
                            }
                        }
                        match deepest {
                            Some(k) => (k, PathStyle::Prefixed),
                            None => continue,
                        }
                    }
                };
                for (j, src) in g.conditions.iter().enumerate() {
                    let c = Condition::parse_with(src, context, style)
                        .map_err(|e| cond_error(format!("{gpath}::conditions[{j}]"), src, e))?;
                    levels.add(c, mode);
                }
            }
        }
    }
    Ok(())
}

impl FilterConfig {
    pub fn parse(value: &serde_yaml::Value, path: &str) -> Result<FilterConfig, ConfigError> {
        let settings: FilterSettings = parse_component(value, path)?;
        let mode = settings.error_mode;
        let mut traces = Levels::default();
        let t = &settings.traces;
        compile_legacy(
            &mut traces,
            &t.resource,
            ContextKind::Resource,
            mode,
            &format!("{path}::traces::resource"),
        )?;
        compile_legacy(
            &mut traces,
            &t.span,
            ContextKind::Span,
            mode,
            &format!("{path}::traces::span"),
        )?;
        compile_legacy(
            &mut traces,
            &t.spanevent,
            ContextKind::SpanEvent,
            mode,
            &format!("{path}::traces::spanevent"),
        )?;
        compile_flat(
            &mut traces,
            &settings.trace_conditions,
            Signal::Traces,
            mode,
            &format!("{path}::trace_conditions"),
        )?;
        let mut metrics = Levels::default();
        let m = &settings.metrics;
        compile_legacy(
            &mut metrics,
            &m.metric,
            ContextKind::Metric,
            mode,
            &format!("{path}::metrics::metric"),
        )?;
        compile_legacy(
            &mut metrics,
            &m.datapoint,
            ContextKind::DataPoint,
            mode,
            &format!("{path}::metrics::datapoint"),
        )?;
        compile_flat(
            &mut metrics,
            &settings.metric_conditions,
            Signal::Metrics,
            mode,
            &format!("{path}::metric_conditions"),
        )?;
        let mut logs = Levels::default();
        compile_legacy(
            &mut logs,
            &settings.logs.log_record,
            ContextKind::Log,
            mode,
            &format!("{path}::logs::log_record"),
        )?;
        compile_flat(
            &mut logs,
            &settings.log_conditions,
            Signal::Logs,
            mode,
            &format!("{path}::log_conditions"),
        )?;
        Ok(FilterConfig {
            settings,
            compiled: Arc::new(Compiled {
                traces,
                metrics,
                logs,
            }),
        })
    }

    /// Whether any condition applies to `signal`; without one the processor is a pass-through
    /// for that signal.
    pub fn has_conditions(&self, signal: Signal) -> bool {
        !self.compiled.for_signal(signal).is_empty()
    }
}

/// The warning for a filter placed in a pipeline it has no conditions for (the reference
/// silently passes everything; users often expect the opposite).
pub fn pass_through_warning(id: &ComponentId, signal: Signal) -> String {
    format!("{id} has no {signal} conditions; it passes all {signal} through")
}

fn drop_summary(id: &ComponentId, pipeline: &PipelineId, levels: &Levels) -> String {
    let mut s = format!("{id} in pipeline {pipeline} DROPS every item matching any of:");
    for (ctx, src) in &levels.summary {
        let _ = write!(s, " [{ctx}] {src};");
    }
    s.pop();
    s
}

impl ProcessorConfig for FilterConfig {
    fn build(&self, ctx: ProcessorContext) -> Result<Arc<dyn Processor>, ComponentError> {
        let signal = ctx.pipeline.signal;
        let pipeline = ctx.pipeline.to_string();
        let levels = self.compiled.for_signal(signal);
        if levels.is_empty() {
            tracing::warn!(
                processor = %ctx.id,
                pipeline = %pipeline,
                "{}",
                pass_through_warning(&ctx.id, signal)
            );
        } else {
            tracing::info!("{}", drop_summary(&ctx.id, &ctx.pipeline, levels));
        }
        let metrics = ProcessorMetrics::new(&ctx.telemetry, &ctx.id, &pipeline, signal);
        Ok(Arc::new(FilterProcessor {
            id: ctx.id,
            pipeline,
            signal,
            compiled: self.compiled.clone(),
            next: ctx.next,
            metrics,
        }))
    }
}

pub struct FilterProcessor {
    id: ComponentId,
    pipeline: String,
    signal: Signal,
    compiled: Arc<Compiled>,
    next: Arc<dyn Consumer>,
    metrics: ProcessorMetrics,
}

/// Failures of `ignore`-mode conditions in one payload, reported in one log line.
#[derive(Default)]
struct Errors {
    count: usize,
    first: Option<String>,
}

impl Errors {
    fn record(&mut self, c: &Cond, e: EvalError) -> Result<(), ConsumeError> {
        match c.mode {
            ErrorMode::Propagate => Err(ConsumeError::Permanent(format!(
                "filter condition `{}` failed: {e}",
                c.cond.source()
            ))),
            ErrorMode::Ignore => {
                self.count += 1;
                if self.first.is_none() {
                    self.first = Some(format!("`{}`: {e}", c.cond.source()));
                }
                Ok(())
            }
            ErrorMode::Silent => Ok(()),
        }
    }
}

fn any_match(
    conds: &[Cond],
    cx: &EvalContext<'_>,
    errs: &mut Errors,
) -> Result<bool, ConsumeError> {
    for c in conds {
        match c.cond.eval(cx) {
            Ok(true) => return Ok(true),
            Ok(false) => {}
            Err(e) => errs.record(c, e)?,
        }
    }
    Ok(false)
}

/// Keep/drop decisions in traversal order: resource, its scopes, their items, their children,
/// for exactly the nodes the rewrite pass visits.
#[derive(Default)]
struct Decisions {
    keep: Vec<bool>,
    drops: bool,
}

impl Decisions {
    fn push(&mut self, keep: bool) -> bool {
        self.keep.push(keep);
        self.drops |= !keep;
        keep
    }
}

struct Cursor<'a>(std::slice::Iter<'a, bool>);

impl Cursor<'_> {
    fn next(&mut self) -> bool {
        // Both passes walk the same nodes; should they ever disagree, keeping is the safe side.
        self.0.next().copied().unwrap_or(true)
    }
}

fn decide_traces(
    l: &Levels,
    req: &ExportTraceServiceRequest,
    d: &mut Decisions,
    errs: &mut Errors,
) -> Result<(), ConsumeError> {
    for rs in &req.resource_spans {
        let rcx = EvalContext::new(rs.resource.as_ref(), &rs.schema_url);
        if !d.push(!any_match(&l.resource, &rcx, errs)?) || !l.descend_scope() {
            continue;
        }
        for ss in &rs.scope_spans {
            let scx = rcx.with_scope(ss.scope.as_ref(), &ss.schema_url);
            if !d.push(!any_match(&l.scope, &scx, errs)?) || !l.descend_item() {
                continue;
            }
            for span in &ss.spans {
                let cx = scx.with_span(span);
                if !d.push(!any_match(&l.item, &cx, errs)?) || !l.has_children() {
                    continue;
                }
                let all = !span.events.is_empty() && any_match(&l.all_children, &cx, errs)?;
                for ev in &span.events {
                    let drop = all || any_match(&l.child, &cx.with_span_event(ev), errs)?;
                    d.push(!drop);
                }
            }
        }
    }
    Ok(())
}

fn apply_traces(l: &Levels, req: &mut ExportTraceServiceRequest, keep: &[bool]) {
    let mut cur = Cursor(keep.iter());
    req.resource_spans.retain_mut(|rs| {
        if !cur.next() {
            return false;
        }
        if !l.descend_scope() {
            return true;
        }
        rs.scope_spans.retain_mut(|ss| {
            if !cur.next() {
                return false;
            }
            if !l.descend_item() {
                return true;
            }
            ss.spans.retain_mut(|span| {
                if !cur.next() {
                    return false;
                }
                if l.has_children() {
                    span.events.retain(|_| cur.next());
                }
                true
            });
            !ss.spans.is_empty()
        });
        !rs.scope_spans.is_empty()
    });
}

fn point_count(m: &Metric) -> Option<usize> {
    Some(match m.data.as_ref()? {
        metric::Data::Gauge(g) => g.data_points.len(),
        metric::Data::Sum(s) => s.data_points.len(),
        metric::Data::Histogram(h) => h.data_points.len(),
        metric::Data::ExponentialHistogram(h) => h.data_points.len(),
        metric::Data::Summary(s) => s.data_points.len(),
    })
}

fn point(m: &Metric, i: usize) -> Option<DataPoint<'_>> {
    Some(match m.data.as_ref()? {
        metric::Data::Gauge(g) => DataPoint::Number(g.data_points.get(i)?),
        metric::Data::Sum(s) => DataPoint::Number(s.data_points.get(i)?),
        metric::Data::Histogram(h) => DataPoint::Histogram(h.data_points.get(i)?),
        metric::Data::ExponentialHistogram(h) => {
            DataPoint::ExponentialHistogram(h.data_points.get(i)?)
        }
        metric::Data::Summary(s) => DataPoint::Summary(s.data_points.get(i)?),
    })
}

fn decide_metrics(
    l: &Levels,
    req: &ExportMetricsServiceRequest,
    d: &mut Decisions,
    errs: &mut Errors,
) -> Result<(), ConsumeError> {
    for rm in &req.resource_metrics {
        let rcx = EvalContext::new(rm.resource.as_ref(), &rm.schema_url);
        if !d.push(!any_match(&l.resource, &rcx, errs)?) || !l.descend_scope() {
            continue;
        }
        for sm in &rm.scope_metrics {
            let scx = rcx.with_scope(sm.scope.as_ref(), &sm.schema_url);
            if !d.push(!any_match(&l.scope, &scx, errs)?) || !l.descend_item() {
                continue;
            }
            for m in &sm.metrics {
                let cx = scx.with_metric(m);
                if any_match(&l.item, &cx, errs)? {
                    d.push(false);
                    continue;
                }
                let n = match point_count(m) {
                    Some(n) if l.has_children() => n,
                    // No data-point conditions, or a metric without data: nothing to filter.
                    _ => {
                        d.push(true);
                        continue;
                    }
                };
                // The metric's flag comes first but depends on its points: reserve it.
                let at = d.keep.len();
                d.keep.push(true);
                let all = n > 0 && any_match(&l.all_children, &cx, errs)?;
                let mut kept = 0;
                for i in 0..n {
                    let drop = all
                        || match point(m, i) {
                            Some(p) => any_match(&l.child, &cx.with_data_point(p), errs)?,
                            None => false,
                        };
                    if d.push(!drop) {
                        kept += 1;
                    }
                }
                if kept == 0 {
                    // Dropping every point drops the metric; its point flags are never read.
                    d.keep.truncate(at);
                    d.push(false);
                }
            }
        }
    }
    Ok(())
}

fn retain_points(m: &mut Metric, cur: &mut Cursor<'_>) {
    match &mut m.data {
        None => {}
        Some(metric::Data::Gauge(g)) => g.data_points.retain(|_| cur.next()),
        Some(metric::Data::Sum(s)) => s.data_points.retain(|_| cur.next()),
        Some(metric::Data::Histogram(h)) => h.data_points.retain(|_| cur.next()),
        Some(metric::Data::ExponentialHistogram(h)) => h.data_points.retain(|_| cur.next()),
        Some(metric::Data::Summary(s)) => s.data_points.retain(|_| cur.next()),
    }
}

fn apply_metrics(l: &Levels, req: &mut ExportMetricsServiceRequest, keep: &[bool]) {
    let mut cur = Cursor(keep.iter());
    req.resource_metrics.retain_mut(|rm| {
        if !cur.next() {
            return false;
        }
        if !l.descend_scope() {
            return true;
        }
        rm.scope_metrics.retain_mut(|sm| {
            if !cur.next() {
                return false;
            }
            if !l.descend_item() {
                return true;
            }
            sm.metrics.retain_mut(|m| {
                if !cur.next() {
                    return false;
                }
                if l.has_children() {
                    retain_points(m, &mut cur);
                }
                true
            });
            !sm.metrics.is_empty()
        });
        !rm.scope_metrics.is_empty()
    });
}

fn decide_logs(
    l: &Levels,
    req: &ExportLogsServiceRequest,
    d: &mut Decisions,
    errs: &mut Errors,
) -> Result<(), ConsumeError> {
    for rl in &req.resource_logs {
        let rcx = EvalContext::new(rl.resource.as_ref(), &rl.schema_url);
        if !d.push(!any_match(&l.resource, &rcx, errs)?) || !l.descend_scope() {
            continue;
        }
        for sl in &rl.scope_logs {
            let scx = rcx.with_scope(sl.scope.as_ref(), &sl.schema_url);
            if !d.push(!any_match(&l.scope, &scx, errs)?) || !l.descend_item() {
                continue;
            }
            for log in &sl.log_records {
                d.push(!any_match(&l.item, &scx.with_log(log), errs)?);
            }
        }
    }
    Ok(())
}

fn apply_logs(l: &Levels, req: &mut ExportLogsServiceRequest, keep: &[bool]) {
    let mut cur = Cursor(keep.iter());
    req.resource_logs.retain_mut(|rl| {
        if !cur.next() {
            return false;
        }
        if !l.descend_scope() {
            return true;
        }
        rl.scope_logs.retain_mut(|sl| {
            if !cur.next() {
                return false;
            }
            if !l.descend_item() {
                return true;
            }
            sl.log_records.retain(|_| cur.next());
            !sl.log_records.is_empty()
        });
        !rl.scope_logs.is_empty()
    });
}

fn decode_err(e: impl std::fmt::Display) -> ConsumeError {
    ConsumeError::Permanent(e.to_string())
}

impl FilterProcessor {
    /// Decides on a decoded view of the payload; `None` when nothing is dropped.
    fn decide(&self, l: &Levels, work: &mut Payload) -> Result<Option<Decisions>, ConsumeError> {
        let mut d = Decisions::default();
        let mut errs = Errors::default();
        match self.signal {
            Signal::Traces => {
                decide_traces(l, work.traces().map_err(decode_err)?, &mut d, &mut errs)?
            }
            Signal::Metrics => {
                decide_metrics(l, work.metrics().map_err(decode_err)?, &mut d, &mut errs)?
            }
            Signal::Logs => decide_logs(l, work.logs().map_err(decode_err)?, &mut d, &mut errs)?,
        }
        if let Some(first) = errs.first {
            tracing::warn!(
                processor = %self.id,
                pipeline = %self.pipeline,
                failures = errs.count,
                "filter conditions failed on {} item(s), which were kept; first: {first}",
                errs.count
            );
        }
        Ok(d.drops.then_some(d))
    }

    /// Rewrites `work` in place (copying it first only if another consumer shares it) and
    /// reports whether anything is left.
    fn apply(&self, l: &Levels, work: &mut Payload, d: &Decisions) -> Result<bool, ConsumeError> {
        let left = match self.signal {
            Signal::Traces => {
                let req = Arc::make_mut(work.traces().map_err(decode_err)?);
                apply_traces(l, req, &d.keep);
                !req.resource_spans.is_empty()
            }
            Signal::Metrics => {
                let req = Arc::make_mut(work.metrics().map_err(decode_err)?);
                apply_metrics(l, req, &d.keep);
                !req.resource_metrics.is_empty()
            }
            Signal::Logs => {
                let req = Arc::make_mut(work.logs().map_err(decode_err)?);
                apply_logs(l, req, &d.keep);
                !req.resource_logs.is_empty()
            }
        };
        work.recount();
        Ok(left)
    }
}

#[async_trait]
impl Consumer for FilterProcessor {
    async fn consume(&self, payload: Payload) -> Result<(), ConsumeError> {
        let n = payload.items() as u64;
        self.metrics.incoming.add(n);
        let levels = self.compiled.for_signal(self.signal);
        if levels.is_empty() {
            self.metrics.outgoing.add(n);
            return self.next.consume(payload).await;
        }
        // Decide on a clone (shares the bytes or the decoded Arc) so that, when nothing is
        // dropped, the payload goes on exactly as received.
        let mut work = payload.clone();
        let decisions = match self.decide(levels, &mut work) {
            Ok(Some(d)) => d,
            Ok(None) => {
                self.metrics.outgoing.add(n);
                return self.next.consume(payload).await;
            }
            Err(e) => {
                self.metrics.refused.add(n);
                return Err(e);
            }
        };
        // Release our hold on the original so that copy-on-write copies only for others.
        drop(payload);
        let left = match self.apply(levels, &mut work, &decisions) {
            Ok(left) => left,
            Err(e) => {
                self.metrics.refused.add(n);
                return Err(e);
            }
        };
        let out = work.items() as u64;
        self.metrics.dropped.add(n.saturating_sub(out));
        if !left {
            return Ok(());
        }
        self.metrics.outgoing.add(out);
        self.next.consume(work).await
    }
}

#[async_trait]
impl Lifecycle for FilterProcessor {}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use pipeline_core::otlp::tonic::common::v1::{
        any_value, AnyValue, InstrumentationScope, KeyValue,
    };
    use pipeline_core::otlp::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use pipeline_core::otlp::tonic::metrics::v1::{
        number_data_point, Gauge, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
    };
    use pipeline_core::otlp::tonic::resource::v1::Resource;
    use pipeline_core::otlp::tonic::trace::v1::{span, ResourceSpans, ScopeSpans, Span};
    use pipeline_core::Telemetry;
    use prost::Message;

    use super::*;

    #[derive(Default)]
    struct Collect(Mutex<Vec<Payload>>);

    #[async_trait]
    impl Consumer for Collect {
        async fn consume(&self, p: Payload) -> Result<(), ConsumeError> {
            self.0.lock().unwrap().push(p);
            Ok(())
        }
    }

    impl Collect {
        fn take(&self) -> Vec<Payload> {
            std::mem::take(&mut *self.0.lock().unwrap())
        }
    }

    struct Harness {
        proc: Arc<dyn Processor>,
        out: Arc<Collect>,
        telemetry: Telemetry,
        pipeline: String,
    }

    impl Harness {
        fn counter(&self, what: &str, signal: Signal) -> i64 {
            self.telemetry
                .value(
                    &format!("otelcol_processor_{what}_{}", signal.item_name()),
                    &[("pipeline", self.pipeline.as_str())],
                )
                .unwrap_or(-1)
        }
    }

    fn parse(yaml: &str) -> Result<FilterConfig, ConfigError> {
        let v: serde_yaml::Value = serde_yaml::from_str(yaml).unwrap();
        FilterConfig::parse(&v, "processors::filter/host_id")
    }

    fn harness(yaml: &str, pipeline: &str) -> Harness {
        let cfg = parse(yaml).unwrap_or_else(|e| panic!("{e}"));
        let out = Arc::new(Collect::default());
        let telemetry = Telemetry::default();
        let proc = cfg
            .build(ProcessorContext {
                id: ComponentId::parse("filter/host_id").unwrap(),
                pipeline: PipelineId::parse(pipeline).unwrap(),
                next: out.clone(),
                telemetry: telemetry.clone(),
            })
            .unwrap();
        Harness {
            proc,
            out,
            telemetry,
            pipeline: pipeline.to_string(),
        }
    }

    fn sv(s: &str) -> Option<AnyValue> {
        Some(AnyValue {
            value: Some(any_value::Value::StringValue(s.to_string())),
        })
    }

    fn attr(k: &str, v: &str) -> KeyValue {
        KeyValue {
            key: k.to_string(),
            value: sv(v),
        }
    }

    fn int_attr(k: &str, v: i64) -> KeyValue {
        KeyValue {
            key: k.to_string(),
            value: Some(AnyValue {
                value: Some(any_value::Value::IntValue(v)),
            }),
        }
    }

    fn resource(instance: &str) -> Option<Resource> {
        Some(Resource {
            attributes: vec![
                attr("service.name", "shop"),
                attr("service.instance.id", instance),
            ],
            ..Default::default()
        })
    }

    fn span(name: &str, events: &[&str]) -> Span {
        Span {
            name: name.to_string(),
            attributes: vec![int_attr("n", 1)],
            events: events
                .iter()
                .map(|e| span::Event {
                    name: e.to_string(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    /// Resources of scopes of spans: `[(instance, [[span names]])]`.
    fn traces(layout: &[(&str, &[&[&str]])]) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: layout
                .iter()
                .map(|(inst, scopes)| ResourceSpans {
                    resource: resource(inst),
                    scope_spans: scopes
                        .iter()
                        .map(|names| ScopeSpans {
                            scope: Some(InstrumentationScope {
                                name: "lib".into(),
                                ..Default::default()
                            }),
                            spans: names.iter().map(|n| span(n, &[])).collect(),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                })
                .collect(),
        }
    }

    fn encoded(req: &ExportTraceServiceRequest) -> Payload {
        Payload::from_encoded(Signal::Traces, req.encode_to_vec().into()).unwrap()
    }

    fn span_names(p: &mut Payload) -> Vec<Vec<Vec<String>>> {
        p.traces()
            .unwrap()
            .resource_spans
            .iter()
            .map(|r| {
                r.scope_spans
                    .iter()
                    .map(|s| s.spans.iter().map(|sp| sp.name.clone()).collect())
                    .collect()
            })
            .collect()
    }

    const SEED: &str = r#"
traces:
  span:
    - 'resource.attributes["service.instance.id"] == "148f400ad3ea:297514"'
"#;

    #[tokio::test]
    async fn seed_config_drops_the_named_instance() {
        let h = harness(SEED, "traces");
        let req = traces(&[
            ("148f400ad3ea:297514", &[&["a", "b"]]),
            ("other:1", &[&["c", "d"]]),
        ]);
        h.proc.consume(encoded(&req)).await.unwrap();
        let mut out = h.out.take();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].items(), 2);
        assert_eq!(span_names(&mut out[0]), vec![vec![vec!["c", "d"]]]);
        assert_eq!(h.counter("incoming", Signal::Traces), 4);
        assert_eq!(h.counter("outgoing", Signal::Traces), 2);
        assert_eq!(h.counter("dropped", Signal::Traces), 2);
    }

    #[tokio::test]
    async fn seed_config_in_metrics_pipeline_is_a_pass_through() {
        let cfg = parse(SEED).unwrap();
        assert!(cfg.has_conditions(Signal::Traces));
        assert!(!cfg.has_conditions(Signal::Metrics));
        assert_eq!(
            pass_through_warning(
                &ComponentId::parse("filter/host_id").unwrap(),
                Signal::Metrics
            ),
            "filter/host_id has no metrics conditions; it passes all metrics through"
        );
        let h = harness(SEED, "metrics");
        let req = ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: resource("148f400ad3ea:297514"),
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![gauge("m", &["/a"])],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let bytes = req.encode_to_vec();
        let p = Payload::from_encoded(Signal::Metrics, bytes.clone().into()).unwrap();
        h.proc.consume(p).await.unwrap();
        let out = h.out.take();
        assert_eq!(out.len(), 1);
        assert!(out[0].is_encoded(), "pass-through must not decode");
        assert_eq!(out[0].to_bytes().as_ref(), bytes.as_slice());
        assert_eq!(h.counter("outgoing", Signal::Metrics), 1);
    }

    #[tokio::test]
    async fn nothing_dropped_forwards_the_original_bytes() {
        let h = harness(SEED, "traces");
        let req = traces(&[("other:1", &[&["a"]])]);
        let p = encoded(&req);
        let bytes = p.to_bytes();
        h.proc.consume(p).await.unwrap();
        let out = h.out.take();
        assert!(out[0].is_encoded());
        assert_eq!(out[0].to_bytes(), bytes);
        assert_eq!(h.counter("dropped", Signal::Traces), 0);
    }

    #[tokio::test]
    async fn everything_dropped_is_success_with_nothing_forwarded() {
        let h = harness("traces: {span: ['true']}", "traces");
        let req = traces(&[("x", &[&["a", "b"], &["c"]])]);
        h.proc.consume(encoded(&req)).await.unwrap();
        assert!(h.out.take().is_empty());
        assert_eq!(h.counter("dropped", Signal::Traces), 3);
        assert_eq!(h.counter("outgoing", Signal::Traces), 0);
    }

    #[tokio::test]
    async fn conditions_are_ored_and_empty_containers_removed() {
        let h = harness(
            r#"
traces:
  span:
    - name == "a"
    - name == "b"
"#,
            "traces",
        );
        let req = traces(&[("r1", &[&["a", "b"], &["c", "a"]]), ("r2", &[&["b"]])]);
        h.proc.consume(encoded(&req)).await.unwrap();
        let mut out = h.out.take();
        assert_eq!(span_names(&mut out[0]), vec![vec![vec!["c"]]]);
        assert_eq!(out[0].items(), 1);
    }

    #[tokio::test]
    async fn resource_context_drops_whole_resources() {
        let h = harness(
            r#"traces: {resource: ['attributes["service.instance.id"] == "r2"']}"#,
            "traces",
        );
        let req = traces(&[("r1", &[&["a"]]), ("r2", &[&["b", "c"]])]);
        h.proc.consume(encoded(&req)).await.unwrap();
        let mut out = h.out.take();
        assert_eq!(span_names(&mut out[0]), vec![vec![vec!["a"]]]);
        assert_eq!(h.counter("dropped", Signal::Traces), 2);
    }

    const FAILING: &str = r#"HasPrefix(attributes["n"], "x")"#;

    #[tokio::test]
    async fn failing_condition_keeps_the_item_unless_another_matches() {
        for mode in ["ignore", "silent"] {
            let h = harness(
                &format!("error_mode: {mode}\ntraces: {{span: ['{FAILING}', 'name == \"b\"']}}"),
                "traces",
            );
            let req = traces(&[("r", &[&["a", "b"]])]);
            h.proc.consume(encoded(&req)).await.unwrap();
            let mut out = h.out.take();
            assert_eq!(span_names(&mut out[0]), vec![vec![vec!["a"]]], "{mode}");
        }
    }

    #[tokio::test]
    async fn propagate_refuses_the_payload() {
        let h = harness(
            &format!("error_mode: propagate\ntraces: {{span: ['{FAILING}']}}"),
            "traces",
        );
        let req = traces(&[("r", &[&["a"]])]);
        let err = h.proc.consume(encoded(&req)).await.unwrap_err();
        assert!(matches!(err, ConsumeError::Permanent(_)), "{err}");
        assert!(err.to_string().contains("HasPrefix"), "{err}");
        assert!(h.out.take().is_empty());
        assert_eq!(h.counter("refused", Signal::Traces), 1);
    }

    #[tokio::test]
    async fn span_events_dropped_span_kept() {
        let h = harness(
            r#"
traces:
  spanevent:
    - name == "noise"
    - span.name == "quiet"
"#,
            "traces",
        );
        let req = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![
                        span("a", &["noise", "keep", "noise"]),
                        span("b", &["noise"]),
                        span("quiet", &["keep", "keep"]),
                        span("c", &[]),
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        h.proc.consume(encoded(&req)).await.unwrap();
        let mut out = h.out.take();
        let t = out[0].traces().unwrap();
        let spans = &t.resource_spans[0].scope_spans[0].spans;
        let events: Vec<(String, Vec<String>)> = spans
            .iter()
            .map(|s| {
                (
                    s.name.clone(),
                    s.events.iter().map(|e| e.name.clone()).collect(),
                )
            })
            .collect();
        assert_eq!(
            events,
            vec![
                ("a".to_string(), vec!["keep".to_string()]),
                ("b".to_string(), vec![]),
                ("quiet".to_string(), vec![]),
                ("c".to_string(), vec![]),
            ]
        );
        assert_eq!(out[0].items(), 4);
        assert_eq!(h.counter("dropped", Signal::Traces), 0);
    }

    fn number_points(routes: &[&str]) -> Vec<NumberDataPoint> {
        routes
            .iter()
            .map(|r| NumberDataPoint {
                attributes: vec![attr("route", r)],
                value: Some(number_data_point::Value::AsInt(1)),
                ..Default::default()
            })
            .collect()
    }

    fn gauge(name: &str, routes: &[&str]) -> Metric {
        Metric {
            name: name.to_string(),
            data: Some(metric::Data::Gauge(Gauge {
                data_points: number_points(routes),
            })),
            ..Default::default()
        }
    }

    fn metric_layout(p: &mut Payload) -> Vec<(String, usize)> {
        p.metrics()
            .unwrap()
            .resource_metrics
            .iter()
            .flat_map(|r| &r.scope_metrics)
            .flat_map(|s| &s.metrics)
            .map(|m| (m.name.clone(), point_count(m).unwrap_or(0)))
            .collect()
    }

    #[tokio::test]
    async fn metrics_points_and_metrics() {
        let h = harness(
            r#"
metrics:
  metric:
    - name == "drop.me"
  datapoint:
    - attributes["route"] == "/health"
"#,
            "metrics",
        );
        let sum = Metric {
            name: "sum".into(),
            data: Some(metric::Data::Sum(Sum {
                data_points: number_points(&["/health", "/users"]),
                aggregation_temporality: 2,
                is_monotonic: true,
            })),
            ..Default::default()
        };
        let req = ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![
                        gauge("only.health", &["/health", "/health"]),
                        sum,
                        gauge("drop.me", &["/users"]),
                        Metric {
                            name: "no.data".into(),
                            ..Default::default()
                        },
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let p = Payload::from_encoded(Signal::Metrics, req.encode_to_vec().into()).unwrap();
        assert_eq!(p.items(), 5);
        h.proc.consume(p).await.unwrap();
        let mut out = h.out.take();
        assert_eq!(
            metric_layout(&mut out[0]),
            vec![("sum".to_string(), 1), ("no.data".to_string(), 0)]
        );
        assert_eq!(out[0].items(), 1);
        assert_eq!(h.counter("dropped", Signal::Metrics), 4);
    }

    #[tokio::test]
    async fn metric_conditions_inferred() {
        let h = harness(
            r#"
metric_conditions:
  - metric.name == "a"
  - datapoint.attributes["route"] == "/x" and metric.name == "b"
"#,
            "metrics",
        );
        let req = ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![
                        gauge("a", &["/x"]),
                        gauge("b", &["/x", "/y"]),
                        gauge("c", &["/x"]),
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let p = Payload::from_encoded(Signal::Metrics, req.encode_to_vec().into()).unwrap();
        h.proc.consume(p).await.unwrap();
        let mut out = h.out.take();
        assert_eq!(
            metric_layout(&mut out[0]),
            vec![("b".to_string(), 1), ("c".to_string(), 1)]
        );
    }

    fn logs(severities: &[i32]) -> ExportLogsServiceRequest {
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: resource("i"),
                scope_logs: vec![ScopeLogs {
                    log_records: severities
                        .iter()
                        .map(|s| LogRecord {
                            severity_number: *s,
                            body: sv("hello"),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    #[tokio::test]
    async fn logs_legacy_and_flat() {
        for yaml in [
            "logs: {log_record: ['severity_number < SEVERITY_NUMBER_WARN']}",
            "log_conditions: ['log.severity_number < SEVERITY_NUMBER_WARN']",
            "log_conditions: [{context: log, conditions: ['severity_number < SEVERITY_NUMBER_WARN']}]",
        ] {
            let h = harness(yaml, "logs");
            let p = Payload::from_logs(logs(&[9, 13, 5, 17]));
            h.proc.consume(p).await.unwrap();
            let mut out = h.out.take();
            let sev: Vec<i32> = out[0].logs().unwrap().resource_logs[0].scope_logs[0]
                .log_records
                .iter()
                .map(|l| l.severity_number)
                .collect();
            assert_eq!(sev, vec![13, 17], "{yaml}");
            assert_eq!(h.counter("dropped", Signal::Logs), 2);
        }
    }

    #[tokio::test]
    async fn trace_conditions_infer_their_level() {
        let h = harness(
            r#"
trace_conditions:
  - resource.attributes["service.instance.id"] == "r2"
  - span.name == "a" and resource.attributes["service.instance.id"] == "r1"
  - scope.name == "nope"
  - error_mode: propagate
    conditions:
      - spanevent.name == "never"
"#,
            "traces",
        );
        let req = traces(&[("r1", &[&["a", "b"]]), ("r2", &[&["a"]]), ("r3", &[&["a"]])]);
        h.proc.consume(encoded(&req)).await.unwrap();
        let mut out = h.out.take();
        assert_eq!(
            span_names(&mut out[0]),
            vec![vec![vec!["b"]], vec![vec!["a"]]]
        );
    }

    #[tokio::test]
    async fn copy_on_write_leaves_other_consumers_data_alone() {
        let h = harness(r#"traces: {span: ['name == "a"']}"#, "traces");
        let shared = Payload::from_traces(traces(&[("r", &[&["a", "b"]])]));
        let mut other = shared.clone();
        h.proc.consume(shared).await.unwrap();
        let mut out = h.out.take();
        assert_eq!(span_names(&mut out[0]), vec![vec![vec!["b"]]]);
        assert_eq!(span_names(&mut other), vec![vec![vec!["a", "b"]]]);
        assert_eq!(other.items(), 2);
    }

    #[test]
    fn config_errors_name_the_condition_and_column() {
        let e = parse(r#"traces: {span: ['name == "a"', 'attributes[test] == "pass"']}"#)
            .err()
            .unwrap();
        assert_eq!(e.path, "processors::filter/host_id::traces::span[1]");
        assert!(e.msg.contains("line 1, column 12"), "{e}");
        assert!(e.msg.contains("attributes[test]"), "{e}");

        let e = parse(r#"metrics: {datapoint: ['IsMatch(metric.name, "(")']}"#)
            .err()
            .unwrap();
        assert_eq!(e.path, "processors::filter/host_id::metrics::datapoint[0]");
        assert!(e.msg.contains("column 22"), "{e}");
        assert!(!e.msg.contains('\n'), "one-line message: {e}");

        let e = parse(r#"logs: {log_record: ['Foo(body)']}"#).err().unwrap();
        assert!(e.msg.contains("unknown function"), "{e}");

        let e = parse(r#"trace_conditions: ['name == "a"']"#).err().unwrap();
        assert_eq!(e.path, "processors::filter/host_id::trace_conditions[0]");
        assert!(e.msg.contains("missing context name"), "{e}");

        let e = parse(r#"trace_conditions: [{conditions: ['span.name == "a"', 'True(']}]"#)
            .err()
            .unwrap();
        assert_eq!(
            e.path,
            "processors::filter/host_id::trace_conditions[0]::conditions[1]"
        );

        let e = parse(r#"trace_conditions: [{context: log, conditions: ['body == "a"']}]"#)
            .err()
            .unwrap();
        assert_eq!(
            e.path,
            "processors::filter/host_id::trace_conditions[0]::context"
        );

        let e = parse("traces: {spans: []}").err().unwrap();
        assert!(e.msg.contains("invalid keys: spans"), "{e}");

        let e = parse("error_mode: loud").err().unwrap();
        assert!(e.to_string().contains("error_mode"), "{e}");

        assert!(parse("").is_ok());
        assert!(parse(SEED).is_ok());
    }

    /// Stand-ins for the receiver and exporters the seed config names, so the whole file goes
    /// through config parsing, validation and graph building with the real filter.
    mod stubs {
        use super::*;
        use pipeline_core::{
            Exporter, ExporterConfig, ExporterContext, ExporterFactory, Receiver, ReceiverConfig,
            ReceiverContext, ReceiverFactory,
        };

        pub struct Stub;

        #[async_trait]
        impl Lifecycle for Stub {}

        #[async_trait]
        impl Consumer for Stub {
            async fn consume(&self, _: Payload) -> Result<(), ConsumeError> {
                Ok(())
            }
        }

        impl ReceiverConfig for Stub {
            fn build(&self, _: ReceiverContext) -> Result<Arc<dyn Receiver>, ComponentError> {
                Ok(Arc::new(Stub))
            }
        }

        impl ExporterConfig for Stub {
            fn build(&self, _: ExporterContext) -> Result<Arc<dyn Exporter>, ComponentError> {
                Ok(Arc::new(Stub))
            }
        }

        pub const RECEIVER: ReceiverFactory = ReceiverFactory {
            type_name: "otlp",
            signals: &[Signal::Traces, Signal::Metrics, Signal::Logs],
            parse: |_, _| Ok(Box::new(Stub)),
        };
        pub const OTLP: ExporterFactory = ExporterFactory {
            type_name: "otlp",
            signals: &[Signal::Traces, Signal::Metrics, Signal::Logs],
            parse: |_, _| Ok(Box::new(Stub)),
        };
        pub const PROMETHEUS: ExporterFactory = ExporterFactory {
            type_name: "prometheus",
            signals: &[Signal::Metrics],
            parse: |_, _| Ok(Box::new(Stub)),
        };
    }

    /// The seed article's config, verbatim apart from the host names.
    const SEED_FILE: &str = r#"
receivers:
  otlp:
    protocols:
      http:
        endpoint: otel-collector:4318

processors:
  filter/host_id:
    traces:
      span:
        - 'resource.attributes["service.instance.id"] == "148f400ad3ea:297514"'

exporters:
  otlp/jaeger:
    endpoint: jaeger:4317
    tls:
      insecure: true

  prometheus:
    endpoint: 0.0.0.0:8889
    namespace: default

service:
  pipelines:
    traces:
      receivers: [otlp]
      processors: [filter/host_id]
      exporters: [otlp/jaeger]

    metrics:
      receivers: [otlp]
      processors:
        - filter/host_id
      exporters: [prometheus]
"#;

    #[test]
    fn seed_config_file_validates_and_builds() {
        let registry = pipeline_core::Registry {
            receivers: vec![stubs::RECEIVER],
            processors: vec![FACTORY],
            exporters: vec![stubs::OTLP, stubs::PROMETHEUS],
            aliases: vec![],
        };
        let root: serde_yaml::Value = serde_yaml::from_str(SEED_FILE).unwrap();
        let cfg = pipeline_core::Config::parse(&root, &registry).unwrap_or_else(|e| panic!("{e}"));
        pipeline_core::Service::build(&cfg, &Telemetry::default())
            .unwrap_or_else(|e| panic!("{e}"));

        let broken = SEED_FILE.replace(r#"] == "148f"#, r#"] = "148f"#);
        let root: serde_yaml::Value = serde_yaml::from_str(&broken).unwrap();
        let e = pipeline_core::Config::parse(&root, &registry)
            .err()
            .unwrap();
        assert_eq!(e.path, "processors::filter/host_id::traces::span[0]");
        assert!(e.msg.contains("column 44"), "{e}");
    }

    #[tokio::test]
    async fn processor_lifecycle() {
        let h = harness(SEED, "traces");
        h.proc.shutdown().await.unwrap();
        let h = harness(SEED, "logs");
        h.proc.start().await.unwrap();
        h.proc
            .consume(Payload::from_logs(logs(&[1])))
            .await
            .unwrap();
        assert_eq!(h.out.take().len(), 1);
        h.proc.shutdown().await.unwrap();
    }
}
