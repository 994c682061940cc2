//! Audience exports: streamed minimised rows for the segment's recipient, consent as it
//! stands when the rows are read, one disclosure record per row sent and one audit entry
//! per export, deltas (`since`), and interrupted exports that leave whole pages recorded.
use std::collections::BTreeSet;

use consentry::auth::{Caller, Credential};
use consentry::domain::{Clock, Role};
use consentry::policy::segments::Segments;
use consentry::segmentation::export::Format;
use ring::digest;
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};

const EMAIL: &str = "marketing.communications.email";

async fn identify(app: &TestApp, ingest: &str, who: &str, first: &str) {
    let r = app
        .track(
            ingest,
            "/v1/identify",
            &json!({"userId": who, "traits": {"email": format!("{who}@example.com"),
                "firstName": first, "country": "DE"}}),
        )
        .await;
    assert_eq!(r.status(), 200);
}

async fn consent(app: &TestApp, dpo: &str, who: &str, status: &str) {
    let method = if status == "granted" {
        "double_opt_in"
    } else {
        "api"
    };
    let r = app
        .post_json(
            "/v1/consents",
            Some(dpo),
            &json!({"subject": {"user_id": who}, "purpose": "email_marketing",
                "status": status, "method": method, "source": "shop"}),
        )
        .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
}

async fn segment(app: &TestApp, esp: &str, purpose: &str, rule: Value) -> String {
    let r = app
        .post_json(
            "/v1/segments",
            Some(esp),
            &json!({"name": "export test", "purpose": purpose, "rule": rule}),
        )
        .await;
    let status = r.status();
    let v: Value = r.json().await.unwrap();
    assert_eq!(status, 201, "{v}");
    v["id"].as_str().unwrap().to_owned()
}

/// The export's id and body.
async fn export(app: &TestApp, token: &str, query: &str) -> (String, String, String) {
    let r = app.get(query, Some(token)).await;
    assert_eq!(r.status(), 200, "{query}");
    let id = r.headers()["consentry-export-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let ctype = r.headers()["content-type"].to_str().unwrap().to_owned();
    (id, ctype, r.text().await.unwrap())
}

fn lines(body: &str) -> Vec<Value> {
    body.lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect()
}

fn commitment(pseudonyms: &[&str]) -> String {
    let mut ctx = digest::Context::new(&digest::SHA256);
    for p in pseudonyms {
        ctx.update(p.as_bytes());
        ctx.update(b"\n");
    }
    format!("pseudonyms:{}", hex::encode(ctx.finish().as_ref()))
}

async fn export_entries(app: &TestApp, auditor: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let q = match after {
            Some(a) => format!("/v1/audit/entries?after={a}&limit=1000"),
            None => "/v1/audit/entries?limit=1000".into(),
        };
        let page = app.get_json(&q, Some(auditor)).await;
        for e in page["entries"].as_array().unwrap() {
            if e["action"] == "disclosure.segment_export" {
                out.push(e.clone());
            }
        }
        match page["next_after"].as_u64() {
            Some(a) => after = Some(a),
            None => return out,
        }
    }
}

