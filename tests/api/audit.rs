use consentry::audit::merkle::{self, Hash};
use consentry::audit::{Entry, VerifyError};
use serde_json::Value;

use crate::helpers::{Options, TestApp, spawn_app, spawn_app_with};

fn h(s: &str) -> Hash {
    hex::decode(s).unwrap().try_into().unwrap()
}

fn hashes(v: &Value) -> Vec<Hash> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| h(x.as_str().unwrap()))
        .collect()
}

/// A log of 10 entries (the bootstrap, then nine key creations), checkpointed at start
/// (size 1) and every 4 entries (sizes 4 and 8).
async fn app_with_ten_entries() -> (TestApp, String) {
    let app = spawn_app_with(Options {
        checkpoint_every: 4,
        ..Options::default()
    })
    .await;
    let (_, auditor) = app.create_key("auditor").await;
    for _ in 0..8 {
        app.create_key("dpo").await;
    }
    // Every entry in its place before a test edits the tables.
    app.settle_audit().await;
    (app, auditor)
}

fn broken_at(result: Result<consentry::audit::VerifyReport, VerifyError>) -> (u64, String) {
    match result {
        Err(VerifyError::Broken(f)) => (f.seq, f.reason),
        other => panic!("expected a broken log, got {other:?}"),
    }
}

#[tokio::test]
async fn an_untouched_log_verifies_and_its_checkpoint_matches() {
    let (app, auditor) = app_with_ten_entries().await;
    let report = app.verify().await.expect("verifies");
    assert_eq!(report.entries, 10);
    assert_eq!(report.checkpoints, 3);

    let cp: Value = app.get_json("/v1/audit/checkpoint", Some(&auditor)).await;
    assert_eq!(cp["size"], 8);
    let note = cp["note"].as_str().unwrap();
    assert!(note.starts_with("consentry.local/audit\n8\n"), "{note}");
    assert!(note.contains("\n\n\u{2014} consentry.local/audit "));
    let pk = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        cp["keys"][0]["public_key"].as_str().unwrap(),
    )
    .unwrap();
    let body = consentry::audit::checkpoint::verify_note(note, "consentry.local/audit", &pk)
        .expect("signature verifies with the published key");
    assert_eq!(hex::encode(body.root), cp["root"].as_str().unwrap());
}

#[tokio::test]
async fn entries_page_in_order_and_each_leaf_hash_is_recomputable() {
    let (app, auditor) = app_with_ten_entries().await;
    let p1: Value = app
        .get_json("/v1/audit/entries?limit=4", Some(&auditor))
        .await;
    assert_eq!(p1["entries"].as_array().unwrap().len(), 4);
    assert_eq!(p1["next_after"], 3);
    let p2: Value = app
        .get_json("/v1/audit/entries?after=3&limit=100", Some(&auditor))
        .await;
    let seqs: Vec<u64> = p2["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (4..10).collect::<Vec<_>>());
    assert!(p2["next_after"].is_null());
    // `after` past any sequence number there can be is an empty page, not a 400.
    let end: Value = app
        .get_json(
            &format!("/v1/audit/entries?after={}&limit=1", i64::MAX),
            Some(&auditor),
        )
        .await;
    assert_eq!(end["entries"].as_array().unwrap().len(), 0, "{end}");
    let beyond = app
        .get(
            &format!("/v1/audit/entries?after={}", i64::MAX as u64 + 1),
            Some(&auditor),
        )
        .await;
    assert_eq!(beyond.status(), 400);
    for e in p2["entries"].as_array().unwrap() {
        let canonical = base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            e["canonical"].as_str().unwrap(),
        )
        .unwrap();
        assert_eq!(hex::encode(merkle::leaf_hash(&canonical)), e["leaf_hash"]);
    }
}

