//! `application/x-www-form-urlencoded` decoding for the schemes that sign parameters (Twilio,
//! SignalWire compatibility, Plivo, Vonage `sig`). Borrows from the input and allocates only for a
//! component that actually contains `+` or `%`. Decoding never fails: like the providers' SDKs
//! (Python `unquote_plus`, Node `querystring`), an invalid `%` escape is kept literally. Values stay
//! bytes, so invalid UTF-8 is signed exactly as sent and sorting is UTF-8 byte order.

use std::borrow::Cow;

/// Decodes one component: `+` becomes a space, `%XX` becomes the byte.
pub fn decode(raw: &[u8]) -> Cow<'_, [u8]> {
    if !raw.iter().any(|&b| b == b'+' || b == b'%') {
        return Cow::Borrowed(raw);
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut rest = raw;
    while let Some((&b, tail)) = rest.split_first() {
        rest = tail;
        push_decoded(b, &mut rest, &mut out);
    }
    Cow::Owned(out)
}

/// Appends the decoding of byte `b` (already taken from the input) to `out`; for a valid `%XX`
/// escape it also consumes the two hex digits from `rest`.
#[inline(always)]
fn push_decoded(b: u8, rest: &mut &[u8], out: &mut Vec<u8>) {
    match b {
        b'+' => out.push(b' '),
        b'%' => {
            if let [h, l, after @ ..] = *rest {
                if let (Some(h), Some(l)) = (hex_val(*h), hex_val(*l)) {
                    out.push(h << 4 | l);
                    *rest = after;
                    return;
                }
            }
            out.push(b'%');
        }
        _ => out.push(b),
    }
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// One decoded `name=value` pair.
pub type Pair<'a> = (Cow<'a, [u8]>, Cow<'a, [u8]>);

/// Splits on `&`, skips empty segments, splits each on the first `=` (a segment without `=` is a
/// name with an empty value) and decodes both sides. Order is kept.
pub fn parse(body: &[u8]) -> Vec<Pair<'_>> {
    segments(body)
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

/// The raw `(name, value)` slices of a form body, split as [`parse`] splits them.
fn segments(body: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    body.split(|&b| b == b'&')
        .filter(|seg| !seg.is_empty())
        .map(|seg| match seg.iter().position(|&b| b == b'=') {
            Some(eq) => (&seg[..eq], &seg[eq + 1..]),
            None => (seg, &b""[..]),
        })
}

/// Every pair of a form body decoded into one buffer: one allocation for the names and values
/// whatever their number, instead of one per escaped component. Pairs keep their order.
#[derive(Debug, Clone, Default)]
pub struct Decoded {
    buf: Vec<u8>,
    /// `(start of name, start of value, end of value)` in `buf`.
    spans: Vec<(usize, usize, usize)>,
}

impl Decoded {
    /// Decodes `body` as [`parse`] would, in one pass: splitting and decoding happen in the same
    /// loop, and decoded bytes go straight into the buffer (per-component calls and allocations
    /// cost as much as the HMAC of the whole body).
    pub fn parse(body: &[u8]) -> Self {
        // Decoding never lengthens a component, so `buf` never reallocates.
        let mut buf = Vec::with_capacity(body.len());
        let mut spans = Vec::with_capacity(32);
        let mut start = 0;
        let mut mid = None;
        let mut seen = false;
        let mut rest = body;
        while let Some((&b, tail)) = rest.split_first() {
            rest = tail;
            match b {
                b'&' => {
                    if seen {
                        spans.push((start, mid.unwrap_or(buf.len()), buf.len()));
                    }
                    start = buf.len();
                    mid = None;
                    seen = false;
                }
                b'=' if mid.is_none() => {
                    mid = Some(buf.len());
                    seen = true;
                }
                _ => {
                    seen = true;
                    push_decoded(b, &mut rest, &mut buf);
                }
            }
        }
        if seen {
            spans.push((start, mid.unwrap_or(buf.len()), buf.len()));
        }
        Decoded { buf, spans }
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// True when the body had no pairs.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// The `i`th pair, decoded; `None` past the end.
    pub fn get(&self, i: usize) -> Option<(&[u8], &[u8])> {
        let &(a, b, c) = self.spans.get(i)?;
        Some((self.buf.get(a..b)?, self.buf.get(b..c)?))
    }

    /// The pairs in order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        (0..self.len()).filter_map(|i| self.get(i))
    }
}

/// Percent-encodes a component the way HTML forms and the SDKs' senders do (space as `+`,
/// unreserved bytes `A-Za-z0-9*-._` literal). Used by signers and tests, not by verification.
pub fn encode(raw: &[u8]) -> String {
    let mut out = String::with_capacity(raw.len() * 3);
    for &b in raw {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => {
                out.push('%');
                out.push(char::from(b"0123456789ABCDEF"[(b >> 4) as usize]));
                out.push(char::from(b"0123456789ABCDEF"[(b & 15) as usize]));
            }
        }
    }
    out
}

