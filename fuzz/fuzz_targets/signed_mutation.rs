//! Each provider configuration's sample, signed, then one fuzzer-chosen mutation of the body, the
//! URL or a header: it must not verify unless the result is, by the scheme's own definition, the
//! same request ([`tollgate_fuzz::Ready::equivalent`], stated per configuration in
//! `fuzz/src/lib.rs`): form parameters that decode to the same signed string, parts of the URL or
//! headers the scheme does not sign, one of Plivo's twin signature headers, Sinch's app key.
//!
//! Header and URL characters are replaced within their class (digit, lowercase, uppercase), so
//! hex-case variants are not produced, and a value's last alphanumeric character is left alone
//! because base64 decoders may ignore its low bits.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use tollgate_fuzz::{ready, NOW};
use tollgate_verify::Request;

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

fuzz_target!(|input: Input| {
    let all = ready();
    if all.is_empty() {
        return;
    }
    let r = &all[usize::from(input.provider) % all.len()];
    let mut url = r.signed.url.clone().into_bytes();
    let mut body = r.signed.body.clone();
    let mut headers = r.signed.headers.clone();

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
            if headers.is_empty() {
                return;
            }
            let i = usize::from(which) % headers.len();
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
        assert!(
            r.equivalent(&url, &headers, &body),
            "{} {:?}: a mutated request verified: {:?}",
            r.spec.id,
            r.config.opts,
            input.mutation
        );
    }
});
