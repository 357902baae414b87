//! The real binary on Redis over TLS and on a Redis Cluster (issue 4). TLS: two instances on a
//! `redis-server --tls-port` that requires a password and a client certificate, with the
//! private CA from `[state] tls_ca`, act as one; a server signed by another CA is refused, so
//! the instance is not ready and answers 503 without forwarding. Cluster: two proxy-mode
//! instances on a three-primary cluster recognise each other's events, and a queue-mode
//! instance delivers each acknowledged event once. No log line, at debug level, shows the Redis
//! password or the client key. `tollgate check` reads the TLS files as `serve` does and warns
//! about a password sent in clear text.
#![allow(clippy::unwrap_used)]

mod redis_support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use redis_support::{send, signed_request, upstream, Answer, Recorded, Tollgate, APP_ANSWER, BIN};
use tollgate_store::redis_server::{RedisCluster, RedisServer, TestPki};

const PASSWORD: &str = "tls-and-cluster-pw-8d1f";

fn require_password(node: &RedisServer) {
    let reply = node
        .command(&format!("CONFIG SET requirepass {PASSWORD}"))
        .unwrap();
    assert!(reply.starts_with("+OK"), "{reply}");
}

/// A TLS server signed by `pki`'s CA requiring [`PASSWORD`] (and a client certificate if
/// `client`), and the `rediss://` URL with the password.
fn tls_redis(pki: &TestPki, client: bool) -> (RedisServer, String) {
    let redis = RedisServer::start_tls(pki, client).unwrap_or_else(|e| panic!("{e}"));
    require_password(&redis);
    let url = format!(
        "rediss://:{PASSWORD}@127.0.0.1:{}/",
        redis.tls_port().unwrap()
    );
    (redis, url)
}

/// `[state]` lines naming `pki`'s CA, and its client certificate if `client`.
fn tls_state(pki: &TestPki, client: bool) -> String {
    let mut lines = format!("tls_ca = {:?}\n", pki.ca_path());
    if client {
        lines.push_str(&format!(
            "tls_cert = {:?}\ntls_key = {:?}\n",
            pki.client_cert_path(),
            pki.client_key_path()
        ));
    }
    lines
}

/// The body of the client key's PEM (its base64 lines), which no log may contain.
fn key_material(pki: &TestPki) -> Vec<String> {
    std::fs::read_to_string(pki.client_key_path())
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() > 16)
        .map(str::to_owned)
        .collect()
}

fn assert_no_secret(t: &Tollgate, secrets: &[String]) {
    let log = t.log();
    for s in secrets.iter().map(String::as_str).chain([PASSWORD]) {
        assert!(!log.contains(s), "a secret is in the log:\n{log}");
    }
}

fn is_first(a: &Answer) -> bool {
    a.status == 200 && a.body == APP_ANSWER && !a.replayed()
}

fn is_replay(a: &Answer) -> bool {
    a.status == 200 && a.body == APP_ANSWER && a.replayed()
}

