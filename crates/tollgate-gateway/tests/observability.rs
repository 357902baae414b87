//! What an operator sees: the Prometheus metrics on the admin listener (and not on the public
//! one), the audit line of each rejection, and the proxy headers (`Forwarded`) that decide the
//! client IP and the URL a URL-bound signature is checked against.
//!
//! One process-wide Prometheus recorder and one process-wide log capture serve every test here;
//! each test uses its own route names and picks out its own series and lines by them.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

use common::*;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::Value;
use tollgate_verify::{find_provider, Options, Secret, Signed};

const OLD_KEY: &str = "whsec_dGVzdC1vbGQta2V5LWZvci1yb3RhdGlvbjEy";
const TWILIO_TOKEN: &str = "9f3c1a7e5b2d4f60a8c1e3b5d7f9a2c4";

// ---- process-wide capture of metrics and logs ------------------------------------------------

fn prometheus() -> &'static PrometheusHandle {
    static H: OnceLock<PrometheusHandle> = OnceLock::new();
    H.get_or_init(|| tollgate_gateway::metrics::install_prometheus().expect("recorder"))
}

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn logs() -> &'static Capture {
    static C: OnceLock<Capture> = OnceLock::new();
    C.get_or_init(|| {
        let capture = Capture::default();
        let writer = capture.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .json()
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("subscriber");
        capture
    })
}

/// Every captured log line (JSON) whose `route` field is `route`.
fn lines_for(route: &str) -> Vec<Value> {
    let bytes = logs().0.lock().expect("lock").clone();
    String::from_utf8(bytes)
        .expect("utf8")
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["fields"]["route"] == route)
        .collect()
}

/// The audit lines (target `tollgate::audit`) of `route` with reason `reason`.
fn audit(route: &str, reason: &str) -> Vec<Value> {
    lines_for(route)
        .into_iter()
        .filter(|v| v["target"] == "tollgate::audit" && v["fields"]["reason"] == reason)
        .map(|v| v["fields"].clone())
        .collect()
}

/// `name{labels} value` lines of a Prometheus text page, labels sorted, for `route`.
type Series = BTreeMap<(String, Vec<(String, String)>), f64>;

fn scrape_series(text: &str, route: &str) -> Series {
    let mut out = Series::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let Some((head, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (name, labels) = match head.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (head, ""),
        };
        let mut labels: Vec<(String, String)> = labels
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
            .collect();
        if !labels.iter().any(|(k, v)| k == "route" && v == route) {
            continue;
        }
        labels.retain(|(k, _)| k != "route");
        labels.sort();
        out.insert(
            (name.to_owned(), labels),
            value.parse().expect("sample value"),
        );
    }
    out
}

/// The series named `name` of a scrape, keyed by their labels other than `route` (`k=v,k=v`).
fn named(s: &Series, name: &str) -> BTreeMap<String, f64> {
    s.iter()
        .filter(|((n, _), _)| n == name)
        .map(|((_, labels), v)| {
            let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            (l.join(","), *v)
        })
        .collect()
}

fn expect(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
}

async fn start_admin(gw: &Running) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let gateway = gw.gateway.clone();
    let handle = prometheus().clone();
    tokio::spawn(async move {
        gateway
            .serve_admin(listener, Some(handle), std::future::pending())
            .await
    });
    addr
}

async fn get(addr: SocketAddr, path: &str) -> Answer {
    let req = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
    send_raw(addr, req.as_bytes()).await
}

fn env_with(extra: &[(&str, &str)]) -> HashMap<String, String> {
    let mut e = env();
    for (k, v) in extra {
        e.insert((*k).to_owned(), (*v).to_owned());
    }
    e
}

fn cfg(text: &str) -> tollgate_config::Config {
    let e = env_with(&[("OLD_KEY", OLD_KEY), ("TWILIO", TWILIO_TOKEN)]);
    tollgate_config::Config::from_toml(text, "obs.toml", &e).unwrap_or_else(|e| panic!("{e}"))
}

// ---- metrics ----------------------------------------------------------------------------------

