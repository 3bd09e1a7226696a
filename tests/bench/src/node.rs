//! Starting, watching and stopping the `runnel` node under test.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// How long the node gets to answer `GET /health` after it is spawned.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the node gets to stop after SIGTERM before it is sent SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// A running node. Dropping it stops the node (SIGTERM, then SIGKILL), also on error or panic.
pub struct Node {
    child: Option<Child>,
    pub pid: u32,
    pub kafka: SocketAddr,
    http: SocketAddr,
    pub log_path: PathBuf,
    _data_dir: tempfile::TempDir,
}

/// How the node went away.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StopInfo {
    /// Exit code after SIGTERM (None: killed by a signal).
    pub exit_code: Option<i32>,
    /// Seconds from SIGTERM to exit.
    pub stop_seconds: f64,
    /// True when SIGTERM was not enough and SIGKILL had to be sent.
    pub killed: bool,
    /// True when the node had already exited before we asked it to stop.
    pub died_early: bool,
}

fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("cannot bind a free port on 127.0.0.1")?;
    Ok(l.local_addr()?.port())
}

/// Where one node listens.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub kafka: SocketAddr,
    pub http: SocketAddr,
    pub rpc: SocketAddr,
}

/// `nodes` sets of distinct free loopback ports. Another process could grab one between our
/// probe and the node's bind; the node then fails to start and we say so.
pub fn free_ports(nodes: usize) -> Result<Vec<Ports>> {
    let mut ports = Vec::new();
    while ports.len() < 3 * nodes {
        let p = free_port()?;
        if !ports.contains(&p) {
            ports.push(p);
        }
    }
    let addr = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
    Ok(ports
        .chunks(3)
        .map(|c| Ports {
            kafka: addr(c[0]),
            http: addr(c[1]),
            rpc: addr(c[2]),
        })
        .collect())
}

/// A fresh temporary data dir under `tmp_parent` (system temp dir when None).
pub fn temp_data_dir(tmp_parent: Option<&Path>) -> Result<tempfile::TempDir> {
    match tmp_parent {
        Some(p) => tempfile::Builder::new()
            .prefix("runnel-bench-")
            .tempdir_in(p),
        None => tempfile::Builder::new().prefix("runnel-bench-").tempdir(),
    }
    .context("cannot create a temporary data dir")
}

impl Node {
    /// Spawns `bin node ...` on free loopback ports with a fresh data dir under `tmp_parent`
    /// (system temp dir when None), logging to `log_path`, and waits for `/health`.
    pub fn start(
        bin: &Path,
        tmp_parent: Option<&Path>,
        log_path: &Path,
        extra_configs: &[String],
    ) -> Result<Node> {
        let ports = free_ports(1)?[0];
        // A lone broker can never host Kafka's default of 3 offsets-topic replicas; the
        // consumers' group.id would find no coordinator.
        let configs: Vec<String> = std::iter::once("offsets.topic.replication.factor=1".to_owned())
            .chain(extra_configs.iter().cloned())
            .collect();
        let mut node = Node::spawn(
            bin,
            temp_data_dir(tmp_parent)?,
            ports,
            &[],
            log_path,
            &configs,
        )?;
        node.wait_healthy()?;
        Ok(node)
    }

    /// Spawns `bin node ...` with `extra_args` (e.g. `--node-id`, `--voters`) without waiting
    /// for it; see [`Node::wait_healthy`].
    pub fn spawn(
        bin: &Path,
        data_dir: tempfile::TempDir,
        ports: Ports,
        extra_args: &[String],
        log_path: &Path,
        extra_configs: &[String],
    ) -> Result<Node> {
        let log = File::create(log_path)
            .with_context(|| format!("cannot create node log {}", log_path.display()))?;
        let mut cmd = Command::new(bin);
        cmd.arg("node")
            .arg("--data-dir")
            .arg(data_dir.path())
            .arg("--kafka-listen")
            .arg(ports.kafka.to_string())
            .arg("--http-listen")
            .arg(ports.http.to_string())
            .arg("--rpc-listen")
            .arg(ports.rpc.to_string())
            .args(extra_args);
        for c in extra_configs {
            cmd.arg("--config").arg(c);
        }
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .env("NO_COLOR", "1")
            .env_remove("RUNNEL_CONFIG")
            .env_remove("RUNNEL_VOTERS")
            .env_remove("RUNNEL_NODE_ID")
            .env_remove("RUNNEL_ROLES");
        // If the bench itself is killed hard, take the node with it.
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start the node binary {}", bin.display()))?;
        Ok(Node {
            pid: child.id(),
            child: Some(child),
            kafka: ports.kafka,
            http: ports.http,
            log_path: log_path.to_path_buf(),
            _data_dir: data_dir,
        })
    }

