//! End-to-end tests of `tollgate keygen`, `sign` and `verify`: the built binary, its exit codes,
//! its stdout/stderr, and sign → verify round trips with every `--tamper` kind.

use std::io::Write as _;
use std::process::{Command, Output, Stdio};

use tollgate_verify::{find_provider, Options, Secret, PROVIDERS};

const BIN: &str = env!("CARGO_BIN_EXE_tollgate");

/// What a `sign --tamper` must lead to.
#[derive(Debug, Clone, Copy)]
enum Want {
    /// `sign` exits 0 and `verify` exits 1 with this reason.
    Rejected(&'static str),
    /// `sign` exits 2 with this on stderr and prints nothing: the tamper cannot be detected by
    /// this scheme with these options, so printing it would mislead.
    Refused(&'static str),
}

const MISMATCH: Want = Want::Rejected("signature_mismatch");
const BODY_HASH: Want = Want::Rejected("body_hash_mismatch");
const STALE: Want = Want::Rejected("timestamp_out_of_window");
const NO_TIME: Want = Want::Refused("signs no timestamp");
const NO_URL: Want = Want::Refused("does not sign the URL");
const NO_BODY: Want = Want::Refused("does not sign the body");
const NO_PARAMS: Want = Want::Refused("does not sign the form parameters");

/// One provider configuration the round-trip and tamper tests run over.
struct Case {
    provider: &'static str,
    /// `--set` options, given to both `sign` and `verify`.
    sets: &'static [&'static str],
    /// Signing key (for Ed25519 schemes the private key). Test fixtures, not secrets.
    key: &'static str,
    /// The `scheme` `verify` reports.
    scheme: &'static str,
    /// Outcome of `--tamper` body, param, signature, timestamp, url.
    tamper: [Want; 5],
}

const TAMPERS: [&str; 5] = ["body", "param", "signature", "timestamp", "url"];

const HMAC_KEY: &str = "test-secret-0123456789abcdef";
/// The RFC 8032 test-1 seed.
const ED25519_SEED: &str = "nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A=";
/// A key with no alphanumeric character after its `_`: what broke `--tamper signature` once.
const ODD_KEY: &str = "joy~_𝄞é:";

/// Every provider of the registry, and each non-default scheme of one
/// (`every_registry_provider_has_a_cli_case` fails when a provider is missing).
const CASES: &[Case] = &[
    Case {
        provider: "twilio",
        sets: &[],
        key: HMAC_KEY,
        scheme: "hmac-sha1",
        tamper: [MISMATCH, MISMATCH, MISMATCH, NO_TIME, MISMATCH],
    },
    Case {
        provider: "twilio",
        sets: &["algorithm=hmac-sha256"],
        key: HMAC_KEY,
        scheme: "hmac-sha256",
        tamper: [MISMATCH, MISMATCH, MISMATCH, NO_TIME, MISMATCH],
    },
    Case {
        provider: "signalwire",
        sets: &[],
        key: HMAC_KEY,
        scheme: "b",
        tamper: [MISMATCH, MISMATCH, MISMATCH, NO_TIME, MISMATCH],
    },
    Case {
        provider: "plivo",
        sets: &[],
        key: HMAC_KEY,
        scheme: "v3",
        tamper: [MISMATCH, MISMATCH, MISMATCH, NO_TIME, MISMATCH],
    },
    // V2 signs the URL without its query, and the nonce: not the body.
    Case {
        provider: "plivo",
        sets: &["version=v2"],
        key: HMAC_KEY,
        scheme: "v2",
        tamper: [NO_BODY, NO_PARAMS, MISMATCH, NO_TIME, MISMATCH],
    },
    Case {
        provider: "telnyx",
        sets: &[],
        key: ED25519_SEED,
        scheme: "ed25519",
        tamper: [MISMATCH, MISMATCH, MISMATCH, STALE, NO_URL],
    },
    // The JWT signs the body's hash, so a changed body is a hash mismatch under a valid token.
    Case {
        provider: "vonage",
        sets: &[],
        key: HMAC_KEY,
        scheme: "jwt",
        tamper: [BODY_HASH, BODY_HASH, MISMATCH, STALE, NO_URL],
    },
    Case {
        provider: "vonage",
        sets: &["scheme=sms-signature", "signature_method=md5hash"],
        key: HMAC_KEY,
        scheme: "sms-signature",
        tamper: [MISMATCH, MISMATCH, MISMATCH, STALE, NO_URL],
    },
    Case {
        provider: "vonage",
        sets: &["scheme=sms-signature", "signature_method=md5"],
        key: HMAC_KEY,
        scheme: "sms-signature",
        tamper: [MISMATCH, MISMATCH, MISMATCH, STALE, NO_URL],
    },
    Case {
        provider: "vonage",
        sets: &["scheme=sms-signature", "signature_method=sha1"],
        key: HMAC_KEY,
        scheme: "sms-signature",
        tamper: [MISMATCH, MISMATCH, MISMATCH, STALE, NO_URL],
    },
    Case {
        provider: "vonage",
        sets: &["scheme=sms-signature", "signature_method=sha256"],
        key: HMAC_KEY,
        scheme: "sms-signature",
        tamper: [MISMATCH, MISMATCH, MISMATCH, STALE, NO_URL],
    },
    Case {
        provider: "vonage",
        sets: &["scheme=sms-signature", "signature_method=sha512"],
        key: HMAC_KEY,
        scheme: "sms-signature",
        tamper: [MISMATCH, MISMATCH, MISMATCH, STALE, NO_URL],
    },
    // Voice decodes its application secret from base64 and signs the path.
    Case {
        provider: "sinch",
        sets: &[],
        key: "c2luY2gtYXBwLXNlY3JldC0wMTIzNDU2Nzg5",
        scheme: "application",
        tamper: [MISMATCH, MISMATCH, MISMATCH, STALE, MISMATCH],
    },
    Case {
        provider: "sinch",
        sets: &["scheme=conversation"],
        key: HMAC_KEY,
        scheme: "conversation",
        tamper: [MISMATCH, MISMATCH, MISMATCH, STALE, NO_URL],
    },
    // The Standard Webhooks SDK test key (v1, HMAC) and the RFC 8032 seed as `whsk_` (v1a).
    Case {
        provider: "standard-webhooks",
        sets: &[],
        key: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        scheme: "v1",
        tamper: [MISMATCH, MISMATCH, MISMATCH, STALE, NO_URL],
    },
    Case {
        provider: "standard-webhooks",
        sets: &[],
        key: "whsk_nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A=",
        scheme: "v1a",
        tamper: [MISMATCH, MISMATCH, MISMATCH, STALE, NO_URL],
    },
    Case {
        provider: "hmac",
        sets: &["header=X-Hub-Signature-256", "prefix=sha256="],
        key: HMAC_KEY,
        scheme: "hmac-sha256",
        tamper: [MISMATCH, MISMATCH, MISMATCH, NO_TIME, NO_URL],
    },
    Case {
        provider: "hmac",
        sets: &["header=X-Shopify-Hmac-Sha256", "encoding=base64"],
        key: ODD_KEY,
        scheme: "hmac-sha256",
        tamper: [MISMATCH, MISMATCH, MISMATCH, NO_TIME, NO_URL],
    },
    Case {
        provider: "hmac",
        sets: &[
            "header=X-Signature",
            "signed_content={timestamp}.{body}",
            "timestamp_header=X-Signature-Timestamp",
        ],
        key: HMAC_KEY,
        scheme: "hmac-sha256",
        tamper: [MISMATCH, MISMATCH, MISMATCH, STALE, NO_URL],
    },
    Case {
        provider: "hmac",
        sets: &[
            "header=Stripe-Signature",
            "header_format=stripe",
            "signed_content={timestamp}.{body}",
        ],
        key: ODD_KEY,
        scheme: "stripe-sha256",
        tamper: [MISMATCH, MISMATCH, MISMATCH, STALE, NO_URL],
    },
    // Basic auth proves the sender knows the password, and nothing about the request.
    Case {
        provider: "basic",
        sets: &[],
        key: "twilio:correct-horse-battery",
        scheme: "basic",
        tamper: [NO_BODY, NO_PARAMS, MISMATCH, NO_TIME, NO_URL],
    },
];

/// The Standard Webhooks HMAC case, for the tests of output details.
const SW: &Case = &CASES[14];

const NOW: &str = "1700000000";
const URL: &str = "https://example.com/hooks/in?route=1";

impl Case {
    fn name(&self) -> String {
        format!("{} {:?}", self.provider, self.sets)
    }