/// Sends events to `a` and their retries to `b` (alternating who is first): each is forwarded
/// once, and the retry is answered with the stored answer.
async fn retries_are_recognised_across(a: &Tollgate, b: &Tollgate, recorded: &Recorded, n: usize) {
    for i in 0..n {
        let id = format!("evt-{i}");
        let (first, second) = if i % 2 == 0 { (a, b) } else { (b, a) };
        let bytes = signed_request(&id, first.addr);
        let one = send(first.addr, &bytes).await;
        assert!(is_first(&one), "{id} first: {one:?}");
        let two = send(second.addr, &bytes).await;
        assert!(is_replay(&two), "{id} retry on the other instance: {two:?}");
        assert_eq!(recorded.count(&id), 1, "{id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_on_tls_redis_with_a_private_ca_act_as_one() {
    let pki = TestPki::generate().unwrap_or_else(|e| panic!("{e}"));
    let (_redis, url) = tls_redis(&pki, true);
    let (up, recorded) = upstream(Duration::ZERO).await;
    let state = tls_state(&pki, true);
    let a = Tollgate::start_full(&url, up, 200, &state, "").await;
    let b = Tollgate::start_full(&url, up, 200, &state, "").await;

    retries_are_recognised_across(&a, &b, &recorded, 6).await;
    assert_eq!(recorded.ids().len(), 6);
    let secrets = key_material(&pki);
    assert!(!secrets.is_empty());
    for t in [&a, &b] {
        assert_no_secret(t, &secrets);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redis_server_signed_by_another_ca_fails_closed() {
    let (ours, theirs) = (
        TestPki::generate().unwrap_or_else(|e| panic!("{e}")),
        TestPki::generate().unwrap_or_else(|e| panic!("{e}")),
    );
    let (_redis, url) = tls_redis(&theirs, false);
    let (up, recorded) = upstream(Duration::ZERO).await;
    // Started, but not ready: it cannot claim anything.
    let t = Tollgate::start_full(&url, up, 503, &tls_state(&ours, false), "").await;
    for i in 0..3 {
        let answer = t.send(&format!("refused-{i}")).await;
        assert_eq!(answer.status, 503, "{answer:?}");
        assert!(answer.body.contains("store_unavailable"), "{answer:?}");
    }
    assert_eq!(t.readyz().await, Some(503));
    assert!(recorded.ids().is_empty(), "forwarded: {:?}", recorded.ids());
    // The log says why, without the password.
    let log = t.log();
    assert!(log.to_lowercase().contains("certificate"), "{log}");
    assert_no_secret(&t, &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn instances_on_a_redis_cluster_share_claims_and_the_queue() {
    let cluster = RedisCluster::start().unwrap_or_else(|e| panic!("{e}"));
    for node in cluster.nodes() {
        require_password(node);
    }
    let seeds: Vec<String> = cluster
        .seeds()
        .iter()
        .map(|(h, p)| format!("\"{h}:{p}\""))
        .collect();
    let state = format!("cluster = true\ncluster_nodes = [{}]\n", seeds.join(", "));
    let port = |u: &str| {
        u.rsplit(':')
            .next()
            .unwrap()
            .trim_end_matches('/')
            .to_owned()
    };
    let url = format!("redis://:{PASSWORD}@127.0.0.1:{}/", port(&cluster.url()));

    let (up, recorded) = upstream(Duration::ZERO).await;
    let a = Tollgate::start_full(&url, up, 200, &state, "").await;
    let b = Tollgate::start_full(&url, up, 200, &state, "").await;
    retries_are_recognised_across(&a, &b, &recorded, 10).await;

    // Queue mode: every acknowledged event reaches the app once; a retry is a duplicate.
    let (qup, delivered) = upstream(Duration::ZERO).await;
    let queue_route = "mode = \"queue\"\nresponse = { status = 202 }\nretry_initial_ms = 100";
    let q = Tollgate::start_full(&url, qup, 200, &state, queue_route).await;
    let ids: Vec<String> = (0..10).map(|i| format!("queued-{i}")).collect();
    for id in &ids {
        let answer = q.send(id).await;
        assert_eq!(answer.status, 202, "{id}: {answer:?}");
        assert!(!answer.replayed(), "{id}: {answer:?}");
    }
    let retry = q.send(&ids[0]).await;
    assert!(retry.status == 202 && retry.replayed(), "{retry:?}");
    let end = Instant::now() + Duration::from_secs(20);
    while !ids.iter().all(|id| delivered.count(id) >= 1) {
        assert!(
            Instant::now() < end,
            "not delivered: {:?}\n{}",
            delivered.ids(),
            q.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for id in &ids {
        assert_eq!(delivered.count(id), 1, "{id}: {:?}", delivered.ids());
    }
    for t in [&a, &b, &q] {
        assert_no_secret(t, &[]);
    }
}

fn check(config: &str, env: &[(&str, &str)]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.toml");
    std::fs::write(&path, config).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(["check", "--config"])
        .arg(&path)
        .env("TOLLGATE_TEST_KEY", redis_support::KEY)
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn check_config(state: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[state]\nbackend = \"redis\"\nurl = \"env:TG_REDIS\"\n{state}\n\n\
         [[route]]\nname = \"r\"\npath = \"/r\"\nprovider = \"standard-webhooks\"\n\
         keys = [ {{ label = \"k\", secret = \"env:TOLLGATE_TEST_KEY\" }} ]\nupstream = \"http://127.0.0.1:1\"\n"
    )
}

#[test]
fn check_reads_the_tls_files_and_warns_about_a_clear_text_password() {
    let pki = TestPki::generate().unwrap_or_else(|e| panic!("{e}"));
    let tls = [("TG_REDIS", "rediss://:pw-in-url@10.0.0.5:6380/")];
    let (ok, out) = check(&check_config(&tls_state(&pki, true)), &tls);
    assert!(ok, "{out}");
    assert!(!out.contains("state.url"), "{out}");

    // A CA file that is not PEM fails the check, naming the key.
    let dir = tempfile::tempdir().unwrap();
    let bogus = dir.path().join("ca.pem");
    std::fs::write(&bogus, "not a certificate").unwrap();
    let (ok, out) = check(&check_config(&format!("tls_ca = {bogus:?}")), &tls);
    assert!(!ok, "{out}");
    assert!(
        out.contains("tls_ca") && out.contains("no PEM certificate"),
        "{out}"
    );

    // redis:// with a password to another host: a warning, without the password.
    let clear = [("TG_REDIS", "redis://:pw-in-url@10.0.0.5:6379/0")];
    let (ok, out) = check(&check_config(""), &clear);
    assert!(ok, "{out}");
    assert!(
        out.contains("state.url") && out.contains("rediss://"),
        "{out}"
    );
    assert!(!out.contains("pw-in-url"), "{out}");
}
