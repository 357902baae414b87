//! End-to-end tests of `tollgate keygen`, `sign` and `verify`: the built binary, its exit codes,
//! its stdout/stderr, and sign → verify round trips with every `--tamper` kind.

use std::io::Write as _;
use std::process::{Command, Output, Stdio};

use tollgate_verify::{find_provider, Options, Secret};

const BIN: &str = env!("CARGO_BIN_EXE_tollgate");

/// Providers the round-trip and tamper tests run over, each with a signing key.
// after merge: every provider in tollgate_verify::PROVIDERS (with a signing key of its kind).
const PROVIDERS: &[(&str, &str)] = &[
    // The Standard Webhooks SDK test key (v1, HMAC) and RFC 8032 test-1 seed (v1a, Ed25519). Test
    // fixtures, not secrets.
    (
        "standard-webhooks",
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    ),
    (
        "standard-webhooks",
        "whsk_nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A=",
    ),
];

const NOW: &str = "1700000000";
const URL: &str = "https://example.com/hooks/in?route=1";

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

/// The key `verify` needs for what `key` signs (the public key for Ed25519 schemes).
fn verify_key(provider: &str, key: &str) -> String {
    let spec = find_provider(provider).expect("provider in registry");
    let vk = (spec.verify_key_for)(&Options::new(), &Secret::new(key)).expect("verify key");
    vk.expose_str().expect("text key").to_owned()
}

fn sign(provider: &str, key: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "sign",
        "--provider",
        provider,
        "--secret-env",
        "TG_SIGN",
        "--url",
        URL,
        "--now",
        NOW,
    ];
    args.extend_from_slice(extra);
    run(&args, &[("TG_SIGN", key)], b"")
}

fn verify(provider: &str, vkey: &str, request: &[u8], extra: &[&str]) -> Output {
    let mut args = vec![
        "verify",
        "--provider",
        provider,
        "--secret-env",
        "TG_VERIFY",
        "--now",
        "1700000030",
        "--url",
        URL,
        "--json",
    ];
    args.extend_from_slice(extra);
    run(&args, &[("TG_VERIFY", vkey)], request)
}

fn signs_url(provider: &str, key: &str) -> bool {
    let spec = find_provider(provider).expect("provider");
    let vk = (spec.verify_key_for)(&Options::new(), &Secret::new(key)).expect("verify key");
    (spec.build)(
        &Options::new(),
        &tollgate_verify::KeyRing::single(vk),
        &Default::default(),
    )
    .expect("build")
    .signs_url()
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
    for (provider, key) in PROVIDERS {
        let signed = sign(provider, key, &["--sample", "--nonce", "msg_roundtrip1"]);
        assert_eq!(code(&signed), 0, "{provider}: sign failed: {signed:?}");
        let o = verify(provider, &verify_key(provider, key), &signed.stdout, &[]);
        assert_eq!(
            code(&o),
            0,
            "{provider}: {}",
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
        assert_eq!(v["outcome"], "verified");
        assert_eq!(v["provider"], *provider);
        assert_eq!(v["key"], "TG_VERIFY");
        assert!(v["scheme"].is_string());
        assert!(v["reason"].is_null());
        if find_provider(provider).expect("p").signs_time {
            assert_eq!(v["signed_at"], 1_700_000_000);
        }
    }
}

#[test]
fn standard_webhooks_reports_scheme_and_event_id() {
    let (p, k) = PROVIDERS[0];
    let signed = sign(p, k, &["--sample", "--nonce", "msg_2Qx9fixed"]);
    let v = json(&verify(p, &verify_key(p, k), &signed.stdout, &[]));
    assert_eq!(
        (&v["scheme"], &v["event_id"]),
        (&"v1".into(), &"msg_2Qx9fixed".into())
    );
    let (p, k) = PROVIDERS[1];
    let signed = sign(p, k, &["--sample"]);
    assert_eq!(
        json(&verify(p, &verify_key(p, k), &signed.stdout, &[]))["scheme"],
        "v1a"
    );
}

#[test]
fn every_tamper_is_rejected_for_its_reason() {
    for (provider, key) in PROVIDERS {
        let spec = find_provider(provider).expect("p");
        let vkey = verify_key(provider, key);
        // A form body so that `param` applies to every provider.
        let form = ["--form", "CallSid=CA123", "--form", "From=+14155550100"];
        let cases: &[(&str, &[&str], &[&str])] = &[
            (
                "body",
                &["--sample"],
                &["signature_mismatch", "body_hash_mismatch"],
            ),
            (
                "param",
                &form,
                &["signature_mismatch", "body_hash_mismatch"],
            ),
            ("signature", &["--sample"], &["signature_mismatch"]),
            ("timestamp", &["--sample"], &["timestamp_out_of_window"]),
            ("url", &["--sample"], &["signature_mismatch"]),
        ];
        for (what, body, reasons) in cases {
            let mut extra = body.to_vec();
            extra.extend(["--tamper", what]);
            let signed = sign(provider, key, &extra);
            let not_applicable = (*what == "timestamp" && !spec.signs_time)
                || (*what == "url" && !signs_url(provider, key));
            if not_applicable {
                assert_eq!(code(&signed), 2, "{provider} --tamper {what}");
                assert!(!signed.stderr.is_empty());
                continue;
            }
            assert_eq!(code(&signed), 0, "{provider} --tamper {what}: {signed:?}");
            let o = verify(provider, &vkey, &signed.stdout, &[]);
            let v = json(&o);
            assert_eq!(code(&o), 1, "{provider} --tamper {what} verified: {v}");
            assert_eq!(v["outcome"], "rejected");
            let reason = v["reason"].as_str().expect("reason");
            assert!(
                reasons.contains(&reason),
                "{provider} --tamper {what}: {reason}"
            );
            assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()));
        }
    }
}

