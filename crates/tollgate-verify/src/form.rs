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
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < raw.len() => match (hex_val(raw[i + 1]), hex_val(raw[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    Cow::Owned(out)
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
    body.split(|&b| b == b'&')
        .filter(|seg| !seg.is_empty())
        .map(|seg| match seg.iter().position(|&b| b == b'=') {
            Some(eq) => (decode(&seg[..eq]), decode(&seg[eq + 1..])),
            None => (decode(seg), Cow::Borrowed(&b""[..])),
        })
        .collect()
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
        fn decode_never_panics(s in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = parse(&s);
        }
    }
}
