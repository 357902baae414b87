//! TLS on the public listener: old protocol versions refused, mTLS enforced, HTTPS accepted.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Pki {
    server_cert: rcgen::Certificate,
    server_key: KeyPair,
    ca_cert: rcgen::Certificate,
    client_cert: rcgen::Certificate,
    client_key: KeyPair,
}

fn pki() -> Pki {
    let server_key = KeyPair::generate().expect("key");
    let server_cert = CertificateParams::new(vec!["localhost".into()])
        .expect("params")
        .self_signed(&server_key)
        .expect("cert");
    let ca_key = KeyPair::generate().expect("key");
    let mut ca = CertificateParams::new(vec![]).expect("params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).expect("ca");
    let client_key = KeyPair::generate().expect("key");
    let client_cert = CertificateParams::new(vec!["client".into()])
        .expect("params")
        .signed_by(&client_key, &ca_cert, &ca_key)
        .expect("client");
    Pki {
        server_cert,
        server_key,
        ca_cert,
        client_cert,
        client_key,
    }
}

fn connector(p: &Pki, client_auth: bool) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(p.server_cert.der().clone()).expect("root");
    let b = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots);
    let cfg = if client_auth {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(p.client_key.serialize_der()));
        b.with_client_auth_cert(
            vec![CertificateDer::from(p.client_cert.der().to_vec())],
            key,
        )
        .expect("client auth")
    } else {
        b.with_no_client_auth()
    };
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

async fn https_deliver(
    addr: std::net::SocketAddr,
    c: &tokio_rustls::TlsConnector,
    nonce: &str,
) -> std::io::Result<Answer> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let mut tls = c
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await?;
    let s = signed("https://localhost/hooks/voice", nonce);
    tls.write_all(&raw_request(&s, "/hooks/voice", "localhost", &[]))
        .await?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), tls.read_to_end(&mut buf))
        .await
        .map_err(std::io::Error::other)??;
    if buf.is_empty() {
        return Err(std::io::Error::other("no answer"));
    }
    Ok(parse(&buf))
}

async fn start_with(p: &Pki, mtls: bool) -> (Running, Upstream) {
    let up = upstream(Behaviour::Answer(200)).await;
    let ca = p.ca_cert.pem();
    let acceptor = tollgate_gateway::tls::acceptor_from_pem(
        p.server_cert.pem().as_bytes(),
        p.server_key.serialize_pem().as_bytes(),
        mtls.then_some(ca.as_bytes()),
    )
    .expect("acceptor");
    let gw = start_tls(
        config(&config_text(up.addr, "", "")),
        memory(),
        Some(acceptor),
    )
    .await;
    (gw, up)
}

#[tokio::test]
async fn https_request_is_verified_against_the_https_url() {
    let p = pki();
    let (gw, up) = start_with(&p, false).await;
    let a = https_deliver(gw.addr, &connector(&p, false), "msg_tls")
        .await
        .expect("https");
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(up.seen()[0].headers["x-forwarded-proto"], "https");
}

/// A TLS 1.1 ClientHello (no supported_versions extension) must get a fatal alert, never a ServerHello.
#[tokio::test]
async fn tls_1_1_handshake_is_refused() {
    let p = pki();
    let (gw, _up) = start_with(&p, false).await;
    let mut hello = vec![0x03, 0x02]; // client_version TLS 1.1
    hello.extend_from_slice(&[7u8; 32]); // random
    hello.push(0); // session id
    hello.extend_from_slice(&[0x00, 0x04, 0xc0, 0x13, 0x00, 0x2f]); // ECDHE-RSA-AES128-SHA, RSA-AES128-SHA
    hello.extend_from_slice(&[0x01, 0x00]); // null compression
    let mut hs = vec![0x01, 0x00, (hello.len() >> 8) as u8, hello.len() as u8];
    hs.extend_from_slice(&hello);
    let mut record = vec![0x16, 0x03, 0x02, (hs.len() >> 8) as u8, hs.len() as u8];
    record.extend_from_slice(&hs);
    let mut s = tokio::net::TcpStream::connect(gw.addr)
        .await
        .expect("connect");
    s.write_all(&record).await.expect("write");
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut buf))
        .await
        .expect("server must answer");
    assert!(buf.len() >= 7, "expected an alert, got {buf:?}");
    assert_eq!(buf[0], 0x15, "alert record, not a ServerHello: {buf:?}");
    assert_eq!(buf[5], 2, "fatal alert: {buf:?}");
    // rustls answers handshake_failure (40) or protocol_version (70): either way no TLS 1.1 session.
    assert!(matches!(buf[6], 40 | 70), "handshake refused: {buf:?}");
}

#[tokio::test]
async fn mtls_refuses_clients_without_a_certificate() {
    let p = pki();
    let (gw, up) = start_with(&p, true).await;
    let r = https_deliver(gw.addr, &connector(&p, false), "msg_nocert").await;
    assert!(
        r.is_err(),
        "a client without a certificate must not get an answer: {r:?}"
    );
    let a = https_deliver(gw.addr, &connector(&p, true), "msg_cert")
        .await
        .expect("with a client certificate");
    assert_eq!(a.status, 200);
    assert_eq!(up.seen().len(), 1);
}
