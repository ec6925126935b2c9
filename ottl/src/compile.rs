//! Syntax tree -> executable condition: paths resolved to fields, enums to ints, constant
//! sub-expressions (literals, `Duration("1s")`, `TraceID(0x..)`) folded, regexes compiled.

use std::borrow::Cow;

use crate::context::{fields, trace_state_get, ContextKind, EvalContext, Field};
use crate::error::{EvalError, OttlError, Pos};
use crate::funcs::{self, Func};
use crate::parser::{BoolAst, CallAst, CmpOp, Key, MathOp, PathAst, ValAst};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue};

use crate::value::{compare, lookup_attr, ord_holds, ListValue, MapValue, Value};

/// Which OTLP signal a condition belongs to; decides the contexts a prefix may name and the
/// enums available.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Signal {
    Traces,
    Metrics,
    Logs,
}

impl Signal {
    pub fn contexts(self) -> &'static [ContextKind] {
        use ContextKind::*;
        match self {
            Signal::Traces => &[Resource, Scope, Span, SpanEvent],
            Signal::Metrics => &[Resource, Scope, Metric, DataPoint],
            Signal::Logs => &[Resource, Scope, Log],
        }
    }

    fn of_context(kind: ContextKind) -> Option<Signal> {
        match kind {
            ContextKind::Span | ContextKind::SpanEvent => Some(Signal::Traces),
            ContextKind::Metric | ContextKind::DataPoint => Some(Signal::Metrics),
            ContextKind::Log => Some(Signal::Logs),
            ContextKind::Resource | ContextKind::Scope => None,
        }
    }
}

/// How paths name their context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathStyle {
    /// The legacy per-context lists (`traces.span`): `name` is the span's name; a prefix
    /// (`resource.`, `span.`, `instrumentation_scope.`/`scope.`) is optional.
    Legacy,
    /// Context-inferred conditions (`trace_conditions`): every path starts with its context.
    Prefixed,
}

pub(crate) enum BoolExpr {
    Or(Vec<BoolExpr>),
    And(Vec<BoolExpr>),
    Not(Box<BoolExpr>),
    Const(bool),
    Cmp(Expr, CmpOp, Expr),
    /// `attributes["k"] OP "literal"`, the most common filter shape, compared in place.
    AttrCmpStr {
        field: Field,
        key: String,
        op: CmpOp,
        lit: String,
    },
    /// A converter used as a boolean; anything but a bool result is an error.
    Value(Expr),
}

pub(crate) enum Expr {
    Const(Value<'static>),
    /// `attributes["k"]...`: looked up in the attribute list directly.
    Attr {
        field: Field,
        key: String,
        rest: Vec<Key>,
    },
    /// `trace_state["k"]...`.
    TraceState {
        key: String,
        rest: Vec<Key>,
    },
    Path {
        field: Field,
        keys: Vec<Key>,
    },
    Call(Box<Func>, Vec<Key>),
    Math(Box<Expr>, MathOp, Box<Expr>),
    List(Vec<Expr>),
    Map(Vec<(String, Expr)>),
}

impl Expr {
    pub(crate) fn as_const(&self) -> Option<&Value<'static>> {
        match self {
            Expr::Const(v) => Some(v),
            _ => None,
        }
    }

    pub(crate) fn eval<'a>(&'a self, cx: &EvalContext<'a>) -> Result<Value<'a>, EvalError> {
        match self {
            Expr::Const(v) => Ok(v.reborrow()),
            Expr::Attr { field, key, rest } => {
                let attrs = field
                    .attrs(cx)?
                    .ok_or_else(|| EvalError::new("path is not an attribute map"))?;
                let v = match lookup_attr(attrs, key) {
                    Some(v) => Value::from_opt_any(v),
                    None => Value::Nil,
                };
                index_all(v, rest)
            }
            Expr::TraceState { key, rest } => {
                let v = match trace_state_get(&cx.span()?.trace_state, key) {
                    Some(s) => Value::str(s),
                    None => Value::Nil,
                };
                index_all(v, rest)
            }
            Expr::Path { field, keys } => index_all(field.get(cx)?, keys),
            Expr::Call(f, keys) => index_all(f.eval(cx)?, keys),
            Expr::Math(l, op, r) => math(l.eval(cx)?, *op, r.eval(cx)?),
            Expr::List(items) => Ok(Value::List(ListValue::Owned(
                items.iter().map(|e| e.eval(cx)).collect::<Result<_, _>>()?,
            ))),
            Expr::Map(entries) => Ok(Value::Map(MapValue::Owned(
                entries
                    .iter()
                    .map(|(k, e)| Ok((Cow::Borrowed(k.as_str()), e.eval(cx)?)))
                    .collect::<Result<_, EvalError>>()?,
            ))),
        }
    }
}

