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

/// One `name=value` segment of a form body, split as [`parse`] splits it but not decoded, with
/// whether each side contains `+` or `%` (and so may differ from its decoding).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawPair<'a> {
    /// The name as sent.
    pub name: &'a [u8],
    /// The value as sent.
    pub value: &'a [u8],
    /// The name contains `+` or `%`.
    pub name_escaped: bool,
    /// The value contains `+` or `%`.
    pub value_escaped: bool,
}

impl RawPair<'_> {
    /// Appends the decoded name, then the decoded value, to `out`.
    #[inline]
    pub fn push_decoded_to(&self, out: &mut Vec<u8>) {
        push_component(self.name, self.name_escaped, out);
        push_component(self.value, self.value_escaped, out);
    }
}

#[inline(always)]
fn push_component(raw: &[u8], escaped: bool, out: &mut Vec<u8>) {
    if escaped {
        decode_into(raw, out);
    } else {
        out.extend_from_slice(raw);
    }
}

/// Appends the decoding of one component to `out`, as [`decode`] would decode it, copying the
/// runs between escapes whole.
pub fn decode_into(raw: &[u8], out: &mut Vec<u8>) {
    let mut rest = raw;
    while let Some(i) = memchr::memchr2(b'+', b'%', rest) {
        let (run, tail) = rest.split_at(i);
        out.extend_from_slice(run);
        let Some((&b, tail)) = tail.split_first() else {
            return;
        };
        rest = tail;
        push_decoded(b, &mut rest, out);
    }
    out.extend_from_slice(rest);
}

/// The offsets of every `&`, `=`, `%` and `+` in a body, in order: the bytes that split or need
/// decoding. Classifies 64 bytes at a time into a bit mask (a loop the compiler vectorises), so the
/// cost is per special byte, not per byte.
struct Specials<'a> {
    body: &'a [u8],
    /// Offset of the block `mask` describes.
    base: usize,
    mask: u64,
}

impl<'a> Specials<'a> {
    fn new(body: &'a [u8]) -> Self {
        Specials {
            body,
            base: 0,
            mask: special_mask(body.get(..64).unwrap_or(body)),
        }
    }
}

impl Iterator for Specials<'_> {
    type Item = usize;

    #[inline]
    fn next(&mut self) -> Option<usize> {
        while self.mask == 0 {
            self.base += 64;
            let rest = self.body.get(self.base..).filter(|r| !r.is_empty())?;
            self.mask = special_mask(rest.get(..64).unwrap_or(rest));
        }
        let p = self.base + self.mask.trailing_zeros() as usize;
        self.mask &= self.mask - 1;
        Some(p)
    }
}

/// Bit `i` set when `block[i]` (of at most 64 bytes) is `&`, `=`, `%` or `+`.
#[inline]
fn special_mask(block: &[u8]) -> u64 {
    let mut flags = [0u8; 64];
    for (f, &b) in flags.iter_mut().zip(block) {
        *f = u8::from(matches!(b, b'&' | b'=' | b'%' | b'+'));
    }
    let mut mask = 0;
    for (i, eight) in flags.chunks_exact(8).enumerate() {
        let mut w = [0u8; 8];
        w.copy_from_slice(eight);
        // Eight 0/1 bytes to eight bits: each byte's multiple lands in the top byte, no carries.
        mask |= (u64::from_le_bytes(w).wrapping_mul(0x0102_0408_1020_4080) >> 56) << (8 * i);
    }
    mask
}

/// The segments of a form body as [`parse`] finds them (empty segments skipped, split on the
/// first `=`), borrowed and undecoded, in order, appended to `out`. One scan finds the separators
/// and escapes; nothing is copied.
pub fn split_raw<'a>(body: &'a [u8], out: &mut Vec<RawPair<'a>>) {
    let mut start = 0;
    // The segment's first `=`, and its first and last `+`/`%`, as offsets in `body`.
    let mut eq = usize::MAX;
    let mut first_esc = usize::MAX;
    let mut last_esc = 0;
    for p in Specials::new(body).chain(std::iter::once(body.len())) {
        match body.get(p) {
            Some(b'=') => {
                eq = eq.min(p);
                continue;
            }
            Some(b'%' | b'+') => {
                first_esc = first_esc.min(p);
                last_esc = p;
                continue;
            }
            _ => {}
        }
        // `&` or the end.
        if p > start {
            let eq = eq.min(p);
            out.push(RawPair {
                name: body.get(start..eq).unwrap_or(b""),
                value: body.get(eq + 1..p).unwrap_or(b""),
                name_escaped: first_esc < eq,
                value_escaped: first_esc != usize::MAX && last_esc > eq,
            });
        }
        start = p + 1;
        eq = usize::MAX;
        first_esc = usize::MAX;
    }
}

