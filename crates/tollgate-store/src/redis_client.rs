//! How the Redis backends reach Redis: one node (`redis://`, or `rediss://` over TLS) or a Redis
//! Cluster found from seed nodes, with TLS trusting the system's roots or a private CA, and
//! optionally presenting a client certificate. The replay store ([`RedisStore`](crate::RedisStore))
//! and the queue ([`RedisQueue`](crate::RedisQueue)) both take a [`RedisTarget`] and talk through
//! the same connection type, so either runs on a single node or a cluster unchanged.
//!
//! A cluster connection routes each command by its key's slot, follows `MOVED`/`ASK` redirects
//! and refreshes its slot map after a failover or a resharding; the backends keep every script
//! and pipeline to keys of one slot, which is what makes that routing possible. TLS is rustls
//! with the ring provider, as for the public listener; certificate checks cannot be turned off
//! (a `#insecure` URL is refused).

use std::sync::Arc;

use ::redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use ::redis::cluster::{ClusterClient, ClusterClientBuilder};
use ::redis::cluster_async::ClusterConnection;
use ::redis::{
    Cmd, ConnectionAddr, ConnectionInfo, ErrorKind, IntoConnectionInfo, Pipeline, RedisFuture,
    RedisResult, ToRedisArgs, Value,
};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::redis::{bounded, RedisError, RedisOptions};
use crate::StoreError;

/// Attempts of one cluster command beyond the first (a redirect after a failover or a
/// resharding counts as one); the operation timeout bounds them all anyway.
const CLUSTER_RETRIES: u32 = 3;

/// Bounds of the wait between those attempts, in ms (the client's default starts at 1.28 s,
/// longer than a whole operation may take).
const CLUSTER_RETRY_WAIT_MS: (u64, u64) = (10, 100);

/// TLS material for `rediss://` beyond the system's trust store, all PEM.
#[derive(Clone, Default)]
pub struct RedisTls {
    /// CA certificates to trust instead of the system's roots (a private CA).
    pub ca: Option<Vec<u8>>,
    /// A client certificate chain and its private key, for a server that requires client
    /// certificates (`tls-auth-clients yes`).
    pub client: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for RedisTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The client key is a secret.
        f.debug_struct("RedisTls")
            .field("ca", &self.ca.is_some())
            .field("client_certificate", &self.client.is_some())
            .finish()
    }
}

/// Where Redis is and how to reach it: one node or a cluster, with or without TLS. Built once
/// from the configuration; URL and TLS mistakes are found here, not at the first request.
#[derive(Clone)]
pub struct RedisTarget {
    nodes: Vec<ConnectionInfo>,
    cluster: bool,
    tls: Option<::redis::TlsCertificates>,
}

impl std::fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // ConnectionInfo holds the password: show the addresses only.
        let nodes: Vec<String> = self.nodes.iter().map(|n| n.addr.to_string()).collect();
        f.debug_struct("RedisTarget")
            .field("nodes", &nodes)
            .field("cluster", &self.cluster)
            .field("tls", &self.is_tls())
            .finish()
    }
}

fn invalid(what: impl Into<String>) -> StoreError {
    StoreError::Unavailable(Box::new(RedisError::Config(what.into())))
}

fn parse(url: &str) -> Result<ConnectionInfo, StoreError> {
    let info = url
        .into_connection_info()
        .map_err(|e| StoreError::Unavailable(Box::new(RedisError::Url(e))))?;
    match &info.addr {
        ConnectionAddr::TcpTls { insecure: true, .. } => Err(invalid(
            "the URL turns off certificate checks (#insecure), which tollgate refuses",
        )),
        ConnectionAddr::Unix(_) => Err(invalid("a Unix socket is not a network address")),
        _ => Ok(info),
    }
}

impl RedisTarget {
    /// One node: `redis://[user:password@]host:port/db` or `rediss://…` (TLS, trusting the
    /// system's roots unless [`with_tls`](Self::with_tls) names a CA).
    pub fn node(url: &str) -> Result<Self, StoreError> {
        Ok(Self {
            nodes: vec![parse(url)?],
            cluster: false,
            tls: None,
        })
    }