    fn set_args(&self) -> Vec<&'static str> {
        self.sets.iter().flat_map(|s| ["--set", *s]).collect()
    }

    /// The options as `--set` reads them (JSON when the value parses, else a string).
    fn options(&self) -> Options {
        self.sets
            .iter()
            .map(|s| {
                let (k, v) = s.split_once('=').expect("KEY=VALUE");
                let v = serde_json::from_str(v).unwrap_or_else(|_| serde_json::Value::from(v));
                (k.to_owned(), v)
            })
            .collect()
    }

    /// The key `verify` needs for what `key` signs (the public key for Ed25519 schemes).
    fn verify_key(&self) -> String {
        let spec = find_provider(self.provider).expect("provider in registry");
        let vk =
            (spec.verify_key_for)(&self.options(), &Secret::new(self.key)).expect("verify key");
        vk.expose_str().expect("text key").to_owned()
    }

    fn sign(&self, extra: &[&str]) -> Output {
        self.sign_for(URL, extra)
    }

    fn sign_for(&self, url: &str, extra: &[&str]) -> Output {
        let mut args = vec![
            "sign",
            "--provider",
            self.provider,
            "--secret-env",
            "TG_SIGN",
            "--url",
            url,
            "--now",
            NOW,
        ];
        args.extend(self.set_args());
        args.extend_from_slice(extra);
        run(&args, &[("TG_SIGN", self.key)], b"")
    }

