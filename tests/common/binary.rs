//! The `errmap` binary as a separate process: start it, read its address,
//! signal it, and read its memory and CPU use from `/proc`.

#![allow(dead_code, unreachable_pub)]

use std::{
    io::{BufRead as _, BufReader, Read as _},
    process::{Child, Command, Stdio},
    sync::{mpsc, Arc, Mutex},
    time::{Duration, Instant},
};

/// A running `errmap serve`, killed on drop if still alive.
pub struct Served {
    pub child: Child,
    pub addr: String,
    stderr: Arc<Mutex<Vec<u8>>>,
    stdout: Mutex<mpsc::Receiver<String>>,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `errmap serve --addr 127.0.0.1:0 <extra>` with `RUST_LOG=warn`.
pub fn serve(extra: &[&str]) -> Served {
    serve_with(&[], extra, "warn")
}

/// Starts `<launcher> errmap serve --addr 127.0.0.1:0 <extra>` (the
/// launcher is e.g. `prlimit --nofile=200:200`), logging at `log` into a
/// buffer that [`Served::stderr`] reads.
pub fn serve_with(launcher: &[&str], extra: &[&str], log: &str) -> Served {
    let bin = env!("CARGO_BIN_EXE_errmap");
    let mut command = match launcher.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(bin);
            c
        }
        None => Command::new(bin),
    };
    let mut child = command
        .args(["serve", "--addr", "127.0.0.1:0"])
        .args(extra)
        .env("RUST_LOG", log)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("errmap serve starts");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(line)) = lines.next() {
            let _ = tx.send(line);
        }
        // Anything more on stdout is a bug: only the address goes there.
        for line in lines.map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let stderr = Arc::new(Mutex::new(Vec::new()));
    let mut pipe = child.stderr.take().unwrap();
    let sink = stderr.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = pipe.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    let addr = match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(addr) => addr,
        Err(e) => {
            // Not left running (and spinning) after the test fails.
            let _ = child.kill();
            let _ = child.wait();
            panic!("serve prints its address: {e}");
        }
    };
    let served = Served {
        child,
        addr,
        stderr,
        stdout: Mutex::new(rx),
    };
    assert!(served.addr.starts_with("127.0.0.1:"), "{}", served.addr);
    assert_ne!(served.addr, "127.0.0.1:0");
    served
}

impl Served {
    /// Sends SIGTERM and asserts the server exits 0 within 10 s.
    pub fn stop(&mut self) {
        sigterm(&self.child);
        assert_eq!(wait_exit(&mut self.child, Duration::from_secs(10)), Some(0));
    }

    /// Sends SIGTERM, and returns at once.
    pub fn sigterm(&self) {
        sigterm(&self.child);
    }

    /// The exit code, once the server exits within `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        wait_exit(&mut self.child, limit)
    }

    /// The next line on stdout after the address (the admin listener's
    /// address, with `--admin-addr`), waiting at most 30 s.
    pub fn next_stdout_line(&self) -> String {
        self.stdout
            .lock()
            .unwrap()
            .recv_timeout(Duration::from_secs(30))
            .expect("serve prints another line")
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `http://<addr>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Everything the server wrote to stderr so far.
    pub fn stderr(&self) -> Vec<u8> {
        self.stderr.lock().unwrap().clone()
    }

    /// Resident memory now, in KiB.
    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.pid())
    }

    /// CPU time used so far (user and system), in seconds.
    pub fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        // The fields after the command name, which is in parentheses.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        ticks as f64 / clock_ticks()
    }
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Resident memory of a process, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Sends SIGTERM.
pub fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Waits for the process to exit, at most `limit`, and gives its code.
pub fn wait_exit(child: &mut Child, limit: Duration) -> Option<i32> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("errmap serve did not exit within {limit:?}");
}