impl BoolExpr {
    pub(crate) fn eval(&self, cx: &EvalContext<'_>) -> Result<bool, EvalError> {
        match self {
            BoolExpr::Const(b) => Ok(*b),
            BoolExpr::Cmp(l, op, r) => Ok(compare(&l.eval(cx)?, &r.eval(cx)?, *op)),
            BoolExpr::AttrCmpStr {
                field,
                key,
                op,
                lit,
            } => {
                let attrs = field
                    .attrs(cx)?
                    .ok_or_else(|| EvalError::new("path is not an attribute map"))?;
                Ok(match lookup_attr(attrs, key) {
                    Some(Some(AnyValue {
                        value: Some(any_value::Value::StringValue(s)),
                    })) => ord_holds(Some(s.as_str().cmp(lit.as_str())), *op),
                    // Absent, nil or not a string: never comparable with a string.
                    _ => *op == CmpOp::Ne,
                })
            }
            BoolExpr::And(items) => {
                for i in items {
                    if !i.eval(cx)? {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
            BoolExpr::Or(items) => {
                for i in items {
                    if i.eval(cx)? {
                        return Ok(true);
                    }
                }
                Ok(false)
            }
            BoolExpr::Not(i) => Ok(!i.eval(cx)?),
            BoolExpr::Value(e) => match e.eval(cx)? {
                Value::Bool(b) => Ok(b),
                other => Err(EvalError::new(format!(
                    "expected a bool, got {}",
                    other.type_name()
                ))),
            },
        }
    }
}

pub(crate) fn index<'a>(v: Value<'a>, key: &Key) -> Result<Value<'a>, EvalError> {
    match (v, key) {
        (Value::Nil, _) => Ok(Value::Nil),
        (Value::Map(m), Key::Str(k)) => Ok(m.take(k).unwrap_or(Value::Nil)),
        (Value::List(l), Key::Int(i)) => {
            if let ListValue::Opaque { what, .. } = l {
                return Err(EvalError::new(format!(
                    "{what} cannot be indexed in a condition"
                )));
            }
            let len = l.len();
            usize::try_from(*i)
                .ok()
                .and_then(|i| l.take(i))
                .ok_or_else(|| {
                    EvalError::new(format!("index {i} out of range for list of length {len}"))
                })
        }
        (Value::Map(_), Key::Int(i)) => Err(EvalError::new(format!(
            "a map cannot be indexed with the integer {i}"
        ))),
        (Value::List(_), Key::Str(k)) => Err(EvalError::new(format!(
            "a list cannot be indexed with the string {k:?}"
        ))),
        (other, _) => Err(EvalError::new(format!(
            "a {} cannot be indexed",
            other.type_name()
        ))),
    }
}

fn index_all<'a>(mut v: Value<'a>, keys: &[Key]) -> Result<Value<'a>, EvalError> {
    for k in keys {
        v = index(v, k)?;
    }
    Ok(v)
}

