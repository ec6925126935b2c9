//! Converters usable in conditions. Each is bound at load: arguments matched to parameters
//! (positionally or by name), literal-only parameters (regex, case, time format, CIDRs)
//! checked and pre-processed, and unknown names rejected with their position.

use std::borrow::Cow;
use std::net::IpAddr;

use regex::Regex;

use crate::compile::{Compiler, Expr};
use crate::context::{ContextKind, EvalContext};
use crate::error::{EvalError, OttlError, Pos};
use crate::parser::{CallAst, CmpOp};
use crate::time;
use crate::value::{compare, ListValue, Value};

/// `(name, required)` for each parameter, in positional order.
type Params = &'static [(&'static str, bool)];

const T: Params = &[("target", true)];

fn signature(name: &str) -> Option<Params> {
    Some(match name {
        "IsMatch" => &[("target", true), ("pattern", true)],
        "HasPrefix" => &[("target", true), ("prefix", true)],
        "HasSuffix" => &[("target", true), ("suffix", true)],
        "Concat" => &[("vals", true), ("delimiter", true)],
        "Int" | "Double" | "String" | "Len" | "IsString" | "IsInt" | "IsDouble" | "IsBool"
        | "IsMap" | "IsList" | "IsEmpty" | "ToLowerCase" | "ToUpperCase" | "ToSnakeCase"
        | "ToCamelCase" => T,
        "ContainsValue" => &[("target", true), ("item", true)],
        "IsInCIDR" => &[("target", true), ("networks", true)],
        "IsRootSpan" | "Now" => &[],
        "Duration" => &[("duration", true)],
        "TraceID" | "SpanID" => &[("bytes", true)],
        "Split" => &[("target", true), ("delimiter", true)],
        "Substring" => &[
            ("target", true),
            ("start", true),
            ("length", true),
            ("utf8_safe", false),
        ],
        "ConvertCase" => &[("target", true), ("to_case", true)],
        "Trim" => &[("target", true), ("replacement", false)],
        "Time" => &[
            ("time", true),
            ("format", true),
            ("location", false),
            ("locale", false),
        ],
        "Unix" => &[("seconds", true), ("nanoseconds", false)],
        "UnixSeconds" | "UnixMilli" | "UnixMicro" | "UnixNano" | "Year" | "Month" | "Day"
        | "Hour" | "Minute" | "Second" | "Nanosecond" | "Weekday" => &[("time", true)],
        "Hours" | "Minutes" | "Seconds" | "Milliseconds" | "Microseconds" | "Nanoseconds" => {
            &[("duration", true)]
        }
        _ => return None,
    })
}

