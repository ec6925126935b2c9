//! Runtime values. They borrow from the telemetry being evaluated (attribute strings, maps and
//! lists are never copied) and from the compiled condition (literals), so comparing a field to
//! a literal allocates nothing. Only converters that build new data (`Concat`, `Split`, ...)
//! produce owned values.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt::Write as _;

use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};

use crate::parser::CmpOp;

#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    Nil,
    Bool(bool),
    Int(i64),
    Double(f64),
    Str(Cow<'a, str>),
    Bytes(Cow<'a, [u8]>),
    /// Nanoseconds since the Unix epoch, UTC.
    Time(i64),
    /// Nanoseconds.
    Duration(i64),
    Map(MapValue<'a>),
    List(ListValue<'a>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum MapValue<'a> {
    /// Attributes or a key-value list inside the telemetry.
    Attrs(&'a [KeyValue]),
    /// A map literal folded at load time.
    Ref(&'a [(Cow<'a, str>, Value<'a>)]),
    Owned(Vec<(Cow<'a, str>, Value<'a>)>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum ListValue<'a> {
    Any(&'a [AnyValue]),
    Ref(&'a [Value<'a>]),
    Owned(Vec<Value<'a>>),
    U64(&'a [u64]),
    F64(&'a [f64]),
    /// A repeated message (span events, links, data points): only its length is usable.
    Opaque {
        len: usize,
        what: &'static str,
    },
}

impl<'a> Value<'a> {
    pub fn str(s: &'a str) -> Value<'a> {
        Value::Str(Cow::Borrowed(s))
    }

    pub fn from_any(v: &'a AnyValue) -> Value<'a> {
        match &v.value {
            None => Value::Nil,
            Some(any_value::Value::StringValue(s)) => Value::str(s),
            Some(any_value::Value::BoolValue(b)) => Value::Bool(*b),
            Some(any_value::Value::IntValue(i)) => Value::Int(*i),
            Some(any_value::Value::DoubleValue(d)) => Value::Double(*d),
            Some(any_value::Value::ArrayValue(a)) => Value::List(ListValue::Any(&a.values)),
            Some(any_value::Value::KvlistValue(m)) => Value::Map(MapValue::Attrs(&m.values)),
            Some(any_value::Value::BytesValue(b)) => Value::Bytes(Cow::Borrowed(b)),
        }
    }

    pub fn from_opt_any(v: Option<&'a AnyValue>) -> Value<'a> {
        v.map_or(Value::Nil, Value::from_any)
    }

    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Nil => "nil",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Double(_) => "double",
            Value::Str(_) => "string",
            Value::Bytes(_) => "bytes",
            Value::Time(_) => "time",
            Value::Duration(_) => "duration",
            Value::Map(_) => "map",
            Value::List(_) => "list",
        }
    }

    /// A view of `self` that borrows instead of owning (no allocation); how folded
    /// constants are handed out on every evaluation.
    pub fn reborrow(&self) -> Value<'_> {
        match self {
            Value::Nil => Value::Nil,
            Value::Bool(b) => Value::Bool(*b),
            Value::Int(i) => Value::Int(*i),
            Value::Double(d) => Value::Double(*d),
            Value::Str(s) => Value::Str(Cow::Borrowed(s)),
            Value::Bytes(b) => Value::Bytes(Cow::Borrowed(b)),
            Value::Time(t) => Value::Time(*t),
            Value::Duration(d) => Value::Duration(*d),
            Value::Map(MapValue::Attrs(a)) => Value::Map(MapValue::Attrs(a)),
            Value::Map(MapValue::Ref(r)) => Value::Map(MapValue::Ref(r)),
            Value::Map(MapValue::Owned(v)) => Value::Map(MapValue::Ref(v)),
            Value::List(l) => Value::List(match l {
                ListValue::Any(a) => ListValue::Any(a),
                ListValue::Ref(r) => ListValue::Ref(r),
                ListValue::Owned(v) => ListValue::Ref(v),
                ListValue::U64(v) => ListValue::U64(v),
                ListValue::F64(v) => ListValue::F64(v),
                ListValue::Opaque { len, what } => ListValue::Opaque { len: *len, what },
            }),
        }
    }

    /// Detaches from everything borrowed; used only when folding constants at load.
    pub fn into_owned(self) -> Value<'static> {
        match self {
            Value::Nil => Value::Nil,
            Value::Bool(b) => Value::Bool(b),
            Value::Int(i) => Value::Int(i),
            Value::Double(d) => Value::Double(d),
            Value::Str(s) => Value::Str(Cow::Owned(s.into_owned())),
            Value::Bytes(b) => Value::Bytes(Cow::Owned(b.into_owned())),
            Value::Time(t) => Value::Time(t),
            Value::Duration(d) => Value::Duration(d),
            Value::Map(m) => Value::Map(MapValue::Owned(
                m.entries()
                    .map(|(k, v)| (Cow::Owned(k.to_string()), v.into_owned()))
                    .collect(),
            )),
            Value::List(ListValue::Opaque { len, what }) => {
                Value::List(ListValue::Opaque { len, what })
            }
            Value::List(l) => Value::List(ListValue::Owned(
                (0..l.len())
                    .filter_map(|i| l.get(i))
                    .map(Value::into_owned)
                    .collect(),
            )),
        }
    }

    /// Text form, as OTTL's "string-like" arguments see it: numbers and booleans printed,
    /// bytes in hex, maps and lists as JSON. `None` for nil.
    pub fn to_text(&self) -> Option<Cow<'_, str>> {
        match self {
            Value::Nil => None,
            Value::Str(s) => Some(Cow::Borrowed(s)),
            other => {
                let mut out = String::new();
                write_text(other, &mut out);
                Some(Cow::Owned(out))
            }
        }
    }

    /// Like [`Value::to_text`] but keeps the borrow of the underlying data when it is a string.
    pub fn into_text(self) -> Option<Cow<'a, str>> {
        match self {
            Value::Str(s) => Some(s),
            Value::Nil => None,
            other => {
                let mut out = String::new();
                write_text(&other, &mut out);
                Some(Cow::Owned(out))
            }
        }
    }
}

fn write_text(v: &Value<'_>, out: &mut String) {
    match v {
        Value::Nil => {}
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Value::Double(d) => write_double(*d, out),
        Value::Str(s) => out.push_str(s),
        Value::Bytes(b) => out.push_str(&hex::encode(b)),
        Value::Time(t) => out.push_str(&crate::time::format_rfc3339(*t)),
        Value::Duration(d) => out.push_str(&crate::time::format_duration(*d)),
        Value::Map(_) | Value::List(_) => write_json(v, out),
    }
}

fn write_double(d: f64, out: &mut String) {
    if d.is_nan() {
        out.push_str("NaN");
    } else if d.is_infinite() {
        out.push_str(if d > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        let _ = write!(out, "{d}");
    }
}

fn write_json(v: &Value<'_>, out: &mut String) {
    match v {
        Value::Nil => out.push_str("null"),
        Value::Bool(_) | Value::Int(_) => write_text(v, out),
        Value::Double(d) if d.is_finite() => write_double(*d, out),
        Value::Double(_) => out.push_str("null"),
        Value::Str(s) => write_json_str(s, out),
        Value::Bytes(b) => write_json_str(&hex::encode(b), out),
        Value::Time(_) | Value::Duration(_) => {
            let mut s = String::new();
            write_text(v, &mut s);
            write_json_str(&s, out);
        }
        Value::Map(m) => {
            // Sorted keys, as Go's encoding/json renders maps.
            let mut entries: Vec<(&str, Value<'_>)> = m.entries().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (k, val)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json_str(k, out);
                out.push(':');
                write_json(val, out);
            }
            out.push('}');
        }
        Value::List(l) => {
            out.push('[');
            for i in 0..l.len() {
                if i > 0 {
                    out.push(',');
                }
                match l.get(i) {
                    Some(e) => write_json(&e, out),
                    None => out.push_str("null"),
                }
            }
            out.push(']');
        }
    }
}

fn write_json_str(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

impl<'a> MapValue<'a> {
    pub fn len(&self) -> usize {
        match self {
            MapValue::Attrs(a) => a.len(),
            MapValue::Ref(r) => r.len(),
            MapValue::Owned(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Value under `key`; `None` if absent. Attribute lists are scanned linearly: they are
    /// short, and a scan over contiguous keys beats hashing for the sizes seen in practice.
    pub fn get(&self, key: &str) -> Option<Value<'_>> {
        match self {
            MapValue::Attrs(a) => lookup_attr(a, key).map(Value::from_opt_any),
            MapValue::Ref(r) => r.iter().find(|(k, _)| k == key).map(|(_, v)| v.reborrow()),
            MapValue::Owned(v) => v.iter().find(|(k, _)| k == key).map(|(_, v)| v.reborrow()),
        }
    }

    /// Like `get`, consuming the map so an owned entry can be moved out.
    pub fn take(self, key: &str) -> Option<Value<'a>> {
        match self {
            MapValue::Attrs(a) => lookup_attr(a, key).map(Value::from_opt_any),
            MapValue::Ref(r) => r.iter().find(|(k, _)| k == key).map(|(_, v)| v.reborrow()),
            MapValue::Owned(v) => v.into_iter().find(|(k, _)| k == key).map(|(_, v)| v),
        }
    }

    pub fn entries(&self) -> Box<dyn Iterator<Item = (&str, Value<'_>)> + '_> {
        match self {
            MapValue::Attrs(a) => Box::new(
                a.iter()
                    .map(|kv| (kv.key.as_str(), Value::from_opt_any(kv.value.as_ref()))),
            ),
            MapValue::Ref(r) => Box::new(r.iter().map(|(k, v)| (k.as_ref(), v.reborrow()))),
            MapValue::Owned(v) => Box::new(v.iter().map(|(k, v)| (k.as_ref(), v.reborrow()))),
        }
    }
}

/// The value of attribute `key`: `Some(None)` when present without a value.
pub(crate) fn lookup_attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<Option<&'a AnyValue>> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .map(|kv| kv.value.as_ref())
}

impl<'a> ListValue<'a> {
    pub fn len(&self) -> usize {
        match self {
            ListValue::Any(a) => a.len(),
            ListValue::Ref(r) => r.len(),
            ListValue::Owned(v) => v.len(),
            ListValue::U64(v) => v.len(),
            ListValue::F64(v) => v.len(),
            ListValue::Opaque { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Element `i`; `None` when out of range or for opaque lists.
    pub fn get(&self, i: usize) -> Option<Value<'_>> {
        match self {
            ListValue::Owned(v) => v.get(i).map(Value::reborrow),
            other => other.clone_shallow().take(i),
        }
    }

    /// A copy that shares the underlying data; cheap for every variant but `Owned`.
    fn clone_shallow(&self) -> ListValue<'_> {
        match self {
            ListValue::Any(a) => ListValue::Any(a),
            ListValue::Ref(r) => ListValue::Ref(r),
            ListValue::Owned(v) => ListValue::Ref(v),
            ListValue::U64(v) => ListValue::U64(v),
            ListValue::F64(v) => ListValue::F64(v),
            ListValue::Opaque { len, what } => ListValue::Opaque { len: *len, what },
        }
    }

    /// Element `i`, consuming the list so an owned element can be moved out.
    pub fn take(self, i: usize) -> Option<Value<'a>> {
        match self {
            ListValue::Any(a) => a.get(i).map(Value::from_any),
            ListValue::Ref(r) => r.get(i).map(Value::reborrow),
            ListValue::Owned(mut v) => (i < v.len()).then(|| v.swap_remove(i)),
            // u64 counts above i64::MAX do not occur in histograms; saturate rather than wrap.
            ListValue::U64(v) => v
                .get(i)
                .map(|n| Value::Int(i64::try_from(*n).unwrap_or(i64::MAX))),
            ListValue::F64(v) => v.get(i).map(|d| Value::Double(*d)),
            ListValue::Opaque { .. } => None,
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = Value<'_>> + '_ {
        (0..self.len()).filter_map(move |i| self.get(i))
    }
}

pub(crate) fn ord_holds(o: Option<Ordering>, op: CmpOp) -> bool {
    let Some(o) = o else {
        // Unordered (NaN): only "not equal" holds.
        return op == CmpOp::Ne;
    };
    match op {
        CmpOp::Eq => o == Ordering::Equal,
        CmpOp::Ne => o != Ordering::Equal,
        CmpOp::Lt => o == Ordering::Less,
        CmpOp::Le => o != Ordering::Greater,
        CmpOp::Gt => o == Ordering::Greater,
        CmpOp::Ge => o != Ordering::Less,
    }
}

/// OTTL comparison: never an error. Values of kinds that cannot be compared are simply not
/// equal (`!=` true, every other operator false). Ints and doubles compare as doubles; maps and
/// lists support only `==`/`!=`.
pub fn compare(a: &Value<'_>, b: &Value<'_>, op: CmpOp) -> bool {
    use Value as V;
    let ord = match (a, b) {
        (V::Nil, V::Nil) => Some(Ordering::Equal),
        (V::Bool(x), V::Bool(y)) => Some(x.cmp(y)),
        (V::Int(x), V::Int(y)) => Some(x.cmp(y)),
        (V::Int(x), V::Double(y)) => (*x as f64).partial_cmp(y),
        (V::Double(x), V::Int(y)) => x.partial_cmp(&(*y as f64)),
        (V::Double(x), V::Double(y)) => x.partial_cmp(y),
        (V::Str(x), V::Str(y)) => Some(x.as_ref().cmp(y.as_ref())),
        (V::Bytes(x), V::Bytes(y)) => Some(x.as_ref().cmp(y.as_ref())),
        (V::Time(x), V::Time(y)) | (V::Duration(x), V::Duration(y)) => Some(x.cmp(y)),
        (V::Map(_), V::Map(_)) | (V::List(_), V::List(_)) => {
            return match op {
                CmpOp::Eq => deep_eq(a, b),
                CmpOp::Ne => !deep_eq(a, b),
                _ => false,
            };
        }
        _ => return op == CmpOp::Ne,
    };
    ord_holds(ord, op)
}

/// Structural equality with strict kinds (an int element never equals a double element),
/// as the reference compares nested values; map key order does not matter.
pub fn deep_eq(a: &Value<'_>, b: &Value<'_>) -> bool {
    match (a, b) {
        (Value::Map(x), Value::Map(y)) => {
            x.len() == y.len()
                && x.entries().all(|(k, v)| match y.get(k) {
                    Some(w) => deep_eq(&v, &w),
                    None => false,
                })
        }
        (Value::List(ListValue::Opaque { .. }), _) | (_, Value::List(ListValue::Opaque { .. })) => {
            false
        }
        (Value::List(x), Value::List(y)) => {
            x.len() == y.len() && x.iter().zip(y.iter()).all(|(v, w)| deep_eq(&v, &w))
        }
        (Value::Double(x), Value::Double(y)) => x == y,
        _ => std::mem::discriminant(a) == std::mem::discriminant(b) && a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, KeyValueList};

    fn s(x: &str) -> Value<'_> {
        Value::str(x)
    }

    #[test]
    fn mixed_kinds_are_only_unequal() {
        for op in [CmpOp::Eq, CmpOp::Lt, CmpOp::Le, CmpOp::Gt, CmpOp::Ge] {
            assert!(!compare(&s("true"), &Value::Bool(true), op));
            assert!(!compare(&Value::Bool(true), &Value::Int(0), op));
            assert!(!compare(&Value::Nil, &Value::Int(0), op));
            assert!(!compare(&Value::Int(1), &Value::Nil, op));
        }
        assert!(compare(&s("true"), &Value::Bool(true), CmpOp::Ne));
        assert!(compare(&Value::Bool(true), &Value::Int(0), CmpOp::Ne));
        assert!(compare(&Value::Nil, &s(""), CmpOp::Ne));
    }

    #[test]
    fn nil_equals_nil() {
        assert!(compare(&Value::Nil, &Value::Nil, CmpOp::Eq));
        assert!(compare(&Value::Nil, &Value::Nil, CmpOp::Le));
        assert!(!compare(&Value::Nil, &Value::Nil, CmpOp::Ne));
        assert!(!compare(&Value::Nil, &Value::Nil, CmpOp::Lt));
    }

    #[test]
    fn numbers_strings_bools() {
        assert!(compare(&Value::Int(1), &Value::Double(1.0), CmpOp::Eq));
        assert!(compare(&Value::Double(0.5), &Value::Int(1), CmpOp::Lt));
        assert!(compare(&s("abc"), &s("abd"), CmpOp::Lt));
        assert!(compare(&s("b"), &s("abc"), CmpOp::Gt));
        assert!(compare(&Value::Bool(false), &Value::Bool(true), CmpOp::Lt));
        assert!(!compare(
            &Value::Double(f64::NAN),
            &Value::Double(f64::NAN),
            CmpOp::Eq
        ));
        assert!(compare(
            &Value::Bytes(Cow::Borrowed(&[1, 2])),
            &Value::Bytes(Cow::Borrowed(&[1, 3])),
            CmpOp::Lt
        ));
    }

    #[test]
    fn maps_and_lists_equality_only() {
        let attrs = vec![
            KeyValue {
                key: "a".into(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::IntValue(1)),
                }),
            },
            KeyValue {
                key: "b".into(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::StringValue("x".into())),
                }),
            },
        ];
        let lit = vec![
            (Cow::Borrowed("b"), s("x")),
            (Cow::Borrowed("a"), Value::Int(1)),
        ];
        let m1 = Value::Map(MapValue::Attrs(&attrs));
        let m2 = Value::Map(MapValue::Ref(&lit));
        assert!(compare(&m1, &m2, CmpOp::Eq));
        assert!(!compare(&m1, &m2, CmpOp::Le));
        let arr = ArrayValue {
            values: vec![AnyValue {
                value: Some(any_value::Value::IntValue(1)),
            }],
        };
        let l1 = Value::List(ListValue::Any(&arr.values));
        assert!(compare(
            &l1,
            &Value::List(ListValue::Owned(vec![Value::Int(1)])),
            CmpOp::Eq
        ));
        assert!(compare(
            &l1,
            &Value::List(ListValue::Owned(vec![Value::Double(1.0)])),
            CmpOp::Ne
        ));
    }

    #[test]
    fn text_forms() {
        assert_eq!(Value::Int(-3).to_text().unwrap(), "-3");
        assert_eq!(Value::Double(1.0).to_text().unwrap(), "1");
        assert_eq!(Value::Double(0.25).to_text().unwrap(), "0.25");
        assert_eq!(
            Value::Bytes(Cow::Borrowed(&[0xab, 1])).to_text().unwrap(),
            "ab01"
        );
        assert_eq!(Value::Nil.to_text(), None);
        let kv = KeyValueList {
            values: vec![
                KeyValue {
                    key: "z".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::BoolValue(true)),
                    }),
                },
                KeyValue {
                    key: "a".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue("q\"".into())),
                    }),
                },
            ],
        };
        assert_eq!(
            Value::Map(MapValue::Attrs(&kv.values)).to_text().unwrap(),
            r#"{"a":"q\"","z":true}"#
        );
    }
}
