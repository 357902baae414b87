//! TLS for the public listener: rustls with the ring provider, TLS 1.2 and 1.3 only, HTTP/2 and
//! HTTP/1.1 by ALPN, and client certificates required when a `client_ca` is configured (mTLS).

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;

/// TLS set-up failed.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The PEM holds nothing usable.
    #[error("{0}")]
    Pem(String),
    /// rustls refused the material.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client CA cannot verify anything.
    #[error("client CA: {0}")]
    ClientCa(String),
    /// The private key file can be read by others than its owner.
    #[error("{0}: the private key is readable by group or others; chmod 600 it")]
    KeyReadable(String),
}

/// An acceptor from the config's PEM files.
pub fn acceptor(cfg: &tollgate_config::Tls) -> Result<TlsAcceptor, TlsError> {
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|source| TlsError::Read {
            path: p.display().to_string(),
            source,
        })
    };
    let ca = cfg.client_ca.as_deref().map(read).transpose()?;
    let meta = std::fs::metadata(&cfg.key).map_err(|source| TlsError::Read {
        path: cfg.key.display().to_string(),
        source,
    })?;
    if tollgate_config::readable_by_others(&meta).is_some() {
        return Err(TlsError::KeyReadable(cfg.key.display().to_string()));
    }
    acceptor_from_pem(&read(&cfg.cert)?, &read(&cfg.key)?, ca.as_deref())
}

/// An acceptor from PEM bytes (tests use this with generated certificates).
pub fn acceptor_from_pem(
    cert: &[u8],
    key: &[u8],
    client_ca: Option<&[u8]>,
) -> Result<TlsAcceptor, TlsError> {
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut &cert[..])
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem(format!("certificate: {e}")))?;
    if certs.is_empty() {
        return Err(TlsError::Pem("no certificate in the cert file".into()));
    }
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut &key[..])
        .map_err(|e| TlsError::Pem(format!("private key: {e}")))?
        .ok_or_else(|| TlsError::Pem("no private key in the key file".into()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(pem) => {
            let mut roots = RootCertStore::empty();
            for c in rustls_pemfile::certs(&mut &pem[..]) {
                let c = c.map_err(|e| TlsError::ClientCa(e.to_string()))?;
                roots
                    .add(c)
                    .map_err(|e| TlsError::ClientCa(e.to_string()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError::ClientCa(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

#[cfg(all(test, unix))]
mod key_file_tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_private_key_others_can_read_is_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("cert");
        let (cert_path, key_path) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        std::fs::write(&cert_path, cert.cert.pem()).expect("write");
        std::fs::write(&key_path, cert.key_pair.serialize_pem()).expect("write");
        let cfg = tollgate_config::Tls {
            cert: cert_path,
            key: key_path.clone(),
            client_ca: None,
        };
        std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let Err(err) = acceptor(&cfg) else {
            panic!("a group-readable key must be refused")
        };
        assert!(err.to_string().contains("chmod 600"), "{err}");
        std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        acceptor(&cfg).expect("owner-only key");
    }
}