#[tokio::test]
async fn inclusion_and_consistency_proofs_verify_against_the_checkpoint_root() {
    let (app, auditor) = app_with_ten_entries().await;
    let cp: Value = app.get_json("/v1/audit/checkpoint", Some(&auditor)).await;
    let root8 = h(cp["root"].as_str().unwrap());
    for seq in 0..8u64 {
        let p: Value = app
            .get_json(&format!("/v1/audit/proof/{seq}?size=8"), Some(&auditor))
            .await;
        let path = hashes(&p["path"]);
        let leaf = h(p["leaf_hash"].as_str().unwrap());
        assert!(
            merkle::verify_inclusion(seq, 8, &leaf, &path, &root8),
            "seq {seq}"
        );
    }
    let c: Value = app
        .get_json("/v1/audit/consistency?from=3&to=8", Some(&auditor))
        .await;
    let path = hashes(&c["path"]);
    assert_eq!(h(c["to_root"].as_str().unwrap()), root8);
    assert!(merkle::verify_consistency(
        3,
        8,
        &h(c["from_root"].as_str().unwrap()),
        &root8,
        &path
    ));

    for bad in [
        "/v1/audit/proof/8?size=8",
        "/v1/audit/proof/0?size=99",
        "/v1/audit/consistency?from=5&to=2",
    ] {
        let resp = app.get(bad, Some(&auditor)).await;
        assert_eq!(resp.status(), 400, "{bad}");
    }
}

#[tokio::test]
async fn a_periodic_checkpoint_covers_entries_written_since_the_last_one() {
    let (app, auditor) = app_with_ten_entries().await;
    assert_eq!(
        app.state.audit.checkpoint_if_behind(&app.db).await.unwrap(),
        Some(10)
    );
    assert_eq!(
        app.state.audit.checkpoint_if_behind(&app.db).await.unwrap(),
        None
    );
    let cp: Value = app.get_json("/v1/audit/checkpoint", Some(&auditor)).await;
    assert_eq!(cp["size"], 10);
    assert_eq!(app.verify().await.unwrap().checkpoints, 4);
}

async fn snapshot(app: &TestApp) {
    app.exec("CREATE TABLE audit_backup AS SELECT * FROM audit_entries")
        .await;
}

async fn restore(app: &TestApp) {
    app.exec("DELETE FROM audit_entries").await;
    app.exec("INSERT INTO audit_entries SELECT * FROM audit_backup")
        .await;
    // The insert trigger advanced the head once per restored row: put it back.
    app.exec("UPDATE audit_head SET size = (SELECT COUNT(*) FROM audit_entries)")
        .await;
    app.verify().await.expect("restored log verifies");
}

#[tokio::test]
async fn flipping_any_column_of_an_entry_is_detected_at_that_entry() {
    let (app, _) = app_with_ten_entries().await;
    snapshot(&app).await;
    let edits = [
        "at_us = at_us + 1".to_owned(),
        "actor_key_id = 'X' || substr(actor_key_id, 2)".to_owned(),
        "actor_role = 'X' || substr(actor_role, 2)".to_owned(),
        "action = 'X' || substr(action, 2)".to_owned(),
        "purpose = 'x'".to_owned(),
        "subject_ref = 'x'".to_owned(),
        "attributes = '[' || substr(attributes, 3)".to_owned(),
        "outcome = 'X' || substr(outcome, 2)".to_owned(),
        "request_id = 'X'".to_owned(),
        format!("leaf_hash = {}", app.blob(&[0u8; 32])),
    ];
    for seq in [0u64, 5, 9] {
        for edit in &edits {
            app.exec(&format!(
                "UPDATE audit_entries SET {edit} WHERE seq = {seq}"
            ))
            .await;
            let (at, why) = broken_at(app.verify().await);
            assert_eq!(at, seq, "{edit}: {why}");
            restore(&app).await;
        }
    }
}