/// When the body's pairs are already in canonical order (names unescaped and strictly
/// increasing as bytes, or non-decreasing when `equal_names` allows a name to repeat), the
/// concatenation of every decoded `name` and `value` in that order, as
/// [`parse`] then concatenating would give it; `None` as soon as they are not.
///
/// One pass: the runs between special bytes are copied whole, `+` and valid `%XX` escapes decoded
/// on the way. A valid escape never spans a separator (hex digits are neither `&` nor `=`), so
/// decoding the body in place equals decoding each component.
pub fn concat_if_ordered(body: &[u8], equal_names: bool) -> Option<Vec<u8>> {
    let mut c = Concat {
        body,
        out: zeroed(body.len() + 16),
        w: 0,
        copied: 0,
        start: 0,
        eq: usize::MAX,
        prev: None,
        equal_names,
    };
    let mut base = 0;
    for block in body.chunks(64) {
        let mut mask = special_mask(block);
        while mask != 0 {
            let p = base + mask.trailing_zeros() as usize;
            mask &= mask - 1;
            match body.get(p) {
                Some(b'&') => c.end_segment(p)?,
                Some(b'=') => c.equals(p),
                Some(b'+') => c.plus(p)?,
                _ => c.percent(p)?,
            }
        }
        base += 64;
    }
    c.end_segment(body.len())?;
    let Concat { mut out, w, .. } = c;
    out.truncate(w);
    Some(out)
}

/// A zeroed buffer of `len` bytes for [`concat_if_ordered`]'s output, which never outgrows the
/// body (the 16 bytes of slack let short runs be copied whole). Not `vec![0; len]`: glibc's
/// `calloc` bypasses the thread cache, and its free then consolidates the heap on every request.
#[allow(clippy::slow_vector_initialization)] // on purpose, see above
fn zeroed(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    out.resize(len, 0);
    out
}

/// The state of [`concat_if_ordered`].
struct Concat<'a> {
    body: &'a [u8],
    out: Vec<u8>,
    /// Bytes written to `out`.
    w: usize,
    /// Everything in `body` before this is in `out` or dropped.
    copied: usize,
    /// Start of the current segment.
    start: usize,
    /// The current segment's first `=`, or `usize::MAX`.
    eq: usize,
    /// The previous pair's name.
    prev: Option<&'a [u8]>,
    equal_names: bool,
}

impl<'a> Concat<'a> {
    /// Appends `body[self.copied..to]` to the output.
    #[inline(always)]
    fn copy_to(&mut self, to: usize) {
        let (from, w) = (self.copied, self.w);
        let n = to.saturating_sub(from);
        // `w <= from` always (no input byte yields more than one output byte), so whenever
        // `from + 32` is inside the body, `w + 32` is inside `out`.
        match (self.body.get(from..from + 32), self.out.get_mut(w..w + 32)) {
            (Some(src), Some(dst)) if n <= 32 => dst.copy_from_slice(src),
            _ => {
                if let (Some(src), Some(dst)) =
                    (self.body.get(from..to), self.out.get_mut(w..w + n))
                {
                    dst.copy_from_slice(src);
                }
            }
        }
        self.w = w + n;
    }

    /// Appends one decoded byte in place of `body[p..skip_to]`.
    #[inline(always)]
    fn put(&mut self, p: usize, byte: u8, skip_to: usize) -> Option<()> {
        self.copy_to(p);
        *self.out.get_mut(self.w)? = byte;
        self.w += 1;
        self.copied = skip_to;
        Some(())
    }

    #[inline(always)]
    fn equals(&mut self, p: usize) {
        if self.eq == usize::MAX {
            self.eq = p;
            self.copy_to(p);
            self.copied = p + 1;
        }
    }

    #[inline(always)]
    fn plus(&mut self, p: usize) -> Option<()> {
        if self.eq == usize::MAX {
            return None; // an escaped name
        }
        self.put(p, b' ', p + 1)
    }

    #[inline(always)]
    fn percent(&mut self, p: usize) -> Option<()> {
        if self.eq == usize::MAX {
            return None; // an escaped name
        }
        if let [_, h, l, ..] = *self.body.get(p..)? {
            if let (Some(h), Some(l)) = (hex_val(h), hex_val(l)) {
                return self.put(p, h << 4 | l, p + 3);
            }
        }
        // Kept literally: it stays in the run.
        Some(())
    }

    /// At a `&` or the end of the body: checks the order of the segment's name and drops the
    /// separator.
    #[inline(always)]
    fn end_segment(&mut self, p: usize) -> Option<()> {
        if p > self.start {
            let name = self.body.get(self.start..self.eq.min(p))?;
            if let Some(prev) = self.prev {
                match bytes_cmp(prev, name) {
                    std::cmp::Ordering::Less => {}
                    std::cmp::Ordering::Equal if self.equal_names => {}
                    _ => return None,
                }
            }
            self.prev = Some(name);
        }
        self.copy_to(p);
        self.copied = p + 1;
        self.start = p + 1;
        self.eq = usize::MAX;
        Some(())
    }
}

