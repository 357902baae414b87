//! Parsing one captured raw HTTP/1.1 request, as people capture them while testing a setup: the
//! ngrok inspector's "raw" tab, `nc -l 8080 > req.txt`, a file saved from a proxy, the output of
//! `tollgate sign`. Used by `tollgate verify` and the fuzz targets; the gateway never uses it (hyper
//! parses what it serves).
//!
//! The parser is deliberately lenient where captures are sloppy and strict where a lenient reading
//! could change which bytes are verified:
//!
//! - Lines may end in CRLF or a bare LF (files edited by hand); blank lines before the request line
//!   are skipped. Input that ends after the last header line, without the blank line, is a request
//!   with an empty body.
//! - The body is framed by `Content-Length` (exactly that many bytes), by `Transfer-Encoding:
//!   chunked` (decoded; trailer fields are read and dropped), or, with neither, is the rest of the
//!   input byte for byte.
//! - Fewer bytes than `Content-Length` announces is [`RawError::Truncated`]: a cut-off capture can
//!   never verify, and saying so beats a misleading signature mismatch. More bytes than announced
//!   are not part of the body (an editor's final newline, a second pipelined request); their count
//!   is kept in [`RawRequest::trailing_bytes`] so the CLI can mention them.
//! - Both `Content-Length` and `Transfer-Encoding`, conflicting `Content-Length` values, a transfer
//!   coding other than `chunked`, and obsolete header line folding are refused, because two readers
//!   could see two different bodies (request smuggling).
//! - Header values are kept as raw bytes (`obs-text` included), so a verifier sees exactly what was
//!   sent and rejects a non-ASCII signature header itself.
//!
//! Errors name header names and line numbers, never header values: a captured request carries a
//! signature, and the CLI must not echo it.

use http::{HeaderMap, HeaderName, HeaderValue};

/// At most this many header fields (trailers included).
pub const MAX_HEADERS: usize = 100;
/// At most this many bytes from the start of the input to the end of the blank line after the
/// headers.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Why a capture cannot be read as one HTTP request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RawError {
    /// Nothing but blank lines.
    #[error("the input is empty")]
    Empty,
    /// The request line and headers exceed [`MAX_HEAD_BYTES`].
    #[error("the request line and headers exceed {limit} bytes")]
    HeadTooLarge {
        /// The limit, bytes.
        limit: usize,
    },
    /// More than [`MAX_HEADERS`] header fields.
    #[error("more than {limit} header fields")]
    TooManyHeaders {
        /// The limit.
        limit: usize,
    },
    /// The first line is not `METHOD target HTTP/x.y`.
    #[error("line {line}: not an HTTP request line ({why})")]
    RequestLine {
        /// 1-based line number in the input.
        line: usize,
        /// What is wrong.
        why: &'static str,
    },
    /// A header line cannot be read.
    #[error("line {line}: bad header field ({why})")]
    HeaderLine {
        /// 1-based line number in the input.
        line: usize,
        /// What is wrong.
        why: &'static str,
    },
    /// `Content-Length` is not a number, or is repeated with different values.
    #[error("Content-Length is {why}")]
    ContentLength {
        /// What is wrong.
        why: &'static str,
    },
    /// Both `Content-Length` and `Transfer-Encoding` are present.
    #[error("both Content-Length and Transfer-Encoding are present; the body is ambiguous")]
    AmbiguousFraming,
    /// A transfer coding this parser does not decode.
    #[error("Transfer-Encoding other than \"chunked\" is not supported")]
    UnsupportedTransferEncoding,
    /// The input ends before the body `Content-Length` announces.
    #[error("the body is truncated: Content-Length says {declared} bytes, the input has {got}")]
    Truncated {
        /// Bytes announced.
        declared: usize,
        /// Bytes present.
        got: usize,
    },
    /// The chunked body is malformed or cut off.
    #[error("chunked body: {why}")]
    Chunked {
        /// What is wrong.
        why: &'static str,
    },
    /// The URL cannot be built: no usable `Host` for an origin-form target.
    #[error("cannot build the request URL: {why}")]
    Url {
        /// What is wrong.
        why: &'static str,
    },
}

/// One request as captured. Nothing is normalised beyond what HTTP framing requires: the target is
/// kept as sent, header values are raw bytes, the body is the exact (de-chunked) bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRequest {
    /// Method, as sent.
    pub method: String,
    /// Request target, as sent: origin-form (`/path?q`) or absolute-form (`https://host/path`).
    pub target: String,
    /// Header fields (trailers of a chunked body are not included).
    pub headers: HeaderMap,
    /// Body bytes.
    pub body: Vec<u8>,
    /// Bytes after a `Content-Length` body that are not part of the request.
    pub trailing_bytes: usize,
}