/// Encodes pairs as a form body.
pub fn encode_pairs<K: AsRef<[u8]>, V: AsRef<[u8]>>(pairs: &[(K, V)]) -> String {
    let mut out = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(&encode(k.as_ref()));
        out.push('=');
        out.push_str(&encode(v.as_ref()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn decodes_plus_percent_and_keeps_bad_escapes() {
        assert_eq!(&*decode(b"a+b%20c"), b"a b c");
        assert_eq!(&*decode(b"%2B14158675309"), b"+14158675309");
        assert_eq!(&*decode(b"100%"), b"100%");
        assert_eq!(&*decode(b"%4"), b"%4");
        assert_eq!(&*decode(b"%zz%41"), b"%zzA");
        assert_eq!(&*decode(b"%C3%A9"), "é".as_bytes());
        assert_eq!(&*decode(b"%FF"), b"\xff");
        assert!(matches!(decode(b"plain"), Cow::Borrowed(_)));
    }

    #[test]
    fn decoded_arena_matches_parse() {
        let body = b"b=2&a=1&&a=%2B0&flag&=v&x=%zz+%41";
        let arena = Decoded::parse(body);
        let parsed = parse(body);
        assert_eq!(arena.len(), parsed.len());
        for ((k, v), (ak, av)) in parsed.iter().zip(arena.iter()) {
            assert_eq!((&**k, &**v), (ak, av));
        }
        assert!(arena.get(arena.len()).is_none());
    }

    #[test]
    fn parses_pairs_in_order() {
        let p = parse(b"b=2&a=1&&a=0&flag&=v");
        let p: Vec<(&[u8], &[u8])> = p.iter().map(|(k, v)| (&**k, &**v)).collect();
        assert_eq!(
            p,
            vec![
                (&b"b"[..], &b"2"[..]),
                (b"a", b"1"),
                (b"a", b"0"),
                (b"flag", b""),
                (b"", b"v")
            ]
        );
    }

    proptest! {
        #[test]
        fn encode_then_decode_is_identity(s in proptest::collection::vec(any::<u8>(), 0..64)) {
            let enc = encode(&s);
            prop_assert_eq!(&*decode(enc.as_bytes()), &s[..]);
        }

        #[test]
        fn parse_never_panics_and_round_trips(pairs in proptest::collection::vec((".{0,8}", ".{0,8}"), 0..8)) {
            let pairs: Vec<(String, String)> = pairs.into_iter().filter(|(k, _)| !k.is_empty()).collect();
            let body = encode_pairs(&pairs);
            let parsed = parse(body.as_bytes());
            prop_assert_eq!(parsed.len(), pairs.len());
            for ((k, v), (pk, pv)) in pairs.iter().zip(parsed.iter()) {
                prop_assert_eq!(k.as_bytes(), &**pk);
                prop_assert_eq!(v.as_bytes(), &**pv);
            }
        }

        #[test]
        fn arena_equals_parse_on_any_bytes(s in proptest::collection::vec(any::<u8>(), 0..96)) {
            let arena = Decoded::parse(&s);
            let parsed = parse(&s);
            prop_assert_eq!(arena.len(), parsed.len());
            for ((k, v), (ak, av)) in parsed.iter().zip(arena.iter()) {
                prop_assert_eq!((&**k, &**v), (ak, av));
            }
        }

        #[test]
        fn decode_never_panics(s in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = parse(&s);
        }
    }
}
