//! Globs as OBI users write them (`*/python3*`, `{*beyla,*otelcol}`, `*otelcol-contrib[!/]*`):
//! `*` matches any run of characters including `/`, `?` one character, `[abc]`/`[a-z]`/`[!a]`
//! a class, `{a,b}` alternatives, `\x` a literal `x`. Compiled once to an anchored regex; only
//! discovery uses them, never the per-event path.

use std::fmt;

use regex::Regex;
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

#[derive(Clone)]
pub struct Glob {
    source: String,
    re: Regex,
}

impl Glob {
    pub fn new(source: &str) -> Result<Glob, String> {
        if source.is_empty() {
            return Err("empty glob".into());
        }
        let mut out = String::with_capacity(source.len() * 2 + 8);
        out.push_str("(?s)^");
        let chars: Vec<char> = source.chars().collect();
        let mut i = 0;
        let mut brace_depth = 0usize;
        while i < chars.len() {
            let c = chars[i];
            match c {
                '*' => out.push_str(".*"),
                '?' => out.push('.'),
                '\\' => {
                    i += 1;
                    let lit = chars
                        .get(i)
                        .ok_or_else(|| format!("glob {source:?} ends with a lone '\\'"))?;
                    push_literal(&mut out, *lit);
                }
                '[' => {
                    i = push_class(&chars, i, &mut out)
                        .ok_or_else(|| format!("glob {source:?} has an unterminated '['"))?;
                }
                '{' => {
                    brace_depth += 1;
                    out.push_str("(?:");
                }
                ',' if brace_depth > 0 => out.push('|'),
                '}' if brace_depth > 0 => {
                    brace_depth -= 1;
                    out.push(')');
                }
                _ => push_literal(&mut out, c),
            }
            i += 1;
        }
        if brace_depth > 0 {
            return Err(format!("glob {source:?} has an unterminated '{{'"));
        }
        out.push('$');
        let re = Regex::new(&out).map_err(|e| format!("glob {source:?}: {e}"))?;
        Ok(Glob {
            source: source.to_string(),
            re,
        })
    }

    pub fn is_match(&self, s: &str) -> bool {
        self.re.is_match(s)
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The directory part every match must start with (up to the last `/` before the first
    /// special character), so a cgroup tree walk can start there instead of at the root.
    /// `/sonde-test/*` -> `/sonde-test`; `*server01*` -> ``.
    pub fn literal_dir_prefix(&self) -> &str {
        let special = self
            .source
            .find(['*', '?', '[', '{', '\\'])
            .unwrap_or(self.source.len());
        let head = &self.source[..special];
        if special == self.source.len() {
            return head.trim_end_matches('/');
        }
        match head.rfind('/') {
            Some(slash) => &head[..slash],
            None => "",
        }
    }
}

fn push_literal(out: &mut String, c: char) {
    let mut buf = [0u8; 4];
    out.push_str(&regex::escape(c.encode_utf8(&mut buf)));
}

/// Translates the class starting at `chars[start] == '['`; returns the index of its `]`.
fn push_class(chars: &[char], start: usize, out: &mut String) -> Option<usize> {
    let mut i = start + 1;
    out.push('[');
    if matches!(chars.get(i), Some('!') | Some('^')) {
        out.push('^');
        i += 1;
    }
    let first = i;
    loop {
        let c = *chars.get(i)?;
        // A `]` right after the opening (or the negation) is a member, as in shells.
        if c == ']' && i > first {
            out.push(']');
            return Some(i);
        }
        if c == '-' && i > first && chars.get(i + 1).is_some_and(|n| *n != ']') {
            out.push('-');
        } else if c == '\\' {
            i += 1;
            push_literal(out, *chars.get(i)?);
        } else {
            push_literal(out, c);
        }
        i += 1;
    }
}

impl fmt::Debug for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Glob({:?})", self.source)
    }
}

impl PartialEq for Glob {
    fn eq(&self, other: &Glob) -> bool {
        self.source == other.source
    }
}

impl<'de> Deserialize<'de> for Glob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Glob, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Glob;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a glob string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Glob, E> {
                Glob::new(v).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(g: &str, s: &str) -> bool {
        Glob::new(g).expect("valid glob").is_match(s)
    }

    #[test]
    fn star_crosses_slashes_and_is_anchored() {
        assert!(m("*/python3*", "/usr/bin/python3.11"));
        assert!(m(
            "*python3*",
            "/root/.pyenv/versions/3.11.7/bin/python3.11"
        ));
        assert!(!m("*/python3", "/usr/bin/python3.11"));
        assert!(m("/sonde-test/*", "/sonde-test/a/b"));
        assert!(!m("/sonde-test/*", "/sonde-test"));
        assert!(!m("/sonde-test/*", "/x/sonde-test/a"));
        assert!(m("*server01*", "/system.slice/server01.service"));
        assert!(m("a?c", "abc"));
        assert!(!m("a?c", "ac"));
    }

    #[test]
    fn classes_braces_and_escapes() {
        let obi = "{*beyla,*alloy,*obi,*otelcol,*otelcol-contrib,*otelcol-contrib[!/]*}";
        assert!(m(obi, "/usr/bin/otelcol"));
        assert!(m(obi, "/opt/otelcol-contrib-0.98"));
        assert!(!m(obi, "/opt/otelcol-contrib/bin/x"));
        assert!(m(obi, "/opt/otelcol-contrib"));
        assert!(!m(obi, "/usr/bin/nginx"));
        assert!(m("v[0-9].[a-c]", "v7.b"));
        assert!(!m("v[0-9]", "vx"));
        assert!(m("[]]x", "]x"));
        assert!(m("a\\*b", "a*b"));
        assert!(!m("a\\*b", "axb"));
        assert!(m("a.b", "a.b"));
        assert!(!m("a.b", "axb"));
        assert!(m("x{a,{b,c}d}", "xcd"));
        assert!(m("(x)+", "(x)+"));
    }

    #[test]
    fn bad_globs_are_errors() {
        assert!(Glob::new("").is_err());
        assert!(Glob::new("[abc").is_err());
        assert!(Glob::new("{a,b").is_err());
        assert!(Glob::new("ab\\").is_err());
    }

    #[test]
    fn literal_prefix_bounds_the_walk() {
        let p = |g: &str| {
            Glob::new(g)
                .expect("valid")
                .literal_dir_prefix()
                .to_string()
        };
        assert_eq!(p("/sonde-test/*"), "/sonde-test");
        assert_eq!(p("/a/b-*"), "/a");
        assert_eq!(p("*server01*"), "");
        assert_eq!(p("/exact/path"), "/exact/path");
        assert_eq!(p("/"), "");
    }
}
