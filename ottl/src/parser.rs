//! Text -> syntax tree. Only the grammar is checked here; names are resolved by `compile`.

use pest::iterators::Pair;
use pest::Parser as _;
use pest_derive::Parser;

use crate::error::{OttlError, Pos};

#[derive(Parser)]
#[grammar = "grammar.pest"]
struct OttlParser;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MathOp {
    Add,
    Sub,
    Mul,
    Div,
}

#[derive(Debug, Clone)]
pub enum BoolAst {
    Or(Vec<BoolAst>),
    And(Vec<BoolAst>),
    Not(Box<BoolAst>),
    Lit(bool),
    Cmp(ValAst, CmpOp, ValAst),
    /// A converter used directly as a boolean (`IsMatch(...)`).
    Call(CallAst),
}

#[derive(Debug, Clone)]
pub enum Key {
    Str(String),
    Int(i64),
}

#[derive(Debug, Clone)]
pub struct Segment {
    pub name: String,
    pub keys: Vec<Key>,
    pub pos: Pos,
}

#[derive(Debug, Clone)]
pub struct PathAst {
    pub segments: Vec<Segment>,
    pub pos: Pos,
}

impl PathAst {
    /// The path as written, without keys (`resource.attributes`), for messages.
    pub fn dotted(&self) -> String {
        self.segments
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(".")
    }
}

#[derive(Debug, Clone)]
pub struct ArgAst {
    pub name: Option<String>,
    pub value: ValAst,
    pub pos: Pos,
}

#[derive(Debug, Clone)]
pub struct CallAst {
    pub name: String,
    pub args: Vec<ArgAst>,
    pub keys: Vec<Key>,
    pub pos: Pos,
}

#[derive(Debug, Clone)]
pub enum ValAst {
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Enum(String, Pos),
    Map(Vec<(String, ValAst)>),
    List(Vec<ValAst>),
    Path(PathAst),
    Call(CallAst),
    Math(Box<ValAst>, MathOp, Box<ValAst>, Pos),
}

fn pos_of(pair: &Pair<'_, Rule>) -> Pos {
    let (line, column) = pair.as_span().start_pos().line_col();
    Pos { line, column }
}

fn rule_name(r: &Rule) -> String {
    match r {
        Rule::EOI => "end of condition",
        Rule::bool_expr | Rule::bool_term | Rule::bool_factor | Rule::bool_primary => {
            "boolean expression"
        }
        Rule::paren_bool | Rule::paren_math => "\"(\"",
        Rule::comparison => "comparison",
        Rule::or_op => "\"or\"",
        Rule::and_op => "\"and\"",
        Rule::not_op => "\"not\"",
        Rule::comp_op => "comparison operator (== != < <= > >=)",
        Rule::value => "value",
        Rule::math_expr | Rule::math_term | Rule::math_factor => "math expression",
        Rule::add_op => "\"+\" or \"-\"",
        Rule::mul_op => "\"*\" or \"/\"",
        Rule::nil_lit => "nil",
        Rule::bool_lit => "true or false",
        Rule::bytes_lit => "bytes (0x...)",
        Rule::float_lit => "float",
        Rule::int_lit => "integer",
        Rule::string_lit => "string",
        Rule::string_raw => "string content",
        Rule::enum_lit => "enum",
        Rule::map_lit | Rule::map_entry => "map",
        Rule::list_lit => "list",
        Rule::converter => "converter call",
        Rule::func_name => "function name",
        Rule::arg | Rule::named_arg => "argument",
        Rule::arg_name => "argument name",
        Rule::assign => "\"=\"",
        Rule::index => "\"[\"",
        Rule::path | Rule::path_segment | Rule::field_name => "path",
        Rule::condition => "condition",
        Rule::WHITESPACE => "whitespace",
        Rule::ident_char => "letter, digit or \"_\"",
    }
    .to_string()
}