    fn verify(&self, request: &[u8]) -> Output {
        self.verify_at(URL, request)
    }

    /// `verify --json` of `request` as received at `url`, 30 s after signing.
    fn verify_at(&self, url: &str, request: &[u8]) -> Output {
        let mut args = vec![
            "verify",
            "--provider",
            self.provider,
            "--secret-env",
            "TG_VERIFY",
            "--now",
            "1700000030",
            "--url",
            url,
            "--json",
        ];
        args.extend(self.set_args());
        run(&args, &[("TG_VERIFY", &self.verify_key())], request)
    }
}

fn case(provider: &str, sets: &[&str]) -> &'static Case {
    CASES
        .iter()
        .find(|c| c.provider == provider && c.sets == sets)
        .expect("case")
}

fn run(args: &[&str], env: &[(&str, &str)], stdin: &[u8]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove("TG_SIGN")
        .env_remove("TG_VERIFY")
        .env_remove("TG_UNSET")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn tollgate");
    if let Some(mut i) = child.stdin.take() {
        // A command that exits before reading stdin closes the pipe; that is not a test failure.
        let _ = i.write_all(stdin);
    }
    let out = child.wait_with_output().expect("wait for tollgate");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "tollgate panicked: {stderr}");
    out
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("exited normally")
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}",
            String::from_utf8_lossy(&o.stdout)
        )
    })
}

/// The value of header `name` in a request `sign` printed.
fn header(request: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(request);
    let head = text.split("\r\n\r\n").next()?.to_owned();
    head.lines()
        .filter_map(|l| l.split_once(": "))
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.to_owned())
}

#[test]
fn every_registry_provider_has_a_cli_case() {
    for spec in PROVIDERS {
        assert!(
            CASES.iter().any(|c| c.provider == spec.id),
            "provider {} has no entry in CASES: the round-trip and tamper tests skip it",
            spec.id
        );
    }
    for c in CASES {
        assert!(find_provider(c.provider).is_some(), "{}", c.name());
    }
    assert_eq!((SW.provider, SW.scheme), ("standard-webhooks", "v1"));
}

