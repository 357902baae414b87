//! Test support: private `redis-server` processes on free loopback ports, each in its own
//! temporary directory, killed when dropped. For this crate's tests and benches and for other
//! crates' integration tests (behind the `conformance` feature); never the machine's shared Redis.
//!
//! - [`RedisServer`]: one node, optionally persistent ([`Persistence`]) and optionally with a TLS
//!   port ([`RedisServer::start_tls`]) whose certificates come from a [`TestPki`];
//! - [`RedisCluster`]: several nodes started with `--cluster-enabled yes` and formed into one
//!   Redis Cluster (slots split between the primaries, optional replicas), with the same
//!   commands `redis-cli --cluster create` sends, so no `redis-cli` is needed.
//!
//! A missing `redis-server` is an error whose message says to install it, so a test that needs
//! Redis fails instead of passing by skipping. The binary is `$TOLLGATE_REDIS_SERVER` if set,
//! else `/usr/bin/redis-server` (Debian's package), else `redis-server` on the `PATH`.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to answer its first `PING`.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// How long a new cluster may take to agree on its slots and replicas. A primary waits 2 s after
/// start before it reports the cluster ok, so this is mostly that wait.
const CLUSTER_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether the server keeps its data across a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persistence {
    /// `--save "" --appendonly no`: everything is lost when the server stops.
    None,
    /// `--appendonly yes --appendfsync always`: every write is in the append-only file before
    /// the client hears of it, so it survives `kill -9`.
    AppendFsyncAlways,
}

/// A running private `redis-server`.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    binary: PathBuf,
    persistence: Persistence,
    tls: Option<TlsPort>,
    cluster: Option<ClusterPort>,
    dir: tempfile::TempDir,
}

/// The TLS listener of a server started by [`RedisServer::start_tls`].
#[derive(Debug, Clone)]
struct TlsPort {
    port: u16,
    files: ServerTlsFiles,
}

/// A cluster node's bus port and node timeout.
#[derive(Debug, Clone, Copy)]
struct ClusterPort {
    bus: u16,
    node_timeout: Duration,
}

/// Why a private server could not be started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// No `redis-server` binary.
    #[error(
        "redis-server not found (looked for {0}): install it (Debian: apt-get install redis-server) \
         or set TOLLGATE_REDIS_SERVER to its path; the Redis tests cannot run without it"
    )]
    Missing(String),
    /// Starting or talking to it failed.
    #[error("redis-server: {what}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// It did not answer `PING` in time; its log is attached.
    #[error("redis-server on port {port} did not become ready: {log}")]
    NotReady {
        /// The port.
        port: u16,
        /// The end of its log.
        log: String,
    },
    /// A cluster command was refused, or the cluster did not form in time.
    #[error("redis cluster: {0}")]
    Cluster(String),
    /// Generating the test certificates failed.
    #[error("test certificates: {0}")]
    Pki(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ServerError {
    let what = what.into();
    move |source| ServerError::Io { what, source }
}

/// The `redis-server` binary to run, or why there is none.
pub fn find_binary() -> Result<PathBuf, ServerError> {
    if let Some(p) = std::env::var_os("TOLLGATE_REDIS_SERVER") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(ServerError::Missing(p.display().to_string()))
        };
    }
    let debian = Path::new("/usr/bin/redis-server");
    if debian.is_file() {
        return Ok(debian.to_path_buf());
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("redis-server"))
        .find(|p| p.is_file())
        .ok_or_else(|| ServerError::Missing("/usr/bin/redis-server and $PATH".into()))
}

impl RedisServer {
    /// Starts a server without persistence.
    pub fn start() -> Result<Self, ServerError> {
        Self::start_with(Persistence::None)
    }

    /// Starts a server with the given persistence.
    pub fn start_with(persistence: Persistence) -> Result<Self, ServerError> {
        Self::start_binary(find_binary()?, persistence)
    }

    /// Starts `binary` as the server (for testing this module's own failure paths).
    pub fn start_binary(binary: PathBuf, persistence: Persistence) -> Result<Self, ServerError> {
        Self::launch(binary, persistence, None, None)
    }

