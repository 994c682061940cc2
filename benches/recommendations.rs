//! Rendering and recommendations (issue 7).
//!
//! 1. Campaign render throughput: the seed's template with a six-product recommendation
//!    block, every message of a campaign over `CONSENTRY_BENCH_RENDER_SUBJECTS` people
//!    (default 100,000) produced by the gateway (segment page, gate, minimised views,
//!    recommendation blocks, unsubscribe tokens, rendering, disclosure records), against
//!    the same template rendered by plain handlebars on prepared data of the same shape,
//!    in the same run.
//! 2. Recommendations for one person: p50/p99 of `GET .../recommendations` through the
//!    service (the gate's decision, the person's events, the model, the catalogue, the
//!    disclosure record) with `CONSENTRY_BENCH_REC_PRODUCTS` products (default 100,000)
//!    and `CONSENTRY_BENCH_REC_SUBJECTS` people (default 1,000,000), against a profile
//!    read of the same people (the gate alone).
//!
//! The population goes in through the real ingest path (an identify with the newsletter
//! consent, two product views, an order of one to three products; product popularity
//! skewed). `CONSENTRY_BENCH_REC_DIR=DIR` keeps the SQLite database between runs (the
//! population is topped up, not re-ingested).
//!
//! `cargo bench --bench recommendations`
mod common;

use std::sync::Arc;
use std::time::Instant;

use consentry::domain::{Actor, Role, Timestamp};
use consentry::profiles::segment::{Kind, Message};
use serde_json::{Map, Value, json};

const EMAIL: &str = "marketing.communications.email";
const DAY_US: i64 = 86_400_000_000;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.replace('_', "").parse().ok())
        .unwrap_or(default)
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A product index, popular ones far more often (about a power law).
    fn product(&mut self, products: u64) -> u64 {
        ((products as f64) * self.unit().powi(4)) as u64 % products
    }
}