#[tokio::test]
async fn metrics_count_outcomes_reasons_keys_latency_duplicates_and_skew() {
    let route = "obs-metrics";
    let _ = logs();
    let up = upstream(Behaviour::Answer(200)).await;
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"

[state]
backend = "memory"

[[route]]
name = "{route}"
path = "/hooks"
provider = "{PROVIDER}"
keys = [ {{ label = "k-new", secret = "env:KEY" }}, {{ label = "k-old", secret = "env:OLD_KEY" }} ]
upstream = "http://{}/app"
tolerance_secs = 300
"#,
        up.addr
    );
    let gw = start(cfg(&text), memory()).await;
    let admin = start_admin(&gw).await;
    let host = gw.addr.to_string();
    let url = format!("http://{host}/hooks/voice");
    let addr = gw.addr;
    let send = |s: &Signed| {
        let bytes = raw_request(s, "/hooks/voice", &host, &[]);
        async move { send_raw(addr, &bytes).await }
    };

    // Accepted, signed with the old key (the operator watches its use fall before retiring it).
    let first = signed_with(OLD_KEY, &url, "msg_obs_1", now());
    let a = send(&first).await;
    assert_eq!(a.status, 200, "{a:?}");
    // Its duplicate: answered from the store.
    let a = send(&first).await;
    assert_eq!(
        (a.status, a.header("tollgate-replayed")),
        (200, Some("true"))
    );
    // A bad signature.
    let mut tampered = signed(&url, "msg_obs_2");
    tampered.body[2] ^= 1;
    let a = send(&tampered).await;
    assert_eq!(
        (a.status, a.body.as_str()),
        (403, r#"{"error":"signature_mismatch"}"#)
    );
    // A stale one, two hours old, last so that its skew is the gauge's last value.
    let stale_at = now() - 7200;
    let a = send(&signed_with(KEY, &url, "msg_obs_3", stale_at)).await;
    let latest_possible_skew = now() - stale_at;
    assert_eq!(
        (a.status, a.body.as_str()),
        (403, r#"{"error":"timestamp_out_of_window"}"#)
    );
    assert_eq!(
        up.seen().len(),
        1,
        "only the first delivery reaches the app"
    );

    let page = get(admin, "/metrics").await;
    assert_eq!(page.status, 200);
    let s = scrape_series(&page.body, route);
    assert_eq!(
        named(&s, "tollgate_requests_total"),
        expect(&[
            ("outcome=forwarded", 1.0),
            ("outcome=replayed", 1.0),
            ("outcome=signature_mismatch", 1.0),
            ("outcome=timestamp_out_of_window", 1.0),
        ]),
        "{}",
        page.body
    );
    assert_eq!(
        named(&s, "tollgate_rejections_total"),
        expect(&[
            ("reason=signature_mismatch", 1.0),
            ("reason=timestamp_out_of_window", 1.0),
        ])
    );
    // The first delivery and its duplicate both verified, with the old key; the new key never.
    assert_eq!(
        named(&s, "tollgate_verified_total"),
        expect(&[("key=k-old", 2.0)])
    );
    assert_eq!(named(&s, "tollgate_duplicates_total"), expect(&[("", 1.0)]));
    // Every request that reached verification was timed; only the forwarded one went upstream.
    assert_eq!(
        named(&s, "tollgate_verify_seconds_count"),
        expect(&[("", 4.0)])
    );
    assert_eq!(
        named(&s, "tollgate_verify_seconds_bucket").get("le=+Inf"),
        Some(&4.0)
    );
    assert_eq!(
        named(&s, "tollgate_upstream_seconds_count"),
        expect(&[("", 1.0)])
    );
    assert_eq!(
        named(&s, "tollgate_upstream_seconds_bucket").get("le=+Inf"),
        Some(&1.0)
    );
    let skew = named(&s, "tollgate_clock_skew_seconds");
    let skew = *skew.get("").expect("clock skew gauge for the route");
    assert!(
        (7200.0..=latest_possible_skew as f64).contains(&skew),
        "skew {skew} not in 7200..={latest_possible_skew}"
    );

    // The drift warning names the route, and each rejection has one audit line.
    let warned = lines_for(route)
        .into_iter()
        .filter(|v| v["level"] == "WARN" && v["target"] != "tollgate::audit")
        .filter(|v| v["fields"]["skew_secs"].as_i64().is_some_and(|k| k >= 7200))
        .count();
    assert_eq!(warned, 1, "one clock-skew warning, for the stale request");
    for reason in ["signature_mismatch", "timestamp_out_of_window"] {
        let lines = audit(route, reason);
        assert_eq!(lines.len(), 1, "{reason}: {lines:?}");
        assert_eq!(lines[0]["client_ip"], "127.0.0.1");
        assert_eq!(lines[0]["status"], 403);
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn metrics_are_served_on_the_admin_listener_only() {
    let up = upstream(Behaviour::Answer(200)).await;
    // Even a catch-all route does not expose them: /metrics on the public side is a webhook path.
    for (route_path, want) in [
        ("/hooks", (404, "")),
        ("/", (401, r#"{"error":"signature_missing"}"#)),
    ] {
        let text = config_text(up.addr, "", "")
            .replace("name = \"hooks\"", "name = \"obs-public\"")
            .replace("path = \"/hooks\"", &format!("path = \"{route_path}\""));
        let gw = start(cfg(&text), memory()).await;
        let admin = start_admin(&gw).await;
        // Something to count, so the page is not empty.
        let _ = deliver(gw.addr, &format!("msg_obs_pub_{}", route_path.len()), &[]).await;
        let public = get(gw.addr, "/metrics").await;
        assert_eq!((public.status, public.body.as_str()), want, "{route_path}");
        assert!(!public.body.contains("tollgate_"));
        let private = get(admin, "/metrics").await;
        assert_eq!(private.status, 200);
        assert!(
            private
                .body
                .contains("tollgate_requests_total{route=\"obs-public\""),
            "{}",
            private.body
        );
        assert!(up.seen().iter().all(|s| !s.uri.contains("metrics")));
        gw.shutdown().await;
    }
}

// ---- Forwarded and the URL a URL-bound signature covers ----------------------------------------

fn twilio_config(route: &str, upstream: SocketAddr, server: &str) -> tollgate_config::Config {
    cfg(&format!(
        r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
{server}

[state]
backend = "memory"

[[route]]
name = "{route}"
path = "/tw"
provider = "twilio"
keys = [ {{ label = "tw1", secret = "env:TWILIO" }} ]
upstream = "http://{upstream}/app"
"#
    ))
}

/// Twilio's sample call webhook, signed for `url`, made distinct by `token` (Twilio's idempotency
/// header is unsigned, so the replay key is a hash of the signed material: the body must differ).
fn twilio_signed(url: &str, token: &str) -> Signed {
    let spec = find_provider("twilio").expect("twilio");
    let mut input = (spec.sample)(&Options::new(), url);
    input.nonce = token.to_owned();
    input
        .body
        .extend_from_slice(format!("&Tag={token}").as_bytes());
    (spec.sign)(&Options::new(), &Secret::new(TWILIO_TOKEN), &input).expect("sign")
}

const FORWARDED: &str = r#"for=6.6.6.6;proto=http;host=evil.example, for="198.51.100.7:4711";proto=https;host=hooks.example.com"#;

#[tokio::test]
async fn forwarded_from_a_trusted_proxy_gives_the_https_url_and_the_client_ip() {
    let route = "obs-fwd-trusted";
    let _ = logs();
    let up = upstream(Behaviour::Answer(200)).await;
    let gw = start(
        twilio_config(route, up.addr, "trusted_proxies = [\"127.0.0.1/32\"]"),
        memory(),
    )
    .await;
    let s = twilio_signed("https://hooks.example.com/tw/voice", "tok-fwd-1");
    // The client prepended an element of its own; the trusted proxy's element is the last one.
    let a = send_raw(
        gw.addr,
        &raw_request(
            &s,
            "/tw/voice",
            "internal:8080",
            &[("forwarded", FORWARDED)],
        ),
    )
    .await;
    assert_eq!(a.status, 200, "{a:?}");
    // With both families present, Forwarded wins and nothing is taken from X-Forwarded-*.
    let s2 = twilio_signed("https://hooks.example.com/tw/voice", "tok-fwd-2");
    let a = send_raw(
        gw.addr,
        &raw_request(
            &s2,
            "/tw/voice",
            "internal:8080",
            &[
                ("x-forwarded-for", "203.0.113.50"),
                ("x-forwarded-proto", "http"),
                ("x-forwarded-host", "xfh.example"),
                ("forwarded", FORWARDED),
            ],
        ),
    )
    .await;
    assert_eq!(a.status, 200, "{a:?}");
    let seen = up.seen();
    assert_eq!(seen.len(), 2);
    for r in &seen {
        assert_eq!(r.headers["x-forwarded-for"], "198.51.100.7");
        assert_eq!(r.headers["x-forwarded-proto"], "https");
        assert_eq!(r.headers["x-forwarded-host"], "hooks.example.com");
        assert!(
            r.headers.get("forwarded").is_none(),
            "the received Forwarded is not passed on"
        );
    }

    // The proxy says the provider called http: the https signature cannot verify, and the audit
    // line carries the client IP the proxy reported.
    let s3 = twilio_signed("https://hooks.example.com/tw/voice", "tok-fwd-3");
    let a = send_raw(
        gw.addr,
        &raw_request(
            &s3,
            "/tw/voice",
            "internal:8080",
            &[(
                "forwarded",
                "for=198.51.100.8;proto=http;host=hooks.example.com",
            )],
        ),
    )
    .await;
    assert_eq!(
        (a.status, a.body.as_str()),
        (403, r#"{"error":"signature_mismatch"}"#)
    );
    let lines = audit(route, "signature_mismatch");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["client_ip"], "198.51.100.8");
    assert_eq!(lines[0]["diagnosis"], "scheme");
    gw.shutdown().await;
}

#[tokio::test]
async fn forwarded_from_an_untrusted_peer_is_ignored() {
    let route = "obs-fwd-untrusted";
    let _ = logs();
    let up = upstream(Behaviour::Answer(200)).await;
    let gw = start(twilio_config(route, up.addr, ""), memory()).await;
    let s = twilio_signed("https://hooks.example.com/tw/voice", "tok-fwd-u1");
    let a = send_raw(
        gw.addr,
        &raw_request(
            &s,
            "/tw/voice",
            "hooks.example.com",
            &[("forwarded", FORWARDED)],
        ),
    )
    .await;
    assert_eq!(
        (a.status, a.body.as_str()),
        (403, r#"{"error":"signature_mismatch"}"#)
    );
    assert!(up.seen().is_empty());
    let lines = audit(route, "signature_mismatch");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["client_ip"], "127.0.0.1", "the peer, not for=");
    gw.shutdown().await;
}

// ---- the audit line ---------------------------------------------------------------------------

#[tokio::test]
async fn audit_line_names_route_client_ip_reason_and_the_hidden_https_diagnosis() {
    let route = "obs-audit";
    let _ = logs();
    let up = upstream(Behaviour::Answer(200)).await;
    let gw = start(twilio_config(route, up.addr, ""), memory()).await;
    let host = gw.addr.to_string();
    // The provider called https (a TLS terminator in front), tollgate received plain http from a
    // peer that is not a trusted proxy, so its X-Forwarded-Proto does not count.
    let signed_url = format!("https://{host}/tw/voice");
    let s = twilio_signed(&signed_url, "tok-audit-1");
    let a = send_raw(
        gw.addr,
        &raw_request(&s, "/tw/voice", &host, &[("x-forwarded-proto", "https")]),
    )
    .await;
    assert_eq!(
        (a.status, a.body.as_str()),
        (403, r#"{"error":"signature_mismatch"}"#),
        "the client gets the reason code, never the diagnosis"
    );
    let lines = audit(route, "signature_mismatch");
    assert_eq!(lines.len(), 1, "{lines:?}");
    let l = &lines[0];
    assert_eq!(l["message"], "request refused");
    assert_eq!(l["route"], route);
    assert_eq!(l["client_ip"], "127.0.0.1");
    assert_eq!(l["status"], 403);
    assert_eq!(l["diagnosis"], "scheme");
    let message = l["diagnosis_message"].as_str().expect("diagnosis message");
    assert!(message.contains("X-Forwarded-Proto"), "{message}");
    assert!(message.contains(&signed_url), "{message}");
    assert!(message.contains("trusted_proxies"), "{message}");
    let signature = s
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("x-twilio-signature"))
        .map(|(_, v)| v.clone())
        .expect("signature header");
    let all = serde_json::to_string(&lines_for(route)).expect("json");
    assert!(
        !all.contains(&signature),
        "the received signature is logged"
    );
    assert!(!all.contains(TWILIO_TOKEN), "the secret is logged");
    gw.shutdown().await;
}