    /// A Redis Cluster, found through the node at `url` and the further seed nodes `more`
    /// (`(host, port)`), which are reached with `url`'s scheme, user and password. The client
    /// learns the other nodes from the cluster itself; more seeds only help when `url`'s node is
    /// down at start. A cluster has one database: a `/db` other than 0 is refused.
    pub fn cluster(url: &str, more: &[(String, u16)]) -> Result<Self, StoreError> {
        let first = parse(url)?;
        if first.redis.db != 0 {
            return Err(invalid("Redis Cluster has only database 0"));
        }
        let mut nodes = vec![first.clone()];
        for (host, port) in more {
            let mut node = first.clone();
            node.addr = match first.addr.clone() {
                ConnectionAddr::TcpTls {
                    insecure,
                    tls_params,
                    ..
                } => ConnectionAddr::TcpTls {
                    host: host.clone(),
                    port: *port,
                    insecure,
                    tls_params,
                },
                _ => ConnectionAddr::Tcp(host.clone(), *port),
            };
            nodes.push(node);
        }
        Ok(Self {
            nodes,
            cluster: true,
            tls: None,
        })
    }

    /// The same target with a private CA and/or a client certificate; only for `rediss://`.
    /// Each must parse as PEM (a CA file with no certificate would trust nothing, and only show
    /// as refused connections).
    pub fn with_tls(mut self, tls: RedisTls) -> Result<Self, StoreError> {
        if !self.is_tls() {
            return Err(invalid(
                "TLS certificates need a rediss:// URL; this one is redis:// (no TLS)",
            ));
        }
        if let Some(ca) = &tls.ca {
            certificates(ca, "CA")?;
        }
        if let Some((cert, key)) = &tls.client {
            certificates(cert, "client certificate")?;
            PrivateKeyDer::from_pem_slice(key).map_err(|e| {
                invalid(format!(
                    "the client key is not a PEM private key ({})",
                    pem_error(&e)
                ))
            })?;
        }
        let certs = ::redis::TlsCertificates {
            client_tls: tls
                .client
                .map(|(client_cert, client_key)| ::redis::ClientTlsConfig {
                    client_cert,
                    client_key,
                }),
            root_cert: tls.ca,
        };
        self.tls = Some(certs);
        Ok(self)
    }

    /// Whether this is a cluster.
    pub fn is_cluster(&self) -> bool {
        self.cluster
    }

    /// Whether the connection is TLS (`rediss://`).
    pub fn is_tls(&self) -> bool {
        self.nodes
            .first()
            .is_some_and(|n| matches!(n.addr, ConnectionAddr::TcpTls { .. }))
    }

    /// A client for this target with `options`' timeouts: checks the TLS material, connects to
    /// nothing yet.
    pub(crate) fn client(&self, options: &RedisOptions) -> Result<Client, StoreError> {
        if self.is_tls() {
            use_ring_for_tls();
        }
        let built = |e: ::redis::RedisError| StoreError::Unavailable(Box::new(RedisError::Url(e)));
        if self.cluster {
            let (min_wait, max_wait) = CLUSTER_RETRY_WAIT_MS;
            let mut builder = ClusterClientBuilder::new(self.nodes.clone())
                .connection_timeout(options.connect_timeout)
                .response_timeout(options.response_timeout)
                .retries(CLUSTER_RETRIES)
                .min_retry_wait(min_wait)
                .max_retry_wait(max_wait);
            if let Some(certs) = &self.tls {
                builder = builder.certs(certs.clone());
            }
            return Ok(Client::Cluster(builder.build().map_err(built)?));
        }
        let node = self
            .nodes
            .first()
            .cloned()
            .ok_or_else(|| invalid("no node"))?;
        let client = match &self.tls {
            Some(certs) => ::redis::Client::build_with_tls(node, certs.clone()),
            None => ::redis::Client::open(node),
        };
        Ok(Client::Node(client.map_err(built)?))
    }
}

/// Checks that `pem` holds at least one certificate and nothing unreadable.
fn certificates(pem: &[u8], what: &str) -> Result<(), StoreError> {
    let mut n = 0;
    for cert in CertificateDer::pem_slice_iter(pem) {
        cert.map_err(|e| {
            invalid(format!(
                "the {what} file does not parse ({})",
                pem_error(&e)
            ))
        })?;
        n += 1;
    }
    if n == 0 {
        return Err(invalid(format!("the {what} file holds no PEM certificate")));
    }
    Ok(())
}