/// Parses one condition into its syntax tree.
pub fn parse(src: &str) -> Result<BoolAst, OttlError> {
    let mut pairs = OttlParser::parse(Rule::condition, src).map_err(|e| {
        let (line, column) = match e.line_col {
            pest::error::LineColLocation::Pos(p) => p,
            pest::error::LineColLocation::Span(p, _) => p,
        };
        let msg = match &e.variant {
            pest::error::ErrorVariant::ParsingError {
                positives,
                negatives,
            } => {
                let found = src
                    .lines()
                    .nth(line.saturating_sub(1))
                    .and_then(|l| l.chars().nth(column.saturating_sub(1)))
                    .map(|c| format!("{c:?}"))
                    .unwrap_or_else(|| "end of condition".to_string());
                let mut exp: Vec<String> = Vec::new();
                for name in positives.iter().map(rule_name) {
                    if !exp.contains(&name) {
                        exp.push(name);
                    }
                }
                if exp.is_empty() {
                    let neg: Vec<String> = negatives.iter().map(rule_name).collect();
                    format!("unexpected {}", one_of(&neg))
                } else {
                    format!("expected {}, found {found}", one_of(&exp))
                }
            }
            pest::error::ErrorVariant::CustomError { message } => message.clone(),
        };
        OttlError::syntax(Pos { line, column }, msg)
    })?;
    let cond = pairs
        .next()
        .ok_or_else(|| OttlError::syntax(Pos::START, "empty condition"))?;
    let expr = cond
        .into_inner()
        .next()
        .ok_or_else(|| OttlError::syntax(Pos::START, "empty condition"))?;
    bool_expr(expr)
}

/// "a", "a or b", "a, b, or c".
fn one_of(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [a, b] => format!("{a} or {b}"),
        [init @ .., last] => format!("{}, or {last}", init.join(", ")),
    }
}

fn unexpected(pair: &Pair<'_, Rule>) -> OttlError {
    OttlError::syntax(
        pos_of(pair),
        format!("unexpected {}", rule_name(&pair.as_rule())),
    )
}

fn bool_expr(pair: Pair<'_, Rule>) -> Result<BoolAst, OttlError> {
    match pair.as_rule() {
        Rule::bool_expr => {
            let mut terms = Vec::new();
            for p in pair.into_inner() {
                if p.as_rule() != Rule::or_op {
                    terms.push(bool_expr(p)?);
                }
            }
            Ok(if terms.len() == 1 {
                terms.remove(0)
            } else {
                BoolAst::Or(terms)
            })
        }
        Rule::bool_term => {
            let mut factors = Vec::new();
            for p in pair.into_inner() {
                if p.as_rule() != Rule::and_op {
                    factors.push(bool_expr(p)?);
                }
            }
            Ok(if factors.len() == 1 {
                factors.remove(0)
            } else {
                BoolAst::And(factors)
            })
        }
        Rule::bool_factor => {
            let mut negate = false;
            let mut inner = None;
            for p in pair.into_inner() {
                if p.as_rule() == Rule::not_op {
                    negate = true;
                } else {
                    inner = Some(bool_expr(p)?);
                }
            }
            let inner = inner.ok_or_else(|| OttlError::syntax(Pos::START, "empty expression"))?;
            Ok(if negate {
                BoolAst::Not(Box::new(inner))
            } else {
                inner
            })
        }
        Rule::paren_bool => {
            let p = pair
                .clone()
                .into_inner()
                .next()
                .ok_or_else(|| unexpected(&pair))?;
            bool_expr(p)
        }
        Rule::comparison => {
            let mut it = pair.clone().into_inner();
            let (Some(l), Some(op), Some(r)) = (it.next(), it.next(), it.next()) else {
                return Err(unexpected(&pair));
            };
            let op = match op.as_str() {
                "==" => CmpOp::Eq,
                "!=" => CmpOp::Ne,
                "<" => CmpOp::Lt,
                "<=" => CmpOp::Le,
                ">" => CmpOp::Gt,
                ">=" => CmpOp::Ge,
                _ => return Err(unexpected(&op)),
            };
            Ok(BoolAst::Cmp(value(l)?, op, value(r)?))
        }
        Rule::bool_lit => Ok(BoolAst::Lit(pair.as_str() == "true")),
        Rule::converter => Ok(BoolAst::Call(call(pair)?)),
        _ => Err(unexpected(&pair)),
    }
}