#[test]
fn keygen_shapes_and_uniqueness() {
    use base64::Engine as _;
    let b64 = |s: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .expect("base64")
    };

    let a = run(&["keygen"], &[], b"");
    let b = run(&["keygen"], &[], b"");
    assert_eq!((code(&a), code(&b)), (0, 0));
    let (a, b) = (
        String::from_utf8(a.stdout).expect("utf8"),
        String::from_utf8(b.stdout).expect("utf8"),
    );
    assert_eq!(b64(a.trim()).len(), 32);
    assert_ne!(a, b, "two secrets must differ");

    let o = run(
        &["keygen", "--kind", "hmac", "--bytes", "64", "--json"],
        &[],
        b"",
    );
    let v = json(&o);
    assert_eq!(v["kind"], "hmac");
    assert_eq!(b64(v["secret"].as_str().expect("secret")).len(), 64);

    let v = json(&run(&["keygen", "--kind", "whsec", "--json"], &[], b""));
    let s = v["secret"].as_str().expect("secret");
    assert_eq!(
        b64(s.strip_prefix("whsec_").expect("whsec_ prefix")).len(),
        32
    );

    for (kind, sk_prefix, pk_prefix) in [("ed25519", "", ""), ("whsk", "whsk_", "whpk_")] {
        let v = json(&run(&["keygen", "--kind", kind, "--json"], &[], b""));
        let sk = v["private_key"].as_str().expect("private");
        let pk = v["public_key"].as_str().expect("public");
        let seed: [u8; 32] = b64(sk.strip_prefix(sk_prefix).expect("prefix"))
            .try_into()
            .expect("32-byte seed");
        let derived = ed25519_dalek::SigningKey::from_bytes(&seed).verifying_key();
        assert_eq!(
            b64(pk.strip_prefix(pk_prefix).expect("prefix")),
            derived.as_bytes(),
            "{kind}: the public key belongs to the private key"
        );
    }

    let text = run(&["keygen", "--kind", "ed25519"], &[], b"");
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("private_key: ") && text.contains("public_key: "));

    for bad in ["31", "65", "0"] {
        let o = run(&["keygen", "--bytes", bad], &[], b"");
        assert_eq!(code(&o), 2, "--bytes {bad}");
        assert!(o.stdout.is_empty());
    }
    assert_eq!(
        code(&run(
            &["keygen", "--kind", "ed25519", "--bytes", "64"],
            &[],
            b""
        )),
        2
    );
}

#[test]
fn sign_then_verify_round_trips_with_the_json_shape() {
    for c in CASES {
        let signed = c.sign(&["--sample", "--nonce", "msg_roundtrip1"]);
        assert_eq!(code(&signed), 0, "{}: sign failed: {signed:?}", c.name());
        let o = c.verify(&signed.stdout);
        assert_eq!(
            code(&o),
            0,
            "{}: {}",
            c.name(),
            String::from_utf8_lossy(&o.stdout)
        );
        let v = json(&o);
        let mut keys: Vec<&str> = v
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "diagnosis",
                "event_id",
                "key",
                "message",
                "outcome",
                "provider",
                "reason",
                "scheme",
                "signed_at"
            ]
        );
        assert_eq!(v["outcome"], "verified", "{}", c.name());
        assert_eq!(v["provider"], c.provider, "{}", c.name());
        assert_eq!(v["key"], "TG_VERIFY", "{}", c.name());
        assert_eq!(v["scheme"], c.scheme, "{}", c.name());
        assert_eq!(v["reason"], serde_json::Value::Null, "{}", c.name());
        // A scheme that refuses a stale request reports when it was signed; one that signs no
        // time reports none.
        let want_signed_at = match c.tamper[3] {
            Want::Rejected(_) => serde_json::json!(1_700_000_000),
            Want::Refused(_) => serde_json::Value::Null,
        };
        assert_eq!(v["signed_at"], want_signed_at, "{}", c.name());
    }
}

#[test]
fn standard_webhooks_reports_scheme_and_event_id() {
    let signed = SW.sign(&["--sample", "--nonce", "msg_2Qx9fixed"]);
    let v = json(&SW.verify(&signed.stdout));
    assert_eq!(
        (&v["scheme"], &v["event_id"]),
        (&"v1".into(), &"msg_2Qx9fixed".into())
    );
    let whsk = CASES.iter().find(|c| c.scheme == "v1a").expect("whsk case");
    let signed = whsk.sign(&["--sample"]);
    assert_eq!(json(&whsk.verify(&signed.stdout))["scheme"], "v1a");
}

#[test]
fn every_tamper_is_rejected_for_its_reason() {
    for c in CASES {
        // A form body for `param`, so that it applies to every provider that signs the body.
        let form = ["--form", "CallSid=CA123", "--form", "From=+14155550100"];
        for (what, want) in TAMPERS.iter().zip(c.tamper) {
            let mut extra: Vec<&str> = if *what == "param" {
                form.to_vec()
            } else {
                vec!["--sample"]
            };
            extra.extend(["--tamper", what]);
            let signed = c.sign(&extra);
            let name = format!("{} --tamper {what}", c.name());
            match want {
                Want::Refused(needle) => {
                    let err = String::from_utf8_lossy(&signed.stderr);
                    assert_eq!(code(&signed), 2, "{name}: {err}");
                    assert!(err.contains(needle), "{name}: {err}");
                    assert!(signed.stdout.is_empty(), "{name} printed a request");
                }
                Want::Rejected(reason) => {
                    assert_eq!(code(&signed), 0, "{name}: {signed:?}");
                    let o = c.verify(&signed.stdout);
                    let v = json(&o);
                    assert_eq!(code(&o), 1, "{name} verified: {v}");
                    assert_eq!(v["outcome"], "rejected", "{name}");
                    assert_eq!(v["reason"], reason, "{name}");
                    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()));
                }
            }
        }
    }
}

