use serde_json::Value;

use crate::helpers::spawn_app;

#[tokio::test]
async fn healthz_and_readyz_answer_with_a_request_id() {
    let app = spawn_app().await;
    let resp = app.get("/healthz", None).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().contains_key("x-request-id"));
    let resp = app.get("/readyz", None).await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["migrations"], "current");
}

#[tokio::test]
async fn readyz_reports_unready_when_the_database_is_gone() {
    let app = spawn_app().await;
    app.db.clone().close().await.unwrap();
    let resp = app.get("/readyz", None).await;
    assert_eq!(resp.status(), 503);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "not_ready");
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_audit_appends() {
    let app = spawn_app().await;
    app.get("/healthz", None).await;
    app.get("/v1/whoami", Some(&app.admin_token)).await;
    let body = app.get("/metrics", None).await.text().await.unwrap();
    assert!(body.contains("consentry_http_requests_total"), "{body}");
    assert!(body.contains("route=\"/healthz\""), "{body}");
    assert!(
        body.contains("consentry_http_request_duration_seconds_bucket"),
        "{body}"
    );
    assert!(
        body.contains("consentry_audit_entries_appended_total"),
        "{body}"
    );
}

#[tokio::test]
async fn openapi_lists_security_schemes_and_the_error_schema() {
    let app = spawn_app().await;
    let v: Value = app.get("/openapi.json", None).await.json().await.unwrap();
    assert!(v["openapi"].as_str().unwrap().starts_with("3.1"));
    assert!(v["components"]["securitySchemes"]["bearer"].is_object());
    assert!(v["components"]["schemas"]["ErrorBody"].is_object());
    assert!(v["paths"]["/v1/audit/proof/{seq}"]["get"].is_object());
}
