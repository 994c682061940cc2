//! Abuse limits (issue 8, item 7), each against its baseline in the same run:
//! - the per-key rate limiter: one check, one hot key and 10,000 keys, vs no limiter; and
//!   a rate-limited route over HTTP with the limiter on vs off;
//! - slow clients: how long until a client trickling its head (a byte every 100 ms) or its
//!   body is cut off, with the default timeouts;
//! - a normal request's latency with 0, 50 and 200 slow clients attached.
//!
//! `cargo bench --bench abuse [-- limiter|slow|attached ...]` (SQLite, in-process gateway).
mod common;

use std::time::{Duration, Instant};

use consentry::config::Settings;
use consentry::limits::{Expensive, Limits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn ns_per(d: Duration, n: u64) -> f64 {
    d.as_nanos() as f64 / n as f64
}

fn limiter_micro() {
    let n: u64 = 2_000_000;
    let on = Limits::new(&Settings {
        rate_limit_renders_per_minute: u32::MAX,
        ..Settings::default()
    });
    let off = Limits::new(&Settings {
        rate_limit_renders_per_minute: 0,
        ..Settings::default()
    });
    let keys: Vec<String> = (0..10_000).map(|i| format!("key{i:016x}")).collect();
    for (label, limits) in [("no limiter (0)", &off), ("limiter", &on)] {
        let t = Instant::now();
        for _ in 0..n {
            std::hint::black_box(limits.check(Expensive::Render, "0123456789abcdef")).ok();
        }
        let hot = t.elapsed();
        let t = Instant::now();
        for i in 0..n {
            let key = &keys[(i % 10_000) as usize];
            std::hint::black_box(limits.check(Expensive::Render, key)).ok();
        }
        let many = t.elapsed();
        println!(
            "check, {label}: one key {:.0} ns, 10,000 keys {:.0} ns ({n} checks each)",
            ns_per(hot, n),
            ns_per(many, n)
        );
    }
}

async fn gateway(tweak: impl FnOnce(&mut Settings)) -> (String, String) {
    let dir = tempfile::tempdir().expect("tmp");
    let mut settings = common::settings(dir.path(), None);
    tweak(&mut settings);
    let app = consentry::startup::Application::build(settings)
        .await
        .expect("app");
    let base = format!("127.0.0.1:{}", app.port());
    let admin = app.bootstrap_token().expect("token").to_owned();
    tokio::spawn(app.run_until_stopped());
    // The gateway outlives this function; so must its data directory.
    std::mem::forget(dir);
    (base, admin)
}

async fn limiter_http() {
    let n = 2_000;
    for (label, per_minute) in [("limiter off", 0), ("limiter on", u32::MAX)] {
        let (base, admin) = gateway(|s| s.rate_limit_renders_per_minute = per_minute).await;
        let client = reqwest::Client::new();
        let url = format!("http://{base}/v1/templates/no-such-template/render");
        let mut lat = Vec::with_capacity(n);
        for i in 0..n + 200 {
            let t = Instant::now();
            let r = client
                .post(&url)
                .bearer_auth(&admin)
                .json(&serde_json::json!({"pseudonym": "x"}))
                .send()
                .await
                .expect("request");
            assert_eq!(r.status(), 404);
            r.bytes().await.expect("body");
            if i >= 200 {
                lat.push(t.elapsed());
            }
        }
        lat.sort_unstable();
        let mean = lat.iter().sum::<Duration>() / n as u32;
        println!(
            "POST /v1/templates/{{id}}/render (404), {label}: mean {:.0} µs, p50 {:.0} µs, p99 {:.0} µs ({n} requests)",
            mean.as_secs_f64() * 1e6,
            lat[n / 2].as_secs_f64() * 1e6,
            lat[n * 99 / 100].as_secs_f64() * 1e6
        );
    }
}

/// Sends `head`, then one byte of `drip` every 100 ms until the server closes; returns the
/// status line (if any) and the time from the first byte to the close.
async fn cut_off_after(base: &str, head: String, drip: &'static [u8]) -> (String, Duration) {
    let stream = TcpStream::connect(base).await.expect("connect");
    let (mut rd, mut wr) = stream.into_split();
    let start = Instant::now();
    let writer = tokio::spawn(async move {
        if wr.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        for b in drip.iter().cycle() {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if wr.write_all(&[*b]).await.is_err() {
                return;
            }
        }
    });
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(120), rd.read(&mut chunk)).await
    {
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let elapsed = start.elapsed();
    writer.abort();
    let text = String::from_utf8_lossy(&buf);
    let status = text
        .lines()
        .next()
        .unwrap_or("(closed, no response)")
        .to_owned();
    (status, elapsed)
}

async fn slow_clients() {
    let (base, admin) = gateway(|_| {}).await;
    let (status, after) = cut_off_after(
        &base,
        "GET /healthz HTTP/1.1\r\nHost: bench\r\n".into(),
        b"X-Slow: aaaa\r\n",
    )
    .await;
    println!(
        "head trickled a byte every 100 ms (client_request_timeout_ms 5000): cut off after {:.2} s, {status}",
        after.as_secs_f64()
    );
    let (status, after) = cut_off_after(
        &base,
        format!("POST /v1/keys HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {admin}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"),
        b"{ ",
    )
    .await;
    println!(
        "body trickled a byte every 100 ms (body_read_timeout_secs 30): cut off after {:.2} s, {status}",
        after.as_secs_f64()
    );
}

async fn attached() {
    let (base, _) = gateway(|s| s.client_request_timeout_ms = 60_000).await;
    let client = reqwest::Client::new();
    let url = format!("http://{base}/healthz");
    for slow_n in [0usize, 50, 200] {
        let mut slow = Vec::new();
        for _ in 0..slow_n {
            let mut s = TcpStream::connect(&base).await.expect("connect");
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: bench\r\nX-Slow: ")
                .await
                .expect("write");
            slow.push(s);
        }
        let trickler = tokio::spawn(async move {
            loop {
                for s in &mut slow {
                    let _ = s.write_all(b"a").await;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        let n = 500;
        let mut lat = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            let r = client.get(&url).send().await.expect("request");
            r.bytes().await.expect("body");
            lat.push(t.elapsed());
        }
        trickler.abort();
        lat.sort_unstable();
        println!(
            "GET /healthz with {slow_n} slow clients attached: p50 {:.0} µs, p99 {:.0} µs, max {:.0} µs ({n} requests)",
            lat[n / 2].as_secs_f64() * 1e6,
            lat[n * 99 / 100].as_secs_f64() * 1e6,
            lat[n - 1].as_secs_f64() * 1e6
        );
    }
}

#[tokio::main]
async fn main() {
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wants = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
    if wants("limiter") {
        limiter_micro();
        limiter_http().await;
    }
    if wants("slow") {
        slow_clients().await;
    }
    if wants("attached") {
        attached().await;
    }
}