/// Int math is i64 (wrapping, like the reference's Go ints); mixing ints and doubles is an
/// error rather than a silent conversion.
pub(crate) fn math<'a>(l: Value<'a>, op: MathOp, r: Value<'a>) -> Result<Value<'a>, EvalError> {
    use MathOp::*;
    Ok(match (l, r) {
        (Value::Int(a), Value::Int(b)) => Value::Int(match op {
            Add => a.wrapping_add(b),
            Sub => a.wrapping_sub(b),
            Mul => a.wrapping_mul(b),
            Div => {
                if b == 0 {
                    return Err(EvalError::new("attempted to divide by 0"));
                }
                a.wrapping_div(b)
            }
        }),
        (Value::Double(a), Value::Double(b)) => Value::Double(match op {
            Add => a + b,
            Sub => a - b,
            Mul => a * b,
            Div => {
                if b == 0.0 {
                    return Err(EvalError::new("attempted to divide by 0"));
                }
                a / b
            }
        }),
        (Value::Time(a), Value::Time(b)) if op == Sub => Value::Duration(a.wrapping_sub(b)),
        (Value::Time(a), Value::Duration(b)) if op == Add => Value::Time(a.wrapping_add(b)),
        (Value::Time(a), Value::Duration(b)) if op == Sub => Value::Time(a.wrapping_sub(b)),
        (Value::Duration(a), Value::Time(b)) if op == Add => Value::Time(a.wrapping_add(b)),
        (Value::Duration(a), Value::Duration(b)) if op == Add => Value::Duration(a.wrapping_add(b)),
        (Value::Duration(a), Value::Duration(b)) if op == Sub => Value::Duration(a.wrapping_sub(b)),
        (l, r) => {
            let opname = match op {
                Add => "+",
                Sub => "-",
                Mul => "*",
                Div => "/",
            };
            return Err(EvalError::new(format!(
                "unsupported math: {} {opname} {}",
                l.type_name(),
                r.type_name()
            )));
        }
    })
}

fn enum_value(name: &str, signal: Option<Signal>) -> Option<i64> {
    let span = [
        ("SPAN_KIND_UNSPECIFIED", 0),
        ("SPAN_KIND_INTERNAL", 1),
        ("SPAN_KIND_SERVER", 2),
        ("SPAN_KIND_CLIENT", 3),
        ("SPAN_KIND_PRODUCER", 4),
        ("SPAN_KIND_CONSUMER", 5),
        ("STATUS_CODE_UNSET", 0),
        ("STATUS_CODE_OK", 1),
        ("STATUS_CODE_ERROR", 2),
    ];
    let metric = [
        ("METRIC_DATA_TYPE_NONE", 0),
        ("METRIC_DATA_TYPE_GAUGE", 1),
        ("METRIC_DATA_TYPE_SUM", 2),
        ("METRIC_DATA_TYPE_HISTOGRAM", 3),
        ("METRIC_DATA_TYPE_EXPONENTIAL_HISTOGRAM", 4),
        ("METRIC_DATA_TYPE_SUMMARY", 5),
        ("AGGREGATION_TEMPORALITY_UNSPECIFIED", 0),
        ("AGGREGATION_TEMPORALITY_DELTA", 1),
        ("AGGREGATION_TEMPORALITY_CUMULATIVE", 2),
        ("FLAG_NONE", 0),
        ("FLAG_NO_RECORDED_VALUE", 1),
    ];
    let find = |table: &[(&str, i64)]| table.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
    match signal {
        Some(Signal::Traces) => find(&span),
        Some(Signal::Metrics) => find(&metric),
        Some(Signal::Logs) => severity_number(name),
        // A resource or scope condition outside any signal: the names do not overlap.
        None => find(&span)
            .or_else(|| find(&metric))
            .or_else(|| severity_number(name)),
    }
}

fn severity_number(name: &str) -> Option<i64> {
    let rest = name.strip_prefix("SEVERITY_NUMBER_")?;
    if rest == "UNSPECIFIED" {
        return Some(0);
    }
    let levels = ["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"];
    let (level, n) = match rest.char_indices().find(|(_, c)| c.is_ascii_digit()) {
        Some((i, _)) => (&rest[..i], rest[i..].parse::<i64>().ok()?),
        None => (rest, 1),
    };
    let base = levels.iter().position(|l| *l == level)? as i64 * 4 + 1;
    (1..=4).contains(&n).then_some(base + n - 1)
}

pub(crate) struct Compiler {
    pub context: ContextKind,
    pub style: PathStyle,
    pub signal: Option<Signal>,
    /// Deepest context whose data the condition reads, tracked while compiling.
    pub deepest: ContextKind,
}

impl Compiler {
    pub(crate) fn new(context: ContextKind, style: PathStyle, signal: Option<Signal>) -> Self {
        Compiler {
            context,
            style,
            signal: signal.or(Signal::of_context(context)),
            deepest: ContextKind::Resource,
        }
    }

    pub(crate) fn note_read(&mut self, kind: ContextKind) {
        if kind.depth() > self.deepest.depth() {
            self.deepest = kind;
        }
    }