#[test]
fn tamper_signature_works_for_a_key_with_no_alphanumeric_after_its_prefix() {
    // Regression: the second key was made by changing an alphanumeric character after `_`, and
    // `joy~_𝄞é:` has none, so `--tamper signature` exited 2.
    for c in CASES.iter().filter(|c| c.key == ODD_KEY) {
        let good = c.sign(&["--sample"]);
        assert_eq!(code(&c.verify(&good.stdout)), 0, "{}", c.name());
        let bad = c.sign(&["--sample", "--tamper", "signature"]);
        assert_eq!(code(&bad), 0, "{}: {bad:?}", c.name());
        let o = c.verify(&bad.stdout);
        assert_eq!(code(&o), 1, "{}", c.name());
        assert_eq!(json(&o)["reason"], "signature_mismatch", "{}", c.name());
    }
    assert_eq!(CASES.iter().filter(|c| c.key == ODD_KEY).count(), 2);
}

#[test]
fn tamper_signature_changes_both_plivo_signature_headers() {
    // Regression: Plivo sends its signature twice (`-V3` and `-Ma-V3`) and the verifier accepts
    // either; tampering only the first left a request that verified.
    let c = case("plivo", &[]);
    let nonce = ["--sample", "--nonce", "12345678901234567890"];
    let good = c.sign(&nonce).stdout;
    let bad = c
        .sign(&[&nonce[..], &["--tamper", "signature"]].concat())
        .stdout;
    for h in ["x-plivo-signature-v3", "x-plivo-signature-ma-v3"] {
        let (g, b) = (header(&good, h), header(&bad, h));
        assert!(g.is_some(), "{h} missing");
        assert_ne!(g, b, "{h} was not tampered");
        assert_eq!(g.map(|v| v.len()), b.map(|v| v.len()), "{h} changed length");
    }
    let o = c.verify(&bad);
    assert_eq!(code(&o), 1);
    assert_eq!(json(&o)["reason"], "signature_mismatch");
    // Why both: with the -Ma- header restored, the request verifies again.
    let restored = String::from_utf8_lossy(&bad).replace(
        &header(&bad, "x-plivo-signature-ma-v3").expect("ma"),
        &header(&good, "x-plivo-signature-ma-v3").expect("ma"),
    );
    assert_eq!(code(&c.verify(restored.as_bytes())), 0);
}

#[test]
fn tamper_timestamp_is_decided_by_behaviour_not_the_static_flag() {
    // Regression: `hmac` registers `signs_time = false` (its default content is the body alone),
    // which made `--tamper timestamp` refuse a Stripe-style route that does sign a time.
    let stripe = case(
        "hmac",
        &[
            "header=Stripe-Signature",
            "header_format=stripe",
            "signed_content={timestamp}.{body}",
        ],
    );
    assert!(!find_provider("hmac").expect("hmac").signs_time);
    let o = stripe.sign(&["--sample", "--tamper", "timestamp"]);
    assert_eq!(code(&o), 0, "{o:?}");
    let stamp = header(&o.stdout, "stripe-signature").expect("signature header");
    assert!(stamp.starts_with("t=1699996400,"), "{stamp}");
    let v = stripe.verify(&o.stdout);
    assert_eq!(code(&v), 1);
    assert_eq!(json(&v)["reason"], "timestamp_out_of_window");
    // The same provider with body-only content signs no time: refused, nothing printed.
    let plain = case("hmac", &["header=X-Hub-Signature-256", "prefix=sha256="]);
    let o = plain.sign(&["--sample", "--tamper", "timestamp"]);
    assert_eq!(code(&o), 2);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("hmac with these options signs no timestamp")
    );
    assert!(o.stdout.is_empty());
}