#[tokio::test]
async fn deleting_swapping_or_reordering_entries_is_detected() {
    let (app, _) = app_with_ten_entries().await;
    snapshot(&app).await;

    app.exec("DELETE FROM audit_entries WHERE seq = 5").await;
    let (at, why) = broken_at(app.verify().await);
    assert_eq!(at, 5, "{why}");
    assert!(why.contains("missing"), "{why}");
    restore(&app).await;

    // Reorder: entries 5 and 6 trade places (their sequence numbers are swapped).
    app.exec("UPDATE audit_entries SET seq = -1 WHERE seq = 5")
        .await;
    app.exec("UPDATE audit_entries SET seq = 5 WHERE seq = 6")
        .await;
    app.exec("UPDATE audit_entries SET seq = 6 WHERE seq = -1")
        .await;
    assert_eq!(broken_at(app.verify().await).0, 5);
    restore(&app).await;

    // Swap: entries 2 and 3 trade contents but keep their numbers.
    app.exec("UPDATE audit_entries SET action = 'swap-tmp' WHERE seq = 2")
        .await;
    app.exec(
        "UPDATE audit_entries SET action = (SELECT action FROM audit_backup WHERE seq = 2), \
         attributes = (SELECT attributes FROM audit_backup WHERE seq = 2), \
         leaf_hash = (SELECT leaf_hash FROM audit_backup WHERE seq = 2) WHERE seq = 3",
    )
    .await;
    app.exec(
        "UPDATE audit_entries SET action = (SELECT action FROM audit_backup WHERE seq = 3), \
         attributes = (SELECT attributes FROM audit_backup WHERE seq = 3), \
         leaf_hash = (SELECT leaf_hash FROM audit_backup WHERE seq = 3) WHERE seq = 2",
    )
    .await;
    assert_eq!(broken_at(app.verify().await).0, 2);
    restore(&app).await;
}

#[tokio::test]
async fn truncating_the_tail_after_a_checkpoint_is_detected() {
    let (app, _) = app_with_ten_entries().await;
    app.exec("DELETE FROM audit_entries WHERE seq >= 6").await;
    let (at, why) = broken_at(app.verify().await);
    assert_eq!(at, 6, "{why}");
    assert!(why.contains("truncated"), "{why}");
}

#[tokio::test]
async fn a_consistent_rewrite_of_an_entry_is_caught_by_the_checkpoint() {
    let (app, _) = app_with_ten_entries().await;
    // The attacker edits entry 1 and recomputes its leaf hash, but cannot re-sign.
    let entries = consentry::audit::entries(&app.db, Some(0), 1)
        .await
        .unwrap();
    let mut forged: Entry = entries[0].clone();
    forged.action = "keys.nothing_happened".into();
    app.exec(&format!(
        "UPDATE audit_entries SET action = 'keys.nothing_happened', leaf_hash = {} WHERE seq = 1",
        app.blob(&forged.leaf_hash())
    ))
    .await;
    let (at, why) = broken_at(app.verify().await);
    assert_eq!(at, 1, "{why}");
    assert!(why.contains("checkpoint 4"), "{why}");
}

#[tokio::test]
async fn a_forged_checkpoint_signature_is_detected() {
    let (app, _) = app_with_ten_entries().await;
    app.exec("UPDATE audit_checkpoints SET note = replace(note, '\u{2014} consentry.local/audit ', '\u{2014} consentry.local/audit AAAA') WHERE size = 4")
        .await;
    let (at, why) = broken_at(app.verify().await);
    assert_eq!(at, 1, "{why}");
}

