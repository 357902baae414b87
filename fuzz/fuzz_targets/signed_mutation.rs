//! Each provider's sample, signed, then one fuzzer-chosen mutation of the body, the URL or a signed
//! header: it must not verify unless the mutation left the request unchanged, or changed it only in
//! a way the provider's scheme defines as equal. The allowed equivalences are exactly these:
//!
//! - a form body whose decoded, sorted parameters are unchanged (Twilio-style schemes sign the
//!   decoded parameters, not the body bytes: `a+b` and `a%20b` are the same request to them);
//! - URL changes for schemes that do not sign the URL.
//!
//! Header and URL characters are replaced within their class (digit, lowercase, uppercase), so
//! hex case and base64 padding variants, which verifiers rightly treat as equal, are not produced.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use tollgate_fuzz::{ready, NOW};
use tollgate_verify::{form, Request};

#[derive(Debug, Arbitrary)]
enum Mutation {
    BodyXor { pos: u16, mask: u8 },
    BodyInsert { pos: u16, byte: u8 },
    BodyTruncate { len: u16 },
    Url { pos: u16 },
    Header { which: u8, pos: u16 },
}

#[derive(Debug, Arbitrary)]
struct Input {
    provider: u8,
    mutation: Mutation,
}

fn rotate(b: u8) -> Option<u8> {
    Some(match b {
        b'9' => b'0',
        b'0'..=b'8' => b + 1,
        b'z' => b'a',
        b'a'..=b'y' => b + 1,
        b'Z' => b'A',
        b'A'..=b'Y' => b + 1,
        _ => return None,
    })
}

/// Rotates the alphanumeric character at or after `pos` (wrapping), except the last alphanumeric
/// character of the value, whose low bits base64 decoders may ignore.
fn rotate_at(s: &mut [u8], pos: u16) -> bool {
    let Some(last) = s.iter().rposition(|b| b.is_ascii_alphanumeric()) else {
        return false;
    };
    let n = s.len();
    for i in 0..n {
        let j = (usize::from(pos) + i) % n;
        if j == last {
            continue;
        }
        if let Some(r) = rotate(s[j]) {
            s[j] = r;
            return true;
        }
    }
    false
}

fn sorted_pairs(body: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut p: Vec<_> = form::parse(body)
        .into_iter()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    p.sort();
    p
}

fuzz_target!(|input: Input| {
    let all = ready();
    if all.is_empty() {
        return;
    }
    let r = &all[usize::from(input.provider) % all.len()];
    let mut url = r.signed.url.clone().into_bytes();
    let mut body = r.signed.body.clone();
    let mut headers = r.signed.headers.clone();
    let is_form = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("content-type")
            && v.to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
    });

    match input.mutation {
        Mutation::BodyXor { pos, mask } => {
            if body.is_empty() || mask == 0 {
                return;
            }
            let i = usize::from(pos) % body.len();
            body[i] ^= mask;
        }
        Mutation::BodyInsert { pos, byte } => {
            let i = usize::from(pos) % (body.len() + 1);
            body.insert(i, byte);
        }
        Mutation::BodyTruncate { len } => {
            if body.is_empty() {
                return;
            }
            body.truncate(usize::from(len) % body.len());
        }
        Mutation::Url { pos } => {
            if !r.verifier.signs_url() || !rotate_at(&mut url, pos) {
                return;
            }
        }
        Mutation::Header { which, pos } => {
            // Content-Type is framing, not signed material, for most schemes.
            let signed: Vec<usize> = (0..headers.len())
                .filter(|&i| !headers[i].0.eq_ignore_ascii_case("content-type"))
                .collect();
            if signed.is_empty() {
                return;
            }
            let i = signed[usize::from(which) % signed.len()];
            let mut v = std::mem::take(&mut headers[i].1).into_bytes();
            if !rotate_at(&mut v, pos) {
                return;
            }
            headers[i].1 = String::from_utf8(v).expect("rotation keeps ASCII");
        }
    }

    let url = String::from_utf8(url).expect("rotation keeps ASCII");
    let map = tollgate_verify::Signed {
        method: r.signed.method.clone(),
        url: url.clone(),
        headers: headers.clone(),
        body: body.clone(),
    }
    .header_map();
    let req = Request {
        method: &r.signed.method,
        url: &url,
        headers: &map,
        body: &body,
    };
    if r.verifier.verify(&req, NOW).is_ok() {
        let unchanged = url == r.signed.url && headers == r.signed.headers && body == r.signed.body;
        let same_form = is_form
            && url == r.signed.url
            && headers == r.signed.headers
            && sorted_pairs(&body) == sorted_pairs(&r.signed.body);
        assert!(
            unchanged || same_form,
            "{}: a mutated request verified: {:?}",
            r.spec.id,
            input.mutation
        );
    }
});
