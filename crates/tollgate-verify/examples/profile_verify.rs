//! Verifies one provider's realistic sample N times, or HMACs the same bytes N times, for
//! instruction-count profiling, which is repeatable on a busy machine where wall-clock benches
//! are not:
//!
//! ```text
//! cargo build --release -p tollgate-verify --example profile_verify
//! valgrind --tool=callgrind target/release/examples/profile_verify twilio 10000
//! valgrind --tool=callgrind target/release/examples/profile_verify raw-sha1 10000
//! ```
//!
//! Other modes: `concat` (the ordered-body canonical concatenation alone), `parse` (splitting
//! alone), `headers`, any provider id, and `raw-sha1:ID` / `raw-sha256:ID` (the raw HMAC of that
//! provider's sample URL + body, to compare its verify with).
#![allow(missing_docs, clippy::unwrap_used)]

use hmac::{Hmac, Mac};
use tollgate_verify::{find_provider, Key, KeyRing, Options, Request, Secret, Settings};

fn main() {
    let mut args = std::env::args().skip(1);
    let what = args.next().unwrap_or_else(|| "twilio".into());
    let n: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(10_000);
    let url = "https://hooks.example.com/twilio/voice";
    let twilio = find_provider("twilio").unwrap();
    let input = (twilio.sample)(&Options::new(), url);
    let msg: Vec<u8> = [input.url.as_bytes(), &input.body].concat();
    let key = "test-secret-0123456789abcdef";
    let mut ok = 0usize;
    // `raw-sha1:ID` / `raw-sha256:ID`: the HMAC of provider ID's sample URL + body.
    if let Some((alg, id)) = what.split_once(':') {
        let input = (find_provider(id).unwrap().sample)(&Options::new(), url);
        let msg: Vec<u8> = [input.url.as_bytes(), &input.body].concat();
        if alg == "raw-sha1" {
            let mac = Hmac::<sha1::Sha1>::new_from_slice(key.as_bytes()).unwrap();
            for _ in 0..n {
                let mut m = mac.clone();
                m.update(std::hint::black_box(&msg));
                ok += m.finalize().into_bytes()[0] as usize & 1;
            }
        } else {
            let mac = Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
            for _ in 0..n {
                let mut m = mac.clone();
                m.update(std::hint::black_box(&msg));
                ok += m.finalize().into_bytes()[0] as usize & 1;
            }
        }
        println!("{what} ({} bytes): {ok}/{n}", msg.len());
        return;
    }
    match what.as_str() {
        "raw-sha1" => {
            let mac = Hmac::<sha1::Sha1>::new_from_slice(key.as_bytes()).unwrap();
            for _ in 0..n {
                let mut m = mac.clone();
                m.update(std::hint::black_box(&msg));
                ok += m.finalize().into_bytes()[0] as usize & 1;
            }
        }
        "parse" => {
            for _ in 0..n {
                let mut pairs = Vec::with_capacity(32);
                tollgate_verify::form::split_raw(std::hint::black_box(&input.body), &mut pairs);
                ok += pairs.len() & 1;
            }
        }
        "concat" => {
            for _ in 0..n {
                let out = tollgate_verify::form::concat_if_ordered(
                    std::hint::black_box(&input.body),
                    false,
                );
                ok += out.map_or(0, |o| o.len() & 1);
            }
        }
        "headers" => {
            let mut h = http::HeaderMap::new();
            h.insert(
                "x-twilio-signature",
                "RSOYDt4T1cUTdK1PDd93/VVr8B8=".parse().unwrap(),
            );
            h.insert(
                "content-type",
                "application/x-www-form-urlencoded".parse().unwrap(),
            );
            for _ in 0..n {
                let h = std::hint::black_box(&h);
                ok += h.get("x-twilio-signature").is_some() as usize
                    + h.get("x-twilio-webhooks-signature-settings").is_some() as usize
                    + h.get_all("content-type").iter().count();
            }
        }
        id => {
            let spec = find_provider(id).unwrap();
            let opts = Options::new();
            let mut input = (spec.sample)(&opts, url);
            input.now = 1_700_000_000;
            input.nonce = "evt_0123456789abcdef".into();
            let secret = Secret::new(key);
            let signed = (spec.sign)(&opts, &secret, &input).unwrap();
            let vk = (spec.verify_key_for)(&opts, &secret).unwrap();
            let v = (spec.build)(
                &opts,
                &KeyRing::new(vec![Key::new("k", vk)]).unwrap(),
                &Settings::default(),
            )
            .unwrap();
            let headers = signed.header_map();
            let req = Request {
                method: &signed.method,
                url: &signed.url,
                headers: &headers,
                body: &signed.body,
            };
            for _ in 0..n {
                ok += v.verify(std::hint::black_box(&req), 1_700_000_000).is_ok() as usize;
            }
        }
    }
    println!("{what}: {ok}/{n}");
}