impl RawRequest {
    /// Parses one request from `input`.
    pub fn parse(input: &[u8]) -> Result<Self, RawError> {
        parse(input)
    }

    /// Whether the target is absolute-form (carries its own scheme and authority).
    pub fn is_absolute_target(&self) -> bool {
        is_absolute(&self.target)
    }

    /// The single `Host` header as text, if present and usable.
    pub fn host(&self) -> Result<Option<&str>, RawError> {
        let mut values = self.headers.get_all(http::header::HOST).iter();
        let Some(first) = values.next() else {
            return Ok(None);
        };
        if values.next().is_some() {
            return Err(RawError::Url {
                why: "Host is repeated",
            });
        }
        let host = first.to_str().map_err(|_| RawError::Url {
            why: "Host is not visible ASCII",
        })?;
        let bad = |c: char| c.is_ascii_whitespace() || matches!(c, '/' | '?' | '#' | '@' | '\\');
        if host.is_empty() || host.contains(bad) {
            return Err(RawError::Url {
                why: "Host is not a host[:port]",
            });
        }
        Ok(Some(host))
    }

    /// The URL the request was sent to: `over` when given (the public URL as the provider saw it,
    /// which a proxy in between may have changed), else an absolute-form target as is, else
    /// `http://` + `Host` + target.
    pub fn url(&self, over: Option<&str>) -> Result<String, RawError> {
        if let Some(u) = over {
            return Ok(u.to_owned());
        }
        if self.is_absolute_target() {
            return Ok(self.target.clone());
        }
        let host = self.host()?.ok_or(RawError::Url {
            why: "no Host header (pass the public URL explicitly)",
        })?;
        Ok(format!("http://{host}{}", self.target))
    }
}

fn is_absolute(target: &str) -> bool {
    let lower = |n: usize| target.get(..n).map(str::to_ascii_lowercase);
    lower(7).as_deref() == Some("http://") || lower(8).as_deref() == Some("https://")
}

/// Splits off the next line: the bytes up to `\n` without a final `\r`, and the offset after the
/// `\n`. `None` at the end of input; a last line without `\n` is returned whole.
fn next_line(input: &[u8], pos: usize) -> Option<(&[u8], usize)> {
    let rest = input.get(pos..).filter(|r| !r.is_empty())?;
    let (line, next) = match rest.iter().position(|&b| b == b'\n') {
        Some(i) => (rest.get(..i).unwrap_or_default(), pos + i + 1),
        None => (rest, input.len()),
    };
    Some((line.strip_suffix(b"\r").unwrap_or(line), next))
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn parse(input: &[u8]) -> Result<RawRequest, RawError> {
    let mut pos = 0;
    let mut line_no = 0;
    let head_limit = |end: usize| {
        if end > MAX_HEAD_BYTES {
            Err(RawError::HeadTooLarge {
                limit: MAX_HEAD_BYTES,
            })
        } else {
            Ok(())
        }
    };

    // Request line, after any blank lines.
    let request_line = loop {
        let (line, next) = next_line(input, pos).ok_or(RawError::Empty)?;
        head_limit(next)?;
        pos = next;
        line_no += 1;
        if !line.is_empty() {
            break line;
        }
    };
    let (method, target) = request_line_parts(request_line, line_no)?;

    // Header fields up to the blank line (or the end of input).
    let mut headers = HeaderMap::new();
    let mut count = 0;
    while let Some((line, next)) = next_line(input, pos) {
        head_limit(next)?;
        pos = next;
        line_no += 1;
        if line.is_empty() {
            break;
        }
        count += 1;
        if count > MAX_HEADERS {
            return Err(RawError::TooManyHeaders { limit: MAX_HEADERS });
        }
        let (name, value) = header_field(line, line_no)?;
        headers.append(name, value);
    }

    let rest = input.get(pos..).unwrap_or_default();
    let (body, trailing_bytes) = body(&headers, rest)?;
    Ok(RawRequest {
        method,
        target,
        headers,
        body,
        trailing_bytes,
    })
}

fn request_line_parts(line: &[u8], line_no: usize) -> Result<(String, String), RawError> {
    let err = |why| RawError::RequestLine { line: line_no, why };
    let text = std::str::from_utf8(line).map_err(|_| err("not ASCII"))?;
    let mut parts = text.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(err(
            "expected METHOD, target and version separated by single spaces",
        ));
    };
    if method.is_empty() || !method.bytes().all(is_tchar) {
        return Err(err("bad method"));
    }
    if target.is_empty() || !target.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(err("bad request target"));
    }
    if !(target.starts_with('/') || is_absolute(target)) {
        return Err(err(
            "request target must be a path (/...) or an absolute http(s) URL",
        ));
    }
    let version_ok = version.strip_prefix("HTTP/").is_some_and(|v| {
        let b = v.as_bytes();
        matches!(b, [d] if d.is_ascii_digit())
            || matches!(b, [d, b'.', e] if d.is_ascii_digit() && e.is_ascii_digit())
    });
    if !version_ok {
        return Err(err("bad HTTP version"));
    }
    Ok((method.to_owned(), target.to_owned()))
}

