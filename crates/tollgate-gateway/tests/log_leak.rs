//! Regression guard: no secret and no received signature may appear in any log line. Runs a full
//! scenario (accepted, duplicate, tampered, unsigned, stale, wrong key, upstream down, reload with
//! a refused file) with every level enabled and greps everything that was logged.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::*;

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

#[tokio::test]
async fn no_secret_or_received_signature_is_ever_logged() {
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .json()
        .with_writer(move || writer.clone())
        .finish();
    // The test binary holds only this test, so the global default sees every task's events.
    tracing::subscriber::set_global_default(subscriber).expect("subscriber");

    let up = upstream(Behaviour::Answer(200)).await;
    let gw = start(config(&config_text(up.addr, "", "")), memory()).await;
    let host = gw.addr.to_string();
    let url = format!("http://{host}/hooks/voice");
    let mut signatures = Vec::new();
    let mut send = |s: tollgate_verify::Signed| {
        signatures.extend(
            s.headers
                .iter()
                .filter(|(k, _)| k.contains("signature"))
                .map(|(_, v)| v.clone()),
        );
        raw_request(&s, "/hooks/voice", &host, &[])
    };
    let good = signed(&url, "msg_leak_1");
    let mut tampered = signed(&url, "msg_leak_2");
    tampered.body[2] ^= 1;
    let stale = signed_with(KEY, &url, "msg_leak_3", now() - 7200);
    let wrong = signed_with(
        "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        &url,
        "msg_leak_4",
        now(),
    );
    let requests = [
        send(good.clone()),
        send(good),
        send(tampered),
        send(stale),
        send(wrong),
    ];
    let mut statuses = Vec::new();
    for r in &requests {
        statuses.push(send_raw(gw.addr, r).await.status);
    }
    assert_eq!(statuses, [200, 200, 403, 403, 403]);

    let dead = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .local_addr()
        .expect("addr");
    let gw2 = start(config(&config_text(dead, "", "")), memory()).await;
    assert_eq!(deliver(gw2.addr, "msg_leak_5", &[]).await.status, 502);

    let dir = std::env::temp_dir().join(format!("tollgate-leak-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("bad.toml");
    std::fs::write(&file, config_text(up.addr, "", "").replace("env:KEY", KEY)).expect("write");
    assert!(
        gw.gateway.reload_file(&file, &env()).is_err(),
        "inline secret must be refused"
    );
    let _ = std::fs::remove_dir_all(&dir);
    gw.shutdown().await;

    let logs = String::from_utf8(capture.0.lock().expect("lock").clone()).expect("utf8");
    assert!(
        logs.contains("signature_mismatch"),
        "the scenario must have logged its audit lines:\n{logs}"
    );
    assert!(
        logs.contains("refused"),
        "the refused reload must be logged"
    );
    let key_body = KEY.trim_start_matches("whsec_");
    let app_body = APP_SECRET.trim_start_matches("whsec_");
    for secret in [KEY, key_body, APP_SECRET, app_body] {
        assert!(!logs.contains(secret), "a secret appears in the logs");
    }
    assert!(signatures.len() >= 4);
    for sig in &signatures {
        let value = sig.split_once(',').map(|(_, v)| v).unwrap_or(sig);
        assert!(
            !logs.contains(value),
            "a received signature appears in the logs"
        );
    }
}
