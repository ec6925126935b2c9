//! Byte-level HTTP/1.x recognition: message starts, heads (start line + headers) and chunked
//! framing. Works on prefixes of a stream: everything here is bounded, and a head may be cut
//! anywhere (only complete header lines are believed).

/// Request methods accepted at a message start. A closed list rather than "any token": it is
/// what keeps other text protocols (Redis inline commands, SMTP, ...) from looking like HTTP.
const METHODS: &[&[u8]] = &[
    b"GET",
    b"POST",
    b"PUT",
    b"DELETE",
    b"HEAD",
    b"OPTIONS",
    b"PATCH",
    b"CONNECT",
    b"TRACE",
    b"PROPFIND",
    b"PROPPATCH",
    b"MKCOL",
    b"COPY",
    b"MOVE",
    b"LOCK",
    b"UNLOCK",
    b"SEARCH",
    b"REPORT",
    b"PURGE",
];

/// `HTTP/1.x NNN`: the part of a status line that identifies it.
const STATUS_PREFIX_LEN: usize = 12;

/// A chunk-size line or trailer line longer than this is not chunked framing.
const MAX_FRAMING_LINE: u16 = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Request,
    Response,
}

/// What the bytes at a message boundary look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    No,
    /// Too short to tell, but a prefix of an acceptable start.
    NeedMore,
    Request,
    Response,
}

/// Classifies the bytes at a message boundary. `want_req` / `want_resp` say which kinds may
/// appear in this direction. When the whole start line is visible it is fully validated.
pub(crate) fn classify(b: &[u8], want_req: bool, want_resp: bool) -> Class {
    match classify_prefix(b, want_req, want_resp) {
        class @ (Class::Request | Class::Response) => match find(b, b'\n') {
            Some(i) if start_line(trim_cr(&b[..i]), true).is_none() => Class::No,
            _ => class,
        },
        class => class,
    }
}

/// [`classify`] on the first bytes only, for callers that parse the start line next anyway.
pub(crate) fn classify_prefix(b: &[u8], want_req: bool, want_resp: bool) -> Class {
    let mut need_more = false;
    if want_resp {
        match response_prefix(b) {
            Class::Response => return Class::Response,
            Class::NeedMore => need_more = true,
            _ => {}
        }
    }
    if want_req {
        match request_prefix(b) {
            Class::Request => return Class::Request,
            Class::NeedMore => need_more = true,
            _ => {}
        }
    }
    if need_more {
        Class::NeedMore
    } else {
        Class::No
    }
}

fn request_prefix(b: &[u8]) -> Class {
    let mut need_more = false;
    for m in METHODS {
        if b.len() > m.len() {
            if b.starts_with(m) && b[m.len()] == b' ' {
                // The target: origin-form, asterisk-form, absolute-form or authority-form.
                return match b.get(m.len() + 1) {
                    None => Class::Request,
                    Some(&c) if c == b'/' || c == b'*' || c.is_ascii_alphanumeric() => {
                        Class::Request
                    }
                    Some(_) => Class::No,
                };
            }
        } else if m.starts_with(b) {
            need_more = true;
        }
    }
    if need_more && !b.is_empty() {
        Class::NeedMore
    } else {
        Class::No
    }
}

fn response_prefix(b: &[u8]) -> Class {
    let n = b.len().min(STATUS_PREFIX_LEN);
    let ok = b[..n].iter().enumerate().all(|(i, &c)| match i {
        0..=6 => c == b"HTTP/1."[i],
        8 => c == b' ',
        _ => c.is_ascii_digit(),
    });
    if !ok || n == 0 {
        Class::No
    } else if n < STATUS_PREFIX_LEN {
        Class::NeedMore
    } else {
        Class::Response
    }
}