#[test]
fn tamper_that_the_scheme_cannot_detect_is_refused_not_printed() {
    // A tampered request that still verifies would show the operator a "successful" attack test
    // that proves nothing: Plivo V2 and Basic auth do not sign the body.
    for (c, what, needle) in [
        (case("plivo", &["version=v2"]), "body", NO_BODY),
        (case("basic", &[]), "body", NO_BODY),
    ] {
        let Want::Refused(needle) = needle else {
            unreachable!()
        };
        let o = c.sign(&["--sample", "--tamper", what]);
        assert_eq!(code(&o), 2, "{}", c.name());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(&format!(
                "--tamper {what}: the altered request still verifies: {}",
                c.provider
            )) && err.contains(needle),
            "{err}"
        );
        assert!(o.stdout.is_empty());
        // And the same body change without the check does verify: the refusal is not spurious.
        let good = c.sign(&["--sample"]).stdout;
        let mut changed = good.clone();
        let last = changed.len() - 2;
        changed[last] ^= 0x01;
        assert_eq!(code(&c.verify(&changed)), 0, "{}", c.name());
    }
}

#[test]
fn tampered_signature_stays_decodable() {
    // Regression: a tamper that broke the encoding would test the decoder, not the comparison.
    for c in CASES {
        let o = c.sign(&["--sample", "--tamper", "signature"]);
        assert_eq!(code(&o), 0, "{}", c.name());
        let v = json(&c.verify(&o.stdout));
        assert_eq!(v["reason"], "signature_mismatch", "{}", c.name());
    }
}

#[test]
fn diagnosis_names_the_https_url_twilio_signed_behind_a_plain_http_proxy() {
    let c = case("twilio", &[]);
    let signed = c.sign_for("https://host/p?x=1", &["--sample"]);
    assert_eq!(code(&signed), 0);
    let o = c.verify_at("http://host/p?x=1", &signed.stdout);
    assert_eq!(code(&o), 1);
    let v = json(&o);
    assert_eq!(v["reason"], "signature_mismatch");
    assert_eq!(v["diagnosis"]["code"], "scheme");
    assert_eq!(v["diagnosis"]["signed_url"], "https://host/p?x=1");
    // Received at the URL it was signed for, the same bytes verify.
    assert_eq!(code(&c.verify_at("https://host/p?x=1", &signed.stdout)), 0);
}

#[test]
fn diagnosis_names_a_dropped_or_added_port() {
    // (signed for, seen at, diagnosis code). Plivo signs the URL as given; Twilio's SDKs also try
    // the URL without any port and with the default one, so only a non-default port the proxy
    // dropped fails there, and the Host header (`host:8443`) names it.
    let cases = [
        (
            "plivo",
            "https://host:443/p?x=1",
            "https://host/p?x=1",
            "port_dropped",
        ),
        (
            "plivo",
            "https://host/p?x=1",
            "https://host:8443/p?x=1",
            "port_added",
        ),
        (
            "twilio",
            "https://host:8443/p?x=1",
            "https://host/p?x=1",
            "host",
        ),
    ];
    for (provider, signed_for, seen, want) in cases {
        let c = case(provider, &[]);
        let signed = c.sign_for(signed_for, &["--sample"]);
        assert_eq!(code(&signed), 0);
        let o = c.verify_at(seen, &signed.stdout);
        let v = json(&o);
        assert_eq!(code(&o), 1, "{provider} {signed_for} seen at {seen}: {v}");
        assert_eq!(v["reason"], "signature_mismatch");
        assert_eq!(v["diagnosis"]["code"], want, "{provider} {signed_for}: {v}");
        assert_eq!(v["diagnosis"]["signed_url"], signed_for, "{provider}");
    }
    // Twilio with the default port either way verifies, as Twilio's SDKs do.
    let c = case("twilio", &[]);
    let signed = c.sign_for("https://host:443/p?x=1", &["--sample"]);
    assert_eq!(code(&c.verify_at("https://host/p?x=1", &signed.stdout)), 0);
}

