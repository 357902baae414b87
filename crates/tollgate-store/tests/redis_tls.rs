//! The Redis backends over TLS (`rediss://`) against a real `redis-server --tls-port` whose
//! certificate a throwaway CA signed: a server the configured CA did not sign is refused (fail
//! closed: no connection, every operation unavailable), and so is a private CA when only the
//! system's roots are trusted; a server that requires client certificates gets one; a
//! restarted server is reconnected with a fresh handshake. (The conformance suites run over TLS
//! too.)
#![allow(clippy::unwrap_used)]

mod common;

use common::{assert_unavailable, kill_and_restart, within, LEASE, START_MS};
use tollgate_store::queue_conformance::event;
use tollgate_store::redis_server::{patient_options, RedisServer, TestPki};
use tollgate_store::{
    Claim, Enqueued, EventQueue, ManualClock, RedisOptions, RedisQueue, RedisStore, RedisTarget,
    ReplayStore,
};

fn pki() -> TestPki {
    TestPki::generate().unwrap_or_else(|e| panic!("{e}"))
}

fn server(pki: &TestPki, require_client_cert: bool) -> RedisServer {
    RedisServer::start_tls(pki, require_client_cert).unwrap_or_else(|e| panic!("{e}"))
}

/// The server's TLS port trusting `pki`'s CA (the client certificate too if `client_cert`).
fn target(server: &RedisServer, pki: &TestPki, client_cert: bool) -> RedisTarget {
    server
        .tls_target(pki, client_cert)
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Generous timeouts: every refusal here is immediate (a handshake or a connection refused), so
/// only a loaded machine could make a success slow.
fn options() -> RedisOptions {
    patient_options(ManualClock::new(START_MS))
}

#[tokio::test]
async fn a_server_signed_by_another_ca_is_refused() {
    let (ours, theirs) = (pki(), pki());
    let server = server(&theirs, false);

    let r = within(
        "connect",
        RedisStore::connect_to(&target(&server, &ours, false), options()),
    )
    .await;
    let err = r.as_ref().map(|_| ()).unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(
        err.reason().to_lowercase().contains("certificate"),
        "{}",
        err.reason()
    );

    let queue = RedisQueue::at(&target(&server, &ours, false), options()).unwrap();
    assert_unavailable("ping", within("ping", queue.ping()).await);
    assert_unavailable(
        "enqueue",
        within("enqueue", queue.enqueue(&event("e", "r"))).await,
    );
    // Nothing reached the server.
    assert!(server.command("DBSIZE").unwrap().starts_with(":0"));
}

#[tokio::test]
async fn a_private_ca_is_not_trusted_by_the_system_roots() {
    let pki = pki();
    let server = server(&pki, false);
    let system_roots = RedisTarget::node(&server.tls_url().unwrap()).unwrap();
    let r = within("connect", RedisStore::connect_to(&system_roots, options())).await;
    assert_unavailable("connect without the CA", r);
}

#[tokio::test]
async fn a_client_certificate_is_presented_when_the_server_requires_one() {
    let pki = pki();
    let server = server(&pki, true);
    let without = within(
        "connect",
        RedisStore::connect_to(&target(&server, &pki, false), options()),
    )
    .await;
    assert_unavailable("connect without a client certificate", without);

    let store = RedisStore::connect_to(&target(&server, &pki, true), options())
        .await
        .unwrap_or_else(|e| panic!("{}", e.reason()));
    assert_eq!(store.claim("k", LEASE).await.unwrap(), Claim::Claimed);
    assert_eq!(store.claim("k", LEASE).await.unwrap(), Claim::InFlight);
    let queue = RedisQueue::at(&target(&server, &pki, true), options()).unwrap();
    assert_eq!(
        queue.enqueue(&event("e", "r")).await.unwrap(),
        Enqueued::New
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_tls_server_is_reconnected() {
    let pki = pki();
    let mut server = server(&pki, false);
    let store = RedisStore::connect_to(&target(&server, &pki, false), options())
        .await
        .unwrap_or_else(|e| panic!("{}", e.reason()));
    kill_and_restart(&mut server, &store).await;
}