fn header_field(line: &[u8], line_no: usize) -> Result<(HeaderName, HeaderValue), RawError> {
    let err = |why| RawError::HeaderLine { line: line_no, why };
    if line.first().is_some_and(|&b| b == b' ' || b == b'\t') {
        return Err(err("obsolete line folding"));
    }
    let colon = line
        .iter()
        .position(|&b| b == b':')
        .ok_or(err("no colon"))?;
    let (name, value) = (
        line.get(..colon).unwrap_or_default(),
        line.get(colon + 1..).unwrap_or_default(),
    );
    if name.is_empty() || !name.iter().copied().all(is_tchar) {
        return Err(err("bad field name"));
    }
    let name = HeaderName::from_bytes(name).map_err(|_| err("bad field name"))?;
    let ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = value.iter().position(|b| !ows(b)).unwrap_or(value.len());
    let end = value.iter().rposition(|b| !ows(b)).map_or(start, |i| i + 1);
    let value = value.get(start..end).unwrap_or_default();
    let value = HeaderValue::from_bytes(value).map_err(|_| err("control character in value"))?;
    Ok((name, value))
}

fn body(headers: &HeaderMap, rest: &[u8]) -> Result<(Vec<u8>, usize), RawError> {
    let te = headers.get_all(http::header::TRANSFER_ENCODING);
    let has_te = te.iter().next().is_some();
    let length = content_length(headers)?;
    match (has_te, length) {
        (true, Some(_)) => Err(RawError::AmbiguousFraming),
        (true, None) => {
            let mut codings = te.iter();
            let only_chunked = codings.next().is_some_and(|v| {
                v.to_str()
                    .is_ok_and(|s| s.trim().eq_ignore_ascii_case("chunked"))
            }) && codings.next().is_none();
            if !only_chunked {
                return Err(RawError::UnsupportedTransferEncoding);
            }
            dechunk(rest)
        }
        (false, Some(n)) => {
            let body = rest.get(..n).ok_or(RawError::Truncated {
                declared: n,
                got: rest.len(),
            })?;
            Ok((body.to_vec(), rest.len() - n))
        }
        (false, None) => Ok((rest.to_vec(), 0)),
    }
}

fn content_length(headers: &HeaderMap) -> Result<Option<usize>, RawError> {
    let mut found: Option<usize> = None;
    for value in headers.get_all(http::header::CONTENT_LENGTH) {
        // A comma-separated list of equal values is allowed by RFC 9110; different values are not.
        for item in value.as_bytes().split(|&b| b == b',') {
            let item = item.trim_ascii();
            if item.is_empty() || item.len() > 18 || !item.iter().all(u8::is_ascii_digit) {
                return Err(RawError::ContentLength {
                    why: "not a decimal number",
                });
            }
            let n = item
                .iter()
                .try_fold(0usize, |n, d| {
                    n.checked_mul(10)?
                        .checked_add(usize::from(d.wrapping_sub(b'0')))
                })
                .ok_or(RawError::ContentLength { why: "too large" })?;
            if found.is_some_and(|f| f != n) {
                return Err(RawError::ContentLength {
                    why: "repeated with different values",
                });
            }
            found = Some(n);
        }
    }
    Ok(found)
}