/// Byte-wise comparison as `<[u8]>::cmp`, eight bytes at a time, inline: parameter names are
/// short and often share a prefix, and a `memcmp` call per name costs more than the comparison.
#[inline(always)]
pub(crate) fn bytes_cmp(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    let n = a.len().min(b.len());
    let (mut x, mut y) = (a.get(..n).unwrap_or(a), b.get(..n).unwrap_or(b));
    while let (Some((xa, xr)), Some((ya, yr))) =
        (x.split_first_chunk::<8>(), y.split_first_chunk::<8>())
    {
        let (u, v) = (u64::from_be_bytes(*xa), u64::from_be_bytes(*ya));
        if u != v {
            return u.cmp(&v);
        }
        (x, y) = (xr, yr);
    }
    for (u, v) in x.iter().zip(y) {
        if u != v {
            return u.cmp(v);
        }
    }
    a.len().cmp(&b.len())
}

/// True when the body has no pairs: it is empty or only `&`s.
pub fn is_empty(body: &[u8]) -> bool {
    body.iter().all(|&b| b == b'&')
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

    /// `split_raw` then decoding each side, as `parse` would give it.
    fn split_then_decode(body: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut raw = Vec::new();
        split_raw(body, &mut raw);
        raw.iter()
            .map(|p| {
                assert_eq!(
                    p.name_escaped,
                    p.name.iter().any(|&b| b == b'+' || b == b'%')
                );
                assert_eq!(
                    p.value_escaped,
                    p.value.iter().any(|&b| b == b'+' || b == b'%')
                );
                let (mut k, mut v) = (Vec::new(), Vec::new());
                decode_into(p.name, &mut k);
                decode_into(p.value, &mut v);
                let mut both = Vec::new();
                p.push_decoded_to(&mut both);
                assert_eq!(both, [&k[..], &v[..]].concat());
                (k, v)
            })
            .collect()
    }

    fn parse_owned(body: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        parse(body)
            .into_iter()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }

    #[test]
    fn split_raw_matches_parse() {
        for body in [
            &b"b=2&a=1&&a=%2B0&flag&=v&x=%zz+%41"[..],
            b"",
            b"&&&",
            b"=",
            b"%",
            b"a%=b%",
            b"a+b=c=d%4&%41%4=%%41+",
            b"k=%C3%A9&\xff=\xfe%FF",
        ] {
            assert_eq!(split_then_decode(body), parse_owned(body), "{body:?}");
            assert_eq!(is_empty(body), parse(body).is_empty(), "{body:?}");
        }
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
        fn split_raw_equals_parse_on_any_bytes(s in proptest::collection::vec(any::<u8>(), 0..96)) {
            prop_assert_eq!(split_then_decode(&s), parse_owned(&s));
            prop_assert_eq!(is_empty(&s), parse(&s).is_empty());
        }

        #[test]
        fn split_raw_equals_parse_on_form_like_bytes(s in proptest::collection::vec(proptest::sample::select(b"&=%+aB0fZ\xff".to_vec()), 0..96)) {
            prop_assert_eq!(split_then_decode(&s), parse_owned(&s));
            prop_assert_eq!(is_empty(&s), parse(&s).is_empty());
        }

        #[test]
        fn concat_if_ordered_is_parse_concatenated(s in proptest::collection::vec(proptest::sample::select(b"&&==%%++aabB0fF1\xff".to_vec()), 0..128)) {
            let want: Vec<u8> = parse_owned(&s).into_iter().flat_map(|(k, v)| [k, v]).flatten().collect();
            for equal_names in [false, true] {
                if let Some(got) = concat_if_ordered(&s, equal_names) {
                    prop_assert_eq!(got, want.clone());
                }
            }
        }

        #[test]
        fn concat_if_ordered_takes_ordered_bodies(
            names in proptest::collection::btree_set("[a-e]{0,3}", 0..10),
            values in proptest::collection::vec(proptest::collection::vec(proptest::sample::select(b"==%%++aF1\xff\x00&".to_vec()), 0..40), 10),
            empties in proptest::collection::vec(any::<bool>(), 10),
        ) {
            let mut body = Vec::new();
            for ((name, value), empty) in names.iter().zip(&values).zip(&empties) {
                body.extend_from_slice(name.as_bytes());
                body.push(b'=');
                // `&` in a value starts another segment: keep the values free of it.
                body.extend(value.iter().copied().filter(|&b| b != b'&'));
                body.push(b'&');
                if *empty {
                    body.push(b'&');
                }
            }
            let want: Vec<u8> = parse_owned(&body).into_iter().flat_map(|(k, v)| [k, v]).flatten().collect();
            prop_assert_eq!(concat_if_ordered(&body, false), Some(want.clone()));
            prop_assert_eq!(concat_if_ordered(&body, true), Some(want));
        }

        #[test]
        fn bytes_cmp_is_slice_cmp(a in proptest::collection::vec(0u8..4, 0..20), b in proptest::collection::vec(0u8..4, 0..20)) {
            prop_assert_eq!(bytes_cmp(&a, &b), a.cmp(&b));
            prop_assert_eq!(bytes_cmp(&a, &a), std::cmp::Ordering::Equal);
        }

        #[test]
        fn decode_never_panics(s in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = parse(&s);
        }
    }
}