fn has(entry: &Value, attribute: &str) -> bool {
    entry["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a == attribute)
}

#[tokio::test]
async fn an_export_streams_the_consented_members_and_a_delta_gives_who_joined_and_who_left() {
    let app = spawn_app().await;
    let (_, ingest) = app.create_key("ingest").await;
    let (_, dpo) = app.create_key("dpo").await;
    let (_, auditor) = app.create_key("auditor").await;
    let esp = app.esp_key("acme-esp", &[EMAIL]).await;
    for (who, first) in [
        ("ann", "Ann"),
        ("bob", "Bob"),
        ("cy", "Cy, \"the\" third"),
        ("dee", "Dee"),
    ] {
        identify(&app, &ingest, who, first).await;
    }
    for who in ["ann", "bob", "cy"] {
        consent(&app, &dpo, who, "granted").await;
    }
    let seg = segment(
        &app,
        &esp,
        EMAIL,
        json!({"attribute": "country", "eq": "DE"}),
    )
    .await;
    let base = format!("/v1/segments/{seg}/export?recipient=acme-esp");
    let disclosures_before = app.count("disclosures", "").await;

    // A full export: the consented members only, each a minimised view.
    let (first, ctype, body) = export(&app, &esp, &base).await;
    assert_eq!(ctype, "application/x-ndjson");
    let rows = lines(&body);
    let emails: BTreeSet<&str> = rows.iter().map(|r| r["email"].as_str().unwrap()).collect();
    assert_eq!(
        emails,
        BTreeSet::from(["ann@example.com", "bob@example.com", "cy@example.com"])
    );
    for r in &rows {
        let keys: BTreeSet<&str> = r.as_object().unwrap().keys().map(String::as_str).collect();
        assert!(
            keys.is_subset(&BTreeSet::from([
                "pseudonym",
                "purpose",
                "recipient",
                "email",
                "phone",
                "traits",
                "aggregates"
            ])),
            "{r}"
        );
        assert!(r["pseudonym"].as_str().unwrap().starts_with("ps"));
        assert_eq!(r["recipient"], "acme-esp");
        assert!(!body.contains("\"ann\""), "no user id leaves");
    }
    let pseudonym_of = |email: &str| -> String {
        rows.iter().find(|r| r["email"] == email).unwrap()["pseudonym"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let bob = pseudonym_of("bob@example.com");
    // The same people the preview shows, under the same pseudonyms.
    let preview = app
        .get_json(&format!("/v1/segments/{seg}/preview?limit=100"), Some(&esp))
        .await;
    let shown: BTreeSet<&str> = preview["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["pseudonym"].as_str().unwrap())
        .collect();
    let exported: BTreeSet<&str> = rows
        .iter()
        .map(|r| r["pseudonym"].as_str().unwrap())
        .collect();
    assert_eq!(shown, exported);

    // Recorded: the export, its commitment (recomputable from the file), one disclosure
    // per row, one audit entry.
    let status = app
        .get_json(&format!("/v1/exports/{first}"), Some(&esp))
        .await;
    assert_eq!(status["status"], "complete", "{status}");
    assert_eq!(status["rows"], 3);
    assert_eq!(status["members"], 3);
    assert_eq!(status["usable_as_since"], true);
    let in_order: Vec<&str> = rows
        .iter()
        .map(|r| r["pseudonym"].as_str().unwrap())
        .collect();
    assert_eq!(status["commitment"], commitment(&in_order));
    // The preview disclosed 3 more.
    assert_eq!(app.count("disclosures", "").await - disclosures_before, 6);
    let entries = export_entries(&app, &auditor).await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["outcome"], "ok");
    assert!(has(&entries[0], &format!("export:{first}")));
    assert!(has(&entries[0], "rows:3"));
    assert!(has(&entries[0], &commitment(&in_order)));

    // CSV: a stable header from the purpose, the same rows, values quoted as RFC 4180.
    let (csv_id, ctype, csv) = export(&app, &esp, &format!("{base}&format=csv")).await;
    assert_eq!(ctype, "text/csv; charset=utf-8");
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        header[..5],
        ["pseudonym", "email", "first_name", "country", "language"]
    );
    assert!(header.contains(&"last_email_open_at".to_owned()));
    assert!(!header.iter().any(|h| h == "phone" || h == "last_name"));
    let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(records.len(), 3);
    let csv_pseudonyms: Vec<&str> = records.iter().map(|r| &r[0]).collect();
    assert_eq!(
        csv_pseudonyms, in_order,
        "the same members in the same order"
    );
    let cy = records.iter().find(|r| &r[1] == "cy@example.com").unwrap();
    assert_eq!(&cy[2], "Cy, \"the\" third");
    assert_eq!(&cy[3], "DE");

    // Bob withdraws, Dee consents: the delta since the first export says exactly that.
    consent(&app, &dpo, "bob", "withdrawn").await;
    consent(&app, &dpo, "dee", "granted").await;
    let (delta, _, body) = export(&app, &esp, &format!("{base}&since={first}")).await;
    let rows = lines(&body);
    assert_eq!(rows.len(), 2, "{body}");
    let joined: Vec<&Value> = rows.iter().filter(|r| r["change"] == "joined").collect();
    let left: Vec<&Value> = rows.iter().filter(|r| r["change"] == "left").collect();
    assert_eq!(joined.len(), 1);
    assert_eq!(joined[0]["email"], "dee@example.com");
    assert_eq!(left.len(), 1);
    assert_eq!(left[0], &json!({"change": "left", "pseudonym": bob}));
    let status = app
        .get_json(&format!("/v1/exports/{delta}"), Some(&esp))
        .await;
    assert_eq!(status["rows"], 2);
    assert_eq!(status["members"], 3, "Ann, Cy, Dee");
    assert_eq!(status["since"], first.as_str());

    // The same delta in CSV: `change` first; a left row holds only the pseudonym. And a
    // delta on the delta is empty.
    let (_, _, csv) = export(&app, &esp, &format!("{base}&format=csv&since={csv_id}")).await;
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    assert_eq!(&reader.headers().unwrap()[0], "change");
    let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    let left = records.iter().find(|r| &r[0] == "left").unwrap();
    assert_eq!(&left[1], bob.as_str());
    assert!(left.iter().skip(2).all(str::is_empty));
    let (_, _, body) = export(&app, &esp, &format!("{base}&since={delta}")).await;
    assert_eq!(body, "", "nobody joined or left since");

    let listed = app
        .get_json(&format!("/v1/segments/{seg}/exports"), Some(&esp))
        .await;
    assert_eq!(listed["exports"].as_array().unwrap().len(), 5);
    assert_eq!(export_entries(&app, &auditor).await.len(), 5);
    assert!(app.verify().await.is_ok());
}

#[tokio::test]
async fn bad_export_requests_are_refused_and_change_nothing() {
    let app = spawn_app().await;
    let (_, ingest) = app.create_key("ingest").await;
    let (_, dpo) = app.create_key("dpo").await;
    let esp = app.esp_key("acme-esp", &[EMAIL]).await;
    let other = app.esp_key("other-esp", &[EMAIL]).await;
    identify(&app, &ingest, "ann", "Ann").await;
    consent(&app, &dpo, "ann", "granted").await;
    let seg = segment(
        &app,
        &esp,
        EMAIL,
        json!({"attribute": "country", "eq": "DE"}),
    )
    .await;
    let seg2 = segment(
        &app,
        &esp,
        EMAIL,
        json!({"attribute": "country", "eq": "FR"}),
    )
    .await;
    let (first, _, _) = export(
        &app,
        &esp,
        &format!("/v1/segments/{seg2}/export?recipient=acme-esp"),
    )
    .await;
    let exports = app.count("exports", "").await;
    let disclosures = app.count("disclosures", "").await;
    let base = format!("/v1/segments/{seg}/export");
    for (token, query, status, code) in [
        (&esp, base.clone(), 400, "invalid_query"),
        (
            &esp,
            format!("{base}?recipient=acme-esp&format=xml"),
            400,
            "invalid_query",
        ),
        (
            &esp,
            format!("{base}?recipient=acme-esp&limit=3"),
            400,
            "invalid_query",
        ),
        (
            &esp,
            format!("{base}?recipient=acme-esp&since=nope"),
            409,
            "invalid_since",
        ),
        (
            &esp,
            format!("{base}?recipient=acme-esp&since={first}"),
            409,
            "invalid_since",
        ),
        (
            &other,
            format!("{base}?recipient=acme-esp"),
            404,
            "not_found",
        ),
        (
            &other,
            format!("{base}?recipient=other-esp"),
            404,
            "not_found",
        ),
        (
            &app.admin_token,
            format!("{base}?recipient=other-esp"),
            422,
            "validation_failed",
        ),
        (
            &esp,
            "/v1/segments/nope/export?recipient=acme-esp".into(),
            404,
            "not_found",
        ),
    ] {
        let r = app.get(&query, Some(token)).await;
        assert_eq!(r.status(), status, "{query}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], code, "{query}: {v}");
    }
    assert_eq!(app.count("exports", "").await, exports);
    assert_eq!(app.count("disclosures", "").await, disclosures);
    let r = app.get(&format!("/v1/exports/{first}"), Some(&other)).await;
    assert_eq!(r.status(), 404, "another recipient's export is not shown");
}

/// People for `essential.service` (a contract purpose: no consent needed).
async fn many(app: &TestApp, ingest: &str, n: usize) {
    let mut batch = Vec::new();
    for i in 0..n {
        batch.push(json!({"type": "identify", "userId": format!("u{i:05}"),
            "traits": {"email": format!("u{i:05}@example.com"), "firstName": "N"}}));
        if batch.len() == 400 || i + 1 == n {
            let r = app
                .track(ingest, "/v1/batch", &json!({"batch": batch}))
                .await;
            assert_eq!(r.status(), 200);
            batch.clear();
        }
    }
}

fn admin() -> Caller {
    Caller {
        key_id: "test-admin".into(),
        name: "test admin".into(),
        role: Role::Admin,
        recipient: None,
        purposes: Vec::new(),
        via: Credential::ApiKey,
    }
}

#[tokio::test]
async fn an_interrupted_export_leaves_whole_pages_recorded_and_cannot_be_a_base() {
    let app = spawn_app().await;
    let (_, ingest) = app.create_key("ingest").await;
    let (_, auditor) = app.create_key("auditor").await;
    let esp = app.esp_key("bulk-esp", &["essential.service"]).await;
    let n = 1_100; // three pages
    many(&app, &ingest, n).await;
    let seg = segment(
        &app,
        &esp,
        "essential.service",
        json!({"attribute": "firstName", "exists": true}),
    )
    .await;
    let state = app.state.clone();
    let caller = admin();
    let keyring = state.keyring_for("bulk-esp").await.unwrap();
    let svc = Segments {
        db: &state.db,
        master: &state.master,
        keyring: &keyring,
        audit: &state.audit,
        policies: state.policies.get(),
        caller: &caller,
        actor: caller.actor(),
        request_id: None,
        now: app.clock.now(),
    };

    // The client takes the first chunk and goes away.
    let plan = svc
        .start_export(&seg, "bulk-esp", Format::Ndjson, None)
        .await
        .unwrap();
    let id = plan.export.id.clone();
    let (tx, mut rx) = tokio::sync::mpsc::channel(1);
    let producer = svc.run_export(plan, app.clock.as_ref(), tx);
    let consumer = async move {
        let first = rx.recv().await.unwrap().unwrap();
        drop(rx);
        first
    };
    let ((), first) = tokio::join!(producer, consumer);
    assert_eq!(String::from_utf8(first).unwrap().lines().count(), 500);
    let status = app.get_json(&format!("/v1/exports/{id}"), Some(&esp)).await;
    assert_eq!(status["status"], "interrupted", "{status}");
    assert_eq!(status["usable_as_since"], false);
    let rows = status["rows"].as_i64().unwrap();
    assert!(rows == 1000 || rows == 1100, "whole pages: {rows}");
    // Every row that could have left is recorded, and nothing else.
    assert_eq!(app.count("disclosures", "").await, rows);
    assert_eq!(
        app.count("export_members", &format!("WHERE export_id = '{id}'"))
            .await,
        rows
    );
    let entries = export_entries(&app, &auditor).await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["outcome"], "failed");
    assert!(has(&entries[0], "status:interrupted"));
    assert!(has(&entries[0], &format!("rows:{rows}")));
    let r = app
        .get(
            &format!("/v1/segments/{seg}/export?recipient=bulk-esp&since={id}"),
            Some(&esp),
        )
        .await;
    assert_eq!(r.status(), 409);

    // A full export over HTTP to a client that reads slowly: every member, in pages.
    let r = app
        .get(
            &format!("/v1/segments/{seg}/export?recipient=bulk-esp"),
            Some(&esp),
        )
        .await;
    assert_eq!(r.status(), 200);
    let full = r.headers()["consentry-export-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let mut stream = r.bytes_stream();
    let mut raw = Vec::new();
    while let Some(chunk) = futures_util::StreamExt::next(&mut stream).await {
        raw.extend_from_slice(&chunk.unwrap());
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let body = String::from_utf8(raw).unwrap();
    let rows_sent = lines(&body);
    assert_eq!(rows_sent.len(), n);
    let distinct: BTreeSet<&str> = rows_sent
        .iter()
        .map(|r| r["pseudonym"].as_str().unwrap())
        .collect();
    assert_eq!(distinct.len(), n);
    let status = app
        .get_json(&format!("/v1/exports/{full}"), Some(&esp))
        .await;
    assert_eq!(status["status"], "complete");
    assert_eq!(status["rows"], n);

    // An export whose producer died (nothing advances it) is recorded as interrupted by
    // the stale-export sweep, once.
    let plan = svc
        .start_export(&seg, "bulk-esp", Format::Csv, None)
        .await
        .unwrap();
    let stalled = plan.export.id.clone();
    drop(plan);
    assert_eq!(
        consentry::startup::interrupt_stale_exports(&state)
            .await
            .unwrap(),
        0
    );
    app.clock.advance_secs(601);
    assert_eq!(
        consentry::startup::interrupt_stale_exports(&state)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        consentry::startup::interrupt_stale_exports(&state)
            .await
            .unwrap(),
        0
    );
    let status = app
        .get_json(&format!("/v1/exports/{stalled}"), Some(&esp))
        .await;
    assert_eq!(status["status"], "interrupted");
    let entries = export_entries(&app, &auditor).await;
    assert_eq!(entries.len(), 3);
    assert!(has(&entries[2], "reason:stalled"));
    assert!(app.verify().await.is_ok());
}

#[tokio::test]
async fn a_count_leaves_out_people_the_gate_finds_too_young_for_the_purpose() {
    let app = spawn_app().await;
    let (_, ingest) = app.create_key("ingest").await;
    let (_, dpo) = app.create_key("dpo").await;
    let esp = app.esp_key("acme-esp", &[EMAIL]).await;
    let people = [
        ("kid", json!({"birthday": "2015-06-01"})),
        ("teen", json!({"age": "12"})),
        ("adult", json!({"birthday": "1990-06-01"})),
        ("unknown", json!({})),
    ];
    for (who, extra) in &people {
        let mut traits = json!({"email": format!("{who}@example.com"), "country": "DE"});
        for (k, v) in extra.as_object().unwrap() {
            traits[k] = v.clone();
        }
        let r = app
            .track(
                &ingest,
                "/v1/identify",
                &json!({"userId": who, "traits": traits}),
            )
            .await;
        assert_eq!(r.status(), 200);
        consent(&app, &dpo, who, "granted").await;
    }
    let seg = segment(
        &app,
        &esp,
        EMAIL,
        json!({"attribute": "country", "eq": "DE"}),
    )
    .await;
    let count = app
        .get_json(&format!("/v1/segments/{seg}/count"), Some(&esp))
        .await;
    assert_eq!(count["count"], 2, "{count}");
    let (_, _, body) = export(
        &app,
        &esp,
        &format!("/v1/segments/{seg}/export?recipient=acme-esp"),
    )
    .await;
    let emails: BTreeSet<String> = lines(&body)
        .iter()
        .map(|r| r["email"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        emails,
        BTreeSet::from([
            "adult@example.com".to_owned(),
            "unknown@example.com".to_owned()
        ])
    );
}