/// A parsed (possibly cut) message head. Slices borrow the head bytes.
#[derive(Debug, Clone, Default)]
pub(crate) struct Head<'a> {
    pub kind: Option<Kind>,
    pub method: &'a [u8],
    /// The method was followed by a space (a cut start line may end inside it).
    pub method_complete: bool,
    pub target: &'a [u8],
    /// `HTTP/1.x`, or empty when the start line was cut before it.
    pub version: &'a [u8],
    /// 0 when the start line was cut before the status code.
    pub status: u16,
    pub content_length: Option<u64>,
    /// Content-Length present but unusable (not a number, or conflicting values), or too many
    /// headers to be sure of the framing.
    pub bad_length: bool,
    pub chunked: bool,
    /// A Transfer-Encoding whose last coding is not chunked.
    pub other_te: bool,
    pub host: Option<&'a [u8]>,
    pub traceparent: Option<&'a [u8]>,
    pub user_agent: Option<&'a [u8]>,
}

impl Head<'_> {
    pub fn is(&self, kind: Kind) -> bool {
        self.kind == Some(kind)
    }
}

/// Parses a head: the start line (possibly cut) and every complete header line. `None` when
/// the start line is not HTTP/1.x. At most `max_headers` header lines are read; past that the
/// framing is declared unknown.
pub(crate) fn parse_head(buf: &[u8], max_headers: usize) -> Option<Head<'_>> {
    parse_head_end(buf, max_headers).map(|(h, _)| h)
}

/// [`parse_head`] on bytes that may go past the head; also returns where the head ends (just
/// past its blank line), if it does within `buf`. One pass over the lines.
pub(crate) fn parse_head_end(buf: &[u8], max_headers: usize) -> Option<(Head<'_>, Option<usize>)> {
    let mut newlines = Newlines { buf, at: 0 };
    let (line, mut start, line_complete) = match newlines.next() {
        Some(i) => (trim_cr(&buf[..i]), i + 1, true),
        None => (buf, buf.len(), false),
    };
    let mut h = start_line(line, line_complete)?;
    let mut count = 0usize;
    for i in newlines {
        let line = trim_cr(&buf[start..i]);
        start = i + 1;
        let Some(&first) = line.first() else {
            return Some((h, Some(start)));
        };
        if count >= max_headers {
            h.bad_length = true;
            continue;
        }
        count += 1;
        // Only names starting like host, user-agent, traceparent, content-length or
        // transfer-encoding matter; this also skips obsolete line folding (a leading space).
        if !matches!(first | 0x20, b'h' | b'u' | b't' | b'c') {
            continue;
        }
        let Some(colon) = find(line, b':') else {
            continue;
        };
        let name = &line[..colon];
        let value = trim_ows(&line[colon + 1..]);
        match name.len() {
            4 if name.eq_ignore_ascii_case(b"host") => h.host = Some(value),
            10 if name.eq_ignore_ascii_case(b"user-agent") => h.user_agent = Some(value),
            11 if name.eq_ignore_ascii_case(b"traceparent") => h.traceparent = Some(value),
            14 if name.eq_ignore_ascii_case(b"content-length") => match parse_u64(value) {
                Some(n) if h.content_length.is_none_or(|old| old == n) => {
                    h.content_length = Some(n)
                }
                _ => h.bad_length = true,
            },
            17 if name.eq_ignore_ascii_case(b"transfer-encoding") => {
                let last = value.rsplit(|&c| c == b',').next().map(trim_ows);
                let chunked = last.is_some_and(|c| c.eq_ignore_ascii_case(b"chunked"));
                h.chunked = chunked;
                h.other_te = !chunked;
            }
            _ => {}
        }
    }
    Some((h, None))
}