/// What went wrong, without the bytes: the key's content never reaches an error message.
fn pem_error(e: &rustls::pki_types::pem::Error) -> &'static str {
    use rustls::pki_types::pem::Error;
    match e {
        Error::NoItemsFound => "no PEM item of that kind",
        Error::MissingSectionEnd { .. } | Error::IllegalSectionStart { .. } => {
            "a broken PEM section"
        }
        Error::Base64Decode(_) => "bad base64",
        _ => "unreadable",
    }
}

/// The redis client builds its rustls configuration with the process's default provider, which
/// rustls only picks by itself when exactly one provider is compiled in; naming ring keeps a
/// build that links another provider as well from panicking at the first TLS connection.
fn use_ring_for_tls() {
    // An error means a provider is installed already, which is as good.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A client that has not connected yet.
#[derive(Clone)]
pub(crate) enum Client {
    Node(::redis::Client),
    Cluster(ClusterClient),
}

impl Client {
    /// Connects, within the operation timeout. A node connection then reconnects by itself
    /// with no backoff inside a reconnection, so with Redis down every operation fails at once
    /// (connection refused) instead of waiting out a schedule that starts at a second, and
    /// traffic paces the retries; a cluster connection reconnects to the nodes it knows, and to
    /// the seeds when it has lost them all.
    pub(crate) async fn connect(&self, options: &RedisOptions) -> Result<Connection, StoreError> {
        match self {
            Client::Node(client) => {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(options.connect_timeout)
                    .set_response_timeout(options.response_timeout)
                    .set_number_of_retries(0);
                let conn = bounded(
                    "connect",
                    options.operation_timeout,
                    ConnectionManager::new_with_config(client.clone(), config),
                )
                .await?;
                Ok(Connection::Node(conn))
            }
            Client::Cluster(client) => {
                let conn = bounded(
                    "connect",
                    options.operation_timeout,
                    client.get_async_connection(),
                )
                .await?;
                Ok(Connection::Cluster(conn))
            }
        }
    }
}

/// A live connection to a node or a cluster; cheap to clone (clones share it).
#[derive(Clone)]
pub(crate) enum Connection {
    Node(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Node(c) => c.req_packed_command(cmd),
            Connection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Node(c) => c.req_packed_commands(cmd, offset, count),
            Connection::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Node(c) => c.get_db(),
            Connection::Cluster(c) => c.get_db(),
        }
    }
}

/// A Lua script, run by `EVALSHA` and, on a node that does not have it cached (`NOSCRIPT`: a
/// fresh or restarted node, a replica just promoted), by `EVAL`, which caches it there. Unlike
/// `SCRIPT LOAD`, which a cluster client sends to every node, `EVAL` goes to the key's node
/// only, so a script still runs while some other node is down.
#[derive(Debug)]
pub(crate) struct Lua {
    code: Arc<str>,
    sha: String,
}

impl Lua {
    pub(crate) fn new(code: &str) -> Self {
        Self {
            code: code.into(),
            sha: ::redis::Script::new(code).get_hash().to_owned(),
        }
    }

    /// A call to fill with keys and arguments.
    pub(crate) fn call(&self) -> LuaCall<'_> {
        LuaCall {
            lua: self,
            keys: Vec::new(),
            args: Vec::new(),
        }
    }
}

/// One call of a [`Lua`] script.
pub(crate) struct LuaCall<'a> {
    lua: &'a Lua,
    keys: Vec<Vec<u8>>,
    args: Vec<Vec<u8>>,
}