#[test]
fn sign_output_is_exact_bytes() {
    let dir = std::env::temp_dir().join(format!("tollgate-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let body_path = dir.join("body.bin");
    let body: &[u8] = b"\xff\x00binary\r\n\xfe";
    std::fs::write(&body_path, body).expect("write");
    let path = body_path.to_str().expect("utf8 path");
    let o = SW.sign(&[
        "--body-file",
        path,
        "--content-type",
        "application/octet-stream",
    ]);
    assert_eq!(code(&o), 0);
    assert!(o
        .stdout
        .starts_with(b"POST /hooks/in?route=1 HTTP/1.1\r\nHost: example.com\r\n"));
    assert!(o
        .stdout
        .ends_with(b"Content-Length: 11\r\n\r\n\xff\x00binary\r\n\xfe"));
    let v = SW.verify(&o.stdout);
    assert_eq!(code(&v), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The signature tokens of a request `sign` printed: the parts of its header values that
/// `--tamper signature` (same nonce) changes, split at `,`, `;`, ` `, `:` and short `x=` labels.
fn signature_tokens(good: &[u8], tampered: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(good);
    let head = text.split("\r\n\r\n").next().unwrap_or_default().to_owned();
    let mut out = Vec::new();
    for (name, value) in head.lines().filter_map(|l| l.split_once(": ")) {
        let Some(other) = header(tampered, name) else {
            continue;
        };
        for token in value.split([',', ';', ' ', ':']) {
            let token = match token.split_once('=') {
                Some((label, rest)) if label.len() <= 3 => rest,
                _ => token,
            };
            if token.len() >= 16 && !other.contains(token) {
                out.push(token.to_owned());
            }
        }
    }
    out
}

#[test]
fn verify_text_output_names_key_and_never_the_secret_or_signature() {
    for c in CASES {
        let fixed = ["--sample", "--nonce", "nonce-0123456789"];
        let good = c.sign(&fixed).stdout;
        let bad = c
            .sign(&[&fixed[..], &["--tamper", "signature"]].concat())
            .stdout;
        let sigs = signature_tokens(&good, &bad);
        // Vonage's SMS `sig` travels in the body; every other scheme has a signature header.
        assert!(
            !sigs.is_empty() || c.sets.contains(&"scheme=sms-signature"),
            "{}: no signature found",
            c.name()
        );
        let secret = c
            .key
            .trim_start_matches("whsec_")
            .trim_start_matches("whsk_");
        for (request, want) in [(&good, 0), (&bad, 1)] {
            let mut args = vec![
                "verify",
                "--provider",
                c.provider,
                "--secret-env",
                "TG_VERIFY",
                "--now",
                "1700000030",
                "--url",
                URL,
            ];
            args.extend(c.set_args());
            args.push("-");
            let o = run(&args, &[("TG_VERIFY", &c.verify_key())], request);
            assert_eq!(code(&o), want, "{}", c.name());
            let all = [o.stdout, o.stderr].concat();
            let all = String::from_utf8_lossy(&all);
            assert!(!all.contains(secret), "{}: secret printed", c.name());
            for sig in &sigs {
                assert!(
                    !all.contains(sig.as_str()),
                    "{}: signature printed",
                    c.name()
                );
            }
            if want == 0 {
                assert!(
                    all.contains("verified") && all.contains("TG_VERIFY"),
                    "{all}"
                );
            } else {
                assert!(all.contains("rejected: signature_mismatch"), "{all}");
            }
        }
    }
}

#[test]
fn usage_and_input_errors_exit_2() {
    let (p, k) = (SW.provider, SW.key);
    let signed = SW.sign(&["--sample"]).stdout;
    let env = [("TG_VERIFY", k)];
    let base = ["verify", "--now", NOW];
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "--provider",
                p,
                "--secret-env",
                "TG_VERIFY",
                "/nonexistent/req.txt",
            ],
            "cannot open",
        ),
        (
            vec!["--provider", "nope", "--secret-env", "TG_VERIFY"],
            "unknown provider",
        ),
        (
            vec!["--provider", p, "--secret-env", "TG_UNSET"],
            "TG_UNSET is not set",
        ),
        (
            vec![
                "--provider",
                p,
                "--secret-env",
                "TG_VERIFY",
                "--set",
                "novalue",
            ],
            "KEY=VALUE",
        ),
        (
            vec![
                "--provider",
                p,
                "--secret-env",
                "TG_VERIFY",
                "--set",
                "bogus_option=1",
            ],
            "bogus_option",
        ),
        (vec!["--provider", p], "secret-env"),
        (
            vec!["--config", "/nonexistent/x.toml", "--route", "r"],
            "/nonexistent/x.toml: cannot read",
        ),
        (
            vec![
                "--provider",
                p,
                "--secret-env",
                "TG_VERIFY",
                "--config",
                "x.toml",
                "--route",
                "r",
            ],
            "cannot be used",
        ),
    ];
    for (extra, needle) in cases {
        let args: Vec<&str> = base.iter().copied().chain(extra.iter().copied()).collect();
        let o = run(&args, &env, &signed);
        assert_eq!(code(&o), 2, "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains(k.trim_start_matches("whsec_")));
    }
    // sign: unset env var, unknown provider, bad --set, --tamper param without a form.
    for (extra, env) in [
        (
            vec![
                "sign",
                "--provider",
                p,
                "--secret-env",
                "TG_UNSET",
                "--url",
                URL,
            ],
            vec![],
        ),
        (
            vec![
                "sign",
                "--provider",
                "nope",
                "--secret-env",
                "TG_SIGN",
                "--url",
                URL,
            ],
            vec![("TG_SIGN", k)],
        ),
        (
            vec![
                "sign",
                "--provider",
                p,
                "--secret-env",
                "TG_SIGN",
                "--url",
                URL,
                "--set",
                "=1",
            ],
            vec![("TG_SIGN", k)],
        ),
        (
            vec![
                "sign",
                "--provider",
                p,
                "--secret-env",
                "TG_SIGN",
                "--url",
                URL,
                "--sample",
                "--tamper",
                "param",
            ],
            vec![("TG_SIGN", k)],
        ),
        (
            vec![
                "sign",
                "--provider",
                p,
                "--secret-env",
                "TG_SIGN",
                "--url",
                "not a url",
            ],
            vec![("TG_SIGN", k)],
        ),
    ] {
        let o = run(&extra, &env, b"");
        assert_eq!(code(&o), 2, "{extra:?}");
        assert!(o.stdout.is_empty(), "{extra:?} printed a request");
    }
}

#[test]
fn malformed_captures_fail_cleanly() {
    let (p, k) = (SW.provider, SW.key);
    let mut huge = b"POST /x HTTP/1.1\r\nHost: example.com\r\nX-Big: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 70 * 1024));
    huge.extend(b"\r\n\r\n{}");
    let cases: Vec<(&str, Vec<u8>, i32, &str)> = vec![
        ("garbage", b"\x00\x01\x02 not http at all\n".to_vec(), 2, "not an HTTP request line"),
        ("empty", Vec::new(), 2, "empty"),
        ("huge header", huge, 2, "exceed"),
        (
            "truncated body",
            b"POST /x HTTP/1.1\r\nHost: example.com\r\nContent-Length: 100\r\n\r\n{}".to_vec(),
            2,
            "truncated",
        ),
        (
            "invalid UTF-8 header value",
            b"POST /x HTTP/1.1\r\nHost: example.com\r\nwebhook-id: m\r\nwebhook-timestamp: 1700000000\r\nwebhook-signature: v1,\xff\xfe\r\n\r\n{}".to_vec(),
            1,
            "header_malformed",
        ),
        (
            "no signature",
            b"POST /x HTTP/1.1\r\nHost: example.com\r\n\r\n{}".to_vec(),
            1,
            "signature_missing",
        ),
    ];
    for (name, input, want, needle) in cases {
        let o = run(
            &[
                "verify",
                "--provider",
                p,
                "--secret-env",
                "TG_VERIFY",
                "--now",
                NOW,
            ],
            &[("TG_VERIFY", k)],
            &input,
        );
        assert_eq!(code(&o), want, "{name}");
        let all = String::from_utf8_lossy(&[o.stdout, o.stderr].concat()).into_owned();
        assert!(all.contains(needle), "{name}: {all}");
    }
}

#[test]
fn examples_in_the_repository_behave_as_documented() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/requests");
    let key = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    for (file, want) in [
        ("standard-webhooks.txt", 0),
        ("standard-webhooks-lf.txt", 0),
        ("standard-webhooks-tampered.txt", 1),
    ] {
        let path = format!("{root}/{file}");
        let o = run(
            &[
                "verify",
                "--provider",
                "standard-webhooks",
                "--secret-env",
                "SW_TEST_KEY",
                "--now",
                "1700000010",
                &path,
            ],
            &[("SW_TEST_KEY", key)],
            b"",
        );
        assert_eq!(
            code(&o),
            want,
            "{file}: {}",
            String::from_utf8_lossy(&o.stdout)
        );
    }
}
