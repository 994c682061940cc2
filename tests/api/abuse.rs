//! Abuse limits (issue 8, item 7): a key over its rate on an expensive route gets 429 with
//! `Retry-After` while other keys go on; streams in flight are bounded per key and per
//! node, and a client leaving mid-stream gives its place back; clients trickling their
//! head or body are cut off, and do not slow others down; oversized heads get 431 and a
//! closed connection. Raw TCP where a well-behaved HTTP client cannot misbehave enough.
use std::time::{Duration, Instant};

use consentry::config::Settings;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::helpers::{Options, TestApp, spawn_app_with};

const EMAIL: &str = "marketing.communications.email";

fn socket_addr(app: &TestApp) -> std::net::SocketAddr {
    app.address
        .trim_start_matches("http://")
        .parse()
        .expect("address")
}

/// Reads until the end of the response head; returns it (and whatever body came with it).
async fn read_head(stream: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 512];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut chunk))
            .await
            .expect("a response head within 30 s")
            .expect("read");
        assert!(n > 0, "closed before a response head");
        buf.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// Everything the server sends until it closes the connection (or resets it), and how long
/// that took; fails if it is still open after `limit`.
async fn read_to_close(stream: &mut TcpStream, limit: Duration) -> (String, Duration) {
    let start = Instant::now();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match tokio::time::timeout_at((start + limit).into(), stream.read(&mut chunk)).await {
            Err(_) => panic!(
                "still open after {limit:?}; got {:?}",
                String::from_utf8_lossy(&buf)
            ),
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    (String::from_utf8_lossy(&buf).into_owned(), start.elapsed())
}

async fn error_of(r: reqwest::Response) -> (u16, Option<String>, String) {
    let status = r.status().as_u16();
    let retry = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let v: Value = r.json().await.expect("a JSON error body");
    (
        status,
        retry,
        v["error"]["code"].as_str().unwrap().to_owned(),
    )
}

fn limits_of_two(s: &mut Settings) {
    s.rate_limit_exports_per_minute = 2;
    s.rate_limit_renders_per_minute = 2;
    s.rate_limit_tokens_per_minute = 2;
    s.rate_limit_dsar_per_minute = 2;
}

fn assert_rate_limited(what: &str, (status, retry, code): (u16, Option<String>, String)) {
    assert_eq!(
        (status, code.as_str()),
        (429, "too_many_requests"),
        "{what}"
    );
    let secs: u64 = retry
        .unwrap_or_else(|| panic!("{what}: Retry-After"))
        .parse()
        .unwrap();
    // Two a minute: the next one comes back within 30 s.
    assert!((1..=30).contains(&secs), "{what}: Retry-After {secs}");
}

#[tokio::test]
async fn each_expensive_route_refuses_a_key_over_its_rate_with_retry_after_and_other_keys_go_on() {
    let app = spawn_app_with(Options {
        tweak: limits_of_two,
        ..Options::default()
    })
    .await;
    let (_, admin) = app.create_key("admin").await;
    let (_, other_admin) = app.create_key("admin").await;
    let renders = "/v1/templates/no-such-template/render";
    let export = "/v1/segments/no-such-segment/export?recipient=acme-esp";
    let messages = "/v1/campaigns/no-such-campaign/messages";

    // Renders: counted before any work, so even requests for nothing count.
    for _ in 0..2 {
        let r = app
            .post_json(renders, Some(&admin), &json!({"pseudonym": "x"}))
            .await;
        assert_ne!(r.status(), 429);
    }
    let r = app
        .post_json(renders, Some(&admin), &json!({"pseudonym": "x"}))
        .await;
    assert_rate_limited("render", error_of(r).await);
    let r = app
        .post_json(renders, Some(&other_admin), &json!({"pseudonym": "x"}))
        .await;
    assert_ne!(r.status(), 429, "another key has its own budget");

    // Exports and campaign message streams share one budget.
    assert_ne!(app.get(export, Some(&admin)).await.status(), 429);
    assert_ne!(app.get(messages, Some(&admin)).await.status(), 429);
    assert_rate_limited(
        "export",
        error_of(app.get(export, Some(&admin)).await).await,
    );
    assert_rate_limited(
        "messages",
        error_of(app.get(messages, Some(&admin)).await).await,
    );
    assert_ne!(app.get(export, Some(&other_admin)).await.status(), 429);

    // Access tokens: two issued, the third refused, in the `/v1` error shape.
    let (dpo_id, dpo_secret) = app.create_key("dpo").await;
    for _ in 0..2 {
        assert_eq!(app.token_request(&dpo_id, &dpo_secret).await.status(), 200);
    }
    let r = app.token_request(&dpo_id, &dpo_secret).await;
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert_rate_limited("token", error_of(r).await);
    let (ingest_id, ingest_secret) = app.create_key("ingest").await;
    assert_eq!(
        app.token_request(&ingest_id, &ingest_secret).await.status(),
        200
    );

    // Data-subject requests: the refused one is not filed.
    let dsar =
        json!({"kind": "access", "identifiers": {"email": "ann@example.com"}, "channel": "email"});
    for _ in 0..2 {
        assert_eq!(
            app.post_json("/v1/dsar", Some(&dpo_secret), &dsar)
                .await
                .status(),
            201
        );
    }
    assert_rate_limited(
        "dsar",
        error_of(app.post_json("/v1/dsar", Some(&dpo_secret), &dsar).await).await,
    );
    let queue = app.get_json("/v1/dsar", Some(&dpo_secret)).await;
    assert_eq!(queue["requests"].as_array().unwrap().len(), 2, "{queue}");
}

/// A campaign whose messages are large (a 400 KB newsletter), so that a client that stops
/// reading holds its stream open: more than the socket buffers between it and the server.
async fn big_campaign(app: &TestApp) -> (String, String, String) {
    let (_, ingest) = app.create_key("ingest").await;
    let (_, dpo) = app.create_key("dpo").await;
    let esp = app.esp_key("acme-esp", &[EMAIL]).await;
    for i in 0..8 {
        let who = format!("p{i}");
        let r = app
            .track(&ingest, "/v1/identify", &json!({"userId": who,
                "traits": {"email": format!("{who}@example.com"), "firstName": who, "country": "DE"}}))
            .await;
        assert_eq!(r.status(), 200);
        let r = app
            .post_json("/v1/consents", Some(&dpo), &json!({"subject": {"user_id": who},
                "purpose": "email_marketing", "status": "granted", "method": "double_opt_in", "source": "shop"}))
            .await;
        assert_eq!(r.status(), 201);
    }
    let filler = "<p>All the news that fits.</p>\n".repeat(400 * 1024 / 31);
    let r = app
        .post_json("/v1/templates", Some(&esp), &json!({"name": "big", "purpose": EMAIL,
            "subject": "Hi {{first_name}}",
            "html": format!("<p>Hello {{{{first_name}}}}</p>{filler}<a href=\"{{{{unsubscribe_url}}}}\">Unsubscribe</a>"),
            "text": "Hello {{first_name}}\nUnsubscribe: {{unsubscribe_url}}"}))
        .await;
    let v: Value = r.json().await.unwrap();
    let template = v["id"].as_str().expect("template created").to_owned();
    let r = app
        .post_json(
            "/v1/segments",
            Some(&esp),
            &json!({"name": "de", "purpose": EMAIL, "rule": {"attribute": "country", "eq": "DE"}}),
        )
        .await;
    let v: Value = r.json().await.unwrap();
    let segment = v["id"].as_str().expect("segment created").to_owned();
    let r = app
        .post_json(
            "/v1/campaigns",
            Some(&esp),
            &json!({"name": "big", "template": template, "segment": segment}),
        )
        .await;
    let v: Value = r.json().await.unwrap();
    let campaign = v["id"].as_str().expect("campaign created").to_owned();
    (esp, segment, campaign)
}

/// A client that asks for `path`, reads the response head and then stops reading, with a
/// small receive window so the server cannot push the whole body into socket buffers.
async fn stalled_stream(app: &TestApp, token: &str, path: &str) -> (TcpStream, String) {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(socket_addr(app)).await.unwrap();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {token}\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    let head = read_head(&mut stream).await;
    (stream, head)
}

async fn wait_for_streams(app: &TestApp, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.state.limits.streams_in_flight() != n {
        assert!(
            Instant::now() < deadline,
            "{} streams in flight, expected {n}",
            app.state.limits.streams_in_flight()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn streams_are_bounded_per_key_and_per_node_and_a_client_leaving_mid_stream_frees_its_place()
{
    let app = spawn_app_with(Options {
        tweak: |s| {
            s.max_concurrent_streams = 3;
            s.max_concurrent_streams_per_key = 2;
        },
        ..Options::default()
    })
    .await;
    let (esp, segment, campaign) = big_campaign(&app).await;
    let messages = format!("/v1/campaigns/{campaign}/messages");
    let export = format!("/v1/segments/{segment}/export?recipient=acme-esp");

    // A stream read to its end gives its place back.
    let body = app.get(&messages, Some(&esp)).await.text().await.unwrap();
    assert_eq!(body.lines().count(), 8);
    wait_for_streams(&app, 0).await;

    let (a1, head) = stalled_stream(&app, &esp, &messages).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let (_a2, head) = stalled_stream(&app, &esp, &messages).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    wait_for_streams(&app, 2).await;
    let (status, retry, code) = error_of(app.get(&export, Some(&esp)).await).await;
    assert_eq!((status, code.as_str()), (429, "too_many_streams"));
    assert_eq!(retry.as_deref(), Some("10"));

    // Another key takes the node's last place; then the node is full for everyone.
    let (_, admin) = app.create_key("admin").await;
    let (_b1, head) = stalled_stream(&app, &admin, &messages).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    wait_for_streams(&app, 3).await;
    let (status, retry, code) = error_of(app.get(&export, Some(&admin)).await).await;
    assert_eq!((status, code.as_str()), (503, "gateway_busy"));
    assert_eq!(retry.as_deref(), Some("10"));
    let refused_exports = app.count("exports", "").await;

    // One client goes away mid-stream: its place comes back and a new export runs.
    drop(a1);
    wait_for_streams(&app, 2).await;
    let r = app.get(&export, Some(&admin)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap().lines().count(), 8);
    wait_for_streams(&app, 2).await;
    assert_eq!(
        app.count("exports", "").await,
        refused_exports + 1,
        "a refused export records nothing"
    );
}

fn slow_client_settings(s: &mut Settings) {
    s.client_request_timeout_ms = 1_000;
    s.body_read_timeout_secs = 2;
}

/// Sends `head` at once, then `trickle` one byte every `every`, until the server closes the
/// connection; returns what it answered and how long after the first byte it closed.
async fn trickle(
    app: &TestApp,
    head: String,
    trickle: &'static [u8],
    every: Duration,
) -> (String, Duration) {
    let stream = TcpStream::connect(socket_addr(app)).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let start = Instant::now();
    let writer = tokio::spawn(async move {
        if wr.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        for b in trickle.iter().cycle() {
            tokio::time::sleep(every).await;
            if wr.write_all(&[*b]).await.is_err() {
                return;
            }
        }
    });
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        match tokio::time::timeout(Duration::from_secs(20), rd.read(&mut chunk)).await {
            Err(_) => panic!("the slow client was not cut off within 20 s"),
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let elapsed = start.elapsed();
    writer.abort();
    (String::from_utf8_lossy(&buf).into_owned(), elapsed)
}

#[tokio::test]
async fn a_client_trickling_its_head_is_cut_off_at_the_request_timeout() {
    let app = spawn_app_with(Options {
        tweak: slow_client_settings,
        ..Options::default()
    })
    .await;
    let (answer, after) = trickle(
        &app,
        "GET /healthz HTTP/1.1\r\nHost: test\r\n".into(),
        b"X-Slow: aaaa\r\n",
        Duration::from_millis(100),
    )
    .await;
    eprintln!("head trickled a byte every 100 ms: cut off after {after:?}");
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
    // The server's clock for these timers is coarse (it is refreshed every 500 ms).
    assert!(
        after >= Duration::from_millis(400) && after < Duration::from_secs(4),
        "{after:?}"
    );
}

#[tokio::test]
async fn a_client_trickling_its_body_gets_408_and_a_closed_connection() {
    let app = spawn_app_with(Options {
        tweak: slow_client_settings,
        ..Options::default()
    })
    .await;
    let (_, dpo) = app.create_key("dpo").await;
    let (answer, after) = trickle(
        &app,
        format!(
            "POST /v1/dsar HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {dpo}\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n"
        ),
        b"{ ",
        Duration::from_millis(100),
    )
    .await;
    eprintln!("body trickled a byte every 100 ms: cut off after {after:?}");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"request_timeout\""), "{answer}");
    assert!(
        after >= Duration::from_millis(1_900) && after < Duration::from_secs(8),
        "{after:?}"
    );
    let queue = app.get_json("/v1/dsar", Some(&dpo)).await;
    assert_eq!(queue["requests"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn an_upload_that_pauses_longer_than_the_read_timeout_gets_408() {
    let app = spawn_app_with(Options {
        tweak: slow_client_settings,
        ..Options::default()
    })
    .await;
    let (_, ingest) = app.create_key("ingest").await;
    let (answer, after) = trickle(
        &app,
        format!(
            "POST /v1/imports?source=crm HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {ingest}\r\nContent-Type: multipart/form-data; boundary=XyZ\r\nContent-Length: 100000\r\n\r\n--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"crm.csv\"\r\n\r\nemail\n"
        ),
        b"a",
        Duration::from_secs(3),
    )
    .await;
    eprintln!("import paused 3 s between bytes: cut off after {after:?}");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"request_timeout\""), "{answer}");
    assert!(after < Duration::from_secs(6), "{after:?}");
}

#[tokio::test]
async fn fifty_slow_clients_do_not_hold_up_a_normal_request() {
    let app = spawn_app_with(Options {
        tweak: |s| s.client_request_timeout_ms = 10_000,
        ..Options::default()
    })
    .await;
    let client = reqwest::Client::new();
    let time = |n: usize| {
        let client = client.clone();
        let url = app.url("/healthz");
        async move {
            let mut worst = Duration::ZERO;
            let mut total = Duration::ZERO;
            for _ in 0..n {
                let t = Instant::now();
                let r = client.get(&url).send().await.unwrap();
                assert_eq!(r.status(), 200);
                r.bytes().await.unwrap();
                worst = worst.max(t.elapsed());
                total += t.elapsed();
            }
            (total / n as u32, worst)
        }
    };
    let (alone, alone_worst) = time(20).await;
    let mut slow = Vec::new();
    for _ in 0..50 {
        let mut s = TcpStream::connect(socket_addr(&app)).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Slow: ")
            .await
            .unwrap();
        slow.push(s);
    }
    let trickler = tokio::spawn(async move {
        loop {
            for s in &mut slow {
                let _ = s.write_all(b"a").await;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (with_slow, with_slow_worst) = time(20).await;
    trickler.abort();
    eprintln!(
        "GET /healthz alone: mean {alone:?}, worst {alone_worst:?}; with 50 slow clients attached: mean {with_slow:?}, worst {with_slow_worst:?}"
    );
    assert!(
        with_slow_worst < Duration::from_secs(1),
        "{with_slow_worst:?}"
    );
}

#[tokio::test]
async fn an_oversized_head_gets_431_and_a_closed_connection() {
    let app = spawn_app_with(Options::default()).await;
    // One 100 KB header: read whole by the HTTP parser, refused by `max_header_bytes`.
    let mut s = TcpStream::connect(socket_addr(&app)).await.unwrap();
    let big = format!(
        "GET /healthz HTTP/1.1\r\nHost: test\r\nX-Big: {}\r\n\r\n",
        "a".repeat(100_000)
    );
    s.write_all(big.as_bytes()).await.unwrap();
    let (answer, _) = read_to_close(&mut s, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    assert!(answer.contains("\"headers_too_large\""), "{answer}");

    // Over the parser's own bounds (128 KiB, 96 headers): a bare 431, or a reset if the
    // server closes before all of it was read; either way the connection ends.
    for head in [
        format!(
            "GET /healthz HTTP/1.1\r\nHost: test\r\nX-Big: {}\r\n\r\n",
            "a".repeat(200_000)
        ),
        format!(
            "GET /healthz HTTP/1.1\r\nHost: test\r\n{}\r\n",
            (0..2000)
                .map(|i| format!("X-H{i}: v\r\n"))
                .collect::<String>()
        ),
    ] {
        let mut s = TcpStream::connect(socket_addr(&app)).await.unwrap();
        let _ = s.write_all(head.as_bytes()).await;
        let (answer, _) = read_to_close(&mut s, Duration::from_secs(5)).await;
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
            "{answer}"
        );
    }
    // Just under the limit is fine.
    let r = app
        .client
        .get(app.url("/healthz"))
        .header("X-Big", "a".repeat(15_000))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}