    pub(crate) fn bool_expr(&mut self, ast: &BoolAst) -> Result<BoolExpr, OttlError> {
        Ok(match ast {
            BoolAst::Or(items) | BoolAst::And(items) => {
                let is_or = matches!(ast, BoolAst::Or(_));
                let items: Vec<BoolExpr> = items
                    .iter()
                    .map(|i| self.bool_expr(i))
                    .collect::<Result<_, _>>()?;
                let consts: Option<Vec<bool>> = items
                    .iter()
                    .map(|i| match i {
                        BoolExpr::Const(b) => Some(*b),
                        _ => None,
                    })
                    .collect();
                match (consts, is_or) {
                    (Some(c), true) => BoolExpr::Const(c.into_iter().any(|b| b)),
                    (Some(c), false) => BoolExpr::Const(c.into_iter().all(|b| b)),
                    (None, true) => BoolExpr::Or(items),
                    (None, false) => BoolExpr::And(items),
                }
            }
            BoolAst::Not(i) => match self.bool_expr(i)? {
                BoolExpr::Const(b) => BoolExpr::Const(!b),
                e => BoolExpr::Not(Box::new(e)),
            },
            BoolAst::Lit(b) => BoolExpr::Const(*b),
            BoolAst::Cmp(l, op, r) => {
                let (l, r) = (self.expr(l)?, self.expr(r)?);
                match (l, r) {
                    (Expr::Const(a), Expr::Const(b)) => BoolExpr::Const(compare(&a, &b, *op)),
                    (Expr::Attr { field, key, rest }, Expr::Const(Value::Str(lit)))
                        if rest.is_empty() =>
                    {
                        BoolExpr::AttrCmpStr {
                            field,
                            key,
                            op: *op,
                            lit: lit.into_owned(),
                        }
                    }
                    (Expr::Const(Value::Str(lit)), Expr::Attr { field, key, rest })
                        if rest.is_empty() =>
                    {
                        BoolExpr::AttrCmpStr {
                            field,
                            key,
                            op: flip(*op),
                            lit: lit.into_owned(),
                        }
                    }
                    (l, r) => BoolExpr::Cmp(l, *op, r),
                }
            }
            BoolAst::Call(c) => match self.call(c)? {
                Expr::Const(Value::Bool(b)) => BoolExpr::Const(b),
                Expr::Const(other) => {
                    return Err(OttlError::compile(
                        c.pos,
                        format!(
                            "{} returns a {} here, but a condition needs a bool",
                            c.name,
                            other.type_name()
                        ),
                    ))
                }
                e => BoolExpr::Value(e),
            },
        })
    }

