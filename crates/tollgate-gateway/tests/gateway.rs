//! The gateway end to end on loopback: every pipeline stage's accept and reject paths.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tollgate_store::{Claim, ReplayStore, StoreError, StoredResponse};
use tollgate_verify::{find_provider, Options, SignInput};

#[tokio::test]
async fn accepted_webhook_reaches_the_app_byte_identical_and_its_answer_comes_back() {
    for p in PROVIDERS {
        accepted_webhook_for(p).await;
    }
}

async fn accepted_webhook_for(p: Provider) {
    let up = upstream(Behaviour::Answer(200)).await;
    let gw = start(config(&p.config_text(up.addr, "", "")), memory()).await;
    let host = gw.addr.to_string();
    let s = p.signed(&format!("http://{host}/hooks/voice?x=1"), "msg_accept");
    let a = send_raw(
        gw.addr,
        &raw_request(
            &s,
            "/hooks/voice?x=1",
            &host,
            &[
                ("x-custom", "kept"),
                ("connection", "close, x-hop"),
                ("x-hop", "dropped"),
            ],
        ),
    )
    .await;
    let id = p.id;
    assert_eq!(a.status, 200, "{id}: {a:?}");
    assert_eq!(a.body, APP_ANSWER, "{id}");
    assert_eq!(a.header("x-app"), Some("yes"), "{id}");
    assert_eq!(a.header("content-type"), Some("text/xml"), "{id}");

    let seen = up.seen();
    assert_eq!(seen.len(), 1, "{id}");
    let r = &seen[0];
    assert_eq!(
        r.body.as_ref(),
        s.body.as_slice(),
        "{id}: body must be byte-identical"
    );
    assert_eq!(r.method, "POST", "{id}");
    assert_eq!(r.uri, "/app/hooks/voice?x=1", "{id}");
    assert_eq!(r.headers["x-custom"], "kept", "{id}");
    assert!(
        r.headers.get("x-hop").is_none(),
        "{id}: headers named in Connection are hop-by-hop"
    );
    assert_eq!(
        r.headers["tollgate-verified"],
        format!("provider={id}; key=k1")
    );
    assert_eq!(r.headers["x-forwarded-for"], "127.0.0.1", "{id}");
    assert_eq!(r.headers["x-forwarded-proto"], "http", "{id}");
    let content_type = s
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-type"));
    assert_eq!(
        r.headers.get("content-type").and_then(|v| v.to_str().ok()),
        content_type.map(|(_, v)| v.as_str()),
        "{id}: the content type is end-to-end"
    );

    // tollgate's own signature verifies with the app secret and not with the provider's key.
    let app_url = format!("http://{}/app/hooks/voice?x=1", up.addr);
    let req = tollgate_verify::Request {
        method: "POST",
        url: &app_url,
        headers: &r.headers,
        body: &r.body,
    };
    let spec = find_provider("standard-webhooks").expect("spec");
    let ring = |k: &str| tollgate_verify::KeyRing::single(tollgate_verify::Secret::new(k));
    let app_v =
        (spec.build)(&Options::new(), &ring(APP_SECRET), &Default::default()).expect("build");
    assert!(
        app_v.verify(&req, now()).is_ok(),
        "{id}: app signature must verify"
    );
    if p.id == STANDARD_WEBHOOKS.id {
        let provider_v =
            (spec.build)(&Options::new(), &ring(p.key), &Default::default()).expect("build");
        assert!(
            provider_v.verify(&req, now()).is_err(),
            "the provider's signature headers are replaced"
        );
    } else {
        // Other providers' signature headers are end-to-end: the app gets them as sent.
        let sent = s
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(p.signature_header))
            .map(|(_, v)| v.as_str());
        assert_eq!(
            r.headers
                .get(p.signature_header)
                .and_then(|v| v.to_str().ok()),
            sent,
            "{id}"
        );
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn strip_prefix_maps_the_path() {
    let up = upstream(Behaviour::Answer(200)).await;
    let gw = start(
        config(&config_text(up.addr, "", "strip_prefix = true")),
        memory(),
    )
    .await;
    assert_eq!(deliver(gw.addr, "msg_strip", &[]).await.status, 200);
    assert_eq!(up.seen()[0].uri, "/app/voice?x=1");
}

#[tokio::test]
async fn missing_credentials_401_bad_signature_and_stale_403_with_reason_json() {
    for p in PROVIDERS {
        rejects_for(p).await;
    }
}

async fn rejects_for(p: Provider) {
    let id = p.id;
    let up = upstream(Behaviour::Answer(200)).await;
    let gw = start(config(&p.config_text(up.addr, "", "")), memory()).await;
    let host = gw.addr.to_string();
    let url = format!("http://{host}/hooks/voice");

    let mut unsigned = p.signed(&url, "msg_u");
    unsigned
        .headers
        .retain(|(k, _)| !k.eq_ignore_ascii_case(p.signature_header));
    let a = send_raw(gw.addr, &raw_request(&unsigned, "/hooks/voice", &host, &[])).await;
    assert_eq!(
        (a.status, a.body.as_str()),
        (401, r#"{"error":"signature_missing"}"#),
        "{id}"
    );
    assert_eq!(a.header("content-type"), Some("application/json"), "{id}");

    let mut tampered = p.signed(&url, "msg_t");
    tampered.body[3] ^= 1;
    let a = send_raw(gw.addr, &raw_request(&tampered, "/hooks/voice", &host, &[])).await;
    assert_eq!(
        (a.status, a.body.as_str()),
        (403, r#"{"error":"signature_mismatch"}"#),
        "{id}"
    );

    // One byte of the signature itself.
    let mut bad_sig = p.signed(&url, "msg_b");
    for (k, v) in bad_sig.headers.iter_mut() {
        if k.eq_ignore_ascii_case(p.signature_header) {
            let i = v.len() - 3;
            let c = if &v[i..=i] == "A" { "B" } else { "A" };
            v.replace_range(i..=i, c);
        }
    }
    let a = send_raw(gw.addr, &raw_request(&bad_sig, "/hooks/voice", &host, &[])).await;
    assert_eq!(
        (a.status, a.body.as_str()),
        (403, r#"{"error":"signature_mismatch"}"#),
        "{id}"
    );

    if p.signs_time {
        let stale = p.signed_with(p.key, &url, "msg_s", now() - 3600);
        let a = send_raw(gw.addr, &raw_request(&stale, "/hooks/voice", &host, &[])).await;
        assert_eq!(
            (a.status, a.body.as_str()),
            (403, r#"{"error":"timestamp_out_of_window"}"#),
            "{id}"
        );
    }

    let wrong_key = p.signed_with(p.wrong_key, &url, "msg_w", now());
    let a = send_raw(
        gw.addr,
        &raw_request(&wrong_key, "/hooks/voice", &host, &[]),
    )
    .await;
    assert_eq!(a.status, 403, "{id}");
    assert!(
        up.seen().is_empty(),
        "{id}: nothing unverified reaches the app"
    );
}

#[tokio::test]
async fn unknown_path_is_404_with_no_detail_and_routes_match_by_segment() {
    let up = upstream(Behaviour::Answer(200)).await;
    let gw = start(config(&config_text(up.addr, "", "")), memory()).await;
    let host = gw.addr.to_string();
    for path in ["/nope", "/hooks-other", "/"] {
        let s = signed(&format!("http://{host}{path}"), "msg_404");
        let a = send_raw(gw.addr, &raw_request(&s, path, &host, &[])).await;
        assert_eq!((a.status, a.body.as_str()), (404, ""), "{path}");
    }
}

#[tokio::test]
async fn longest_route_wins() {
    let up = upstream(Behaviour::Answer(200)).await;
    let other = upstream(Behaviour::Answer(200)).await;
    let text = format!(
        "{}\n[[route]]\nname = \"deep\"\npath = \"/hooks/voice\"\nprovider = \"{PROVIDER}\"\nkeys = [ {{ label = \"d\", secret = \"env:KEY\" }} ]\nupstream = \"http://{}/deep\"\n",
        config_text(up.addr, "", ""),
        other.addr
    );
    let gw = start(config(&text), memory()).await;
    assert_eq!(deliver(gw.addr, "msg_long", &[]).await.status, 200);
    assert_eq!(other.seen().len(), 1);
    assert!(up.seen().is_empty());
}

#[tokio::test]
async fn oversized_body_is_413_before_verification() {
    let up = upstream(Behaviour::Answer(200)).await;
    let gw = start(
        config(&config_text(up.addr, "max_body_bytes = 16", "")),
        memory(),
    )
    .await;
    let a = deliver(gw.addr, "msg_big", &[]).await;
    assert_eq!(
        (a.status, a.body.as_str()),
        (413, r#"{"error":"body_too_large"}"#)
    );
    // Chunked, so the size is only known while reading.
    let host = gw.addr.to_string();
    let req = format!("POST /hooks/x HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\ntransfer-encoding: chunked\r\n\r\n20\r\n{}\r\n0\r\n\r\n", "a".repeat(32));
    let a = send_raw(gw.addr, req.as_bytes()).await;
    assert_eq!(a.status, 413);
}

#[tokio::test]
async fn slow_body_gets_408() {
    let up = upstream(Behaviour::Answer(200)).await;
    let gw = start(
        config(&config_text(up.addr, "body_timeout_ms = 200", "")),
        memory(),
    )
    .await;
    let mut s = tokio::net::TcpStream::connect(gw.addr)
        .await
        .expect("connect");
    s.write_all(
        format!(
            "POST /hooks HTTP/1.1\r\nhost: {}\r\ncontent-length: 100\r\n\r\nonly-a-bit",
            gw.addr
        )
        .as_bytes(),
    )
    .await
    .expect("write");
    let mut buf = Vec::new();
    // Bounded so a regression fails instead of hanging; the assertion is on the answer, not the time.
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut buf))
        .await
        .expect("server must answer a slow body")
        .expect("read");
    let a = parse(&buf);
    assert_eq!(
        (a.status, a.body.as_str()),
        (408, r#"{"error":"body_timeout"}"#)
    );
}

#[tokio::test]
async fn slow_head_is_cut_off() {
    let up = upstream(Behaviour::Answer(200)).await;
    let gw = start(
        config(&config_text(up.addr, "header_timeout_ms = 200", "")),
        memory(),
    )
    .await;
    let mut s = tokio::net::TcpStream::connect(gw.addr)
        .await
        .expect("connect");
    s.write_all(b"POST /hooks HTTP/1.1\r\nhost: x\r\n")
        .await
        .expect("write");
    let mut buf = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut buf))
        .await
        .expect("server must close a slow head");
    // hyper either answers 408 or just closes; what matters is that the connection is released.
    assert!(
        r.is_err() || buf.is_empty() || parse(&buf).status == 408,
        "{:?}",
        String::from_utf8_lossy(&buf)
    );
}

#[tokio::test]
async fn forwarded_headers_from_an_untrusted_peer_are_ignored() {
    let up = upstream(Behaviour::Answer(200)).await;
    let gw = start(
        config(&config_text(up.addr, "", "allow_ips = [\"198.51.100.7\"]")),
        memory(),
    )
    .await;
    let a = deliver(gw.addr, "msg_xff1", &[("x-forwarded-for", "198.51.100.7")]).await;
    assert_eq!(
        (a.status, a.body.as_str()),
        (403, r#"{"error":"ip_not_allowed"}"#)
    );
    // X-Forwarded-Host from an untrusted peer does not change the signed URL either.
    let up2 = upstream(Behaviour::Answer(200)).await;
    let gw2 = start(config(&config_text(up2.addr, "", "")), memory()).await;
    let a = deliver(
        gw2.addr,
        "msg_xff2",
        &[
            ("x-forwarded-host", "evil.example"),
            ("x-forwarded-proto", "https"),
        ],
    )
    .await;
    assert_eq!(a.status, 200);
    let seen = up2.seen();
    assert_eq!(seen[0].headers["x-forwarded-host"], gw2.addr.to_string());
    assert_eq!(seen[0].headers["x-forwarded-proto"], "http");
    assert_eq!(seen[0].headers["x-forwarded-for"], "127.0.0.1");
}

#[tokio::test]
async fn forwarded_headers_from_a_trusted_proxy_are_honoured() {
    for p in PROVIDERS {
        let up = upstream(Behaviour::Answer(200)).await;
        let gw = start(
            config(&p.config_text(
                up.addr,
                "trusted_proxies = [\"127.0.0.1/32\"]",
                "allow_ips = [\"198.51.100.0/24\"]",
            )),
            memory(),
        )
        .await;
        let s = p.signed("https://hooks.example.com/hooks/voice", "msg_trusted");
        let req = raw_request(
            &s,
            "/hooks/voice",
            "internal:8080",
            &[
                ("x-forwarded-for", "6.6.6.6, 198.51.100.7"),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-host", "hooks.example.com"),
            ],
        );
        let a = send_raw(gw.addr, &req).await;
        assert_eq!(a.status, 200, "{}: {a:?}", p.id);
        let seen = up.seen();
        assert_eq!(seen[0].headers["x-forwarded-for"], "198.51.100.7");
        assert_eq!(seen[0].headers["x-forwarded-proto"], "https");
        assert_eq!(seen[0].headers["x-forwarded-host"], "hooks.example.com");
    }
}

/// A provider that signs the URL signed `https://public.example/…`; a TLS-terminating proxy in front
/// of tollgate makes it arrive over plain http. Only a trusted proxy's `X-Forwarded-Proto` (or a
/// configured `public_url`) may restore the https the signature covers.
#[tokio::test]
async fn url_signed_for_https_behind_a_proxy_needs_a_trusted_proxy_or_public_url() {
    for p in PROVIDERS.into_iter().filter(|p| p.signs_url) {
        let id = p.id;
        let s = p.signed("https://public.example/hooks/voice?x=1", "msg_https");
        let via_proxy = |s: &tollgate_verify::Signed| {
            raw_request(
                s,
                "/hooks/voice?x=1",
                "public.example",
                &[
                    ("x-forwarded-proto", "https"),
                    ("x-forwarded-host", "public.example"),
                    ("x-forwarded-for", "198.51.100.7"),
                ],
            )
        };

        // The peer (127.0.0.1) is not a trusted proxy: its X-Forwarded-Proto is ignored, the URL is
        // rebuilt as http://public.example/…, and the https signature does not match it.
        let up = upstream(Behaviour::Answer(200)).await;
        let gw = start(config(&p.config_text(up.addr, "", "")), memory()).await;
        let a = send_raw(gw.addr, &via_proxy(&s)).await;
        assert_eq!(
            (a.status, a.body.as_str()),
            (403, r#"{"error":"signature_mismatch"}"#),
            "{id}: an untrusted peer must not be able to claim https"
        );
        assert!(up.seen().is_empty(), "{id}");
        gw.shutdown().await;

        // The same bytes from a trusted proxy: accepted, and the app is told https.
        let up = upstream(Behaviour::Answer(200)).await;
        let gw = start(
            config(&p.config_text(up.addr, "trusted_proxies = [\"127.0.0.1/32\"]", "")),
            memory(),
        )
        .await;
        let a = send_raw(gw.addr, &via_proxy(&s)).await;
        assert_eq!(a.status, 200, "{id}: {a:?}");
        let seen = up.seen();
        assert_eq!(seen.len(), 1, "{id}");
        assert_eq!(seen[0].body.as_ref(), s.body.as_slice(), "{id}");
        assert_eq!(seen[0].headers["x-forwarded-proto"], "https", "{id}");
        assert_eq!(seen[0].headers["x-forwarded-for"], "198.51.100.7", "{id}");
        gw.shutdown().await;

        // Or no proxy headers at all, with public_url saying what the provider called.
        let up = upstream(Behaviour::Answer(200)).await;
        let gw = start(
            config(&p.config_text(up.addr, "public_url = \"https://public.example\"", "")),
            memory(),
        )
        .await;
        let plain = raw_request(&s, "/hooks/voice?x=1", &gw.addr.to_string(), &[]);
        let a = send_raw(gw.addr, &plain).await;
        assert_eq!(a.status, 200, "{id}: {a:?}");
        assert_eq!(up.seen()[0].headers["x-forwarded-proto"], "https", "{id}");
        // …and with public_url set, a signature for the plain-http URL it arrived on is refused.
        let http_signed = p.signed(&format!("http://{}/hooks/voice?x=1", gw.addr), "msg_http");
        let a = send_raw(
            gw.addr,
            &raw_request(&http_signed, "/hooks/voice?x=1", &gw.addr.to_string(), &[]),
        )
        .await;
        assert_eq!(
            (a.status, a.body.as_str()),
            (403, r#"{"error":"signature_mismatch"}"#),
            "{id}"
        );
        assert_eq!(up.seen().len(), 1, "{id}");
        gw.shutdown().await;
    }
}

#[tokio::test]
async fn duplicate_is_not_forwarded_and_gets_the_first_answer() {
    for p in PROVIDERS {
        let id = p.id;
        let up = upstream(Behaviour::Answer(200)).await;
        let gw = start(config(&p.config_text(up.addr, "", "")), memory()).await;
        let host = gw.addr.to_string();
        let s = p.signed(&format!("http://{host}/hooks/voice"), "msg_dup");
        let first = send_raw(gw.addr, &raw_request(&s, "/hooks/voice", &host, &[])).await;
        let second = send_raw(gw.addr, &raw_request(&s, "/hooks/voice", &host, &[])).await;
        assert_eq!(first.status, 200, "{id}");
        assert_eq!(second.status, 200, "{id}");
        assert_eq!(second.body, first.body, "{id}");
        assert_eq!(second.header("x-app"), Some("yes"), "{id}");
        assert_eq!(second.header("tollgate-replayed"), Some("true"), "{id}");
        assert_eq!(first.header("tollgate-replayed"), None, "{id}");
        assert_eq!(
            up.seen().len(),
            1,
            "{id}: the duplicate must not reach the app"
        );
    }
}

#[tokio::test]
async fn duplicate_while_first_in_flight_is_409() {
    let up = upstream(Behaviour::WaitForRelease).await;
    let gw = start(config(&config_text(up.addr, "", "")), memory()).await;
    let addr = gw.addr;
    let first = tokio::spawn(async move { deliver(addr, "msg_inflight", &[]).await });
    while up.seen().is_empty() {
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let second = deliver(gw.addr, "msg_inflight", &[]).await;
    assert_eq!(
        (second.status, second.body.as_str()),
        (409, r#"{"error":"in_flight"}"#)
    );
    up.release.notify_one();
    assert_eq!(first.await.expect("task").status, 200);
}

#[tokio::test]
async fn upstream_5xx_releases_the_claim_so_the_retry_is_forwarded() {
    let up = upstream(Behaviour::Answer(500)).await;
    let gw = start(config(&config_text(up.addr, "", "")), memory()).await;
    assert_eq!(deliver(gw.addr, "msg_5xx", &[]).await.status, 500);
    assert_eq!(deliver(gw.addr, "msg_5xx", &[]).await.status, 500);
    assert_eq!(up.seen().len(), 2);
}

/// A store that fails every call, for fail-closed behaviour.
#[derive(Debug)]
struct BrokenStore;

fn broken() -> StoreError {
    StoreError::Unavailable(Box::new(std::io::Error::other("disk on fire")))
}

#[async_trait::async_trait]
impl ReplayStore for BrokenStore {
    async fn claim(&self, _: &str, _: Duration) -> Result<Claim, StoreError> {
        Err(broken())
    }
    async fn complete(&self, _: &str, _: &StoredResponse, _: Duration) -> Result<(), StoreError> {
        Err(broken())
    }
    async fn release(&self, _: &str) -> Result<(), StoreError> {
        Err(broken())
    }
    async fn ping(&self) -> Result<(), StoreError> {
        Err(broken())
    }
}

#[tokio::test]
async fn store_failure_fails_closed_with_503() {
    let up = upstream(Behaviour::Answer(200)).await;
    let gw = start(config(&config_text(up.addr, "", "")), Arc::new(BrokenStore)).await;
    let a = deliver(gw.addr, "msg_store", &[]).await;
    assert_eq!(
        (a.status, a.body.as_str()),
        (503, r#"{"error":"store_unavailable"}"#)
    );
    assert!(up.seen().is_empty());
}

#[tokio::test]
async fn readyz_follows_the_store() {
    for (store, want) in [
        (memory(), 200),
        (Arc::new(BrokenStore) as Arc<dyn ReplayStore>, 503),
    ] {
        let up = upstream(Behaviour::Answer(200)).await;
        let gateway = tollgate_gateway::Gateway::new(config(&config_text(up.addr, "", "")), store);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            gateway
                .serve_admin(listener, None, std::future::pending())
                .await
        });
        let a = send_raw(
            addr,
            b"GET /readyz HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(a.status, want);
        let a = send_raw(
            addr,
            b"GET /healthz HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(a.status, 200);
    }
}

#[tokio::test]
async fn upstream_down_is_502() {
    let dead = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        l.local_addr().expect("addr")
    };
    let gw = start(config(&config_text(dead, "", "")), memory()).await;
    let a = deliver(gw.addr, "msg_down", &[]).await;
    assert_eq!(
        (a.status, a.body.as_str()),
        (502, r#"{"error":"upstream_unavailable"}"#)
    );
    // The claim was released: the provider's retry is tried again rather than answered 409.
    let a = deliver(gw.addr, "msg_down", &[]).await;
    assert_eq!(a.status, 502);
}

#[tokio::test]
async fn upstream_timeout_is_504() {
    let up = upstream(Behaviour::Hang).await;
    let gw = start(
        config(&config_text(up.addr, "", "upstream_timeout_ms = 200")),
        memory(),
    )
    .await;
    let a = deliver(gw.addr, "msg_slow", &[]).await;
    assert_eq!(
        (a.status, a.body.as_str()),
        (504, r#"{"error":"upstream_timeout"}"#)
    );
}

#[tokio::test]
async fn failed_verifications_are_rate_limited_per_ip() {
    let up = upstream(Behaviour::Answer(200)).await;
    let gw = start(
        config(&config_text(up.addr, "failed_verify_per_minute = 2", "")),
        memory(),
    )
    .await;
    let host = gw.addr.to_string();
    let mut forged = signed(&format!("http://{host}/hooks"), "msg_forged");
    forged.body[0] ^= 1;
    let statuses: Vec<u16> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            v.push(
                send_raw(gw.addr, &raw_request(&forged, "/hooks", &host, &[]))
                    .await
                    .status,
            );
        }
        v
    };
    assert_eq!(statuses, [403, 403, 429]);
    // Once over budget, even a valid request from that IP is refused before verification.
    let a = deliver(gw.addr, "msg_after", &[]).await;
    assert_eq!(
        (a.status, a.body.as_str()),
        (429, r#"{"error":"rate_limited"}"#)
    );
}

/// Pins the pipeline order from outside: each case would answer differently if two stages swapped.
#[tokio::test]
async fn stage_order_is_pinned() {
    let up = upstream(Behaviour::Answer(200)).await;
    let host = "127.0.0.1";
    let mut forged = signed("http://x/hooks", "msg_order");
    forged.body[0] ^= 1;
    // route before everything: unknown path with a forged body is 404.
    let gw = start(
        config(&config_text(
            up.addr,
            "max_body_bytes = 16",
            "allow_ips = [\"192.0.2.1\"]",
        )),
        memory(),
    )
    .await;
    assert_eq!(
        send_raw(gw.addr, &raw_request(&forged, "/elsewhere", host, &[]))
            .await
            .status,
        404
    );
    // allow_ips before body size: a disallowed client with an oversized body is 403.
    assert_eq!(
        send_raw(gw.addr, &raw_request(&forged, "/hooks", host, &[]))
            .await
            .status,
        403
    );
    // body size before verification: an oversized forged body is 413, not 403.
    let gw = start(
        config(&config_text(up.addr, "max_body_bytes = 16", "")),
        memory(),
    )
    .await;
    assert_eq!(
        send_raw(gw.addr, &raw_request(&forged, "/hooks", host, &[]))
            .await
            .status,
        413
    );
    // verification before replay: a repeated forgery is 403 both times, never 409 or a replay.
    let gw = start(config(&config_text(up.addr, "", "")), memory()).await;
    for _ in 0..2 {
        assert_eq!(
            send_raw(gw.addr, &raw_request(&forged, "/hooks", host, &[]))
                .await
                .status,
            403
        );
    }
    assert!(up.seen().is_empty());
}

#[tokio::test]
async fn malformed_requests_get_4xx_not_a_panic() {
    let up = upstream(Behaviour::Answer(200)).await;
    let gw = start(config(&config_text(up.addr, "", "")), memory()).await;
    for raw in [
        &b"POST /hooks HTTP/1.1\r\nhost: x\r\ncontent-length: zz\r\n\r\n"[..],
        b"POST /hooks HTTP/1.1\r\nhost: x\r\nwebhook-id: a\r\nwebhook-id: b\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
        b"GARBAGE\r\n\r\n",
    ] {
        let mut s = tokio::net::TcpStream::connect(gw.addr).await.expect("connect");
        s.write_all(raw).await.expect("write");
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf).await;
        let a = parse(&buf);
        assert!((400..500).contains(&a.status), "{a:?}");
    }
    // The gateway still serves.
    assert_eq!(deliver(gw.addr, "msg_still", &[]).await.status, 200);
}

#[tokio::test]
async fn reload_swaps_keys_on_open_connections_and_refuses_invalid_files() {
    let up = upstream(Behaviour::Answer(200)).await;
    let dir = std::env::temp_dir().join(format!("tollgate-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("c.toml");
    let text = config_text(up.addr, "", "");
    std::fs::write(&file, &text).expect("write");
    let gw = start(config(&text), memory()).await;

    // One keep-alive connection across the reload.
    let stream = tokio::net::TcpStream::connect(gw.addr)
        .await
        .expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("handshake");
    tokio::spawn(conn);
    let host = gw.addr.to_string();
    let send = |key: &'static str, nonce: &'static str| {
        let s = signed_with(key, &format!("http://{host}/hooks"), nonce, now());
        let mut b = http::Request::builder()
            .method("POST")
            .uri("/hooks")
            .header("host", host.clone());
        for (k, v) in &s.headers {
            b = b.header(k, v);
        }
        b.body(http_body_util::Full::new(bytes::Bytes::from(s.body)))
            .expect("request")
    };
    const NEW_KEY: &str = "whsec_dGhpcyBpcyBhIG5ldyBrZXkgZm9yIHRlc3Rz";
    let r = sender
        .send_request(send(KEY, "msg_r1"))
        .await
        .expect("send");
    assert_eq!(r.status(), 200);

    let mut env = env();
    env.insert("NEW_KEY".into(), NEW_KEY.into());
    std::fs::write(&file, text.replace("env:KEY", "env:NEW_KEY")).expect("write");
    gw.gateway.reload_file(&file, &env).expect("valid reload");
    let r = sender
        .send_request(send(NEW_KEY, "msg_r2"))
        .await
        .expect("send on the same connection");
    assert_eq!(r.status(), 200);
    let r = sender
        .send_request(send(KEY, "msg_r3"))
        .await
        .expect("send");
    assert_eq!(r.status(), 403, "the old key is gone");

    std::fs::write(&file, "[server]\nlisten = 12\n").expect("write");
    assert!(gw.gateway.reload_file(&file, &env).is_err());
    let r = sender
        .send_request(send(NEW_KEY, "msg_r4"))
        .await
        .expect("send");
    assert_eq!(
        r.status(),
        200,
        "an invalid file leaves the running config in place"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn shutdown_drains_the_request_in_flight() {
    let up = upstream(Behaviour::WaitForRelease).await;
    let gw = start(config(&config_text(up.addr, "", "")), memory()).await;
    let addr = gw.addr;
    let inflight = tokio::spawn(async move { deliver(addr, "msg_drain", &[]).await });
    while up.seen().is_empty() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let stopping = tokio::spawn(gw.shutdown());
    up.release.notify_one();
    assert_eq!(inflight.await.expect("task").status, 200);
    stopping.await.expect("shutdown");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "listener closed after drain"
    );
}

#[test]
fn sample_and_sign_are_what_the_tests_use() {
    // Guards the harness itself: a signed sample must verify, or every accept test is vacuous.
    for p in PROVIDERS {
        let spec = find_provider(p.id).expect("spec");
        let opts = p.options();
        let mut input: SignInput = (spec.sample)(&opts, "http://h/hooks");
        input.now = now();
        input.nonce = "n".into();
        let s = (spec.sign)(&opts, &tollgate_verify::Secret::new(p.key), &input).expect("sign");
        let h = s.header_map();
        let v = (spec.build)(
            &opts,
            &tollgate_verify::KeyRing::single(tollgate_verify::Secret::new(p.key)),
            &Default::default(),
        )
        .expect("build");
        let verified = v
            .verify(
                &tollgate_verify::Request {
                    method: "POST",
                    url: &s.url,
                    headers: &h,
                    body: &s.body,
                },
                now(),
            )
            .unwrap_or_else(|e| panic!("{}: {e:?}", p.id));
        assert_eq!(
            verified.event_id_str(),
            p.nonce_is_event_id.then_some("n"),
            "{}: event id",
            p.id
        );
    }
}

/// A bare HTTP/1.1 upstream that counts the connections it accepts and answers each request
/// `200 ok`, keeping the connection open unless `close` (then it says `Connection: close`).
async fn counting_upstream(close: bool) -> (std::net::SocketAddr, Arc<std::sync::Mutex<usize>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(std::sync::Mutex::new(0usize));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            *count.lock().expect("lock") += 1;
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    // One whole request: the head, then content-length bytes of body.
                    let (head_end, length) = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buf[..i]).to_ascii_lowercase();
                            let length = head
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .and_then(|v| v.trim().parse::<usize>().ok())
                                .unwrap_or(0);
                            break (i + 4, length);
                        }
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    while buf.len() < head_end + length {
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buf.drain(..head_end + length);
                    let answer: &[u8] = if close {
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
                    } else {
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
                    };
                    if stream.write_all(answer).await.is_err() || close {
                        return;
                    }
                }
            });
        }
    });
    (addr, accepted)
}

#[tokio::test]
async fn upstream_connections_are_kept_alive_and_a_closed_one_is_not_reused() {
    for close in [false, true] {
        let (addr, accepted) = counting_upstream(close).await;
        let gw = start(config(&config_text(addr, "", "")), memory()).await;
        for i in 0..3 {
            let a = deliver(gw.addr, &format!("msg_keepalive_{close}_{i}"), &[]).await;
            assert_eq!(
                (a.status, a.body.as_str()),
                (200, "ok"),
                "close={close} #{i}"
            );
        }
        let connections = *accepted.lock().expect("lock");
        assert_eq!(connections, if close { 3 } else { 1 }, "close={close}");
        gw.shutdown().await;
    }
}
