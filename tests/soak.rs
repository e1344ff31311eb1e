//! A bounded soak of the real `errmap serve`: a mix of hits, misses and bad
//! requests for 60 s (ERRMAP_SOAK_SECS to change it), then: no unexpected
//! status, and RSS at the end within 10% of RSS after warm-up.
//!
//! Opt-in, as it is slow: `cargo test --release --test soak -- --ignored --nocapture`.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use errmap::{
    pb::{error_catalog_client::ErrorCatalogClient, get_error_request::Key, GetErrorRequest},
    ErrorCode, ErrorStatusExt,
};

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap()
}

#[test]
#[ignore = "a 60 s soak; run with --ignored"]
fn soak_mixed_traffic_keeps_answers_right_and_memory_flat() {
    let secs: u64 = std::env::var("ERRMAP_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60)
        .clamp(10, 3600);
    let mut child = Command::new(env!("CARGO_BIN_EXE_errmap"))
        .args(["serve", "--addr", "127.0.0.1:0"])
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = format!("http://{}", line.trim());
    let pid = child.id();

    let rt = tokio::runtime::Runtime::new().unwrap();
    let (calls, unexpected, rss_warm, rss_end) = rt.block_on(async {
        let calls = Arc::new(AtomicU64::new(0));
        let unexpected = Arc::new(AtomicU64::new(0));
        let mut channels = Vec::new();
        for _ in 0..4 {
            channels.push(
                tonic::transport::Channel::from_shared(url.clone())
                    .unwrap()
                    .connect()
                    .await
                    .unwrap(),
            );
        }
        let warm_up = Duration::from_secs(5);
        let began = Instant::now();
        let end = began + warm_up + Duration::from_secs(secs);
        let tasks: Vec<_> = (0..16)
            .map(|t| {
                let mut client = ErrorCatalogClient::new(channels[t % 4].clone());
                let calls = calls.clone();
                let unexpected = unexpected.clone();
                tokio::spawn(async move {
                    let mut i: u64 = t as u64;
                    while Instant::now() < end {
                        i += 1;
                        let (request, expect) = match i % 10 {
                            0..=4 => (Some(Key::Code(11)), None),
                            5..=7 => (Some(Key::Code(45)), Some(ErrorCode::ApiItemNotFound)),
                            _ => (None, Some(ErrorCode::ApiInvalidRequest)),
                        };
                        let answer = client
                            .get_error(GetErrorRequest {
                                key: request,
                                domain: None,
                            })
                            .await;
                        let right = match (answer, expect) {
                            (Ok(r), None) => r.into_inner().error.map(|d| d.code) == Some(Some(11)),
                            (Err(s), Some(code)) => s.error_code() == Some(code),
                            _ => false,
                        };
                        calls.fetch_add(1, Ordering::Relaxed);
                        if !right {
                            unexpected.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        tokio::time::sleep(warm_up).await;
        let rss_warm = rss_kib(pid);
        for task in tasks {
            task.await.unwrap();
        }
        let rss_end = rss_kib(pid);
        (
            calls.load(Ordering::Relaxed),
            unexpected.load(Ordering::Relaxed),
            rss_warm,
            rss_end,
        )
    });
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let exit = child.wait().unwrap();

    println!(
        "soak: {secs} s, {calls} calls ({:.0}/s), {unexpected} unexpected, RSS after warm-up {:.1} MiB, at the end {:.1} MiB ({:+.1}%)",
        calls as f64 / (secs + 5) as f64,
        rss_warm as f64 / 1024.0,
        rss_end as f64 / 1024.0,
        (rss_end as f64 / rss_warm as f64 - 1.0) * 100.0
    );
    assert_eq!(unexpected, 0);
    assert!(calls > 0);
    assert!(
        rss_end as f64 <= rss_warm as f64 * 1.10,
        "RSS grew: {rss_warm} KiB -> {rss_end} KiB"
    );
    assert!(exit.success());
}