    pub(crate) fn expr(&mut self, ast: &ValAst) -> Result<Expr, OttlError> {
        Ok(match ast {
            ValAst::Nil => Expr::Const(Value::Nil),
            ValAst::Bool(b) => Expr::Const(Value::Bool(*b)),
            ValAst::Int(i) => Expr::Const(Value::Int(*i)),
            ValAst::Float(f) => Expr::Const(Value::Double(*f)),
            ValAst::Str(s) => Expr::Const(Value::Str(Cow::Owned(s.clone()))),
            ValAst::Bytes(b) => Expr::Const(Value::Bytes(Cow::Owned(b.clone()))),
            ValAst::Enum(name, pos) => match enum_value(name, self.signal) {
                Some(v) => Expr::Const(Value::Int(v)),
                None => {
                    return Err(OttlError::compile(
                        *pos,
                        format!("unknown enum {name} in {} context", self.context),
                    ))
                }
            },
            ValAst::List(items) => {
                let items: Vec<Expr> = items
                    .iter()
                    .map(|i| self.expr(i))
                    .collect::<Result<_, _>>()?;
                if items.iter().all(|i| i.as_const().is_some()) {
                    Expr::Const(Value::List(ListValue::Owned(
                        items
                            .into_iter()
                            .filter_map(|i| match i {
                                Expr::Const(v) => Some(v),
                                _ => None,
                            })
                            .collect(),
                    )))
                } else {
                    Expr::List(items)
                }
            }
            ValAst::Map(entries) => {
                let entries: Vec<(String, Expr)> = entries
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), self.expr(v)?)))
                    .collect::<Result<_, OttlError>>()?;
                if entries.iter().all(|(_, e)| e.as_const().is_some()) {
                    Expr::Const(Value::Map(MapValue::Owned(
                        entries
                            .into_iter()
                            .filter_map(|(k, e)| match e {
                                Expr::Const(v) => Some((Cow::Owned(k), v)),
                                _ => None,
                            })
                            .collect(),
                    )))
                } else {
                    Expr::Map(entries)
                }
            }
            ValAst::Path(p) => self.path(p)?,
            ValAst::Call(c) => self.call(c)?,
            ValAst::Math(l, op, r, pos) => {
                let (l, r) = (self.expr(l)?, self.expr(r)?);
                match (l, r) {
                    (Expr::Const(a), Expr::Const(b)) => {
                        let v = math(a.reborrow(), *op, b.reborrow())
                            .map_err(|e| OttlError::compile(*pos, e.0))?;
                        Expr::Const(v.into_owned())
                    }
                    (l, r) => Expr::Math(Box::new(l), *op, Box::new(r)),
                }
            }
        })
    }

    fn call(&mut self, c: &CallAst) -> Result<Expr, OttlError> {
        let f = funcs::compile(self, c)?;
        let keys = c.keys.clone();
        if f.is_pure() && f.all_args_const() {
            // Constant arguments: evaluate once now; a failure here would fail on every item.
            let cx = EvalContext::default();
            let v = f
                .eval(&cx)
                .and_then(|v| index_all(v, &keys))
                .map_err(|e| OttlError::compile(c.pos, format!("{}: {}", c.name, e.0)))?;
            return Ok(Expr::Const(v.into_owned()));
        }
        Ok(Expr::Call(Box::new(f), keys))
    }

    fn path(&mut self, p: &PathAst) -> Result<Expr, OttlError> {
        let first = &p.segments[0];
        let visible = self.context.visible();
        let named = ContextKind::from_name(&first.name);
        let (target, rest) = match named {
            Some(k) if p.segments.len() > 1 && first.keys.is_empty() => {
                if !visible.contains(&k) {
                    return Err(OttlError::compile(
                        first.pos,
                        format!(
                            "path {:?} refers to the {k} context, which is not available in {} context",
                            p.dotted(),
                            self.context
                        ),
                    ));
                }
                (k, &p.segments[1..])
            }
            _ if self.style == PathStyle::Prefixed => {
                let options: Vec<&str> = self
                    .signal
                    .map_or(visible, Signal::contexts)
                    .iter()
                    .map(|k| k.name())
                    .collect();
                return Err(OttlError::compile(
                    p.pos,
                    format!(
                        "missing context name for path {:?}, valid options are: {}",
                        p.dotted(),
                        options.join(", ")
                    ),
                ));
            }
            _ => (self.context, &p.segments[..]),
        };
        for s in &rest[..rest.len() - 1] {
            if !s.keys.is_empty() {
                return Err(OttlError::compile(
                    s.pos,
                    format!(
                        "{:?}: [..] is only allowed at the end of a path",
                        p.dotted()
                    ),
                ));
            }
        }
        let dotted = rest
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(".");
        let Some((_, field, indexable)) = fields(target).iter().find(|(n, _, _)| *n == dotted)
        else {
            let known: Vec<&str> = fields(target).iter().map(|(n, _, _)| *n).collect();
            return Err(OttlError::compile(
                p.pos,
                format!(
                    "unknown path {:?} in {target} context (known: {})",
                    p.dotted(),
                    known.join(", ")
                ),
            ));
        };
        self.note_read(target);
        let keys = rest[rest.len() - 1].keys.clone();
        if !keys.is_empty() && !indexable {
            return Err(OttlError::compile(
                rest[rest.len() - 1].pos,
                format!("path {:?} cannot be indexed", p.dotted()),
            ));
        }
        let mut keys = keys.into_iter();
        Ok(match (*field, keys.next()) {
            (Field::SpanTraceState, Some(Key::Str(key))) => Expr::TraceState {
                key,
                rest: keys.collect(),
            },
            (Field::SpanTraceState, Some(Key::Int(_))) => {
                return Err(OttlError::compile(
                    p.pos,
                    "trace_state is indexed by key: trace_state[\"key\"]",
                ))
            }
            (f, Some(Key::Int(i))) if is_attr_field(f) => {
                return Err(OttlError::compile(
                    rest[rest.len() - 1].pos,
                    format!(
                        "{:?} is a map: index it with a string key, not {i}",
                        p.dotted()
                    ),
                ))
            }
            (f, Some(Key::Str(key))) if is_attr_field(f) => Expr::Attr {
                field: f,
                key,
                rest: keys.collect(),
            },
            (f, first) => Expr::Path {
                field: f,
                keys: first.into_iter().chain(keys).collect(),
            },
        })
    }
}