fn value(pair: Pair<'_, Rule>) -> Result<ValAst, OttlError> {
    let pos = pos_of(&pair);
    match pair.as_rule() {
        Rule::value => {
            let p = pair
                .clone()
                .into_inner()
                .next()
                .ok_or_else(|| unexpected(&pair))?;
            value(p)
        }
        Rule::nil_lit => Ok(ValAst::Nil),
        Rule::bool_lit => Ok(ValAst::Bool(pair.as_str() == "true")),
        Rule::bytes_lit => {
            let hex_digits = &pair.as_str()[2..];
            // hex::decode wants an even number of digits; `0xabc` means 0x0abc.
            let padded;
            let digits = if hex_digits.len() % 2 == 1 {
                padded = format!("0{hex_digits}");
                padded.as_str()
            } else {
                hex_digits
            };
            hex::decode(digits)
                .map(ValAst::Bytes)
                .map_err(|e| OttlError::syntax(pos, format!("invalid bytes literal: {e}")))
        }
        Rule::float_lit => pair
            .as_str()
            .parse::<f64>()
            .map(ValAst::Float)
            .map_err(|e| OttlError::syntax(pos, format!("invalid float: {e}"))),
        Rule::int_lit => parse_int(pair.as_str(), pos).map(ValAst::Int),
        Rule::string_lit => string(pair).map(ValAst::Str),
        Rule::enum_lit => Ok(ValAst::Enum(pair.as_str().to_string(), pos)),
        Rule::map_lit => {
            let mut entries = Vec::new();
            for e in pair.into_inner() {
                let mut it = e.clone().into_inner();
                let (Some(k), Some(v)) = (it.next(), it.next()) else {
                    return Err(unexpected(&e));
                };
                entries.push((string(k)?, value(v)?));
            }
            Ok(ValAst::Map(entries))
        }
        Rule::list_lit => Ok(ValAst::List(
            pair.into_inner().map(value).collect::<Result<_, _>>()?,
        )),
        Rule::math_expr | Rule::math_term => {
            let mut it = pair.into_inner();
            let first = it
                .next()
                .ok_or_else(|| OttlError::syntax(pos, "empty math expression"))?;
            let mut acc = value(first)?;
            while let Some(op) = it.next() {
                let op_pos = pos_of(&op);
                let op = match op.as_str() {
                    "+" => MathOp::Add,
                    "-" => MathOp::Sub,
                    "*" => MathOp::Mul,
                    "/" => MathOp::Div,
                    _ => return Err(unexpected(&op)),
                };
                let rhs = it
                    .next()
                    .ok_or_else(|| OttlError::syntax(op_pos, "missing operand"))?;
                acc = ValAst::Math(Box::new(acc), op, Box::new(value(rhs)?), op_pos);
            }
            Ok(acc)
        }
        Rule::paren_math => {
            let p = pair
                .clone()
                .into_inner()
                .next()
                .ok_or_else(|| unexpected(&pair))?;
            value(p)
        }
        Rule::converter => Ok(ValAst::Call(call(pair)?)),
        Rule::path => {
            let segments = pair
                .into_inner()
                .map(|seg| {
                    let pos = pos_of(&seg);
                    let mut it = seg.into_inner();
                    let name = it
                        .next()
                        .map(|n| n.as_str().to_string())
                        .unwrap_or_default();
                    let keys = it.map(key).collect::<Result<_, _>>()?;
                    Ok(Segment { name, keys, pos })
                })
                .collect::<Result<_, OttlError>>()?;
            Ok(ValAst::Path(PathAst { segments, pos }))
        }
        _ => Err(unexpected(&pair)),
    }
}

fn call(pair: Pair<'_, Rule>) -> Result<CallAst, OttlError> {
    let pos = pos_of(&pair);
    let mut name = String::new();
    let mut args = Vec::new();
    let mut keys = Vec::new();
    for p in pair.into_inner() {
        match p.as_rule() {
            Rule::func_name => name = p.as_str().to_string(),
            Rule::arg => {
                let arg_pos = pos_of(&p);
                let inner = p
                    .clone()
                    .into_inner()
                    .next()
                    .ok_or_else(|| unexpected(&p))?;
                if inner.as_rule() == Rule::named_arg {
                    let mut it = inner.clone().into_inner();
                    let (Some(n), Some(_assign), Some(v)) = (it.next(), it.next(), it.next())
                    else {
                        return Err(unexpected(&inner));
                    };
                    args.push(ArgAst {
                        name: Some(n.as_str().to_string()),
                        value: value(v)?,
                        pos: arg_pos,
                    });
                } else {
                    args.push(ArgAst {
                        name: None,
                        value: value(inner)?,
                        pos: arg_pos,
                    });
                }
            }
            Rule::index => keys.push(key(p)?),
            _ => return Err(unexpected(&p)),
        }
    }
    Ok(CallAst {
        name,
        args,
        keys,
        pos,
    })
}

