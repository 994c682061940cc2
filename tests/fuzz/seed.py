#!/usr/bin/env python3
"""Writes starting inputs for the fuzz targets into CORPUS/<target>/ from the repository's
own examples (the shipped policies, example imports, the template compatibility cases) and
a few hand-written bodies. Nothing here is committed as a corpus: libFuzzer grows it."""
import hashlib
import json
import pathlib
import sys

root = pathlib.Path(__file__).resolve().parents[2]
corpus = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else root / "fuzz" / "corpus")


def put(target, data):
    if isinstance(data, str):
        data = data.encode()
    d = corpus / target
    d.mkdir(parents=True, exist_ok=True)
    (d / ("seed-" + hashlib.sha1(data).hexdigest()[:16])).write_bytes(data)


ident = {"type": "identify", "userId": "u1", "messageId": "m1",
         "traits": {"email": "ann@example.com", "firstName": "Ann"},
         "context": {"consent": {"categoryPreferences": {"email_marketing": True}}},
         "timestamp": "2026-11-30T10:00:00.000Z", "sentAt": "2026-11-30T10:00:01Z"}
track = {"type": "track", "anonymousId": 42, "event": "Order Completed",
         "properties": {"total": 12.5, "products": [{"product_id": "p1"}]},
         "originalTimestamp": "2026-11-30T10:00:00+01:00"}
alias = {"type": "alias", "userId": "u1", "previousId": "anon-1"}
group = {"type": "group", "userId": "u1", "groupId": "g1", "traits": {"plan": "pro"}}
page = {"type": "page", "userId": "u1", "name": "Home", "category": "Docs"}
for i, m in enumerate([ident, track, page, {**page, "type": "screen"}, group, alias]):
    put("tracking_message", bytes([i]) + json.dumps(m).encode())
put("tracking_message", b"\x06" + json.dumps(
    {"batch": [ident, track, alias], "context": {"library": {"name": "analytics-python"}},
     "sentAt": "2026-11-30T10:00:02Z", "writeKey": "x"}).encode())

for f in (root / "examples" / "imports").glob("*.toml"):
    put("import_mapping", f.read_bytes())

put("consent_payload", json.dumps({
    "subject": {"email": "ann@example.com"}, "purpose": "email_marketing",
    "status": "granted", "method": "web_form", "source": "footer-form",
    "notice_version": "2026-01", "captured_at": "2026-11-30T10:00:00Z",
    "proof": {"user_agent": "Mozilla/5.0", "form_id": "f1", "ip": "203.0.113.9"}}))
put("consent_payload", json.dumps({
    "subject": {"phone": "+44 7911 123456"}, "purpose": "marketing.communications.email",
    "status": "withdrawn", "method": "api", "source": "crm", "proof": {"ip": "2001:db8::1"}}))

for rule in [
    {"event": "Product Viewed", "within": "48h"},
    {"aggregate": "lifetime_value", "gt": 500},
    {"not": {"any": [{"event": "Email Opened", "within": "30d"}, {"event": "Email Link Clicked", "within": "30d"}]}},
    {"all": [{"event": "Email Opened", "within": "7d"}, {"event": "Order Completed", "within": "30d", "count": {"gte": 1}}]},
    {"aggregate": "cart_abandoned_at", "exists": True},
    {"event": "*", "type": "page", "within": "2w"},
    {"event": "Order Completed", "where": [{"property": "total", "gte": 100}, {"property": "product_id", "in": ["p1", "p2"]}]},
    {"all": [{"attribute": "country", "eq": "DE"}, {"aggregate": "purchase_count", "gt": 0}]},
    {"score": "churn", "gte": 0.5},
    {"attribute": "interests", "contains": "shoes"},
]:
    put("segment_rule", json.dumps(rule))

cases = json.loads((root / "tests" / "fixtures" / "handlebars_cases.json").read_text())
for c in cases:
    put("template_compile", c["template"])

for i, name in enumerate(["taxonomy.yaml", "identifiers.yaml", "purposes.yaml"]):
    put("policy_files", bytes([i]) + (root / "policies" / name).read_bytes())

put("catalog_line", "\n".join(json.dumps(p) for p in [
    {"id": "p1", "name": "Boots", "url": "https://shop.example/p1", "price": 59.9,
     "currency": "EUR", "image_url": "https://shop.example/p1.png", "category": "shoes",
     "available": True},
    {"id": "p2", "deleted": True},
    {"sku": "p3", "name": "Hat", "url": "https://shop.example/p3", "price": "12.50"},
]))

put("access_token", b"\x01" + json.dumps({
    "iss": "consentry", "sub": "0123456789abcdef", "role": "esp", "rcp": "r1",
    "pur": ["marketing.communications.email"], "iat": 1796000000, "exp": 1796200000,
    "jti": "j1"}).encode())
put("access_token", "\x00eyJhbGciOiJIUzI1NiIsImtpZCI6InRzMSJ9.eyJpc3MiOiJjb25zZW50cnkifQ.c2ln")
put("api_key", "cs_0123456789abcdef_" + "A" * 43)
print(f"seeded {corpus}")