/// The context a converter needs to be visible (used by context inference).
pub(crate) fn required_context(name: &str) -> Option<ContextKind> {
    (name == "IsRootSpan").then_some(ContextKind::Span)
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum TypeCheck {
    Str,
    Int,
    Double,
    Bool,
    Map,
    List,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Case {
    Lower,
    Upper,
    Snake,
    Camel,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum TimeUnit {
    Seconds,
    Milli,
    Micro,
    Nano,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum DurUnit {
    Hours,
    Minutes,
    Seconds,
    Milliseconds,
    Microseconds,
    Nanoseconds,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum TimePart {
    Year,
    Month,
    Day,
    Hour,
    Minute,
    Second,
    Nanosecond,
    Weekday,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    fn parse(s: &str) -> Result<Cidr, String> {
        let (addr, len) = s
            .split_once('/')
            .ok_or_else(|| format!("invalid CIDR address: {s}"))?;
        let net: IpAddr = addr
            .parse()
            .map_err(|_| format!("invalid CIDR address: {s}"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix: u8 = len
            .parse()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| format!("invalid CIDR address: {s}"))?;
        Ok(Cidr { net, prefix })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        let ip = match (ip, self.net) {
            (IpAddr::V6(v6), IpAddr::V4(_)) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => return false,
            },
            (ip, _) => ip,
        };
        match (ip, self.net) {
            (IpAddr::V4(a), IpAddr::V4(n)) => {
                let mask = u32::MAX.checked_shl(32 - self.prefix as u32).unwrap_or(0);
                u32::from(a) & mask == u32::from(n) & mask
            }
            (IpAddr::V6(a), IpAddr::V6(n)) => {
                let mask = u128::MAX.checked_shl(128 - self.prefix as u32).unwrap_or(0);
                u128::from(a) & mask == u128::from(n) & mask
            }
            _ => false,
        }
    }
}

pub(crate) enum Networks {
    Static(Vec<Cidr>),
    Dynamic(Expr),
}

/// A list argument written as a literal list is evaluated element by element, so
/// `Concat([a, b], "-")` never builds an intermediate list.
pub(crate) enum ListArg {
    Items(Vec<Expr>),
    Dynamic(Expr),
}

pub(crate) enum Func {
    IsMatch(Expr, Regex),
    HasPrefix(Expr, Expr),
    HasSuffix(Expr, Expr),
    Concat(ListArg, Expr),
    Int(Expr),
    Double(Expr),
    String(Expr),
    Len(Expr),
    IsType(Expr, TypeCheck),
    IsEmpty(Expr),
    ContainsValue(Expr, Expr),
    IsInCidr(Expr, Networks),
    IsRootSpan,
    Duration(Expr),
    Id(Expr, usize),
    Split(Expr, Expr),
    Substring {
        target: Expr,
        start: Expr,
        length: Expr,
        utf8_safe: bool,
    },
    ConvertCase(Expr, Case),
    Trim(Expr, Option<Expr>),
    Time(Expr, String),
    Unix(Expr, Option<Expr>),
    UnixAs(Expr, TimeUnit),
    Now,
    DurationAs(Expr, DurUnit),
    TimePartOf(Expr, TimePart),
}

struct Args {
    slots: Vec<Option<(Expr, Pos)>>,
    name: String,
    call_pos: Pos,
}

impl Args {
    fn take(&mut self, i: usize) -> Result<Expr, OttlError> {
        self.slots
            .get_mut(i)
            .and_then(Option::take)
            .map(|(e, _)| e)
            .ok_or_else(|| {
                OttlError::compile(
                    self.call_pos,
                    format!("{}: missing argument {i}", self.name),
                )
            })
    }

    fn opt(&mut self, i: usize) -> Option<(Expr, Pos)> {
        self.slots.get_mut(i).and_then(Option::take)
    }

    fn pos(&self, i: usize) -> Pos {
        self.slots
            .get(i)
            .and_then(|s| s.as_ref().map(|(_, p)| *p))
            .unwrap_or(self.call_pos)
    }

    /// A parameter that must be a literal string (known at load).
    fn literal_str(&mut self, i: usize, what: &str) -> Result<String, OttlError> {
        let pos = self.pos(i);
        match self.take(i)? {
            Expr::Const(Value::Str(s)) => Ok(s.into_owned()),
            _ => Err(OttlError::compile(
                pos,
                format!("{}: {what} must be a string literal", self.name),
            )),
        }
    }
}

fn bind(c: &mut Compiler, call: &CallAst, params: Params) -> Result<Args, OttlError> {
    let mut slots: Vec<Option<(Expr, Pos)>> = params.iter().map(|_| None).collect();
    let mut seen_named = false;
    for (i, a) in call.args.iter().enumerate() {
        let idx = match &a.name {
            None => {
                if seen_named {
                    return Err(OttlError::compile(
                        a.pos,
                        format!(
                            "{}: positional arguments must come before named ones",
                            call.name
                        ),
                    ));
                }
                if i >= params.len() {
                    return Err(OttlError::compile(
                        a.pos,
                        format!(
                            "{} takes at most {} argument(s), got {}",
                            call.name,
                            params.len(),
                            call.args.len()
                        ),
                    ));
                }
                i
            }
            Some(n) => {
                seen_named = true;
                params.iter().position(|(p, _)| p == n).ok_or_else(|| {
                    OttlError::compile(a.pos, format!("{}: no parameter named {n:?}", call.name))
                })?
            }
        };
        if slots[idx].is_some() {
            return Err(OttlError::compile(
                a.pos,
                format!("{}: {} given twice", call.name, params[idx].0),
            ));
        }
        slots[idx] = Some((c.expr(&a.value)?, a.pos));
    }
    for (i, (p, required)) in params.iter().enumerate() {
        if *required && slots[i].is_none() {
            return Err(OttlError::compile(
                call.pos,
                format!("{}: missing required argument {p:?}", call.name),
            ));
        }
    }
    Ok(Args {
        slots,
        name: call.name.clone(),
        call_pos: call.pos,
    })
}

pub(crate) fn compile(c: &mut Compiler, call: &CallAst) -> Result<Func, OttlError> {
    let name = call.name.as_str();
    let params = signature(name)
        .ok_or_else(|| OttlError::compile(call.pos, format!("unknown function {name:?}")))?;
    if let Some(need) = required_context(name) {
        if !c.context.visible().contains(&need) {
            return Err(OttlError::compile(
                call.pos,
                format!("{name} is not available in {} context", c.context),
            ));
        }
        c.note_read(need);
    }
    let mut a = bind(c, call, params)?;
    let f = match name {
        "IsMatch" => {
            let target = a.take(0)?;
            let pos = a.pos(1);
            let pattern = a.literal_str(1, "pattern")?;
            let re = Regex::new(&pattern).map_err(|e| {
                // The regex crate's message spans several lines (pattern, caret, reason);
                // config errors are one line, and the reason is the last of them.
                let text = e.to_string();
                let reason = text
                    .lines()
                    .last()
                    .unwrap_or_default()
                    .trim()
                    .trim_start_matches("error: ")
                    .to_string();
                OttlError::compile(pos, format!("IsMatch: invalid regex {pattern:?}: {reason}"))
            })?;
            Func::IsMatch(target, re)
        }
        "HasPrefix" => Func::HasPrefix(a.take(0)?, a.take(1)?),
        "HasSuffix" => Func::HasSuffix(a.take(0)?, a.take(1)?),
        "Concat" => {
            let vals = match a.take(0)? {
                Expr::List(items) => ListArg::Items(items),
                other => ListArg::Dynamic(other),
            };
            Func::Concat(vals, a.take(1)?)
        }
        "Int" => Func::Int(a.take(0)?),
        "Double" => Func::Double(a.take(0)?),
        "String" => Func::String(a.take(0)?),
        "Len" => Func::Len(a.take(0)?),
        "IsString" => Func::IsType(a.take(0)?, TypeCheck::Str),
        "IsInt" => Func::IsType(a.take(0)?, TypeCheck::Int),
        "IsDouble" => Func::IsType(a.take(0)?, TypeCheck::Double),
        "IsBool" => Func::IsType(a.take(0)?, TypeCheck::Bool),
        "IsMap" => Func::IsType(a.take(0)?, TypeCheck::Map),
        "IsList" => Func::IsType(a.take(0)?, TypeCheck::List),
        "IsEmpty" => Func::IsEmpty(a.take(0)?),
        "ContainsValue" => Func::ContainsValue(a.take(0)?, a.take(1)?),
        "IsInCIDR" => {
            let target = a.take(0)?;
            let pos = a.pos(1);
            let networks = match a.take(1)? {
                Expr::Const(Value::List(l)) => Networks::Static(
                    l.iter()
                        .map(|v| match v {
                            Value::Str(s) => Cidr::parse(&s),
                            other => Err(format!(
                                "networks must be strings, got {}",
                                other.type_name()
                            )),
                        })
                        .collect::<Result<_, _>>()
                        .map_err(|e| OttlError::compile(pos, format!("IsInCIDR: {e}")))?,
                ),
                Expr::Const(other) => {
                    return Err(OttlError::compile(
                        pos,
                        format!(
                            "IsInCIDR: networks must be a list, got {}",
                            other.type_name()
                        ),
                    ))
                }
                dynamic => Networks::Dynamic(dynamic),
            };
            Func::IsInCidr(target, networks)
        }
        "IsRootSpan" => Func::IsRootSpan,
        "Duration" => Func::Duration(a.take(0)?),
        "TraceID" => Func::Id(a.take(0)?, 16),
        "SpanID" => Func::Id(a.take(0)?, 8),
        "Split" => Func::Split(a.take(0)?, a.take(1)?),
        "Substring" => {
            let (target, start, length) = (a.take(0)?, a.take(1)?, a.take(2)?);
            let utf8_safe = match a.opt(3) {
                None => false,
                Some((Expr::Const(Value::Bool(b)), _)) => b,
                Some((_, pos)) => {
                    return Err(OttlError::compile(
                        pos,
                        "Substring: utf8_safe must be true or false",
                    ))
                }
            };
            Func::Substring {
                target,
                start,
                length,
                utf8_safe,
            }
        }
        "ConvertCase" => {
            let target = a.take(0)?;
            let pos = a.pos(1);
            let case = match a.literal_str(1, "to_case")?.as_str() {
                "lower" => Case::Lower,
                "upper" => Case::Upper,
                "snake" => Case::Snake,
                "camel" => Case::Camel,
                other => {
                    return Err(OttlError::compile(
                        pos,
                        format!(
                            "ConvertCase: invalid case {other:?}, allowed cases are: lower, upper, snake, camel"
                        ),
                    ))
                }
            };
            Func::ConvertCase(target, case)
        }
        "ToLowerCase" => Func::ConvertCase(a.take(0)?, Case::Lower),
        "ToUpperCase" => Func::ConvertCase(a.take(0)?, Case::Upper),
        "ToSnakeCase" => Func::ConvertCase(a.take(0)?, Case::Snake),
        "ToCamelCase" => Func::ConvertCase(a.take(0)?, Case::Camel),
        "Trim" => Func::Trim(a.take(0)?, a.opt(1).map(|(e, _)| e)),
        "Time" => {
            let target = a.take(0)?;
            let pos = a.pos(1);
            let format = a.literal_str(1, "format")?;
            time::check_format(&format)
                .map_err(|e| OttlError::compile(pos, format!("Time: {e}")))?;
            if let Some((loc, pos)) = a.opt(2) {
                match loc {
                    Expr::Const(Value::Str(s)) if matches!(s.as_ref(), "" | "UTC" | "Etc/UTC") => {}
                    _ => {
                        return Err(OttlError::compile(
                            pos,
                            "Time: only the UTC location is supported (no time-zone database)",
                        ))
                    }
                }
            }
            if let Some((loc, pos)) = a.opt(3) {
                match loc {
                    Expr::Const(Value::Str(s)) if s.is_empty() || s.starts_with("en") => {}
                    _ => {
                        return Err(OttlError::compile(
                            pos,
                            "Time: only English month and day names are supported",
                        ))
                    }
                }
            }
            Func::Time(target, format)
        }
        "Unix" => Func::Unix(a.take(0)?, a.opt(1).map(|(e, _)| e)),
        "UnixSeconds" => Func::UnixAs(a.take(0)?, TimeUnit::Seconds),
        "UnixMilli" => Func::UnixAs(a.take(0)?, TimeUnit::Milli),
        "UnixMicro" => Func::UnixAs(a.take(0)?, TimeUnit::Micro),
        "UnixNano" => Func::UnixAs(a.take(0)?, TimeUnit::Nano),
        "Now" => Func::Now,
        "Hours" => Func::DurationAs(a.take(0)?, DurUnit::Hours),
        "Minutes" => Func::DurationAs(a.take(0)?, DurUnit::Minutes),
        "Seconds" => Func::DurationAs(a.take(0)?, DurUnit::Seconds),
        "Milliseconds" => Func::DurationAs(a.take(0)?, DurUnit::Milliseconds),
        "Microseconds" => Func::DurationAs(a.take(0)?, DurUnit::Microseconds),
        "Nanoseconds" => Func::DurationAs(a.take(0)?, DurUnit::Nanoseconds),
        "Year" => Func::TimePartOf(a.take(0)?, TimePart::Year),
        "Month" => Func::TimePartOf(a.take(0)?, TimePart::Month),
        "Day" => Func::TimePartOf(a.take(0)?, TimePart::Day),
        "Hour" => Func::TimePartOf(a.take(0)?, TimePart::Hour),
        "Minute" => Func::TimePartOf(a.take(0)?, TimePart::Minute),
        "Second" => Func::TimePartOf(a.take(0)?, TimePart::Second),
        "Nanosecond" => Func::TimePartOf(a.take(0)?, TimePart::Nanosecond),
        "Weekday" => Func::TimePartOf(a.take(0)?, TimePart::Weekday),
        _ => {
            return Err(OttlError::compile(
                call.pos,
                format!("unknown function {name:?}"),
            ))
        }
    };
    Ok(f)
}

fn want_str<'a>(fname: &str, v: Value<'a>) -> Result<Cow<'a, str>, EvalError> {
    match v {
        Value::Str(s) => Ok(s),
        other => Err(EvalError::new(format!(
            "{fname}: expected string but got {}",
            other.type_name()
        ))),
    }
}

fn want_int(fname: &str, v: Value<'_>) -> Result<i64, EvalError> {
    match v {
        Value::Int(i) => Ok(i),
        other => Err(EvalError::new(format!(
            "{fname}: expected int but got {}",
            other.type_name()
        ))),
    }
}

fn want_time(fname: &str, v: Value<'_>) -> Result<i64, EvalError> {
    match v {
        Value::Time(t) => Ok(t),
        other => Err(EvalError::new(format!(
            "{fname}: expected time but got {}",
            other.type_name()
        ))),
    }
}

fn want_duration(fname: &str, v: Value<'_>) -> Result<i64, EvalError> {
    match v {
        Value::Duration(d) => Ok(d),
        other => Err(EvalError::new(format!(
            "{fname}: expected duration but got {}",
            other.type_name()
        ))),
    }
}

/// Maps a function over a string, keeping the borrow when the result is a sub-slice.
fn slice_of<'a>(s: Cow<'a, str>, f: impl FnOnce(&str) -> Option<&str>) -> Option<Cow<'a, str>> {
    match s {
        Cow::Borrowed(b) => {
            let start = f(b)?;
            // `start` is a sub-slice of `b`; recover it with `b`'s lifetime.
            let off = start.as_ptr() as usize - b.as_ptr() as usize;
            Some(Cow::Borrowed(&b[off..off + start.len()]))
        }
        Cow::Owned(o) => f(&o).map(|x| Cow::Owned(x.to_string())),
    }
}

fn split_words(s: &str) -> Vec<String> {
    let chars: Vec<char> = s.chars().collect();
    let mut words = Vec::new();
    let mut cur = String::new();
    for (i, &c) in chars.iter().enumerate() {
        if !c.is_alphanumeric() {
            if !cur.is_empty() {
                words.push(std::mem::take(&mut cur));
            }
            continue;
        }
        if let Some(prev) = cur.chars().last() {
            let next = chars.get(i + 1).copied();
            let boundary = (prev.is_lowercase() && c.is_uppercase())
                || (prev.is_alphabetic() && c.is_ascii_digit())
                || (prev.is_ascii_digit() && c.is_alphabetic())
                // "HTTPServer": the last capital of an acronym starts the next word.
                || (prev.is_uppercase()
                    && c.is_uppercase()
                    && next.is_some_and(|n| n.is_lowercase()));
            if boundary {
                words.push(std::mem::take(&mut cur));
            }
        }
        cur.push(c);
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    words
}

fn convert_case(s: &str, case: Case) -> String {
    match case {
        Case::Lower => s.to_lowercase(),
        Case::Upper => s.to_uppercase(),
        Case::Snake => split_words(s)
            .iter()
            .map(|w| w.to_lowercase())
            .collect::<Vec<_>>()
            .join("_"),
        Case::Camel => split_words(s)
            .iter()
            .map(|w| {
                let mut cs = w.chars();
                match cs.next() {
                    Some(f) => f
                        .to_uppercase()
                        .chain(cs.flat_map(char::to_lowercase))
                        .collect(),
                    None => String::new(),
                }
            })
            .collect(),
    }
}

impl Func {
    pub(crate) fn is_pure(&self) -> bool {
        !matches!(self, Func::IsRootSpan | Func::Now)
    }

    pub(crate) fn all_args_const(&self) -> bool {
        let c = |e: &Expr| e.as_const().is_some();
        match self {
            Func::IsMatch(t, _)
            | Func::Int(t)
            | Func::Double(t)
            | Func::String(t)
            | Func::Len(t)
            | Func::IsType(t, _)
            | Func::IsEmpty(t)
            | Func::Duration(t)
            | Func::Id(t, _)
            | Func::ConvertCase(t, _)
            | Func::Time(t, _)
            | Func::UnixAs(t, _)
            | Func::DurationAs(t, _)
            | Func::TimePartOf(t, _) => c(t),
            Func::HasPrefix(a, b)
            | Func::HasSuffix(a, b)
            | Func::ContainsValue(a, b)
            | Func::Split(a, b) => c(a) && c(b),
            Func::Concat(vals, d) => {
                c(d) && match vals {
                    ListArg::Items(items) => items.iter().all(c),
                    ListArg::Dynamic(e) => c(e),
                }
            }
            Func::IsInCidr(t, n) => {
                c(t) && match n {
                    Networks::Static(_) => true,
                    Networks::Dynamic(e) => c(e),
                }
            }
            Func::Substring {
                target,
                start,
                length,
                ..
            } => c(target) && c(start) && c(length),
            Func::Trim(t, r) => c(t) && r.as_ref().is_none_or(c),
            Func::Unix(s, n) => c(s) && n.as_ref().is_none_or(c),
            Func::IsRootSpan | Func::Now => false,
        }
    }

    pub(crate) fn eval<'a>(&'a self, cx: &EvalContext<'a>) -> Result<Value<'a>, EvalError> {
        Ok(match self {
            Func::IsMatch(t, re) => match t.eval(cx)?.to_text() {
                Some(s) => Value::Bool(re.is_match(&s)),
                None => Value::Bool(false),
            },
            Func::HasPrefix(t, p) => {
                let s = want_str("HasPrefix", t.eval(cx)?)?;
                let p = want_str("HasPrefix", p.eval(cx)?)?;
                Value::Bool(s.starts_with(p.as_ref()))
            }
            Func::HasSuffix(t, p) => {
                let s = want_str("HasSuffix", t.eval(cx)?)?;
                let p = want_str("HasSuffix", p.eval(cx)?)?;
                Value::Bool(s.ends_with(p.as_ref()))
            }
            Func::Concat(vals, delim) => {
                let delim = want_str("Concat", delim.eval(cx)?)?;
                let mut out = String::new();
                let mut push = |i: usize, v: Value<'_>| {
                    if i > 0 {
                        out.push_str(&delim);
                    }
                    match v.to_text() {
                        Some(s) => out.push_str(&s),
                        None => out.push_str("<nil>"),
                    }
                };
                match vals {
                    ListArg::Items(items) => {
                        for (i, e) in items.iter().enumerate() {
                            push(i, e.eval(cx)?);
                        }
                    }
                    ListArg::Dynamic(e) => match e.eval(cx)? {
                        Value::List(l) => {
                            for (i, v) in l.iter().enumerate() {
                                push(i, v);
                            }
                        }
                        other => {
                            return Err(EvalError::new(format!(
                                "Concat: expected a list but got {}",
                                other.type_name()
                            )))
                        }
                    },
                }
                Value::Str(Cow::Owned(out))
            }
            Func::Int(t) => match t.eval(cx)? {
                Value::Int(i) => Value::Int(i),
                // Truncation toward zero, saturating, like Go's int64(float64).
                Value::Double(d) if d.is_finite() => Value::Int(d.trunc() as i64),
                Value::Bool(b) => Value::Int(b as i64),
                Value::Str(s) => s.trim().parse::<i64>().map_or(Value::Nil, Value::Int),
                _ => Value::Nil,
            },
            Func::Double(t) => match t.eval(cx)? {
                Value::Int(i) => Value::Double(i as f64),
                Value::Double(d) => Value::Double(d),
                Value::Bool(b) => Value::Double(if b { 1.0 } else { 0.0 }),
                Value::Str(s) => s.trim().parse::<f64>().map_or(Value::Nil, Value::Double),
                _ => Value::Nil,
            },
            Func::String(t) => match t.eval(cx)?.into_text() {
                Some(s) => Value::Str(s),
                None => Value::Nil,
            },
            Func::Len(t) => Value::Int(match t.eval(cx)? {
                Value::Str(s) => s.len() as i64,
                Value::List(l) => l.len() as i64,
                Value::Map(m) => m.len() as i64,
                other => {
                    return Err(EvalError::new(format!(
                        "Len: unsupported type {}",
                        other.type_name()
                    )))
                }
            }),
            Func::IsType(t, check) => {
                let v = t.eval(cx)?;
                Value::Bool(matches!(
                    (check, v),
                    (TypeCheck::Str, Value::Str(_))
                        | (TypeCheck::Int, Value::Int(_))
                        | (TypeCheck::Double, Value::Double(_))
                        | (TypeCheck::Bool, Value::Bool(_))
                        | (TypeCheck::Map, Value::Map(_))
                        | (TypeCheck::List, Value::List(_))
                ))
            }
            Func::IsEmpty(t) => Value::Bool(match t.eval(cx)? {
                Value::Nil => true,
                Value::Str(s) => s.is_empty(),
                Value::Bytes(b) => b.is_empty(),
                Value::List(l) => l.is_empty(),
                Value::Map(m) => m.is_empty(),
                _ => false,
            }),
            Func::ContainsValue(t, item) => {
                let item = item.eval(cx)?;
                match t.eval(cx)? {
                    Value::List(l) => Value::Bool(l.iter().any(|v| compare(&v, &item, CmpOp::Eq))),
                    other => {
                        return Err(EvalError::new(format!(
                            "ContainsValue: expected a list but got {}",
                            other.type_name()
                        )))
                    }
                }
            }
            Func::IsInCidr(t, networks) => {
                let s = want_str("IsInCIDR", t.eval(cx)?)?;
                let Ok(ip) = s.parse::<IpAddr>() else {
                    return Ok(Value::Bool(false));
                };
                match networks {
                    Networks::Static(nets) => Value::Bool(nets.iter().any(|n| n.contains(ip))),
                    Networks::Dynamic(e) => match e.eval(cx)? {
                        Value::List(l) => {
                            let mut hit = false;
                            for v in l.iter() {
                                let s = want_str("IsInCIDR", v)?;
                                let n = Cidr::parse(&s).map_err(EvalError::new)?;
                                if n.contains(ip) {
                                    hit = true;
                                    break;
                                }
                            }
                            Value::Bool(hit)
                        }
                        other => {
                            return Err(EvalError::new(format!(
                                "IsInCIDR: networks must be a list, got {}",
                                other.type_name()
                            )))
                        }
                    },
                }
            }
            Func::IsRootSpan => Value::Bool(cx.span()?.parent_span_id.iter().all(|b| *b == 0)),
            Func::Duration(t) => {
                let s = want_str("Duration", t.eval(cx)?)?;
                Value::Duration(
                    time::parse_duration(&s)
                        .map_err(|e| EvalError::new(format!("Duration: {e}")))?,
                )
            }
            Func::Id(t, len) => {
                let what = if *len == 16 { "TraceID" } else { "SpanID" };
                match t.eval(cx)? {
                    Value::Bytes(b) if b.len() == *len => Value::Bytes(b),
                    Value::Bytes(b) => {
                        return Err(EvalError::new(format!(
                            "{what}: expected {len} bytes, got {}",
                            b.len()
                        )))
                    }
                    other => {
                        return Err(EvalError::new(format!(
                            "{what}: expected bytes but got {}",
                            other.type_name()
                        )))
                    }
                }
            }
            Func::Split(t, d) => {
                let s = want_str("Split", t.eval(cx)?)?;
                let d = want_str("Split", d.eval(cx)?)?;
                let parts: Vec<Value<'a>> = match s {
                    Cow::Borrowed(b) if d.is_empty() => b
                        .char_indices()
                        .map(|(i, c)| Value::str(&b[i..i + c.len_utf8()]))
                        .collect(),
                    Cow::Borrowed(b) => b.split(d.as_ref()).map(Value::str).collect(),
                    Cow::Owned(o) if d.is_empty() => o
                        .chars()
                        .map(|c| Value::Str(Cow::Owned(c.to_string())))
                        .collect(),
                    Cow::Owned(o) => o
                        .split(d.as_ref())
                        .map(|p| Value::Str(Cow::Owned(p.to_string())))
                        .collect(),
                };
                Value::List(ListValue::Owned(parts))
            }
            Func::Substring {
                target,
                start,
                length,
                utf8_safe,
            } => {
                let start = want_int("Substring", start.eval(cx)?)?;
                if start < 0 {
                    return Err(EvalError::new(format!(
                        "Substring: start {start} cannot be negative"
                    )));
                }
                let length = want_int("Substring", length.eval(cx)?)?;
                if length <= 0 {
                    return Err(EvalError::new(format!(
                        "Substring: length {length} must be positive"
                    )));
                }
                let s = want_str("Substring", target.eval(cx)?)?;
                let (start, length) = (start as usize, length as usize);
                let sub = slice_of(s, |s| {
                    if *utf8_safe {
                        let mut idx = s.char_indices().map(|(i, _)| i).chain([s.len()]);
                        let b = idx.nth(start)?;
                        let e = idx.nth(length - 1)?;
                        s.get(b..e)
                    } else {
                        s.get(start..start.checked_add(length)?)
                    }
                });
                match sub {
                    Some(sub) => Value::Str(sub),
                    None => {
                        return Err(EvalError::new(format!(
                            "Substring: range {start}+{length} is outside the string (or splits a character)"
                        )))
                    }
                }
            }
            Func::ConvertCase(t, case) => {
                let s = want_str("ConvertCase", t.eval(cx)?)?;
                Value::Str(Cow::Owned(convert_case(&s, *case)))
            }
            Func::Trim(t, r) => {
                let s = want_str("Trim", t.eval(cx)?)?;
                let cut = match r {
                    Some(r) => want_str("Trim", r.eval(cx)?)?,
                    None => Cow::Borrowed(" "),
                };
                let trimmed = slice_of(s, |s| Some(s.trim_matches(|c| cut.contains(c))));
                Value::Str(trimmed.unwrap_or(Cow::Borrowed("")))
            }
            Func::Time(t, format) => {
                let s = want_str("Time", t.eval(cx)?)?;
                Value::Time(
                    time::parse_time(&s, format)
                        .map_err(|e| EvalError::new(format!("Time: {e}")))?,
                )
            }
            Func::Unix(secs, nanos) => {
                let s = want_int("Unix", secs.eval(cx)?)?;
                let n = match nanos {
                    Some(n) => want_int("Unix", n.eval(cx)?)?,
                    None => 0,
                };
                Value::Time(s.wrapping_mul(1_000_000_000).wrapping_add(n))
            }
            Func::UnixAs(t, unit) => {
                let t = want_time("Unix*", t.eval(cx)?)?;
                Value::Int(t.div_euclid(match unit {
                    TimeUnit::Seconds => 1_000_000_000,
                    TimeUnit::Milli => 1_000_000,
                    TimeUnit::Micro => 1_000,
                    TimeUnit::Nano => 1,
                }))
            }
            Func::Now => Value::Time(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)),
            ),
            Func::DurationAs(d, unit) => {
                let d = want_duration("duration converter", d.eval(cx)?)?;
                match unit {
                    DurUnit::Hours => Value::Double(d as f64 / 3.6e12),
                    DurUnit::Minutes => Value::Double(d as f64 / 6e10),
                    DurUnit::Seconds => Value::Double(d as f64 / 1e9),
                    DurUnit::Milliseconds => Value::Int(d / 1_000_000),
                    DurUnit::Microseconds => Value::Int(d / 1_000),
                    DurUnit::Nanoseconds => Value::Int(d),
                }
            }
            Func::TimePartOf(t, part) => {
                let c = time::to_civil(want_time("time converter", t.eval(cx)?)?);
                Value::Int(match part {
                    TimePart::Year => c.year,
                    TimePart::Month => c.month as i64,
                    TimePart::Day => c.day as i64,
                    TimePart::Hour => c.hour as i64,
                    TimePart::Minute => c.minute as i64,
                    TimePart::Second => c.second as i64,
                    TimePart::Nanosecond => c.nanos as i64,
                    TimePart::Weekday => c.weekday as i64,
                })
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_matching() {
        let n = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(n.contains("10.1.2.3".parse().unwrap()));
        assert!(!n.contains("11.0.0.1".parse().unwrap()));
        assert!(n.contains("::ffff:10.0.0.1".parse().unwrap()));
        let n6 = Cidr::parse("2001:db8::/32").unwrap();
        assert!(n6.contains("2001:db8::1".parse().unwrap()));
        assert!(!n6.contains("10.0.0.1".parse().unwrap()));
        assert!(Cidr::parse("0.0.0.0/0")
            .unwrap()
            .contains("1.2.3.4".parse().unwrap()));
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("10.0.0.0").is_err());
    }

    #[test]
    fn case_conversion() {
        assert_eq!(convert_case("someName", Case::Snake), "some_name");
        assert_eq!(convert_case("HTTPServer", Case::Snake), "http_server");
        assert_eq!(
            convert_case("numbers2And55with000", Case::Snake),
            "numbers_2_and_55_with_000"
        );
        assert_eq!(convert_case("some_name", Case::Camel), "SomeName");
        assert_eq!(
            convert_case("any kind-of.string", Case::Camel),
            "AnyKindOfString"
        );
        assert_eq!(convert_case("MiXeD", Case::Lower), "mixed");
    }
}