impl LuaCall<'_> {
    /// Adds `KEYS[n]`: the keys route the call to their slot's node.
    pub(crate) fn key(&mut self, key: impl ToRedisArgs) -> &mut Self {
        key.write_redis_args(&mut self.keys);
        self
    }

    /// Adds `ARGV[n]`.
    pub(crate) fn arg(&mut self, arg: impl ToRedisArgs) -> &mut Self {
        arg.write_redis_args(&mut self.args);
        self
    }

    fn command(&self, name: &str, script: &str) -> Cmd {
        let mut cmd = ::redis::cmd(name);
        cmd.arg(script).arg(self.keys.len());
        for k in self.keys.iter().chain(&self.args) {
            cmd.arg(k.as_slice());
        }
        cmd
    }

    /// Runs the script on `conn`.
    pub(crate) async fn invoke(&self, conn: &mut Connection) -> RedisResult<Value> {
        match self
            .command("EVALSHA", &self.lua.sha)
            .query_async(conn)
            .await
        {
            Err(e) if e.kind() == ErrorKind::NoScriptError => {
                self.command("EVAL", &self.lua.code).query_async(conn).await
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn config_error(r: Result<RedisTarget, StoreError>) -> String {
        match r {
            Err(StoreError::Unavailable(e)) => e.to_string(),
            other => panic!("expected a settings error, got {other:?}"),
        }
    }

    #[test]
    fn tls_material_needs_a_rediss_url() {
        let err = config_error(
            RedisTarget::node("redis://h:6379/").and_then(|t| t.with_tls(RedisTls::default())),
        );
        assert!(err.contains("rediss://"), "{err}");
        assert!(RedisTarget::node("rediss://h:6379/")
            .and_then(|t| t.with_tls(RedisTls::default()))
            .is_ok_and(|t| t.is_tls()));
    }

    #[test]
    fn tls_material_must_parse_and_errors_never_quote_the_key() {
        let pem = |label: &str, body: &str| {
            format!("-----BEGIN {label}-----\n{body}\n-----END {label}-----\n").into_bytes()
        };
        let cert = pem("CERTIFICATE", "MIIBAA==");
        let tls = |ca: Option<Vec<u8>>, client: Option<(Vec<u8>, Vec<u8>)>| {
            RedisTarget::node("rediss://h:6379/").and_then(|t| t.with_tls(RedisTls { ca, client }))
        };
        let err = config_error(tls(Some(b"not pem at all".to_vec()), None));
        assert!(err.contains("CA file holds no PEM certificate"), "{err}");
        let err = config_error(tls(Some(pem("CERTIFICATE", "!!!")), None));
        assert!(err.contains("CA file does not parse"), "{err}");
        let secret_key = b"SECRET-KEY-MATERIAL".to_vec();
        let err = config_error(tls(None, Some((cert.clone(), secret_key))));
        assert!(err.contains("client key is not a PEM private key"), "{err}");
        assert!(!err.contains("SECRET"), "{err}");
        let err = config_error(tls(None, Some((b"".to_vec(), b"".to_vec()))));
        assert!(
            err.contains("client certificate file holds no PEM"),
            "{err}"
        );
        assert!(tls(
            Some(cert.clone()),
            Some((cert, pem("PRIVATE KEY", "MIIBAA==")))
        )
        .is_ok());
    }

    #[test]
    fn certificate_checks_cannot_be_turned_off() {
        let err = config_error(RedisTarget::node("rediss://h:6379/#insecure"));
        assert!(err.contains("#insecure"), "{err}");
        let err = config_error(RedisTarget::cluster("rediss://h:6379/#insecure", &[]));
        assert!(err.contains("#insecure"), "{err}");
    }

    #[test]
    fn a_cluster_has_only_database_zero() {
        let err = config_error(RedisTarget::cluster("redis://h:7000/2", &[]));
        assert!(err.contains("database 0"), "{err}");
        assert!(RedisTarget::cluster("redis://h:7000/0", &[]).is_ok());
    }

    #[test]
    fn cluster_seeds_share_the_url_scheme_and_credentials() {
        let t = RedisTarget::cluster(
            "rediss://app:pw@h1:7000/",
            &[("h2".into(), 7001), ("::1".into(), 7002)],
        )
        .unwrap();
        assert!(t.is_cluster() && t.is_tls());
        assert_eq!(t.nodes.len(), 3);
        for (node, (host, port)) in t
            .nodes
            .iter()
            .zip([("h1", 7000), ("h2", 7001), ("::1", 7002)])
        {
            assert!(
                matches!(&node.addr, ConnectionAddr::TcpTls { host: h, port: p, insecure: false, .. }
                    if h == host && *p == port),
                "{:?}",
                node.addr
            );
            assert_eq!(node.redis.username.as_deref(), Some("app"));
            assert_eq!(node.redis.password.as_deref(), Some("pw"));
        }
    }

    #[test]
    fn debug_shows_addresses_never_the_password_or_key() {
        let t = RedisTarget::node("rediss://:hunter2@h:6379/").unwrap();
        let shown = format!("{t:?}");
        assert!(shown.contains("h:6379"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
        let tls = format!(
            "{:?}",
            RedisTls {
                ca: None,
                client: Some((b"cert".to_vec(), b"PRIVATE-KEY-BYTES".to_vec())),
            }
        );
        assert!(!tls.contains("PRIVATE"), "{tls}");
    }
}