/// The operator that gives the same answer with the operands swapped.
fn flip(op: CmpOp) -> CmpOp {
    match op {
        CmpOp::Lt => CmpOp::Gt,
        CmpOp::Le => CmpOp::Ge,
        CmpOp::Gt => CmpOp::Lt,
        CmpOp::Ge => CmpOp::Le,
        other => other,
    }
}

fn is_attr_field(f: Field) -> bool {
    matches!(
        f,
        Field::ResourceAttrs
            | Field::ScopeAttrs
            | Field::SpanAttrs
            | Field::EventAttrs
            | Field::MetricMetadata
            | Field::DpAttrs
            | Field::LogAttrs
    )
}

fn collect_paths<'a>(ast: &'a BoolAst, paths: &mut Vec<&'a PathAst>, calls: &mut Vec<&'a CallAst>) {
    fn call<'a>(c: &'a CallAst, paths: &mut Vec<&'a PathAst>, calls: &mut Vec<&'a CallAst>) {
        calls.push(c);
        for a in &c.args {
            val(&a.value, paths, calls);
        }
    }
    fn val<'a>(v: &'a ValAst, paths: &mut Vec<&'a PathAst>, calls: &mut Vec<&'a CallAst>) {
        match v {
            ValAst::Path(p) => paths.push(p),
            ValAst::Call(c) => call(c, paths, calls),
            ValAst::Math(l, _, r, _) => {
                val(l, paths, calls);
                val(r, paths, calls);
            }
            ValAst::List(items) => items.iter().for_each(|i| val(i, paths, calls)),
            ValAst::Map(entries) => entries.iter().for_each(|(_, v)| val(v, paths, calls)),
            _ => {}
        }
    }
    match ast {
        BoolAst::Or(items) | BoolAst::And(items) => {
            items.iter().for_each(|i| collect_paths(i, paths, calls))
        }
        BoolAst::Not(i) => collect_paths(i, paths, calls),
        BoolAst::Lit(_) => {}
        BoolAst::Cmp(l, _, r) => {
            val(l, paths, calls);
            val(r, paths, calls);
        }
        BoolAst::Call(c) => call(c, paths, calls),
    }
}

/// The context a prefixed condition runs in: the deepest context its paths name (a condition
/// reading `resource.*` and `span.*` is evaluated per span), or the shallowest context that
/// offers the functions it calls.
pub(crate) fn infer(ast: &BoolAst, signal: Signal) -> Result<ContextKind, OttlError> {
    let mut paths = Vec::new();
    let mut calls = Vec::new();
    collect_paths(ast, &mut paths, &mut calls);
    let allowed = signal.contexts();
    let names: Vec<&str> = allowed.iter().map(|k| k.name()).collect();
    let mut inferred: Option<ContextKind> = None;
    for p in paths {
        let first = &p.segments[0];
        let kind = match ContextKind::from_name(&first.name) {
            Some(k) if p.segments.len() > 1 && allowed.contains(&k) => k,
            Some(k) if p.segments.len() > 1 => {
                return Err(OttlError::compile(
                    first.pos,
                    format!(
                    "context {k:?} is not valid for {signal:?} conditions, valid options are: {}",
                    names.join(", ")
                ),
                ))
            }
            _ => {
                return Err(OttlError::compile(
                    p.pos,
                    format!(
                        "missing context name for path {:?}, valid options are: {}",
                        p.dotted(),
                        names.join(", ")
                    ),
                ))
            }
        };
        if inferred.is_none_or(|i| kind.depth() > i.depth()) {
            inferred = Some(kind);
        }
    }
    for c in calls {
        if let Some(min) = funcs::required_context(&c.name) {
            if allowed.contains(&min) && inferred.is_none_or(|i| i.depth() < min.depth()) {
                inferred = Some(min);
            }
        }
    }
    inferred.ok_or_else(|| {
        OttlError::compile(
            Pos::START,
            format!(
                "unable to infer a context: the condition names no path; prefix paths with one of: {}",
                names.join(", ")
            ),
        )
    })
}