fn dechunk(input: &[u8]) -> Result<(Vec<u8>, usize), RawError> {
    let err = |why| RawError::Chunked { why };
    let mut body = Vec::new();
    let mut pos = 0;
    loop {
        let (line, next) = next_line(input, pos).ok_or(err("ends before the last chunk"))?;
        // Chunk extensions (`;name=value`) carry nothing a signature covers.
        let size = line.split(|&b| b == b';').next().unwrap_or_default();
        let size = size.trim_ascii();
        if size.is_empty() || size.len() > 15 || !size.iter().all(u8::is_ascii_hexdigit) {
            return Err(err("bad chunk size"));
        }
        let size = size
            .iter()
            .try_fold(0usize, |n, d| {
                let digit = usize::try_from(char::from(*d).to_digit(16)?).ok()?;
                n.checked_mul(16)?.checked_add(digit)
            })
            .ok_or(err("bad chunk size"))?;
        pos = next;
        if size == 0 {
            break;
        }
        let data = input
            .get(pos..pos.saturating_add(size))
            .ok_or(err("a chunk is cut off"))?;
        body.extend_from_slice(data);
        pos += size;
        let after = input.get(pos..).unwrap_or_default();
        pos += if after.starts_with(b"\r\n") {
            2
        } else if after.starts_with(b"\n") {
            1
        } else {
            return Err(err("chunk data is not followed by a line end"));
        };
    }
    // Trailer fields: read (bounded) and dropped; none of the supported schemes signs one.
    let mut trailers = 0;
    while let Some((line, next)) = next_line(input, pos) {
        pos = next;
        if line.is_empty() {
            break;
        }
        trailers += 1;
        if trailers > MAX_HEADERS {
            return Err(RawError::TooManyHeaders { limit: MAX_HEADERS });
        }
    }
    Ok((body, input.len().saturating_sub(pos)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(s: &[u8]) -> Result<RawRequest, RawError> {
        RawRequest::parse(s)
    }

    #[test]
    fn crlf_with_content_length() {
        let r = p(b"POST /hook?a=1 HTTP/1.1\r\nHost: example.com\r\nContent-Length: 5\r\nX-A:  v \r\n\r\nhello")
            .unwrap();
        assert_eq!(r.method, "POST");
        assert_eq!(r.target, "/hook?a=1");
        assert_eq!(r.headers["x-a"], "v");
        assert_eq!(r.body, b"hello");
        assert_eq!(r.trailing_bytes, 0);
        assert_eq!(r.url(None).unwrap(), "http://example.com/hook?a=1");
        assert_eq!(
            r.url(Some("https://pub.example/hook?a=1")).unwrap(),
            "https://pub.example/hook?a=1"
        );
    }

    #[test]
    fn bare_lf_and_leading_blank_lines() {
        let r = p(b"\n\r\nGET / HTTP/1.0\nHost: h\n\nbody\n").unwrap();
        assert_eq!(r.method, "GET");
        assert_eq!(r.body, b"body\n", "without a length the rest is the body");
    }

    #[test]
    fn extra_bytes_after_content_length_are_counted_not_kept() {
        let r = p(b"POST / HTTP/1.1\nContent-Length: 2\n\nab\n").unwrap();
        assert_eq!((r.body.as_slice(), r.trailing_bytes), (&b"ab"[..], 1));
    }

    #[test]
    fn short_body_is_truncated() {
        assert_eq!(
            p(b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc"),
            Err(RawError::Truncated {
                declared: 10,
                got: 3
            })
        );
    }

    #[test]
    fn chunked_body_is_decoded_and_trailers_dropped() {
        let r = p(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n1\nX\n0\r\nT: 1\r\n\r\n")
            .unwrap();
        assert_eq!(r.body, b"helloX");
        assert!(r.headers.get("t").is_none());
        assert_eq!(
            p(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel"),
            Err(RawError::Chunked {
                why: "a chunk is cut off"
            })
        );
    }

    #[test]
    fn smuggling_shapes_are_refused() {
        assert_eq!(
            p(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
            Err(RawError::AmbiguousFraming)
        );
        assert_eq!(
            p(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"),
            Err(RawError::ContentLength {
                why: "repeated with different values"
            })
        );
        assert!(p(b"POST / HTTP/1.1\r\nContent-Length: 2, 2\r\n\r\nab").is_ok());
        assert_eq!(
            p(b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
            Err(RawError::UnsupportedTransferEncoding)
        );
        assert_eq!(
            p(b"POST / HTTP/1.1\r\nA: b\r\n c\r\n\r\n"),
            Err(RawError::HeaderLine {
                line: 3,
                why: "obsolete line folding"
            })
        );
    }

    #[test]
    fn absolute_target_is_its_own_url() {
        let r =
            p(b"POST https://api.example.com:8443/x?y HTTP/1.1\r\nHost: other\r\n\r\n").unwrap();
        assert_eq!(r.url(None).unwrap(), "https://api.example.com:8443/x?y");
    }

    #[test]
    fn missing_or_odd_host_is_a_url_error_only_when_needed() {
        let r = p(b"POST /x HTTP/1.1\r\n\r\n").unwrap();
        assert!(matches!(r.url(None), Err(RawError::Url { .. })));
        assert!(r.url(Some("https://h/x")).is_ok());
        let r = p(b"POST /x HTTP/1.1\r\nHost: a/b\r\n\r\n").unwrap();
        assert!(matches!(r.url(None), Err(RawError::Url { .. })));
    }

    #[test]
    fn non_ascii_header_values_are_kept_raw() {
        let r = p(b"POST / HTTP/1.1\r\nX-Sig: \xff\xfe\r\n\r\n").unwrap();
        assert_eq!(r.headers["x-sig"].as_bytes(), b"\xff\xfe");
    }

    #[test]
    fn limits_are_enforced() {
        let mut big = b"POST / HTTP/1.1\r\nX: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', MAX_HEAD_BYTES));
        assert_eq!(
            p(&big),
            Err(RawError::HeadTooLarge {
                limit: MAX_HEAD_BYTES
            })
        );
        let mut many = b"POST / HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend(format!("X-{i}: 1\r\n").bytes());
        }
        assert_eq!(
            p(&many),
            Err(RawError::TooManyHeaders { limit: MAX_HEADERS })
        );
    }

    #[test]
    fn bad_request_lines_are_refused() {
        for bad in [
            &b""[..],
            b"\r\n\r\n",
            b"POST\r\n",
            b"POST  / HTTP/1.1\r\n",
            b"POST / HTTP/1.1 x\r\n",
            b"POST * HTTP/1.1\r\n",
            b"POST example.com:443 HTTP/1.1\r\n",
            b"PO(ST / HTTP/1.1\r\n",
            b"POST / HTTX/1.1\r\n",
            b"POST /\xff HTTP/1.1\r\n",
        ] {
            assert!(p(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    fn token() -> impl Strategy<Value = String> {
        "[A-Za-z0-9!#$%&'*+.^_`|~-]{1,12}"
    }

    #[derive(Debug, Clone, Copy)]
    enum Framing {
        Length,
        Chunked,
        Rest,
    }

    fn serialise(
        method: &str,
        target: &str,
        headers: &[(String, String)],
        body: &[u8],
        framing: Framing,
        eol: &str,
    ) -> Vec<u8> {
        let mut out = format!("{method} {target} HTTP/1.1{eol}").into_bytes();
        for (k, v) in headers {
            out.extend(format!("{k}: {v}{eol}").bytes());
        }
        match framing {
            Framing::Length => {
                out.extend(format!("Content-Length: {}{eol}{eol}", body.len()).bytes())
            }
            Framing::Chunked => out.extend(format!("Transfer-Encoding: chunked{eol}{eol}").bytes()),
            Framing::Rest => out.extend(eol.bytes()),
        }
        match framing {
            Framing::Chunked => {
                for chunk in body.chunks(7) {
                    out.extend(format!("{:x}{eol}", chunk.len()).bytes());
                    out.extend_from_slice(chunk);
                    out.extend(eol.bytes());
                }
                out.extend(format!("0{eol}{eol}").bytes());
            }
            _ => out.extend_from_slice(body),
        }
        out
    }

    proptest! {
        #[test]
        fn any_bytes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(r) = RawRequest::parse(&input) {
                let _ = r.url(None);
            }
        }

        #[test]
        fn request_like_bytes_never_panic(
            lines in proptest::collection::vec("[ -~\t]{0,40}", 0..8),
            eol in prop_oneof![Just("\r\n"), Just("\n")],
            tail in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut input = format!("POST / HTTP/1.1{eol}").into_bytes();
            for l in &lines { input.extend(l.bytes()); input.extend(eol.bytes()); }
            input.extend(tail);
            let _ = RawRequest::parse(&input);
        }

        #[test]
        fn built_requests_round_trip(
            method in token(),
            target in "/[!-~]{0,30}",
            headers in proptest::collection::vec(
                ("x-[a-z0-9-]{1,10}", "[!-~]([ -~]{0,20}[!-~])?"), 0..10),
            body in proptest::collection::vec(any::<u8>(), 0..200),
            framing in prop_oneof![Just(Framing::Length), Just(Framing::Chunked), Just(Framing::Rest)],
            eol in prop_oneof![Just("\r\n"), Just("\n")],
        ) {
            let input = serialise(&method, &target, &headers, &body, framing, eol);
            let r = RawRequest::parse(&input).unwrap();
            prop_assert_eq!(&r.method, &method);
            prop_assert_eq!(&r.target, &target);
            prop_assert_eq!(&r.body, &body);
            prop_assert_eq!(r.trailing_bytes, 0);
            for (k, v) in &headers {
                prop_assert!(r.headers.get_all(k.as_str()).iter().any(|x| x.as_bytes() == v.as_bytes()));
            }
        }
    }
}