#[test]
fn tampered_signature_stays_decodable() {
    // Regression: a tamper that broke the encoding would test the decoder, not the comparison.
    for (provider, key) in PROVIDERS {
        let o = sign(provider, key, &["--sample", "--tamper", "signature"]);
        let v = json(&verify(
            provider,
            &verify_key(provider, key),
            &o.stdout,
            &[],
        ));
        assert_eq!(v["reason"], "signature_mismatch", "{provider}");
    }
}

#[test]
fn sign_output_is_exact_bytes() {
    let (p, k) = PROVIDERS[0];
    let dir = std::env::temp_dir().join(format!("tollgate-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let body_path = dir.join("body.bin");
    let body: &[u8] = b"\xff\x00binary\r\n\xfe";
    std::fs::write(&body_path, body).expect("write");
    let path = body_path.to_str().expect("utf8 path");
    let o = sign(
        p,
        k,
        &[
            "--body-file",
            path,
            "--content-type",
            "application/octet-stream",
        ],
    );
    assert_eq!(code(&o), 0);
    assert!(o
        .stdout
        .starts_with(b"POST /hooks/in?route=1 HTTP/1.1\r\nHost: example.com\r\n"));
    assert!(o
        .stdout
        .ends_with(b"Content-Length: 11\r\n\r\n\xff\x00binary\r\n\xfe"));
    let v = verify(p, &verify_key(p, k), &o.stdout, &[]);
    assert_eq!(code(&v), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn verify_text_output_names_key_and_never_the_secret_or_signature() {
    let (p, k) = PROVIDERS[0];
    let signed = sign(p, k, &["--sample"]);
    let sig_line = String::from_utf8_lossy(&signed.stdout)
        .lines()
        .find(|l| l.starts_with("webhook-signature:"))
        .map(|l| l.trim_start_matches("webhook-signature:").trim().to_owned())
        .expect("signature header");
    let sig = sig_line.trim_start_matches("v1,").to_owned();
    for (request, want) in [
        (signed.stdout.clone(), 0),
        (sign(p, k, &["--sample", "--tamper", "body"]).stdout, 1),
    ] {
        let o = run(
            &[
                "verify",
                "--provider",
                p,
                "--secret-env",
                "TG_VERIFY",
                "--now",
                "1700000030",
                "-",
            ],
            &[("TG_VERIFY", k)],
            &request,
        );
        assert_eq!(code(&o), want);
        let all = [o.stdout, o.stderr].concat();
        let all = String::from_utf8_lossy(&all);
        assert!(
            !all.contains(k.trim_start_matches("whsec_")),
            "secret printed"
        );
        if want == 0 {
            assert!(!all.contains(&sig), "signature printed");
            assert!(all.contains("verified") && all.contains("TG_VERIFY"));
        } else {
            assert!(all.contains("rejected: signature_mismatch"), "{all}");
        }
    }
}

#[test]
fn usage_and_input_errors_exit_2() {
    let (p, k) = PROVIDERS[0];
    let signed = sign(p, k, &["--sample"]).stdout;
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
            vec!["--config", "x.toml", "--route", "r"],
            "x.toml: cannot read",
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
    let (p, k) = PROVIDERS[0];
    let mut huge = b"POST /x HTTP/1.1\r\nHost: example.com\r\nX-Big: ".to_vec();
    huge.extend(std::iter::repeat(b'a').take(70 * 1024));
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