fn props(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

fn person(i: u64, products: u64, render_subjects: u64, now: i64) -> Vec<Message> {
    let mut rng = Rng(i ^ 0x5EED);
    let user = format!("rec-u{i}");
    let mut at = now - (rng.next() % 30 + 1) as i64 * DAY_US;
    let mut out = Vec::with_capacity(4);
    let mut push = |mut m: Message, at: i64, n: usize| {
        m.user_id = Some(user.clone());
        m.message_id = format!("rec-{i}-{n}");
        m.timestamp = Timestamp::from_unix_micros(at.min(now));
        out.push(m);
    };
    let mut id = Message::new(
        Kind::Identify,
        String::new(),
        Timestamp::from_unix_micros(at),
    );
    let first = ["Ada", "Ben", "Chloe", "Dev", "Elif", "Femi"][(i % 6) as usize];
    id.traits = props(json!({
        "email": format!("rec{i}@example.com"),
        "firstName": first,
        "plan": if i < render_subjects { "first" } else { "rest" },
    }));
    id.consents
        .push(("email_marketing".into(), "granted", "double_opt_in"));
    push(id, at, 0);
    for n in 1..3 {
        at += 3_600_000_000;
        let mut v = Message::new(Kind::Track, String::new(), Timestamp::from_unix_micros(at));
        v.event = Some("Product Viewed".into());
        v.properties = props(json!({"product_id": format!("sku-{}", rng.product(products))}));
        push(v, at, n);
    }
    at += 3_600_000_000;
    let base = rng.product(products);
    let items: Vec<Value> = (0..(rng.next() % 3 + 1))
        .map(|k| json!({"product_id": format!("sku-{}", (base + k * (1 + rng.next() % 3)) % products)}))
        .collect();
    let mut o = Message::new(Kind::Track, String::new(), Timestamp::from_unix_micros(at));
    o.event = Some("Order Completed".into());
    o.properties = props(
        json!({"order_id": format!("o{i}"), "total": 42.5, "currency": "EUR", "products": items}),
    );
    push(o, at, 3);
    out
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

const SUBJECT: &str = "{{default customer_name \"Hello\"}}, picked for you";
const HTML: &str = "<div>Hello, {{customer_name}}!</div>\n<div>Based on your recent activity, we recommend:</div>\n{{#each recommendations}}\n<div><a href=\"{{this.url}}\"><img src=\"{{this.image_url}}\" alt=\"{{this.product_name}}\" /></a> {{this.price}} {{this.currency}}</div>\n{{else}}\n<div>See what is new this week.</div>\n{{/each}}\n<p><a href=\"{{unsubscribe_url}}\">Unsubscribe</a></p>\n";
const TEXT: &str = "Hello {{customer_name}},\n{{#each recommendations}}- {{this.product_name}}: {{this.url}}\n{{/each}}\nUnsubscribe: {{unsubscribe_url}}\n";

#[tokio::main]
async fn main() {
    let render_subjects = env_u64("CONSENTRY_BENCH_RENDER_SUBJECTS", 100_000);
    let subjects = env_u64("CONSENTRY_BENCH_REC_SUBJECTS", 1_000_000).max(render_subjects);
    let products = env_u64("CONSENTRY_BENCH_REC_PRODUCTS", 100_000);
    let kept = std::env::var("CONSENTRY_BENCH_REC_DIR").ok();
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = kept
        .as_ref()
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&dir).expect("dir");
    let app = consentry::startup::Application::build(common::settings(&dir, None))
        .await
        .expect("app");
    let state = app.state();
    let keyring = state.keyring.get();
    let policies = state.policies.get();
    let now = state.clock.now();
    println!("| benchmark | size | Consentry | baseline | ratio |");
    println!("|---|---|---|---|---|");

    // The catalogue.
    let t = Instant::now();
    let mut load = consentry::policy::catalog::CatalogLoad::new(now);
    for p in 0..products {
        load.object(
            p + 1,
            &props(
                json!({"id": format!("sku-{p}"), "name": format!("Product {p}"),
                "url": format!("https://shop.example/p/sku-{p}"),
                "image_url": format!("https://cdn.example/sku-{p}.jpg"),
                "price": 5.0 + (p % 200) as f64, "currency": "EUR"}),
            ),
        );
    }
    let report = load
        .finish(&state.db, &state.audit, Actor::cli(), None)
        .await
        .expect("catalog");
    eprintln!(
        "catalog: {} products in {:.1} s",
        report.products,
        t.elapsed().as_secs_f64()
    );

    // The population, topped up to `subjects`.
    let ingest = consentry::profiles::ingest::Ingest {
        db: &state.db,
        master: &state.master,
        keyring: &keyring,
        audit: &state.audit,
        policies: &policies,
        scope: consentry::profiles::ingest::Scope::Tracking,
        gpc: false,
        source: Actor {
            key_id: "bench".into(),
            role: Role::Ingest.as_str().into(),
        },
        request_id: None,
        received_at: now,
    };
    let have = {
        use sea_orm::ConnectionTrait;
        let row = state
            .db
            .conn()
            .query_one_raw(sea_orm::Statement::from_string(
                state.db.backend(),
                "SELECT COUNT(*) FROM subjects".to_owned(),
            ))
            .await
            .expect("count")
            .expect("row");
        row.try_get_by_index::<i64>(0).expect("n") as u64
    };
    let t = Instant::now();
    let mut batch = Vec::with_capacity(600);
    let mut events = 0u64;
    for i in have..subjects {
        batch.extend(person(i, products, render_subjects, now.unix_micros()));
        if batch.len() >= 500 || i + 1 == subjects {
            events += ingest.run(&batch, true).await.expect("ingest").accepted as u64;
            batch.clear();
            if i % 100_000 == 99_999 {
                eprintln!(
                    "ingested {} people ({:.0} s)",
                    i + 1,
                    t.elapsed().as_secs_f64()
                );
            }
        }
    }
    eprintln!(
        "population: {subjects} people ({} new, {events} messages in {:.0} s)",
        subjects - have,
        t.elapsed().as_secs_f64()
    );

    // The recipient, an admin caller and the models.
    let registry = consentry::policy::recipients::Registry {
        db: &state.db,
        master: &state.master,
        audit: &state.audit,
        policies: &policies,
        actor: Actor::cli(),
        request_id: None,
        now,
    };
    let row = match consentry::policy::recipients::get(&state.db, "acme-esp")
        .await
        .expect("get")
    {
        Some(r) => r,
        None => registry
            .create(&consentry::policy::recipients::NewRecipient {
                id: "acme-esp".into(),
                name: "Acme".into(),
                kind: "esp".into(),
                purposes: vec![EMAIL.into()],
                webhook_url: None,
                webhook_secret: None,
            })
            .await
            .expect("recipient"),
    };
    let admin = consentry::auth::Caller {
        key_id: "bench".into(),
        name: "bench".into(),
        role: Role::Admin,
        recipient: None,
        purposes: vec![],
        via: consentry::auth::Credential::ApiKey,
    };
    let t = Instant::now();
    let models = consentry::policy::recommendations::train_all(
        &state.db,
        &state.audit,
        &policies,
        Actor::cli(),
        now,
    )
    .await
    .expect("train");
    for m in &models {
        eprintln!(
            "model {}: {} subjects, {} products, {} pairs",
            m.purpose, m.subjects, m.products, m.pairs
        );
    }
    println!(
        "| recommendation models trained ({} purposes) | {subjects} people, {products} products | {:.1} s | | |",
        models.len(),
        t.elapsed().as_secs_f64()
    );
    let keyring_r = state.keyring_for("acme-esp").await.expect("keyring");

    // 1. Campaign render throughput.
    let caller_keyring = &keyring_r;
    let templates = consentry::policy::templates::Templates {
        db: &state.db,
        master: &state.master,
        keyring: caller_keyring,
        audit: &state.audit,
        policies: Arc::clone(&policies),
        caller: &admin,
        actor: admin.actor(),
        request_id: None,
        now,
    };
    let template = templates
        .create(&consentry::policy::templates::NewTemplate {
            name: "seed".into(),
            purpose: EMAIL.into(),
            recipient: Some("acme-esp".into()),
            subject: SUBJECT.into(),
            html: HTML.into(),
            text: TEXT.into(),
            fallbacks: props(json!({"customer_name": "there"})),
            partials: Default::default(),
        })
        .await
        .expect("template");
    let segments = consentry::policy::segments::Segments {
        db: &state.db,
        master: &state.master,
        keyring: caller_keyring,
        audit: &state.audit,
        policies: Arc::clone(&policies),
        caller: &admin,
        actor: admin.actor(),
        request_id: None,
        now,
    };
    let segment = segments
        .create(&consentry::policy::segments::NewSegment {
            name: "first cohort".into(),
            purpose: EMAIL.into(),
            recipient: Some("acme-esp".into()),
            rule: json!({"attribute": "plan", "eq": "first"}),
        })
        .await
        .expect("segment");
    let settings = Arc::clone(&state.settings);
    let campaigns = consentry::policy::campaigns::Campaigns {
        db: &state.db,
        master: &state.master,
        keyring: caller_keyring,
        audit: &state.audit,
        policies: Arc::clone(&policies),
        settings: &settings,
        caller: &admin,
        actor: admin.actor(),
        request_id: None,
        now,
    };
    let campaign = campaigns
        .create(&consentry::policy::campaigns::NewCampaign {
            name: "bench".into(),
            template: template.id.clone(),
            segment: segment.id.clone(),
            experiment: None,
        })
        .await
        .expect("campaign");
    let t = Instant::now();
    let (tx, mut rx): (consentry::policy::segments::ExportSink, _) = tokio::sync::mpsc::channel(1);
    let consume = async move {
        let (mut n, mut with_block, mut sample) = (0u64, 0u64, String::new());
        while let Some(chunk) = rx.recv().await {
            let chunk = chunk.expect("chunk");
            for line in chunk.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                n += 1;
                let m: Value = serde_json::from_slice(line).expect("message");
                let html = m["html"].as_str().unwrap_or_default();
                if html.contains("<img") {
                    with_block += 1;
                }
                if sample.is_empty() {
                    sample = html.to_owned();
                }
            }
        }
        (n, with_block, sample)
    };
    let ((), (messages, with_block, sample)) =
        tokio::join!(campaigns.run_messages(&campaign.id, tx), consume);
    let ours = t.elapsed().as_secs_f64();
    eprintln!("a message:\n{sample}");

    // The same template, plain handlebars, on prepared data of the same shape.
    let mut h = handlebars::Handlebars::new();
    h.register_helper(
        "default",
        Box::new(
            |hp: &handlebars::Helper,
             _: &handlebars::Handlebars,
             _: &handlebars::Context,
             _: &mut handlebars::RenderContext,
             out: &mut dyn handlebars::Output|
             -> handlebars::HelperResult {
                let v = hp
                    .param(0)
                    .map(|p| p.value().clone())
                    .unwrap_or(Value::Null);
                let f = hp
                    .param(1)
                    .map(|p| p.value().clone())
                    .unwrap_or(Value::Null);
                let v = if v.is_null() || v == "" { f } else { v };
                out.write(v.as_str().unwrap_or_default())?;
                Ok(())
            },
        ),
    );
    h.register_template_string("subject", SUBJECT).expect("s");
    h.register_template_string("html", HTML).expect("h");
    h.register_template_string("text", TEXT).expect("t");
    let prepared: Vec<Value> = (0..messages)
        .map(|i| {
            let recs: Vec<Value> = (0..6)
                .map(|k| {
                    let p = (i * 7 + k) % products;
                    json!({"id": format!("sku-{p}"), "name": format!("Product {p}"), "product_name": format!("Product {p}"),
                        "url": format!("https://shop.example/p/sku-{p}"), "image_url": format!("https://cdn.example/sku-{p}.jpg"),
                        "price": 5.0 + (p % 200) as f64, "currency": "EUR"})
                })
                .collect();
            json!({"customer_name": "Ada", "first_name": "Ada", "email": format!("rec{i}@example.com"),
                "recommendations": recs, "unsubscribe_url": format!("https://gw.example/u/u1~{i}")})
        })
        .collect();
    let t = Instant::now();
    let mut bytes = 0usize;
    for d in &prepared {
        bytes += h.render("subject", d).expect("render").len();
        bytes += h.render("html", d).expect("render").len();
        bytes += h.render("text", d).expect("render").len();
    }
    let plain = t.elapsed().as_secs_f64();
    assert!(bytes > 0);
    let (ours_rate, plain_rate) = (messages as f64 / ours, messages as f64 / plain);
    println!(
        "| campaign messages, seed template + 6-product block, SQLite | {messages} messages ({with_block} with a block) of {subjects} people, {products} products | {ours_rate:.0} messages/s | plain handlebars on prepared data {plain_rate:.0} messages/s | {:.3} |",
        ours_rate / plain_rate
    );

    // 2. One person's recommendations: p50/p99, against a profile read of the same people.
    let grant = consentry::policy::gate::authorize(&admin, &row, EMAIL, Arc::clone(&policies))
        .expect("grant");
    let gate = consentry::policy::gate::Gate {
        db: &state.db,
        master: &state.master,
        keyring: &keyring_r,
        audit: &state.audit,
        actor: admin.actor(),
        request_id: None,
        now,
    };
    let mut rng = Rng(99);
    let mut pseudonyms = Vec::new();
    while pseudonyms.len() < 1_000 {
        let i = rng.next() % subjects;
        let mut id = std::collections::BTreeMap::new();
        id.insert("email".to_owned(), format!("rec{i}@example.com"));
        if let Ok(p) = gate.pseudonym_for(&grant, &policies, &id).await {
            pseudonyms.push(p.to_string());
        }
    }
    let recs = consentry::policy::recommendations::Recommendations {
        db: &state.db,
        master: &state.master,
        keyring: &keyring_r,
        audit: &state.audit,
        actor: admin.actor(),
        request_id: None,
        now,
    };
    let (mut ours, mut base, mut shown) = (Vec::new(), Vec::new(), 0usize);
    for p in &pseudonyms {
        let t = Instant::now();
        let block = recs
            .for_pseudonym(&grant, p, consentry::rendering::Strategy::Default, 6)
            .await
            .expect("recommendations");
        ours.push(t.elapsed().as_secs_f64() * 1e3);
        shown += block.len();
        let t = Instant::now();
        gate.profile(&grant, p).await.expect("profile");
        base.push(t.elapsed().as_secs_f64() * 1e3);
    }
    ours.sort_by(f64::total_cmp);
    base.sort_by(f64::total_cmp);
    println!(
        "| recommendations for one person (6 products), SQLite | {subjects} people, {products} products; {} people, {:.1} products each | p50 {:.2} ms, p99 {:.2} ms | profile read (the gate alone) p50 {:.2} ms, p99 {:.2} ms | {:.2} (p50) |",
        pseudonyms.len(),
        shown as f64 / pseudonyms.len() as f64,
        percentile(&ours, 0.5),
        percentile(&ours, 0.99),
        percentile(&base, 0.5),
        percentile(&base, 0.99),
        percentile(&base, 0.5) / percentile(&ours, 0.5)
    );
    drop(tmp);
}
