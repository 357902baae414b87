//! The benchmark tools behind `bench/compare.sh` do what the comparison assumes: `bench load`
//! drives a target with validly signed, distinct requests and reports them, and `bench hop`
//! forwards them whole to the upstream and its answer back.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_tollgate");

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
}

/// Kills the child when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(args: &[&str], port: SocketAddr) -> Running {
    let child = Command::new(BIN)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("tollgate starts");
    let running = Running(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(port).is_err() {
        assert!(
            Instant::now() < deadline,
            "{args:?} never listened on {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    running
}

/// `key=value` fields of the load tool's `RESULT` line.
fn result_field(out: &str, key: &str) -> String {
    let line = out
        .lines()
        .find(|l| l.starts_with("RESULT "))
        .unwrap_or_else(|| panic!("no RESULT line in:\n{out}"));
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key} in {line}"))
        .to_owned()
}

/// Runs `bench load` with `n` requests over `c` connections against `target`; its stdout.
fn load(config: &std::path::Path, target: SocketAddr, n: usize, c: usize) -> String {
    let out = Command::new(BIN)
        .args(["bench", "load", "--config"])
        .arg(config)
        .args([
            "--route",
            "twilio",
            "--url",
            "https://hooks.example.com/hooks/twilio",
        ])
        .args([
            "--target",
            &format!("http://{target}"),
            "-d",
            "20",
            "--threads",
            "1",
        ])
        .args(["-n", &n.to_string(), "-c", &c.to_string()])
        .env("TG_BENCH_TEST_TOKEN", "0123456789abcdef0123456789abcdef")
        .output()
        .expect("bench load runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn load_through_the_bare_hop_reaches_the_upstream_and_counts_every_answer() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let (up, hop) = (free_port(), free_port());
    let _upstream = start(
        &[
            "bench",
            "upstream",
            "--listen",
            &up.to_string(),
            "--threads",
            "1",
        ],
        up,
    );
    let _hop = start(
        &[
            "bench",
            "hop",
            "--listen",
            &hop.to_string(),
            "--upstream",
            &up.to_string(),
            "--threads",
            "2",
        ],
        hop,
    );
    let config = dir.path().join("tollgate.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n\n[[route]]\nname = \"twilio\"\npath = \"/hooks/twilio\"\n\
             provider = \"twilio\"\nkeys = [ {{ label = \"t\", secret = \"env:TG_BENCH_TEST_TOKEN\" }} ]\n\
             upstream = \"http://{up}\"\n"
        ),
    )
    .expect("config written");
    let text = load(&config, hop, 300, 4);
    assert_eq!(result_field(&text, "answered"), "300", "{text}");
    assert_eq!(result_field(&text, "ok"), "300", "{text}");
    assert_eq!(result_field(&text, "errors"), "0", "{text}");

    // With the upstream gone, the hop answers 502 rather than hanging or dropping the connection.
    drop(_upstream);
    let text = load(&config, hop, 5, 1);
    assert_eq!(result_field(&text, "answered"), "5", "{text}");
    assert_eq!(result_field(&text, "non2xx"), "5", "{text}");
}
