//! The `consentry` binary as an operator runs it.
use std::process::{Command, Output};

use crate::helpers::{fresh_database_url, test_master_key};

struct Cli {
    dir: tempfile::TempDir,
    url: String,
}

impl Cli {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = fresh_database_url(dir.path()).await;
        Self { dir, url }
    }

    /// A connection to this CLI's database, as a test would inspect it.
    async fn db(&self) -> consentry::store::Db {
        crate::helpers::connect(&self.url, 1).await
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_consentry"))
            .args(["--data-dir", self.dir.path().to_str().unwrap()])
            .args(args)
            .current_dir(self.dir.path())
            .env("CONSENTRY_DATABASE_URL", &self.url)
            .env("CONSENTRY_MASTER_KEY", test_master_key())
            .env("CONSENTRY_POLICIES", crate::helpers::shipped_policies())
            .env_remove("CONSENTRY_TEST_DATABASE_URL")
            .output()
            .unwrap()
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

#[tokio::test]
async fn keys_create_prints_the_token_alone_on_stdout_and_list_never_shows_it() {
    let cli = Cli::new().await;
    let out = cli.run(&["keys", "create", "--role", "auditor", "--name", "Q4 audit"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let token = stdout(&out);
    let lines: Vec<&str> = token.lines().collect();
    assert_eq!(lines.len(), 1, "{token}");
    assert!(lines[0].starts_with("cs_"));
    assert!(stderr(&out).contains("created auditor key"));

    let out = cli.run(&["keys", "list"]);
    assert!(out.status.success());
    let list = stdout(&out);
    assert!(
        list.contains("Q4 audit") && list.contains("auditor"),
        "{list}"
    );
    assert!(!list.contains(lines[0]) && !list.contains("argon2"));

    let id = &lines[0][3..19];
    let out = cli.run(&["keys", "revoke", id]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = cli.run(&["keys", "revoke", id]);
    assert!(!out.status.success());
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
}

#[tokio::test]
async fn bad_arguments_fail_with_one_line_and_a_nonzero_exit() {
    let cli = Cli::new().await;
    for args in [
        &["keys", "create", "--role", "root", "--name", "x"][..],
        &["keys", "create", "--role", "esp", "--name", "x"][..],
        &["keys", "rotate", "--kind", "nope"][..],
        &["keys", "retire", "--kind", "pseudonym", "--version", "1"][..],
    ] {
        let out = cli.run(args);
        assert!(!out.status.success(), "{args:?}");
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("error: "), "{err}");
        assert!(stdout(&out).is_empty());
    }
}

#[tokio::test]
async fn every_command_has_help() {
    let cli = Cli::new().await;
    for args in [
        &["--help"][..],
        &["serve", "--help"][..],
        &["migrate", "--help"][..],
        &["keys", "--help"][..],
        &["keys", "create", "--help"][..],
        &["keys", "list", "--help"][..],
        &["keys", "revoke", "--help"][..],
        &["keys", "rotate", "--help"][..],
        &["keys", "retire", "--help"][..],
        &["audit", "verify", "--help"][..],
        &["demo", "--help"][..],
    ] {
        let out = cli.run(args);
        assert!(out.status.success(), "{args:?}");
        assert!(stdout(&out).contains("Usage"), "{args:?}");
    }
}

#[tokio::test]
async fn audit_verify_says_ok_then_names_the_broken_entry() {
    let cli = Cli::new().await;
    for i in 0..5 {
        let out = cli.run(&[
            "keys",
            "create",
            "--role",
            "dpo",
            "--name",
            &format!("k{i}"),
        ]);
        assert!(out.status.success());
    }
    let out = cli.run(&["keys", "rotate", "--kind", "checkpoint_signing"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = cli.run(&["audit", "verify"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let line = stdout(&out);
    assert!(line.starts_with("ok: 6 entries, root "), "{line}");

    let app_db = cli.db().await;
    sea_orm::ConnectionTrait::execute_unprepared(
        app_db.conn(),
        "UPDATE audit_entries SET action = 'keys.nothing' WHERE seq = 3",
    )
    .await
    .unwrap();
    app_db.close().await.unwrap();
    let out = cli.run(&["audit", "verify"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).starts_with("broken at seq 3:"),
        "{}",
        stdout(&out)
    );
}

#[tokio::test]
async fn production_mode_refuses_development_shortcuts() {
    let dir = tempfile::tempdir().unwrap();
    let run = |envs: &[(&str, &str)]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_consentry"));
        c.args(["--data-dir", dir.path().to_str().unwrap(), "migrate"])
            .current_dir(dir.path())
            .env_remove("CONSENTRY_TEST_DATABASE_URL")
            .env("CONSENTRY_POLICIES", crate::helpers::shipped_policies())
            .env("CONSENTRY_MODE", "production");
        for (k, v) in envs {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    let out = run(&[]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("master key"), "{}", stderr(&out));
    assert!(
        !dir.path().join("master.key").exists(),
        "no key was generated"
    );

    let out = run(&[
        ("CONSENTRY_MASTER_KEY", &test_master_key()),
        ("CONSENTRY_SQLITE_SYNCHRONOUS", "normal"),
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("synchronous"), "{}", stderr(&out));

    let out = run(&[("CONSENTRY_MASTER_KEY", &test_master_key())]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[tokio::test]
async fn config_comes_from_a_toml_file_then_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("consentry.toml"),
        "listen = \"not an address\"\nmaster_key = \"c2VjcmV0\"\n",
    )
    .unwrap();
    let run = |envs: &[(&str, &str)]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_consentry"));
        c.args(["serve"])
            .current_dir(dir.path())
            .env("CONSENTRY_POLICIES", crate::helpers::shipped_policies())
            .env_remove("CONSENTRY_TEST_DATABASE_URL");
        for (k, v) in envs {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    // The file's bad listen address is reported, and the secret is never echoed.
    let out = run(&[]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("listen"), "{err}");
    assert!(!err.contains("c2VjcmV0"), "{err}");
    // The environment overrides the file: now the short master key is what fails.
    let out = run(&[("CONSENTRY_LISTEN", "127.0.0.1:0")]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("32 bytes"), "{}", stderr(&out));
    // An unknown setting is an error, not silently ignored.
    let out = run(&[("CONSENTRY_LISTN", "127.0.0.1:0")]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("listn"), "{}", stderr(&out));
}

#[tokio::test]
async fn demo_fills_the_same_population_for_the_same_seed() {
    let mut counts = Vec::new();
    for _ in 0..2 {
        let cli = Cli::new().await;
        let out = cli.run(&["demo", "--profiles", "40", "--seed", "5"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains("demo: 40 profiles,"), "{err}");
        let db = cli.db().await;
        let mut row = Vec::new();
        for sql in [
            "SELECT COUNT(*) FROM subjects WHERE status = 'active'",
            "SELECT COUNT(*) FROM events",
            "SELECT COUNT(*) FROM events WHERE name = 'Order Completed'",
            "SELECT COUNT(*) FROM identifiers WHERE kind = 'email'",
        ] {
            row.push(scalar(&db, sql).await);
        }
        db.close().await.unwrap();
        assert_eq!(row[0], 40, "one subject per person");
        assert!(row[1] > 200 && row[2] > 0 && row[3] > 20, "{row:?}");
        counts.push(row);
    }
    assert_eq!(counts[0], counts[1]);
}

#[tokio::test]
async fn policy_check_reports_file_and_line_and_lists_unclassified_traits() {
    let cli = Cli::new().await;
    // A taxonomy that does not know `firstName`: the demo stores it unclassified, in clear.
    let custom = cli.dir.path().join("policies");
    std::fs::create_dir(&custom).unwrap();
    let shipped = crate::helpers::shipped_policies();
    let taxonomy = std::fs::read_to_string(shipped.join("taxonomy.yaml")).unwrap();
    let without_first = taxonomy.replace(
        "  first_name:\n    category: user.name.first\n    aliases: [given_name, customer_name]\n",
        "",
    );
    assert_ne!(taxonomy, without_first);
    std::fs::write(custom.join("taxonomy.yaml"), &without_first).unwrap();
    for f in ["identifiers.yaml", "purposes.yaml"] {
        std::fs::copy(shipped.join(f), custom.join(f)).unwrap();
    }
    let custom_arg = custom.to_str().unwrap();
    let out = cli.run(&["--policies", custom_arg, "demo", "--profiles", "20"]);
    assert!(out.status.success(), "{}", stderr(&out));

    let out = cli.run(&["policy", "check", custom_arg]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with("ok: "), "{text}");
    assert!(
        text.contains("unclassified") && text.contains("  firstName  ("),
        "{text}"
    );

    // With the shipped set in force, `migrate` classifies and seals them.
    let db = cli.db().await;
    let clear = "SELECT COUNT(*) FROM traits WHERE name = 'firstName' AND value IS NOT NULL";
    assert!(scalar(&db, clear).await > 0);
    let out = cli.run(&["migrate"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("reclassified"), "{}", stderr(&out));
    assert_eq!(scalar(&db, clear).await, 0);
    let sealed = "SELECT COUNT(*) FROM traits WHERE name = 'firstName' AND sealed IS NOT NULL AND category = 'user.name.first'";
    assert!(scalar(&db, sealed).await > 0);
    db.close().await.unwrap();
    let out = cli.run(&["policy", "check"]);
    assert!(
        stdout(&out).contains("every stored trait is classified"),
        "{}",
        stdout(&out)
    );

    // The record of processing, from the same files.
    let out = cli.run(&["ropa", "--format", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let ropa: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert!(
        ropa["activities"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["purpose"] == "essential.service" && a["legal_basis"] == "contract")
    );
    let out = cli.run(&["ropa"]);
    assert!(
        stdout(&out).starts_with("# Record of processing activities"),
        "{}",
        stdout(&out)
    );

    // A broken set: one line per problem, `file:line: message`, non-zero exit.
    std::fs::write(
        custom.join("taxonomy.yaml"),
        without_first.replace("category: user.account\n", "category: user.acount\n"),
    )
    .unwrap();
    let out = cli.run(&["policy", "check", custom_arg]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.lines().any(
            |l| l.starts_with("taxonomy.yaml:") && l.contains("unknown category `user.acount`")
        ),
        "{err}"
    );
    // The gateway refuses to start on it, naming the problem.
    let out = cli.run(&["--policies", custom_arg, "migrate"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("user.acount"), "{}", stderr(&out));
}

async fn scalar(db: &consentry::store::Db, sql: &str) -> i64 {
    sea_orm::ConnectionTrait::query_one_raw(
        db.conn(),
        sea_orm::Statement::from_string(db.backend(), sql.to_owned()),
    )
    .await
    .unwrap()
    .unwrap()
    .try_get_by_index::<i64>(0)
    .unwrap()
}

#[tokio::test]
async fn import_checks_with_a_dry_run_then_imports_and_a_rerun_is_idempotent() {
    let cli = Cli::new().await;
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/imports");
    let file = examples.join("crm.csv");
    let mapping = examples.join("crm.toml");
    let args = |extra: &[&'static str]| {
        let mut a = vec![
            "import".to_owned(),
            file.to_str().unwrap().to_owned(),
            "--source".into(),
            "crm".into(),
            "--mapping".into(),
            mapping.to_str().unwrap().to_owned(),
        ];
        a.extend(extra.iter().map(|s| (*s).to_owned()));
        a
    };
    let run = |extra: &[&'static str]| {
        let a = args(extra);
        cli.run(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    // The dry run names each bad row on stdout, writes nothing and exits 2.
    let out = run(&["--dry-run"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let bad = stdout(&out);
    assert!(
        bad.contains("row 4: column `Email`: not a valid email address"),
        "{bad}"
    );
    assert!(
        bad.contains("row 4: column `Age`: is not a number"),
        "{bad}"
    );
    assert!(
        stderr(&out).contains("import (dry run): 4 rows read, 3 would be imported"),
        "{}",
        stderr(&out)
    );
    let db = cli.db().await;
    assert_eq!(scalar(&db, "SELECT COUNT(*) FROM subjects").await, 0);

    let out = run(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("4 rows read, 3 imported, 0 duplicates, 3 subjects created"),
        "{}",
        stderr(&out)
    );
    let out = run(&["--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(
        (v["imported"].as_u64(), v["duplicates"].as_u64()),
        (Some(0), Some(3))
    );
    assert_eq!(v["errors"].as_array().unwrap().len(), 2);
    assert_eq!(scalar(&db, "SELECT COUNT(*) FROM subjects").await, 3);
    db.close().await.unwrap();

    let out = cli.run(&[
        "import",
        "nope.csv",
        "--source",
        "crm",
        "--mapping",
        mapping.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).starts_with("error: cannot open nope.csv"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn keys_rotate_and_retire_a_recipients_pseudonym_key() {
    let cli = Cli::new().await;
    assert!(cli.run(&["migrate"]).status.success());
    let db = cli.db().await;
    use sea_orm::ConnectionTrait;
    db.conn()
        .execute_unprepared(
            "INSERT INTO recipients (id, name, kind, purposes, webhook_url, webhook_secret, created_at) \
             VALUES ('acme-esp', 'Acme', 'esp', '[\"marketing.communications.email\"]', NULL, NULL, 0)",
        )
        .await
        .unwrap();
    for expected in ["version 1", "version 2"] {
        let out = cli.run(&["keys", "rotate", "--recipient", "acme-esp"]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(stderr(&out).contains(expected), "{}", stderr(&out));
    }
    let out = cli.run(&[
        "keys",
        "rotate",
        "--recipient",
        "acme-esp",
        "--retire",
        "v1",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = cli.run(&[
        "keys",
        "rotate",
        "--recipient",
        "acme-esp",
        "--retire",
        "v2",
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("last active"), "{}", stderr(&out));
    let out = cli.run(&["keys", "rotate", "--recipient", "nobody"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no recipient"), "{}", stderr(&out));
    let out = cli.run(&["keys", "rotate"]);
    assert!(!out.status.success(), "a kind or a recipient is required");
    assert_eq!(
        scalar(
            &db,
            "SELECT COUNT(*) FROM keyring_keys WHERE kind = 'pseudonym:acme-esp' AND retired_at IS NOT NULL"
        )
        .await,
        1
    );
}

#[tokio::test]
async fn dsar_commands_file_list_and_verify_a_request() {
    let cli = Cli::new().await;
    let out = cli.run(&[
        "dsar",
        "create",
        "--kind",
        "access",
        "--identifier",
        "email=ann@example.com",
        "--channel",
        "letter",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let id = stdout(&out).trim().to_owned();
    assert!(id.starts_with("dsar_"), "{id}");
    let out = cli.run(&["dsar", "list"]);
    assert!(stdout(&out).contains(&id));
    let out = cli.run(&["dsar", "verify", &id, "--note", "ID card seen"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["status"], "verified");
    let out = cli.run(&["dsar", "execute", &id]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no data is held"), "{}", stderr(&out));
    let out = cli.run(&["dsar", "reject", &id, "--reason", "no_data_held"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = cli.run(&["dsar", "package", &id]);
    assert!(!out.status.success(), "a rejected request has no package");
    let out = cli.run(&["dsar", "extend", &id, "--months", "5", "--reason", "x"]);
    assert!(!out.status.success());
    assert_eq!(stderr(&out).trim().lines().count(), 1, "{}", stderr(&out));
    let out = cli.run(&[
        "dsar",
        "create",
        "--kind",
        "nope",
        "--identifier",
        "email=a@b.example",
        "--channel",
        "x",
    ]);
    assert!(!out.status.success());
}
