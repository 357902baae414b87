//! Runs every official-SDK vector in `tests/vectors/<provider>/*.json` through the provider's
//! verifier and checks the exact outcome: the scheme and key label on success, the exact reason code
//! on rejection. Each case names its source (SDK repository and test file) in `source`.

use std::path::Path;

use serde::Deserialize;
use tollgate_verify::{find_provider, Key, KeyRing, Options, Request, Secret, Settings};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    source: String,
    #[serde(default)]
    options: Options,
    keys: Vec<KeyCase>,
    #[serde(default)]
    tolerance_secs: Option<u64>,
    #[serde(default = "post")]
    method: String,
    url: String,
    #[serde(default)]
    headers: Vec<(String, String)>,
    #[serde(default)]
    body: String,
    /// Body as hex, for bytes that are not UTF-8 (overrides `body`).
    #[serde(default)]
    body_hex: Option<String>,
    now: i64,
    expect: Expect,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyCase {
    label: String,
    secret: String,
    #[serde(default)]
    not_after: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    /// `verified` or a reason code.
    outcome: String,
    #[serde(default)]
    scheme: Option<String>,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    event_id: Option<String>,
}

fn post() -> String {
    "POST".into()
}

#[test]
fn every_vector_file_passes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors");
    let mut count = 0;
    let mut failures = Vec::new();
    for dir in std::fs::read_dir(&root).expect("tests/vectors exists") {
        let dir = dir.unwrap().path();
        let provider = dir.file_name().unwrap().to_str().unwrap().to_owned();
        let spec = find_provider(&provider)
            .unwrap_or_else(|| panic!("vectors for unknown provider {provider}"));
        for file in std::fs::read_dir(&dir).unwrap() {
            let file = file.unwrap().path();
            let cases: Vec<Case> = serde_json::from_slice(&std::fs::read(&file).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            for c in cases {
                count += 1;
                assert!(
                    !c.source.is_empty(),
                    "{}: case {} names no source",
                    file.display(),
                    c.name
                );
                let keys = c
                    .keys
                    .iter()
                    .map(|k| Key {
                        not_after: k.not_after,
                        ..Key::new(k.label.as_str(), Secret::new(k.secret.as_str()))
                    })
                    .collect();
                let settings = Settings {
                    tolerance_secs: c.tolerance_secs.unwrap_or(300),
                };
                let verifier = (spec.build)(&c.options, &KeyRing::new(keys).unwrap(), &settings)
                    .unwrap_or_else(|e| panic!("{provider}/{}: build: {e}", c.name));
                let mut headers = http::HeaderMap::new();
                for (k, v) in &c.headers {
                    headers.append(
                        http::HeaderName::try_from(k.as_str()).unwrap(),
                        v.parse().unwrap(),
                    );
                }
                let body = match &c.body_hex {
                    Some(h) => hex::decode(h).unwrap(),
                    None => c.body.clone().into_bytes(),
                };
                let req = Request {
                    method: &c.method,
                    url: &c.url,
                    headers: &headers,
                    body: &body,
                };
                let got = verifier.verify(&req, c.now);
                let ok = match (&got, c.expect.outcome.as_str()) {
                    (Ok(v), "verified") => {
                        c.expect.scheme.as_deref().is_none_or(|s| s == v.scheme())
                            && c.expect.key.as_deref().is_none_or(|k| k == v.key_label())
                            && c.expect
                                .event_id
                                .as_deref()
                                .is_none_or(|e| Some(e) == v.event_id_str())
                    }
                    (Err(r), reason) => r.reason() == reason,
                    _ => false,
                };
                if !ok {
                    failures.push(format!(
                        "{provider}/{}: expected {}, got {got:?}",
                        c.name, c.expect.outcome
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {count} vectors failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(count > 0, "no vectors found");
    eprintln!("{count} vectors passed");
}
