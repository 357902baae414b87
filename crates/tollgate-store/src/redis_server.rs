//! Test support: a private `redis-server` on a free loopback port, in its own temporary
//! directory, killed when dropped. For this crate's tests and benches and for other crates'
//! integration tests (behind the `conformance` feature); never the machine's shared Redis.
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
    dir: tempfile::TempDir,
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
        if !binary.is_file() {
            return Err(ServerError::Missing(binary.display().to_string()));
        }
        let dir = tempfile::tempdir().map_err(io("create a temporary directory"))?;
        let mut server = Self {
            child: None,
            port: free_port()?,
            binary,
            persistence,
            dir,
        };
        // The port is found by binding port 0 and letting go of it, so another process may take
        // it before the server binds: a few attempts, each on a fresh port.
        let mut attempts = 0;
        loop {
            match server.spawn() {
                Ok(()) => return Ok(server),
                Err(e) if attempts >= 4 => return Err(e),
                Err(_) => {
                    server.kill();
                    attempts += 1;
                    server.port = free_port()?;
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

    /// Starts the server again on the same port with the same directory (and so, with
    /// persistence, the same data). Kills it first if it still runs.
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

    /// Sends one inline command and returns the raw reply (for tests that inspect keys).
    pub fn command(&self, line: &str) -> Result<String, ServerError> {
        let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port))
            .map_err(io("connect to redis-server"))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))
            .map_err(io("set a read timeout"))?;
        s.write_all(format!("{line}\r\n").as_bytes())
            .map_err(io("send a command"))?;
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).map_err(io("read a reply"))?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
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

fn free_port() -> Result<u16, ServerError> {
    let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .map_err(io("find a free port"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(io("read the bound port"))
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
}