#[tokio::test]
async fn when_the_audit_log_cannot_be_written_the_change_is_refused_and_nothing_changes() {
    let app = spawn_app().await;
    let keys_before = app.scalar_i64("SELECT COUNT(*) FROM api_keys").await;
    let entries_before = app.scalar_i64("SELECT COUNT(*) FROM audit_entries").await;
    match app.backend() {
        sea_orm::DbBackend::Postgres => {
            app.exec(
                "CREATE FUNCTION audit_block() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'audit blocked'; END $$ LANGUAGE plpgsql",
            )
            .await;
            app.exec("CREATE TRIGGER audit_block BEFORE INSERT ON audit_pending FOR EACH ROW EXECUTE FUNCTION audit_block()")
                .await;
        }
        _ => {
            app.exec("CREATE TRIGGER audit_block BEFORE INSERT ON audit_pending BEGIN SELECT RAISE(ABORT, 'audit blocked'); END")
                .await;
        }
    }
    let resp = app
        .post_json(
            "/v1/keys",
            Some(&app.admin_token),
            &serde_json::json!({"name": "n", "role": "dpo"}),
        )
        .await;
    assert_eq!(resp.status(), 503);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "audit_unavailable");
    assert!(
        !v.to_string().contains("audit blocked"),
        "no database text leaks"
    );
    assert_eq!(
        app.scalar_i64("SELECT COUNT(*) FROM api_keys").await,
        keys_before
    );
    assert_eq!(
        app.scalar_i64("SELECT COUNT(*) FROM audit_entries").await,
        entries_before
    );
    // A denial that cannot be recorded is not answered as a plain 401 either.
    assert_eq!(app.get("/v1/keys", None).await.status(), 503);
}