/// Parses a start line; `complete` says the line ended (else it was cut).
pub(crate) fn start_line(line: &[u8], complete: bool) -> Option<Head<'_>> {
    if matches!(response_prefix(line), Class::Response | Class::NeedMore) {
        return status_line(line, complete);
    }
    let Some(sp) = find(line, b' ') else {
        // A cut line that is still inside the method.
        let prefix = !complete && !line.is_empty() && METHODS.iter().any(|m| m.starts_with(line));
        return prefix.then(|| Head {
            kind: Some(Kind::Request),
            method: line,
            ..Head::default()
        });
    };
    let method = &line[..sp];
    if !METHODS.contains(&method) {
        return None;
    }
    let after = &line[sp + 1..];
    let (target, version) = match find(after, b' ') {
        Some(j) => (&after[..j], &after[j + 1..]),
        None => (after, &after[after.len()..]),
    };
    if target.iter().any(|&c| c <= b' ' || c == 0x7f) {
        return None;
    }
    let version_ok = is_version(version);
    if complete && (target.is_empty() || !version_ok) {
        return None;
    }
    Some(Head {
        kind: Some(Kind::Request),
        method,
        method_complete: true,
        target,
        version: if version_ok { version } else { &[] },
        ..Head::default()
    })
}

fn status_line(line: &[u8], complete: bool) -> Option<Head<'_>> {
    if line.len() < STATUS_PREFIX_LEN {
        // Cut inside `HTTP/1.x NNN`: a response, status unknown.
        return (!complete).then(|| Head {
            kind: Some(Kind::Response),
            ..Head::default()
        });
    }
    if line.len() > STATUS_PREFIX_LEN && line[STATUS_PREFIX_LEN] != b' ' {
        return None;
    }
    let status = line[9..12]
        .iter()
        .fold(0u16, |acc, &c| acc * 10 + u16::from(c - b'0'));
    if !(100..=999).contains(&status) {
        return None;
    }
    Some(Head {
        kind: Some(Kind::Response),
        version: &line[..8],
        status,
        ..Head::default()
    })
}

fn is_version(v: &[u8]) -> bool {
    v.len() == 8 && v.starts_with(b"HTTP/1.") && v[7].is_ascii_digit()
}

fn parse_u64(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 {
        return None;
    }
    v.iter().try_fold(0u64, |acc, &c| {
        c.is_ascii_digit()
            .then(|| acc.checked_mul(10)?.checked_add(u64::from(c - b'0')))?
    })
}

/// Positions of the `\n`s in a head, eight bytes per step in plain code: header lines are short,
/// and a `memchr` call per line cost more than the scan itself.
struct Newlines<'a> {
    buf: &'a [u8],
    at: usize,
}

impl Iterator for Newlines<'_> {
    type Item = usize;

    #[inline]
    fn next(&mut self) -> Option<usize> {
        const ONES: u64 = 0x0101_0101_0101_0101;
        const HIGH: u64 = 0x8080_8080_8080_8080;
        let buf = self.buf;
        let mut i = self.at;
        while let Some(chunk) = buf.get(i..i + 8) {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            let x = u64::from_le_bytes(word) ^ (ONES * u64::from(b'\n'));
            // The lowest byte flagged is the first zero byte of x (higher flags may be false).
            let zero = x.wrapping_sub(ONES) & !x & HIGH;
            if zero != 0 {
                let found = i + (zero.trailing_zeros() / 8) as usize;
                self.at = found + 1;
                return Some(found);
            }
            i += 8;
        }
        while let Some(&b) = buf.get(i) {
            if b == b'\n' {
                self.at = i + 1;
                return Some(i);
            }
            i += 1;
        }
        self.at = buf.len();
        None
    }
}

pub(crate) fn find(b: &[u8], c: u8) -> Option<usize> {
    memchr::memchr(c, b)
}

fn trim_cr(b: &[u8]) -> &[u8] {
    b.strip_suffix(b"\r").unwrap_or(b)
}

fn trim_ows(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|&c| c != b' ' && c != b'\t')
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|&c| c != b' ' && c != b'\t')
        .map_or(start, |i| i + 1);
    &b[start..end.max(start)]
}

/// Index of the first byte at or after `pos` that is not CR or LF (blank lines between
/// messages are allowed).
pub(crate) fn skip_crlf(b: &[u8], pos: usize) -> usize {
    b.iter()
        .skip(pos)
        .position(|&c| c != b'\r' && c != b'\n')
        .map_or(b.len(), |i| pos + i)
}