    /// Starts a server without persistence that also listens for TLS on
    /// [`tls_port`](Self::tls_port) with `pki`'s server certificate; with `require_client_cert`
    /// it refuses TLS clients without a certificate signed by `pki`'s CA
    /// (`tls-auth-clients yes`). The plain port stays open on loopback for the harness's own
    /// readiness checks and [`command`](Self::command); the code under test uses
    /// [`tls_url`](Self::tls_url).
    pub fn start_tls(pki: &TestPki, require_client_cert: bool) -> Result<Self, ServerError> {
        let files = pki.server_files(require_client_cert);
        let tls = TlsPort {
            port: free_port()?,
            files,
        };
        Self::launch(find_binary()?, Persistence::None, Some(tls), None)
    }

    fn launch(
        binary: PathBuf,
        persistence: Persistence,
        tls: Option<TlsPort>,
        cluster: Option<ClusterPort>,
    ) -> Result<Self, ServerError> {
        if !binary.is_file() {
            return Err(ServerError::Missing(binary.display().to_string()));
        }
        let dir = tempfile::tempdir().map_err(io("create a temporary directory"))?;
        let mut server = Self {
            child: None,
            port: free_port()?,
            binary,
            persistence,
            tls,
            cluster,
            dir,
        };
        // Ports are found by binding port 0 and letting go of it, so another process may take
        // one before the server binds: a few attempts, each on fresh ports.
        let mut attempts = 0;
        loop {
            match server.spawn() {
                Ok(()) => return Ok(server),
                Err(e) if attempts >= 4 => return Err(e),
                Err(_) => {
                    server.kill();
                    attempts += 1;
                    server.port = free_port()?;
                    if let Some(tls) = server.tls.as_mut() {
                        tls.port = free_port()?;
                    }
                    if let Some(cluster) = server.cluster.as_mut() {
                        cluster.bus = free_port()?;
                    }
                }
            }
        }
    }

    /// `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The TLS port, for a server started by [`start_tls`](Self::start_tls).
    pub fn tls_port(&self) -> Option<u16> {
        self.tls.as_ref().map(|t| t.port)
    }

    /// `rediss://127.0.0.1:<tls port>/` (the certificate names 127.0.0.1), for a server started
    /// by [`start_tls`](Self::start_tls).
    pub fn tls_url(&self) -> Option<String> {
        self.tls_port().map(|p| format!("rediss://127.0.0.1:{p}/"))
    }

    /// A client target for the TLS port trusting `pki`'s CA, presenting its client certificate
    /// if `client_cert`.
    pub fn tls_target(
        &self,
        pki: &TestPki,
        client_cert: bool,
    ) -> Result<crate::RedisTarget, ServerError> {
        let url = self
            .tls_url()
            .ok_or_else(|| ServerError::Pki("the server has no TLS port".into()))?;
        let tls = pki.redis_tls(client_cert)?;
        crate::RedisTarget::node(&url)
            .and_then(|t| t.with_tls(tls))
            .map_err(|e| ServerError::Pki(e.to_string()))
    }