    /// Waits up to STARTUP_TIMEOUT for `GET /health` to answer 200.
    pub fn wait_healthy(&mut self) -> Result<()> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait()? {
                bail!(
                    "the node exited during startup ({status}); last log lines:\n{}",
                    tail(&self.log_path, 20)
                );
            }
            if health_ok(self.http) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the node did not answer GET /health on {} within {}s; last log lines:\n{}",
                    self.http,
                    STARTUP_TIMEOUT.as_secs(),
                    tail(&self.log_path, 20)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Errors when the node has exited on its own.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(child) = self.child.as_mut() {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "the node died during the run ({status}); last log lines:\n{}",
                    tail(&self.log_path, 20)
                );
            }
        }
        Ok(())
    }

    /// SIGTERM, wait up to STOP_TIMEOUT, then SIGKILL. Idempotent.
    pub fn stop(&mut self) -> Option<StopInfo> {
        let mut child = self.child.take()?;
        if let Ok(Some(status)) = child.try_wait() {
            return Some(StopInfo {
                exit_code: status.code(),
                stop_seconds: 0.0,
                killed: false,
                died_early: true,
            });
        }
        let t0 = Instant::now();
        // SAFETY: plain kill(2) on our own child's pid, which we have not reaped yet.
        unsafe {
            libc::kill(self.pid as libc::pid_t, libc::SIGTERM);
        }
        while t0.elapsed() < STOP_TIMEOUT {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(StopInfo {
                    exit_code: status.code(),
                    stop_seconds: t0.elapsed().as_secs_f64(),
                    killed: false,
                    died_early: false,
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let status = child.wait().ok();
        Some(StopInfo {
            exit_code: status.and_then(|s| s.code()),
            stop_seconds: t0.elapsed().as_secs_f64(),
            killed: true,
            died_early: false,
        })
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop();
    }
}

fn health_ok(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(1)));
    let req = format!("GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    let mut got = 0;
    while got < 12 {
        match s.read(&mut buf[got..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    let head = String::from_utf8_lossy(&buf[..got]);
    head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200")
}

/// Last `n` lines of a file (for error messages).
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Memory and CPU of a process, read from /proc.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct ProcStats {
    /// Resident set size now (VmRSS), MiB.
    pub rss_mib: f64,
    /// Peak resident set size so far (VmHWM), MiB.
    pub hwm_mib: f64,
    /// User + system CPU time so far, seconds.
    pub cpu_seconds: f64,
}

pub fn proc_stats(pid: u32) -> Option<ProcStats> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb = |key: &str| -> Option<f64> {
        let line = status.lines().find(|l| l.starts_with(key))?;
        let v: f64 = line[key.len()..].split_whitespace().next()?.parse().ok()?;
        Some(v / 1024.0)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which is in parentheses and may contain spaces).
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 of `rest` (0-based).
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some(ProcStats {
        rss_mib: kb("VmRSS:")?,
        hwm_mib: kb("VmHWM:")?,
        cpu_seconds: ticks / hz,
    })
}

/// Counts WARN and ERROR lines of the node's log and keeps the first few of each kind.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct LogSummary {
    pub warn_lines: usize,
    pub error_lines: usize,
    pub panics: usize,
    pub samples: Vec<String>,
}

pub fn summarize_log(path: &Path) -> LogSummary {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut s = LogSummary::default();
    for raw in text.lines() {
        let line = strip_ansi(raw);
        let is_warn = line.contains(" WARN ");
        let is_err = line.contains(" ERROR ");
        let is_panic = line.contains("panicked at");
        if is_warn {
            s.warn_lines += 1;
        }
        if is_err {
            s.error_lines += 1;
        }
        if is_panic {
            s.panics += 1;
        }
        if (is_warn || is_err || is_panic) && s.samples.len() < 10 {
            s.samples.push(line.chars().take(400).collect());
        }
    }
    s
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for c2 in chars.by_ref() {
                if c2.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