/// Where the head-end search stands between two pieces of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LineScan {
    /// At the start of a line.
    LineStart,
    /// The current line is a lone CR so far.
    Cr,
    /// The current line has content.
    Content,
}

/// Finds the end of a head (just past the blank line) in the next piece `d` of it; `scan`
/// carries the state across pieces so a blank line split between syscalls is found.
pub(crate) fn find_head_end(scan: &mut LineScan, d: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i < d.len() {
        match find(&d[i..], b'\n') {
            Some(off) => {
                let seg = &d[i..i + off];
                let blank = match *scan {
                    LineScan::LineStart => seg.is_empty() || seg == b"\r",
                    LineScan::Cr => seg.is_empty(),
                    LineScan::Content => false,
                };
                i += off + 1;
                *scan = LineScan::LineStart;
                if blank {
                    return Some(i);
                }
            }
            None => {
                let seg = &d[i..];
                *scan = match *scan {
                    LineScan::LineStart if seg == b"\r" => LineScan::Cr,
                    _ => LineScan::Content,
                };
                return None;
            }
        }
    }
    None
}

/// Position in chunked framing (RFC 9112 §7.1). Only the framing bytes are looked at; chunk
/// data is skipped by length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Chunk {
    Size {
        value: u64,
        digits: u8,
        ext: bool,
        len: u16,
    },
    Data(u64),
    DataEnd {
        cr: bool,
    },
    Trailer {
        line: u16,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FramingError;

impl Chunk {
    pub const START: Chunk = Chunk::Size {
        value: 0,
        digits: 0,
        ext: false,
        len: 0,
    };

    /// Advances over `d`. Returns the bytes used and whether the body ended there (the bytes
    /// after it belong to the next message).
    pub fn run(&mut self, d: &[u8]) -> Result<(usize, bool), FramingError> {
        let mut i = 0;
        while i < d.len() {
            if let Chunk::Data(rem) = *self {
                let n = rem.min((d.len() - i) as u64);
                i += n as usize;
                *self = if n == rem {
                    Chunk::DataEnd { cr: false }
                } else {
                    Chunk::Data(rem - n)
                };
                continue;
            }
            let c = d[i];
            i += 1;
            *self = match *self {
                Chunk::Size {
                    value,
                    digits,
                    ext,
                    len,
                } => {
                    if len >= MAX_FRAMING_LINE {
                        return Err(FramingError);
                    }
                    let len = len + 1;
                    match c {
                        b'\n' if digits == 0 => return Err(FramingError),
                        b'\n' if value == 0 => Chunk::Trailer { line: 0 },
                        b'\n' => Chunk::Data(value),
                        b'\r' => Chunk::Size {
                            value,
                            digits,
                            ext,
                            len,
                        },
                        _ if ext => Chunk::Size {
                            value,
                            digits,
                            ext,
                            len,
                        },
                        b';' | b' ' | b'\t' if digits > 0 => Chunk::Size {
                            value,
                            digits,
                            ext: true,
                            len,
                        },
                        _ => {
                            let v = (c as char).to_digit(16).ok_or(FramingError)?;
                            if digits >= 16 {
                                return Err(FramingError);
                            }
                            Chunk::Size {
                                value: (value << 4) | u64::from(v),
                                digits: digits + 1,
                                ext,
                                len,
                            }
                        }
                    }
                }
                Chunk::DataEnd { cr } => match c {
                    b'\r' if !cr => Chunk::DataEnd { cr: true },
                    b'\n' => Chunk::START,
                    _ => return Err(FramingError),
                },
                Chunk::Trailer { line } => match c {
                    b'\n' if line == 0 => return Ok((i, true)),
                    b'\n' => Chunk::Trailer { line: 0 },
                    b'\r' => Chunk::Trailer { line },
                    _ if line >= MAX_FRAMING_LINE => return Err(FramingError),
                    _ => Chunk::Trailer { line: line + 1 },
                },
                Chunk::Data(_) => *self,
            };
        }
        Ok((d.len(), false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newlines_are_found_where_memchr_finds_them() {
        // Every position of up to three newlines in buffers of 0..40 bytes, with bytes that
        // look like a newline to a careless word trick (0x0b, 0x8a, 0x09) around them.
        for len in 0..40usize {
            for fill in [b'a', 0x0b, 0x8a, 0x09, 0xff, 0x00] {
                for a in 0..=len {
                    for step in [1usize, 3, 8, 9] {
                        let mut buf = vec![fill; len];
                        for p in [a, a + step, a + 2 * step] {
                            if p < len {
                                buf[p] = b'\n';
                            }
                        }
                        let got: Vec<usize> = Newlines { buf: &buf, at: 0 }.collect();
                        let want: Vec<usize> = memchr::memchr_iter(b'\n', &buf).collect();
                        assert_eq!(got, want, "{buf:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn classify_starts() {
        assert_eq!(classify(b"GET / HTTP/1.1\r\n", true, false), Class::Request);
        assert_eq!(classify(b"GET /x", true, false), Class::Request);
        assert_eq!(classify(b"GE", true, false), Class::NeedMore);
        assert_eq!(classify(b"GET", true, false), Class::NeedMore);
        assert_eq!(classify(b"GET / HTTP/1.1\r\n", false, true), Class::No);
        assert_eq!(
            classify(b"HTTP/1.1 200 OK\r\n", false, true),
            Class::Response
        );
        assert_eq!(classify(b"HTTP/1.1 2", false, true), Class::NeedMore);
        assert_eq!(classify(b"H", true, true), Class::NeedMore);
        assert_eq!(classify(b"HTTP/2 200", true, true), Class::No);
        // Redis inline command: a method name, but not an HTTP request line.
        assert_eq!(classify(b"GET key\r\n", true, true), Class::No);
        assert_eq!(classify(b"*1\r\n$4\r\nPING\r\n", true, true), Class::No);
        assert_eq!(classify(b"\x16\x03\x01\x02\x00\x01", true, true), Class::No);
        assert_eq!(classify(b"get / HTTP/1.1\r\n", true, true), Class::No);
        assert_eq!(classify(b"GET \x01", true, true), Class::No);
        assert_eq!(classify(b"", true, true), Class::No);
    }

    #[test]
    fn request_head_fields() {
        let raw = b"POST /a?b=1 HTTP/1.1\r\nHost: example.com:8080\r\nuser-agent:  curl/8 \r\n\
traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\nContent-Length: 12\r\n\
X-Empty:\r\nno colon line\r\n\r\n";
        let h = parse_head(raw, 100).expect("parses");
        assert!(h.is(Kind::Request));
        assert_eq!(h.method, b"POST");
        assert_eq!(h.target, b"/a?b=1");
        assert_eq!(h.version, b"HTTP/1.1");
        assert_eq!(h.host, Some(&b"example.com:8080"[..]));
        assert_eq!(h.user_agent, Some(&b"curl/8"[..]));
        assert_eq!(
            h.traceparent,
            Some(&b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"[..])
        );
        assert_eq!(h.content_length, Some(12));
        assert!(!h.bad_length && !h.chunked);
    }

    #[test]
    fn framing_headers() {
        let h = parse_head(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 5\r\n\r\n",
            100,
        )
        .expect("parses");
        assert_eq!(h.status, 200);
        assert!(h.chunked && !h.other_te);
        let h = parse_head(b"HTTP/1.0 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", 100).unwrap();
        assert!(h.other_te && !h.chunked);
        let h = parse_head(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            100,
        )
        .unwrap();
        assert!(h.bad_length);
        let h = parse_head(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
            100,
        )
        .unwrap();
        assert_eq!((h.content_length, h.bad_length), (Some(5), false));
        let h = parse_head(
            b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
            100,
        )
        .unwrap();
        assert!(h.bad_length);
        let h = parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", 100).unwrap();
        assert!(h.bad_length);
        let h = parse_head(b"HTTP/1.1 200 OK\r\na: 1\r\nb: 2\r\nc: 3\r\n\r\n", 2).unwrap();
        assert!(h.bad_length, "too many headers makes the framing unknown");
    }

    #[test]
    fn cut_heads_keep_what_is_complete() {
        let h = parse_head(b"GET /a/very/long/pa", 100).unwrap();
        assert_eq!(
            (h.method, h.target, h.version),
            (&b"GET"[..], &b"/a/very/long/pa"[..], &b""[..])
        );
        assert!(h.method_complete);
        let h = parse_head(b"GE", 100).unwrap();
        assert!(!h.method_complete && h.is(Kind::Request));
        // The last line is cut: "Content-Length: 1" might be "Content-Length: 12".
        let h = parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 1", 100).unwrap();
        assert_eq!(h.content_length, None);
        let h = parse_head(b"HTTP/1.1 20", 100).unwrap();
        assert!(h.is(Kind::Response));
        assert_eq!(h.status, 0);
        assert!(parse_head(b"GET / HTTP/1.1 x\r\n\r\n", 100).is_none());
        assert!(parse_head(b"GET  HTTP/1.1\r\n\r\n", 100).is_none());
        assert!(parse_head(b"HTTP/1.1 200OK\r\n\r\n", 100).is_none());
        assert!(parse_head(b"HTTP/1.1 099 x\r\n\r\n", 100).is_none());
    }

    #[test]
    fn one_pass_parse_finds_the_head_end() {
        let raw = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /next HTTP/1.1\r\n\r\n";
        let (h, end) = parse_head_end(raw, 10).unwrap();
        assert_eq!((h.host, end), (Some(&b"a"[..]), Some(27)));
        let (h, end) = parse_head_end(b"HTTP/1.1 200 OK\na: 1\nb: 2\n\nbody", 1).unwrap();
        assert_eq!(
            (h.bad_length, end),
            (true, Some(27)),
            "past max_headers, the end is still found"
        );
        assert_eq!(
            parse_head_end(b"HTTP/1.1 200 OK\r\nA: b\r\n", 10)
                .unwrap()
                .1,
            None
        );
    }

    #[test]
    fn head_end_across_pieces() {
        let raw = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nBODY";
        for split in 0..=raw.len() {
            let mut scan = LineScan::Content;
            let (a, b) = raw.split_at(split);
            let found = match find_head_end(&mut scan, a) {
                Some(n) => n,
                None => split + find_head_end(&mut scan, b).expect("found in the second piece"),
            };
            assert_eq!(found, raw.len() - 4, "split at {split}");
        }
        let mut scan = LineScan::Content;
        assert_eq!(find_head_end(&mut scan, b"GET / HTTP/1.0\n\nx"), Some(16));
        let mut scan = LineScan::Content;
        assert_eq!(
            find_head_end(&mut scan, b"GET / HTTP/1.0\r\nA: b\r\r\n"),
            None
        );
    }

    #[test]
    fn chunked_framing() {
        let body =
            b"4;ext=1\r\nWiki\r\n5 \r\npedia\r\nA\r\n0123456789\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT";
        for split in 0..=body.len() {
            let mut c = Chunk::START;
            let (a, b) = body.split_at(split);
            let (used_a, done_a) = c.run(a).unwrap();
            let end = if done_a {
                used_a
            } else {
                let (used_b, done_b) = c.run(b).unwrap();
                assert!(done_b, "split at {split}");
                split + used_b
            };
            assert_eq!(end, body.len() - 4, "split at {split}");
        }
        let mut c = Chunk::START;
        assert_eq!(c.run(b"0\r\n\r\n").unwrap(), (5, true));
        for bad in [
            &b"zz\r\n"[..],
            b"\r\n",
            b"4\r\nWikiXX",
            b"11111111111111111\r\n",
        ] {
            let mut c = Chunk::START;
            assert!(c.run(bad).is_err(), "{bad:?}");
        }
    }
}
