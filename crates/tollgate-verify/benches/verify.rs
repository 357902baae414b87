//! Verifications per second of each provider on its realistic sample webhook, beside the raw
//! cryptographic cost of the same bytes (HMAC-SHA1, HMAC-SHA256, Ed25519), so the ratio shows what
//! parsing and canonicalising add. Run: `cargo bench -p tollgate-verify --bench verify`.
#![allow(missing_docs)]

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use ed25519_dalek::{Signer, SigningKey};
use hmac::{Hmac, Mac};
use tollgate_verify::{Key, KeyRing, Options, Request, Secret, Settings, PROVIDERS};

const NOW: i64 = 1_763_900_000;

fn key_for(id: &str) -> &'static str {
    match id {
        "telnyx" => "nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A=",
        "standard-webhooks" => "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "basic" => "twilio:correct-horse-battery",
        "sinch" => "c2luY2gtYXBwLXNlY3JldC0wMTIzNDU2Nzg5",
        _ => "test-secret-0123456789abcdef",
    }
}

/// Default options, but the generic `hmac` scheme must be told its header (GitHub style here).
fn opts_for(id: &str) -> Options {
    let mut o = Options::new();
    if id == "hmac" {
        o.insert("header".into(), "X-Hub-Signature-256".into());
        o.insert("prefix".into(), "sha256=".into());
    }
    o
}

fn providers(c: &mut Criterion) {
    let mut g = c.benchmark_group("verify");
    for spec in PROVIDERS {
        let opts = opts_for(spec.id);
        let mut input = (spec.sample)(&opts, "https://hooks.example.com/twilio/voice");
        input.now = NOW;
        input.nonce = "evt_0123456789abcdef".into();
        let secret = Secret::new(key_for(spec.id));
        let signed = (spec.sign)(&opts, &secret, &input).expect("sign");
        let vk = (spec.verify_key_for)(&opts, &secret).expect("verify key");
        let ring = KeyRing::new(vec![Key::new("k", vk)]).expect("ring");
        let v = (spec.build)(&opts, &ring, &Settings::default()).expect("build");
        let headers = signed.header_map();
        let req = Request {
            method: &signed.method,
            url: &signed.url,
            headers: &headers,
            body: &signed.body,
        };
        assert!(
            v.verify(&req, NOW).is_ok(),
            "{} sample does not verify",
            spec.id
        );
        g.throughput(Throughput::Elements(1));
        g.bench_function(format!("{}/{}B", spec.id, signed.body.len()), |b| {
            b.iter(|| v.verify(black_box(&req), NOW).is_ok())
        });
    }
    g.finish();
}

/// The floor: the MAC/signature over as many bytes as the Twilio sample's canonical string
/// (URL + body) and the JSON samples, computed directly.
fn raw_crypto(c: &mut Criterion) {
    let mut g = c.benchmark_group("raw");
    let opts = Options::new();
    for id in ["twilio", "standard-webhooks", "telnyx"] {
        let spec = tollgate_verify::find_provider(id).expect("provider");
        let input = (spec.sample)(&opts, "https://hooks.example.com/twilio/voice");
        let msg: Vec<u8> = [input.url.as_bytes(), &input.body].concat();
        let key = b"test-secret-0123456789abcdef";
        let sha1 = Hmac::<sha1::Sha1>::new_from_slice(key).expect("key");
        let sha256 = Hmac::<sha2::Sha256>::new_from_slice(key).expect("key");
        g.throughput(Throughput::Elements(1));
        g.bench_function(format!("hmac-sha1/{id}/{}B", msg.len()), |b| {
            b.iter(|| {
                let mut m = sha1.clone();
                m.update(black_box(&msg));
                m.finalize()
            })
        });
        g.bench_function(format!("hmac-sha256/{id}/{}B", msg.len()), |b| {
            b.iter(|| {
                let mut m = sha256.clone();
                m.update(black_box(&msg));
                m.finalize()
            })
        });
        let sk = SigningKey::from_bytes(&[7u8; 32]);
        let vk = sk.verifying_key();
        let sig = sk.sign(&msg);
        g.bench_function(format!("ed25519-verify/{id}/{}B", msg.len()), |b| {
            b.iter(|| vk.verify_strict(black_box(&msg), &sig).is_ok())
        });
    }
    g.finish();
}

criterion_group!(benches, providers, raw_crypto);
criterion_main!(benches);