fn key(pair: Pair<'_, Rule>) -> Result<Key, OttlError> {
    let inner = pair
        .clone()
        .into_inner()
        .next()
        .ok_or_else(|| unexpected(&pair))?;
    let pos = pos_of(&inner);
    match inner.as_rule() {
        Rule::string_lit => string(inner).map(Key::Str),
        Rule::int_lit => parse_int(inner.as_str(), pos).map(Key::Int),
        _ => Err(unexpected(&inner)),
    }
}

fn parse_int(s: &str, pos: Pos) -> Result<i64, OttlError> {
    s.parse::<i64>()
        .map_err(|e| OttlError::syntax(pos, format!("invalid integer {s}: {e}")))
}

/// Unquotes a string literal. Escapes follow Go's quoted strings (what the reference
/// collector accepts), so a regex written `"\d"` is an error and must be `"\\d"`.
fn string(pair: Pair<'_, Rule>) -> Result<String, OttlError> {
    let pos = pos_of(&pair);
    let raw = pair.into_inner().next().map(|p| p.as_str()).unwrap_or("");
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    let bad = |what: &str| OttlError::syntax(pos, format!("invalid escape in string: {what}"));
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let Some(e) = chars.next() else {
            return Err(bad("trailing backslash"));
        };
        match e {
            '"' => out.push('"'),
            '\\' => out.push('\\'),
            '\'' => out.push('\''),
            'n' => out.push('\n'),
            't' => out.push('\t'),
            'r' => out.push('\r'),
            'a' => out.push('\u{7}'),
            'b' => out.push('\u{8}'),
            'f' => out.push('\u{c}'),
            'v' => out.push('\u{b}'),
            'x' | 'u' | 'U' => {
                let n = match e {
                    'x' => 2,
                    'u' => 4,
                    _ => 8,
                };
                let digits: String = chars.by_ref().take(n).collect();
                let code = u32::from_str_radix(&digits, 16)
                    .ok()
                    .filter(|_| digits.len() == n)
                    .ok_or_else(|| bad(&format!("\\{e}{digits}")))?;
                let ch = char::from_u32(code).ok_or_else(|| bad(&format!("\\{e}{digits}")))?;
                out.push(ch);
            }
            other => return Err(bad(&format!("\\{other}"))),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence_not_and_or() {
        let ast = parse(r#"not true and false or true"#).unwrap();
        // (not true and false) or true
        let BoolAst::Or(terms) = ast else {
            panic!("expected or, got {ast:?}")
        };
        assert_eq!(terms.len(), 2);
        let BoolAst::And(f) = &terms[0] else {
            panic!("expected and")
        };
        assert!(matches!(f[0], BoolAst::Not(_)));
    }

    #[test]
    fn math_binds_tighter_than_comparison() {
        let ast = parse("end_time_unix_nano - start_time_unix_nano > 500").unwrap();
        let BoolAst::Cmp(ValAst::Math(_, MathOp::Sub, _, _), CmpOp::Gt, ValAst::Int(500)) = ast
        else {
            panic!("bad tree {ast:?}")
        };
    }

    #[test]
    fn mul_binds_tighter_than_add() {
        let ast = parse("1 + 2 * 3 == 7").unwrap();
        let BoolAst::Cmp(ValAst::Math(l, MathOp::Add, r, _), _, _) = ast else {
            panic!("bad tree")
        };
        assert!(matches!(*l, ValAst::Int(1)));
        assert!(matches!(*r, ValAst::Math(_, MathOp::Mul, _, _)));
    }

    #[test]
    fn negative_literal_vs_subtraction() {
        assert!(matches!(
            parse("x == -1").unwrap(),
            BoolAst::Cmp(_, CmpOp::Eq, ValAst::Int(-1))
        ));
        assert!(matches!(
            parse("x - 1 == 0").unwrap(),
            BoolAst::Cmp(ValAst::Math(..), _, _)
        ));
    }

    #[test]
    fn literals() {
        let BoolAst::Cmp(ValAst::Bytes(b), _, ValAst::Float(f)) = parse("0xAb01 == .5e1").unwrap()
        else {
            panic!()
        };
        assert_eq!(b, vec![0xab, 0x01]);
        assert_eq!(f, 5.0);
        let BoolAst::Cmp(ValAst::Map(m), _, ValAst::List(l)) =
            parse(r#"{"a": 1, "b": [true, nil]} == [SPAN_KIND_SERVER, "x"]"#).unwrap()
        else {
            panic!()
        };
        assert_eq!(m.len(), 2);
        assert!(matches!(l[0], ValAst::Enum(..)));
    }

    #[test]
    fn string_escapes() {
        let BoolAst::Cmp(_, _, ValAst::Str(s)) = parse(r#"x == "a\"b\\c\n\u00e9""#).unwrap() else {
            panic!()
        };
        assert_eq!(s, "a\"b\\c\né");
        let e = parse(r#"IsMatch(x, "\d")"#).unwrap_err();
        assert!(e.message.contains("\\d"), "{e}");
    }

    #[test]
    fn paths_and_keys() {
        let BoolAst::Cmp(ValAst::Path(p), _, _) =
            parse(r#"resource.attributes["a"][0]["b"] == 1"#).unwrap()
        else {
            panic!()
        };
        assert_eq!(p.dotted(), "resource.attributes");
        assert_eq!(p.segments[1].keys.len(), 3);
    }

    #[test]
    fn converters_named_args_and_index() {
        let BoolAst::Cmp(ValAst::Call(c), _, _) =
            parse(r#"Split(attributes["x"], delimiter = ",")[1] == "b""#).unwrap()
        else {
            panic!()
        };
        assert_eq!(c.name, "Split");
        assert_eq!(c.args[1].name.as_deref(), Some("delimiter"));
        assert_eq!(c.keys.len(), 1);
        assert!(matches!(parse("IsRootSpan()").unwrap(), BoolAst::Call(_)));
    }

    #[test]
    fn keywords_are_whole_words() {
        let BoolAst::Cmp(ValAst::Path(p), _, _) = parse("notes == nil").unwrap() else {
            panic!()
        };
        assert_eq!(p.dotted(), "notes");
        assert!(matches!(
            parse("order == 1 or andx == 2").unwrap(),
            BoolAst::Or(_)
        ));
    }

    #[test]
    fn parenthesised_math_and_bool() {
        assert!(matches!(
            parse("(end_time - start_time) > Duration(\"1s\")").unwrap(),
            BoolAst::Cmp(ValAst::Math(..), CmpOp::Gt, ValAst::Call(_))
        ));
        assert!(matches!(
            parse("(name == \"a\" or name == \"b\") and kind == 2").unwrap(),
            BoolAst::And(_)
        ));
    }

    #[test]
    fn messages_say_what_was_expected_and_found() {
        let e = parse(r#"attributes[test] == "pass""#).unwrap_err();
        assert_eq!(
            e.to_string(),
            "syntax error at line 1, column 12: expected integer or string, found 't'"
        );
        let e = parse("True(").unwrap_err();
        assert!(e.message.ends_with("found end of condition"), "{e}");
    }

    #[test]
    fn rejected_with_position() {
        let e = parse("True(").unwrap_err();
        assert_eq!(e.pos, Pos { line: 1, column: 6 });
        let e = parse(r#""foo == "foo""#).unwrap_err();
        assert_eq!(e.pos.line, 1);
        assert_eq!(e.pos.column, 10, "{e}");
        let e = parse(r#"attributes[test] == "pass""#).unwrap_err();
        assert_eq!(e.pos.column, 12, "{e}");
        assert!(
            e.to_string()
                .starts_with("syntax error at line 1, column 12"),
            "{e}"
        );
        let e = parse("name ==\n  ").unwrap_err();
        assert_eq!(e.pos.line, 2);
        assert!(parse("").is_err());
        assert!(parse("name == \"a\" and").is_err());
        assert!(parse("set(name, \"x\")").is_err());
        assert!(parse("1.").is_err());
    }
}
