//! Offline imports: `POST /v1/imports` and `consentry import`.
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};

const CRM_MAPPING: &str = r#"
row_key = "CustomerNo"
default_region = "GB"
[identifiers]
customer_id = "CustomerNo"
email = "Email"
phone = "Mobile"
[traits]
first_name = "First"
country = "Country"
age = { column = "Age", type = "number" }
"#;

const CRM: &str = "CustomerNo,Email,Mobile,First,Country,Age
C1,ann@example.com,07911 123456,Ann,GB,34
C2,bob@example.com,,Bob,DE,
C3,not-an-email,,Cy,FR,forty
C4,,,Dee,FR,51
C5,eve@example.com,+33 6 12 34 56 78,Eve,FR,29
";

async fn report(r: reqwest::Response) -> Value {
    let status = r.status();
    let v: Value = r.json().await.unwrap();
    assert_eq!(status, 200, "{v}");
    v
}

async fn import_crm(app: &TestApp, key: &str, query: &str) -> Value {
    report(app.import(key, query, CRM_MAPPING, "crm.csv", CRM).await).await
}

#[tokio::test]
async fn a_crm_file_imports_good_rows_reports_bad_ones_and_a_rerun_changes_nothing() {
    let app = spawn_app().await;
    let (_, key) = app.create_key("ingest").await;
    let (_, dpo) = app.create_key("dpo").await;
    let v = import_crm(&app, &key, "source=crm").await;
    assert_eq!(v["rows_read"], 5);
    assert_eq!(v["imported"], 4);
    assert_eq!(v["subjects_created"], 4);
    assert_eq!(v["rejected"], 1);
    // Every problem of a bad row is listed, with its line (the header is line 1) and column.
    let errors = v["errors"].as_array().unwrap();
    assert!(
        errors
            .contains(&json!({"row": 4, "column": "Email", "reason": "not a valid email address"})),
        "{v}"
    );
    assert!(
        errors.contains(&json!({"row": 4, "column": "Age", "reason": "is not a number"})),
        "{v}"
    );
    assert_eq!(errors.len(), 2, "{v}");
    assert!(
        !v.to_string().contains("not-an-email"),
        "no cell value echoed: {v}"
    );
    assert_eq!(app.active_subjects().await, 4);

    // Found by any identifier the mapping named; traits classified by the taxonomy.
    let s = app
        .get_json("/v1/subjects?customer_id=C1", Some(&dpo))
        .await;
    assert_eq!(
        s["identifier_kinds"],
        json!(["customer_id", "email", "phone"])
    );
    let traits = s["traits"].as_array().unwrap();
    assert!(traits.contains(&json!({"name": "age", "category": "user.demographic.age_range"})));
    assert!(traits.contains(&json!({"name": "first_name", "category": "user.name.first"})));
    let s = app
        .get_json("/v1/subjects?phone=%2B447911123456", Some(&dpo))
        .await;
    assert_eq!(
        s["subject_id"],
        app.get_json("/v1/subjects?email=ann%40example.com", Some(&dpo))
            .await["subject_id"]
    );
    assert_eq!(
        app.count("traits", "WHERE name = 'age' AND value = '34.0'")
            .await,
        1
    );
    assert_eq!(
        app.count("traits", "WHERE name = 'first_name' AND value IS NOT NULL")
            .await,
        0,
        "names are sealed"
    );

    // The same file again: every good row is a duplicate, nothing is written.
    let events = app.count("events", "").await;
    let v = import_crm(&app, &key, "source=crm").await;
    assert_eq!(
        (v["imported"].clone(), v["duplicates"].clone()),
        (json!(0), json!(4))
    );
    assert_eq!(app.count("events", "").await, events);
    assert_eq!(app.active_subjects().await, 4);
    // Still after the blind-index key is rotated (row keys are stored only as keyed hashes).
    let r = app
        .client
        .post(app.url("/v1/keyring/blind_index/rotate"))
        .bearer_auth(&app.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let v = import_crm(&app, &key, "source=crm").await;
    assert_eq!(
        (v["imported"].clone(), v["duplicates"].clone()),
        (json!(0), json!(4))
    );
    assert_eq!(app.count("events", "").await, events);
    assert_eq!(app.active_subjects().await, 4);
    // Another source is another key space: its rows are new, its people the same.
    let v = import_crm(&app, &key, "source=crm-eu").await;
    assert_eq!(
        (v["imported"].clone(), v["subjects_created"].clone()),
        (json!(4), json!(0))
    );
    assert_eq!(app.active_subjects().await, 4);
    assert_eq!(
        app.count("audit_entries", "WHERE action = 'import.finished'")
            .await,
        4
    );
}

#[tokio::test]
async fn a_dry_run_reports_every_bad_row_and_writes_nothing() {
    let app = spawn_app().await;
    let (_, key) = app.create_key("ingest").await;
    let before = (
        app.count("events", "").await,
        app.count("subjects", "").await,
    );
    let v = import_crm(&app, &key, "source=crm&dry_run=true").await;
    assert_eq!(v["dry_run"], true);
    assert_eq!(
        (
            v["rows_read"].clone(),
            v["imported"].clone(),
            v["rejected"].clone()
        ),
        (json!(5), json!(4), json!(1))
    );
    assert_eq!(v["errors"].as_array().unwrap().len(), 2);
    assert_eq!(
        (
            app.count("events", "").await,
            app.count("subjects", "").await
        ),
        before
    );
    assert_eq!(app.count("identifiers", "").await, 0);
    // After the real run, a dry run predicts the duplicates.
    import_crm(&app, &key, "source=crm").await;
    let v = import_crm(&app, &key, "source=crm&dry_run=true").await;
    assert_eq!(
        (v["imported"].clone(), v["duplicates"].clone()),
        (json!(0), json!(4))
    );
}

#[tokio::test]
async fn purchases_from_a_pos_file_land_on_the_tracked_shopper_and_feed_the_aggregates() {
    let app = spawn_app().await;
    let (_, key) = app.create_key("ingest").await;
    app.track(
        &key,
        "/v1/identify",
        &json!({"userId": "u-1", "traits": {"email": "ann@example.com"}}),
    )
    .await;
    let mapping = r#"
[identifiers]
email = "customer.email"
[purchase]
order_id = "order"
amount = "total"
default_currency = "EUR"
currency = "currency"
time = "at"
product_ids = "skus"
"#;
    let file = r#"{"order": "O-1", "customer": {"email": "Ann@Example.com"}, "total": 40, "at": "2026-11-20", "skus": "p1|p2"}
{"order": "O-2", "customer": {"email": "ann@example.com"}, "total": "20.50", "currency": "gbp", "at": "2026-11-25 10:00:00"}

{"order": "O-3", "customer": {"email": "ann@example.com"}, "total": "12,50", "at": "2026-11-26"}
{"order": "O-4", "customer": {"email": "ann@example.com"}, "total": 5, "at": "2031-01-01"}
not json
{"order": "O-5", "total": 1}
"#;
    let v = report(
        app.import(&key, "source=pos", mapping, "orders.ndjson", file)
            .await,
    )
    .await;
    assert_eq!(v["rows_read"], 6, "the blank line is not a row: {v}");
    assert_eq!(
        (v["imported"].clone(), v["subjects_created"].clone()),
        (json!(2), json!(0))
    );
    let errors = v["errors"].as_array().unwrap();
    assert!(
        errors
            .iter()
            .any(|e| e["row"] == 4 && e["column"] == "total"),
        "{v}"
    );
    assert!(
        errors.iter().any(|e| e["row"] == 5 && e["column"] == "at"),
        "{v}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e["row"] == 6 && e["column"].is_null()),
        "{v}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e["row"] == 7 && e["reason"].as_str().unwrap().contains("has no identifier")),
        "{v}"
    );
    assert_eq!(app.active_subjects().await, 1);
    assert_eq!(
        app.scalar_i64("SELECT purchase_count FROM aggregates")
            .await,
        2
    );
    assert_eq!(
        app.scalar_i64("SELECT CAST(lifetime_value * 100 AS BIGINT) FROM aggregates")
            .await,
        6050
    );
    assert_eq!(
        app.count(
            "events",
            "WHERE name = 'Order Completed' AND properties LIKE '%\"currency\":\"GBP\"%'"
        )
        .await,
        1
    );
}

#[tokio::test]
async fn a_suppressed_person_is_not_imported_again() {
    let app = spawn_app().await;
    let (_, key) = app.create_key("ingest").await;
    // What erasure leaves behind: a keyed hash of the normalised email.
    let hash = app
        .keyring
        .get()
        .suppression_hash("email", "bob@example.com")
        .unwrap();
    consentry::store::suppressions::insert(app.db.conn(), "email", &hash, "erasure", 0)
        .await
        .unwrap();
    let v = import_crm(&app, &key, "source=crm").await;
    assert_eq!(
        (v["imported"].clone(), v["skipped_suppressed"].clone()),
        (json!(3), json!(1))
    );
    assert_eq!(app.active_subjects().await, 3);
}

#[tokio::test]
async fn a_bad_form_mapping_or_file_is_refused_whole_with_its_code() {
    let app = spawn_app().await;
    let (_, key) = app.create_key("ingest").await;
    let cases = [
        (
            "source=crm",
            "[identifiers]\nshoe = \"Email\"\n",
            "a.csv",
            CRM,
            "invalid_mapping",
            "identifiers.shoe",
        ),
        (
            "source=crm",
            "[traits]\nage = \"Age\"\n",
            "a.csv",
            CRM,
            "invalid_mapping",
            "[identifiers]",
        ),
        (
            "source=crm",
            "row_key = \"Mail\"\n[identifiers]\nemail = \"Mail\"\n",
            "a.csv",
            CRM,
            "invalid_file",
            "`Mail`",
        ),
        (
            "source=crm",
            "row_key = \"Email\"\n[identifiers]\nemail = \"Email\"\n",
            "a.txt",
            CRM,
            "invalid_mapping",
            "format",
        ),
        (
            "source=c%20r",
            CRM_MAPPING,
            "a.csv",
            CRM,
            "invalid_mapping",
            "source",
        ),
        (
            "source=crm",
            "[identifiers]\nemail = \"Email\"\n",
            "a.csv",
            CRM,
            "invalid_mapping",
            "row_key",
        ),
        ("", CRM_MAPPING, "a.csv", CRM, "invalid_query", "source"),
        (
            "source=crm&dryrun=1",
            CRM_MAPPING,
            "a.csv",
            CRM,
            "invalid_query",
            "dryrun",
        ),
    ];
    for (query, mapping, name, file, code, needle) in cases {
        let r = app.import(&key, query, mapping, name, file).await;
        assert_eq!(r.status(), 400, "{query} {mapping}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], code, "{v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(needle),
            "{v}"
        );
    }
    let r = app
        .client
        .post(app.url("/v1/imports?source=crm"))
        .bearer_auth(&key)
        .multipart(reqwest::multipart::Form::new().text("mapping", CRM_MAPPING))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(app.count("events", "").await, 0);
    assert_eq!(app.count("subjects", "").await, 0);
}