    /// The server's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the server at once (SIGKILL: no shutdown save, connections reset) and waits for it
    /// to exit. Idempotent.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // An error means it has already exited; either way it is gone once `wait` returns.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same ports with the same directory (and so, with
    /// persistence, the same data; a cluster node keeps its identity and slots). Kills it first
    /// if it still runs.
    pub fn restart(&mut self) -> Result<(), ServerError> {
        self.kill();
        // The old socket may linger briefly; redis-server retries nothing, so neither do we
        // beyond a bounded number of attempts.
        let mut last = None;
        for _ in 0..50 {
            match self.spawn() {
                Ok(()) => return Ok(()),
                Err(e) => {
                    self.kill();
                    last = Some(e);
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
        Err(last.unwrap_or(ServerError::NotReady {
            port: self.port,
            log: "no attempt made".into(),
        }))
    }

    /// Sends one inline command on the plain port and returns the raw reply (for tests that
    /// inspect keys, and for forming a cluster).
    pub fn command(&self, line: &str) -> Result<String, ServerError> {
        let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port))
            .map_err(io("connect to redis-server"))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))
            .map_err(io("set a read timeout"))?;
        s.write_all(format!("{line}\r\n").as_bytes())
            .map_err(io("send a command"))?;
        let mut buf = [0u8; 16384];
        let n = s.read(&mut buf).map_err(io("read a reply"))?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    /// Sends `line` and fails unless the reply is `+OK`.
    fn ok(&self, line: &str) -> Result<(), ServerError> {
        let reply = self.command(line)?;
        if reply.starts_with("+OK") {
            Ok(())
        } else {
            Err(ServerError::Cluster(format!(
                "`{line}` on port {} answered {}",
                self.port,
                reply.trim_end()
            )))
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    fn spawn(&mut self) -> Result<(), ServerError> {
        let port = self.port.to_string();
        let dir = self.dir.path().to_string_lossy().into_owned();
        let log = self.log_path().to_string_lossy().into_owned();
        let mut cmd = Command::new(&self.binary);
        cmd.args(["--port", &port, "--bind", "127.0.0.1", "--dir", &dir])
            .args(["--logfile", &log, "--daemonize", "no", "--save", ""]);
        match self.persistence {
            Persistence::None => cmd.args(["--appendonly", "no"]),
            Persistence::AppendFsyncAlways => {
                cmd.args(["--appendonly", "yes", "--appendfsync", "always"])
            }
        };
        if let Some(tls) = &self.tls {
            let f = &tls.files;
            cmd.args(["--tls-port", &tls.port.to_string()])
                .arg("--tls-cert-file")
                .arg(&f.cert)
                .arg("--tls-key-file")
                .arg(&f.key)
                .arg("--tls-ca-cert-file")
                .arg(&f.ca)
                .args([
                    "--tls-auth-clients",
                    if f.require_client_cert { "yes" } else { "no" },
                ]);
        }
        if let Some(cluster) = &self.cluster {
            if self.tls.is_some() {
                cmd.args(["--tls-cluster", "yes", "--tls-replication", "yes"]);
            }
            cmd.args([
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
            ])
            .args(["--cluster-port", &cluster.bus.to_string()])
            .args([
                "--cluster-node-timeout",
                &cluster.node_timeout.as_millis().to_string(),
            ]);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(io(format!("start {}", self.binary.display())))?;
        self.child = Some(child);
        self.wait_ready()
    }

    /// Polls with `PING` until `+PONG`, the process exits, or [`START_TIMEOUT`] passes.
    fn wait_ready(&mut self) -> Result<(), ServerError> {
        let started = Instant::now();
        while started.elapsed() < START_TIMEOUT {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(_status)) = child.try_wait() {
                    break;
                }
            }
            if self
                .command("PING")
                .is_ok_and(|reply| reply.starts_with("+PONG"))
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(5).collect();
        Err(ServerError::NotReady {
            port: self.port,
            log: tail.into_iter().rev().collect::<Vec<_>>().join(" | "),
        })
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Which private Redis [`private_target`] starts.
#[derive(Debug, Clone, Copy)]
pub enum Private {
    /// One redis-server over TLS, trusted through a fresh test CA (no client certificate asked).
    Tls,
    /// A three-primary Redis Cluster.
    Cluster,
}

/// Starts a private Redis of `kind` and gives a client target for it, plus what must stay alive
/// while the target is used (the servers, and the certificates a TLS server reads).
pub fn private_target(
    kind: Private,
) -> Result<(crate::RedisTarget, Box<dyn std::any::Any + Send + Sync>), ServerError> {
    Ok(match kind {
        Private::Tls => {
            let pki = TestPki::generate()?;
            let server = RedisServer::start_tls(&pki, false)?;
            (server.tls_target(&pki, false)?, Box::new((server, pki)))
        }
        Private::Cluster => {
            let cluster = RedisCluster::start()?;
            (cluster.target()?, Box::new(cluster))
        }
    })
}

/// Store options for tests that do not test timeouts: 5 s per connection attempt, reply and
/// operation instead of 0.5/0.8/1 s, so a TLS handshake or a cluster's slot discovery on a
/// loaded machine does not fail a test about something else.
pub fn patient_options(clock: crate::SharedClock) -> crate::RedisOptions {
    let mut options = crate::RedisOptions::new().with_clock(clock);
    options.connect_timeout = Duration::from_secs(5);
    options.response_timeout = Duration::from_secs(5);
    options.operation_timeout = Duration::from_secs(5);
    options
}

fn free_port() -> Result<u16, ServerError> {
    let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .map_err(io("find a free port"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(io("read the bound port"))
}

/// A private Redis Cluster on loopback: `primaries` primaries sharing the 16384 slots evenly,
/// each with `replicas` replicas. Every node is a [`RedisServer`]; dropping the cluster kills
/// them all.
#[derive(Debug)]
pub struct RedisCluster {
    primaries: Vec<RedisServer>,
    replicas: Vec<RedisServer>,
    replicas_per_primary: usize,
    /// For a TLS cluster, what a client needs to trust it.
    client_tls: Option<crate::RedisTls>,
}

/// How a [`RedisCluster`] is built.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Primaries, each owning an equal share of the slots (at least 1).
    pub primaries: usize,
    /// Replicas of each primary.
    pub replicas: usize,
    /// `cluster-node-timeout`: how long a node may be unreachable before the others fail it
    /// over. Short timeouts make failover tests quick, but a node stalled that long on a busy
    /// machine is failed over too.
    pub node_timeout: Duration,
}

impl Default for ClusterOptions {
    /// Three primaries, no replicas, a 5 s node timeout.
    fn default() -> Self {
        Self {
            primaries: 3,
            replicas: 0,
            node_timeout: Duration::from_secs(5),
        }
    }
}

impl RedisCluster {
    /// Starts the default cluster: three primaries without replicas.
    pub fn start() -> Result<Self, ServerError> {
        Self::start_with(&ClusterOptions::default())
    }

    /// Starts the nodes, assigns the slots, introduces the nodes to each other, attaches the
    /// replicas, and waits until every node reports the cluster ok and every replica is in sync.
    pub fn start_with(options: &ClusterOptions) -> Result<Self, ServerError> {
        Self::start_nodes(options, None)
    }

    /// [`start_with`](Self::start_with), every node also listening for TLS with `pki`'s server
    /// certificate, the cluster bus and replication over TLS too (`tls-cluster yes`,
    /// `tls-replication yes`). Clients are told the TLS ports; [`url`](Self::url),
    /// [`seeds`](Self::seeds) and [`target`](Self::target) name them.
    pub fn start_tls(options: &ClusterOptions, pki: &TestPki) -> Result<Self, ServerError> {
        Self::start_nodes(options, Some(pki))
    }

    fn start_nodes(options: &ClusterOptions, pki: Option<&TestPki>) -> Result<Self, ServerError> {
        if options.primaries == 0 {
            return Err(ServerError::Cluster("a cluster needs a primary".into()));
        }
        let binary = find_binary()?;
        let node = || {
            let bus = ClusterPort {
                bus: free_port()?,
                node_timeout: options.node_timeout,
            };
            let tls = match pki {
                Some(pki) => Some(TlsPort {
                    port: free_port()?,
                    files: pki.server_files(false),
                }),
                None => None,
            };
            RedisServer::launch(binary.clone(), Persistence::None, tls, Some(bus))
        };
        let primaries = (0..options.primaries)
            .map(|_| node())
            .collect::<Result<Vec<_>, _>>()?;
        let replicas = (0..options.primaries * options.replicas)
            .map(|_| node())
            .collect::<Result<Vec<_>, _>>()?;
        let cluster = Self {
            primaries,
            replicas,
            replicas_per_primary: options.replicas,
            client_tls: pki.map(|p| p.redis_tls(false)).transpose()?,
        };
        cluster.form()?;
        Ok(cluster)
    }

    fn form(&self) -> Result<(), ServerError> {
        const SLOTS: usize = 16384;
        let n = self.primaries.len();
        for (i, p) in self.primaries.iter().enumerate() {
            // Distinct epochs up front, so the nodes need not resolve a collision first.
            p.ok(&format!("CLUSTER SET-CONFIG-EPOCH {}", i + 1))?;
            let (from, to) = (i * SLOTS / n, (i + 1) * SLOTS / n - 1);
            p.ok(&format!("CLUSTER ADDSLOTSRANGE {from} {to}"))?;
        }
        let first = &self.primaries[0];
        for other in self.nodes().skip(1) {
            let bus = other.cluster.map_or(0, |c| c.bus);
            first.ok(&format!("CLUSTER MEET 127.0.0.1 {} {bus}", other.port))?;
        }
        for (i, r) in self.replicas.iter().enumerate() {
            let primary = &self.primaries[i / self.replicas_per_primary];
            let id = node_id(primary)?;
            // The replica must have learnt of its primary through gossip first.
            self.poll(&format!("replica on port {} to attach", r.port), || {
                Ok(r.command(&format!("CLUSTER REPLICATE {id}"))?
                    .starts_with("+OK"))
            })?;
        }
        let total = self.primaries.len() + self.replicas.len();
        self.poll("every node to report the cluster ok", || {
            for node in self.nodes() {
                let info = node.command("CLUSTER INFO")?;
                if !info.contains("cluster_state:ok")
                    || !info.contains(&format!("cluster_known_nodes:{total}\r"))
                {
                    return Ok(false);
                }
            }
            for r in &self.replicas {
                if !r
                    .command("INFO replication")?
                    .contains("master_link_status:up")
                {
                    return Ok(false);
                }
            }
            Ok(true)
        })
    }

    /// Polls `done` every 20 ms until it is true, bounded by [`CLUSTER_TIMEOUT`].
    fn poll(
        &self,
        what: &str,
        mut done: impl FnMut() -> Result<bool, ServerError>,
    ) -> Result<(), ServerError> {
        let started = Instant::now();
        let mut last = None;
        while started.elapsed() < CLUSTER_TIMEOUT {
            match done() {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => last = Some(e),
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(ServerError::Cluster(format!(
            "gave up waiting for {what} after {CLUSTER_TIMEOUT:?}{}",
            last.map(|e| format!(" (last error: {e})"))
                .unwrap_or_default()
        )))
    }

    /// Every node, primaries first.
    pub fn nodes(&self) -> impl Iterator<Item = &RedisServer> {
        self.primaries.iter().chain(&self.replicas)
    }

    /// The primaries, in slot order.
    pub fn primaries(&mut self) -> &mut [RedisServer] {
        &mut self.primaries
    }

    /// The replicas: those of primary `i` are `i * replicas ..`.
    pub fn replicas(&mut self) -> &mut [RedisServer] {
        &mut self.replicas
    }

    /// `redis://127.0.0.1:<port>/` of every node, primaries first.
    pub fn urls(&self) -> Vec<String> {
        self.nodes().map(RedisServer::url).collect()
    }

    /// The first primary's URL, the seed a client starts from (`rediss://` on its TLS port for
    /// a TLS cluster).
    pub fn url(&self) -> String {
        let first = &self.primaries[0];
        first.tls_url().unwrap_or_else(|| first.url())
    }

    /// A client target with every node as a seed, trusting the CA of a TLS cluster.
    pub fn target(&self) -> Result<crate::RedisTarget, ServerError> {
        let target = crate::RedisTarget::cluster(&self.url(), &self.seeds());
        match &self.client_tls {
            Some(tls) => target.and_then(|t| t.with_tls(tls.clone())),
            None => target,
        }
        .map_err(|e| ServerError::Cluster(e.to_string()))
    }

    /// `(host, port)` of every other node (the TLS port for a TLS cluster): further seeds, as
    /// `[state] cluster_nodes` lists them.
    pub fn seeds(&self) -> Vec<(String, u16)> {
        self.nodes()
            .skip(1)
            .map(|n| ("127.0.0.1".to_owned(), n.tls_port().unwrap_or(n.port)))
            .collect()
    }

    /// Polls (bounded) until every replica has received everything its primary has: after
    /// this, a failover loses nothing written before (replication is asynchronous).
    pub fn wait_replicated(&self) -> Result<(), ServerError> {
        let offset = |node: &RedisServer, field: &str| -> Result<u64, ServerError> {
            let info = node.command("INFO replication")?;
            info.lines()
                .find_map(|l| l.strip_prefix(field)?.trim().parse().ok())
                .ok_or_else(|| ServerError::Cluster(format!("no {field} in {info:?}")))
        };
        self.poll("the replicas to catch up", || {
            for (i, r) in self.replicas.iter().enumerate() {
                let p = &self.primaries[i / self.replicas_per_primary];
                if offset(r, "slave_repl_offset:")? < offset(p, "master_repl_offset:")? {
                    return Ok(false);
                }
            }
            Ok(true)
        })
    }

    /// Polls (bounded) until one of the replicas of primary `dead` (killed by the test) has
    /// been promoted and every running node reports the cluster ok again.
    pub fn wait_failover(&self, dead: usize) -> Result<(), ServerError> {
        let rpp = self.replicas_per_primary;
        let heirs = self
            .replicas
            .get(dead * rpp..(dead + 1) * rpp)
            .filter(|h| !h.is_empty())
            .ok_or_else(|| ServerError::Cluster(format!("primary {dead} has no replica")))?;
        self.poll("a replica to take over the failed primary", || {
            let mut promoted = false;
            for heir in heirs.iter().filter(|n| n.child.is_some()) {
                promoted |= heir.command("ROLE")?.contains("\r\nmaster\r\n");
            }
            if !promoted {
                return Ok(false);
            }
            for node in self.nodes().filter(|n| n.child.is_some()) {
                if !node.command("CLUSTER INFO")?.contains("cluster_state:ok") {
                    return Ok(false);
                }
            }
            Ok(true)
        })
    }
}

fn node_id(node: &RedisServer) -> Result<String, ServerError> {
    let reply = node.command("CLUSTER MYID")?;
    // A bulk string: `$40\r\n<id>\r\n`.
    reply
        .lines()
        .nth(1)
        .map(str::to_owned)
        .filter(|id| id.len() == 40)
        .ok_or_else(|| ServerError::Cluster(format!("CLUSTER MYID answered {reply:?}")))
}

/// A throwaway certificate authority, written as PEM files into its own temporary directory:
/// the CA, a server certificate for `127.0.0.1` and `localhost`, and a client certificate, all
/// signed by the CA. Two `TestPki`s have unrelated CAs, so one's CA refuses the other's server.
#[derive(Debug)]
pub struct TestPki {
    dir: tempfile::TempDir,
}

/// The files a TLS server needs.
#[derive(Debug, Clone)]
struct ServerTlsFiles {
    cert: PathBuf,
    key: PathBuf,
    ca: PathBuf,
    require_client_cert: bool,
}

impl TestPki {
    /// Generates the CA and the certificates.
    pub fn generate() -> Result<Self, ServerError> {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let pki = |e: rcgen::Error| ServerError::Pki(e.to_string());
        let dir = tempfile::tempdir().map_err(io("create a temporary directory"))?;
        let ca_key = KeyPair::generate().map_err(pki)?;
        let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(pki)?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "tollgate test CA");
        let ca = ca.self_signed(&ca_key).map_err(pki)?;
        let leaf = |names: Vec<String>| -> Result<(String, String), ServerError> {
            let key = KeyPair::generate().map_err(pki)?;
            let cert = CertificateParams::new(names)
                .map_err(pki)?
                .signed_by(&key, &ca, &ca_key)
                .map_err(pki)?;
            Ok((cert.pem(), key.serialize_pem()))
        };
        let (server_cert, server_key) = leaf(vec!["127.0.0.1".into(), "localhost".into()])?;
        let (client_cert, client_key) = leaf(vec!["tollgate-test-client".into()])?;
        let files = [
            ("ca.pem", ca.pem()),
            ("server.pem", server_cert),
            ("server.key", server_key),
            ("client.pem", client_cert),
            ("client.key", client_key),
        ];
        for (name, pem) in files {
            let path = dir.path().join(name);
            std::fs::write(&path, pem).map_err(io(format!("write {}", path.display())))?;
            // Owner-only, as tollgate demands of a key file and as a deployment would keep it.
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                    .map_err(io(format!("restrict {}", path.display())))?;
            }
        }
        Ok(Self { dir })
    }

    /// The CA certificate (PEM), to trust in the client.
    pub fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A client certificate (PEM) signed by the CA.
    pub fn client_cert_path(&self) -> PathBuf {
        self.dir.path().join("client.pem")
    }

    /// The client certificate's private key (PKCS#8 PEM).
    pub fn client_key_path(&self) -> PathBuf {
        self.dir.path().join("client.key")
    }

    /// What a client needs to trust this CA's servers, with the client certificate if
    /// `client_cert`.
    pub fn redis_tls(&self, client_cert: bool) -> Result<crate::RedisTls, ServerError> {
        let read = |p: PathBuf| std::fs::read(&p).map_err(io(format!("read {}", p.display())));
        Ok(crate::RedisTls {
            ca: Some(read(self.ca_path())?),
            client: if client_cert {
                Some((
                    read(self.client_cert_path())?,
                    read(self.client_key_path())?,
                ))
            } else {
                None
            },
        })
    }

    fn server_files(&self, require_client_cert: bool) -> ServerTlsFiles {
        ServerTlsFiles {
            cert: self.dir.path().join("server.pem"),
            key: self.dir.path().join("server.key"),
            ca: self.ca_path(),
            require_client_cert,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_missing_binary_fails_with_install_advice() {
        let err = RedisServer::start_binary("/nonexistent/redis-server".into(), Persistence::None)
            .unwrap_err();
        assert!(matches!(err, ServerError::Missing(_)), "{err}");
        assert!(
            err.to_string().contains("apt-get install redis-server"),
            "{err}"
        );
    }

    #[test]
    fn starts_answers_and_is_gone_after_kill() {
        let mut server = RedisServer::start().unwrap_or_else(|e| panic!("{e}"));
        assert!(server.command("PING").unwrap().starts_with("+PONG"));
        server.kill();
        assert!(server.command("PING").is_err());
        server.restart().unwrap();
        assert!(server.command("PING").unwrap().starts_with("+PONG"));
    }

    #[test]
    fn a_tls_server_listens_on_its_tls_port_too() {
        let pki = TestPki::generate().unwrap();
        let server = RedisServer::start_tls(&pki, false).unwrap_or_else(|e| panic!("{e}"));
        let tls = server.tls_port().unwrap();
        assert_ne!(tls, server.port());
        assert_eq!(
            server.tls_url().unwrap(),
            format!("rediss://127.0.0.1:{tls}/")
        );
        // A plain-text command on the TLS port is not understood as one.
        let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, tls)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s.write_all(b"PING\r\n").unwrap();
        let mut buf = [0u8; 64];
        let reply = s
            .read(&mut buf)
            .map(|n| buf[..n].to_vec())
            .unwrap_or_default();
        assert!(!reply.starts_with(b"+PONG"), "{reply:?}");
    }

    #[test]
    fn a_cluster_forms_with_its_slots_split_and_replicas_attached() {
        let options = ClusterOptions {
            primaries: 3,
            replicas: 1,
            ..ClusterOptions::default()
        };
        let cluster = RedisCluster::start_with(&options).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cluster.urls().len(), 6);
        for node in cluster.nodes() {
            let info = node.command("CLUSTER INFO").unwrap();
            assert!(info.contains("cluster_slots_assigned:16384"), "{info}");
            assert!(info.contains("cluster_size:3"), "{info}");
        }
        let replicas = cluster
            .nodes()
            .filter(|n| n.command("ROLE").unwrap().contains("\r\nslave\r\n"))
            .count();
        assert_eq!(replicas, 3);
    }
}