#[tokio::test]
async fn two_gateway_nodes_on_one_database_share_one_gap_free_sequence() {
    let a = spawn_app().await;
    // A second node over the same database and master key.
    let settings = consentry::config::Settings {
        listen: "127.0.0.1:0".into(),
        data_dir: a.data_dir.path().join("node-b"),
        database_url: Some(secrecy::SecretString::from(a.state.settings.database_url())),
        master_key: Some(secrecy::SecretString::from(
            crate::helpers::test_master_key(),
        )),
        checkpoint_every_entries: 7,
        ..consentry::config::Settings::default()
    };
    let b = consentry::startup::Application::build(settings)
        .await
        .unwrap();
    assert!(
        b.bootstrap_token().is_none(),
        "only the first node bootstraps"
    );
    let b_url = format!("http://127.0.0.1:{}", b.port());
    tokio::spawn(b.run_until_stopped());

    let mut tasks = Vec::new();
    for i in 0..40 {
        let client = a.client.clone();
        let url = if i % 2 == 0 {
            a.url("/v1/whoami")
        } else {
            format!("{b_url}/v1/whoami")
        };
        // Unauthenticated calls: each one appends a denial entry on its node.
        tasks.push(tokio::spawn(async move {
            client.get(url).send().await.unwrap().status()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 401);
    }
    let report = a.verify().await.expect("the shared log verifies");
    assert_eq!(report.entries, 41);
}

/// Entries are placed in the order they became visible, each once: a transaction still
/// open keeps its entry pending (not placed, not lost), one that rolls back leaves none,
/// and an entry committed later than a younger one is placed after it. Only PostgreSQL
/// lets two writers hold open transactions at once; on SQLite writers take turns.
#[tokio::test]
async fn pending_entries_are_placed_once_their_transaction_commits_and_only_then() {
    use consentry::audit::{NewEntry, Outcome};
    use consentry::domain::Actor;
    let app = spawn_app().await;
    let audit = &app.state.audit;
    let entry = |action: &str| NewEntry::new(Actor::anonymous(), action, Outcome::Ok);
    let size = audit.settle(&app.db).await.expect("settle");
    let actions = "SELECT COUNT(*) FROM audit_entries WHERE action LIKE 'test.%'";

    let rolled_back = app.db.begin_write().await.unwrap();
    audit
        .append(&rolled_back, entry("test.rolled_back"))
        .await
        .unwrap();
    rolled_back.rollback().await.unwrap();

    if app.backend() == sea_orm::DbBackend::Postgres {
        let older = app.db.begin_write().await.unwrap();
        audit.append(&older, entry("test.older")).await.unwrap();
        audit.record(&app.db, entry("test.younger")).await.unwrap();
        // The older entry's transaction is still open: only the younger one is placed.
        assert_eq!(audit.settle(&app.db).await.unwrap(), size + 1);
        older.commit().await.unwrap();
        assert_eq!(audit.settle(&app.db).await.unwrap(), size + 2);
        let placed: Vec<String> = consentry::audit::entries(&app.db, Some(size - 1), 10)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.action)
            .collect();
        assert_eq!(placed, ["test.younger", "test.older"]);
    } else {
        audit.record(&app.db, entry("test.younger")).await.unwrap();
        audit.record(&app.db, entry("test.older")).await.unwrap();
    }
    assert_eq!(
        app.scalar_i64(actions).await,
        2,
        "none for the rolled-back one"
    );
    assert_eq!(app.count("audit_pending", "").await, 0);
    let report = app.verify().await.expect("the log verifies");
    assert_eq!(report.entries, size + 2);
}

/// An entry appended by a request is placed by the node's sequencer on its own, within
/// moments, without anyone reading the log.
#[tokio::test]
async fn the_sequencer_places_entries_without_a_reader() {
    let app = spawn_app().await;
    app.create_key("dpo").await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let sql = sea_orm::Statement::from_string(
            app.backend(),
            "SELECT COUNT(*) FROM audit_pending".to_owned(),
        );
        let row = sea_orm::ConnectionTrait::query_one_raw(app.db.conn(), sql)
            .await
            .unwrap()
            .unwrap();
        if row.try_get_by_index::<i64>(0).unwrap() == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still pending after 5 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn migrating_down_past_the_pending_table_is_refused_while_entries_wait_there() {
    use migration::{Migrator, MigratorTrait};
    use sea_orm::ConnectionTrait;
    let dir = tempfile::tempdir().unwrap();
    let url = crate::helpers::fresh_database_url(dir.path()).await;
    let db = crate::helpers::connect(&url, 1).await;
    db.migrate().await.unwrap();
    let conn = db.conn();
    conn.execute_unprepared(
        "INSERT INTO audit_pending (at_us, actor_key_id, actor_role, action, attributes, outcome) \
         VALUES (1, 'k', 'admin', 'keys.create', '[]', 'ok')",
    )
    .await
    .unwrap();
    // The migrations after the one that made the table go first.
    let all = Migrator::migrations();
    let at = all
        .iter()
        .position(|m| m.name() == "m20261204_000018_audit_pending")
        .unwrap();
    let later = u32::try_from(all.len() - at - 1).unwrap();
    if later > 0 {
        Migrator::down(conn, Some(later)).await.unwrap();
    }
    let err = Migrator::down(conn, Some(1)).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("1 audit entries are still pending"),
        "{err}"
    );
    let left = conn
        .query_one_raw(sea_orm::Statement::from_string(
            db.backend(),
            "SELECT COUNT(*) AS n FROM audit_pending",
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get::<i64>("", "n")
        .unwrap();
    assert_eq!(left, 1);
    conn.execute_unprepared("DELETE FROM audit_pending")
        .await
        .unwrap();
    Migrator::down(conn, Some(1)).await.unwrap();
    assert_eq!(
        Migrator::get_pending_migrations(conn).await.unwrap().len(),
        later as usize + 1
    );
    db.close().await.ok();
}

#[tokio::test]
async fn the_log_verifies_while_the_sequencer_keeps_placing_entries() {
    let app = spawn_app().await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (client, url, stop) = (app.client.clone(), app.url("/v1/whoami"), stop.clone());
        tokio::spawn(async move {
            let mut n = 0u32;
            // Unauthenticated calls: each appends a denial entry, placed by the sequencer.
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                assert_eq!(client.get(&url).send().await.unwrap().status(), 401);
                n += 1;
            }
            n
        })
    };
    let mut sizes = Vec::new();
    for _ in 0..30 {
        // No settling first: the sequencer places entries while the log is read.
        let report = consentry::audit::verify(&app.db, &app.keyring.get())
            .await
            .expect("a growing log verifies");
        sizes.push(report.entries);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let appended = writer.await.unwrap();
    assert!(
        appended > 0 && sizes.windows(2).all(|w| w[0] <= w[1]),
        "{sizes:?}"
    );
    assert!(
        sizes.last() > sizes.first(),
        "the log grew while it was verified: {sizes:?}"
    );
    assert!(app.verify().await.is_ok());
}
