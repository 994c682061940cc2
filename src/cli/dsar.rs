//! `consentry dsar ...`: the DPO's request queue from the command line, through the same
//! service as `/v1/dsar` (audited with the actor `cli`).
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Subcommand;

use crate::config::Settings;
use crate::domain::{Actor, SystemClock};
use crate::startup::Core;
use crate::subject_requests::codes::{Codes, Mailer};
use crate::subject_requests::execute::{Executor, Format};
use crate::subject_requests::requests::{
    Extension, NewRequest, Rejection, RequestView, Requests, Verification, Withdrawal,
};

#[derive(Subcommand, Debug)]
pub enum DsarCommand {
    /// File a request; prints its id alone on standard output.
    Create {
        /// access, portability, erasure, rectification, restriction or objection.
        #[arg(long)]
        kind: String,
        /// An identifier the requester gave, as KIND=VALUE (email=ann@example.com); repeat for more.
        #[arg(long = "identifier", value_name = "KIND=VALUE", required = true)]
        identifiers: Vec<String>,
        /// How it arrived (email, web_form, letter, phone, in_person ...).
        #[arg(long)]
        channel: String,
        /// RFC 3339; default now.
        #[arg(long)]
        received_at: Option<String>,
    },
    /// The queue by due date.
    List {
        #[arg(long)]
        status: Option<String>,
        /// RFC 3339.
        #[arg(long)]
        due_before: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One request with its transitions, as JSON.
    Show { id: String },
    /// Verify the requester: --note N (dpo_attested, how identity was checked), or
    /// --send-code (email a code to the address on file) then --code C.
    Verify {
        id: String,
        #[arg(long, conflicts_with_all = ["send_code", "code"])]
        note: Option<String>,
        #[arg(long, conflicts_with = "code")]
        send_code: bool,
        #[arg(long)]
        code: Option<String>,
    },
    /// Extend the deadline once by 1 or 2 months.
    Extend {
        id: String,
        #[arg(long)]
        months: i32,
        #[arg(long)]
        reason: String,
    },
    /// Reject: identity_not_verified, manifestly_unfounded or no_data_held.
    Reject {
        id: String,
        #[arg(long)]
        reason: String,
        #[arg(long)]
        note: Option<String>,
    },
    /// The requester withdrew it.
    Withdraw {
        id: String,
        #[arg(long)]
        note: Option<String>,
    },
    /// Execute a verified request (resumes one left in progress).
    Execute { id: String },
    /// Write the package of a completed access or portability request.
    Package {
        id: String,
        /// json, html or zip (default: json for access, zip for portability).
        #[arg(long)]
        format: Option<String>,
        /// Where to write it (default: standard output).
        #[arg(long)]
        out: Option<std::path::PathBuf>,
    },
}

fn executor<'a>(core: &'a Core, requests: Requests<'a>) -> Executor<'a> {
    Executor::new(requests, &core.master, &core.settings)
}

fn print(v: &RequestView) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

pub async fn run(settings: Settings, cmd: DsarCommand) -> anyhow::Result<ExitCode> {
    crate::telemetry::init(settings.log_format, "warn");
    let core = Core::open(settings, Arc::new(SystemClock)).await?;
    let keyring = core.keyring.get();
    let policies = core.policies.get();
    let r = Requests {
        db: &core.db,
        keyring: &keyring,
        audit: &core.audit,
        policies: &policies,
        actor: Actor::cli(),
        request_id: None,
        now: core.clock.now(),
    };
    match cmd {
        DsarCommand::Create {
            kind,
            identifiers,
            channel,
            received_at,
        } => {
            let mut ids = BTreeMap::new();
            for i in identifiers {
                let (k, v) = i.split_once('=').ok_or_else(|| {
                    anyhow::anyhow!("--identifier: KIND=VALUE, e.g. email=ann@example.com")
                })?;
                ids.insert(k.trim().to_owned(), v.trim().to_owned());
            }
            let v = r
                .create(&NewRequest {
                    kind,
                    identifiers: ids,
                    channel,
                    received_at,
                })
                .await?;
            println!("{}", v.id);
            match &v.duplicate_of {
                Some(first) => eprintln!("filed; a duplicate of {first}, due {}", v.due_at),
                None => eprintln!("filed; due {}", v.due_at),
            }
        }
        DsarCommand::List {
            status,
            due_before,
            json,
        } => {
            let list = r.list(status.as_deref(), due_before.as_deref()).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                for v in &list {
                    let flag = if v.overdue { "  OVERDUE" } else { "" };
                    println!(
                        "{}  {:<13} {:<11} due {} ({} days){flag}",
                        v.id, v.kind, v.status, v.due_at, v.days_left
                    );
                }
            }
        }
        DsarCommand::Show { id } => print(&r.show(&id).await?)?,
        DsarCommand::Verify {
            id,
            note,
            send_code,
            code,
        } => {
            if send_code || code.is_some() {
                let mailer = match &core.settings.smtp_url {
                    Some(url) => Some(
                        Mailer::new(
                            secrecy::ExposeSecret::expose_secret(url),
                            &core.settings.smtp_from,
                        )
                        .map_err(anyhow::Error::msg)?,
                    ),
                    None => None,
                };
                let codes = Codes {
                    requests: r,
                    master: &core.master,
                    mailer: mailer.as_ref(),
                    ttl_secs: i64::try_from(core.settings.dsar_code_ttl_secs).unwrap_or(900),
                };
                let v = match code {
                    Some(c) => codes.check(&id, &c).await?,
                    None => codes.send(&id).await?,
                };
                print(&v)?;
            } else {
                let v = r
                    .verify(
                        &id,
                        &Verification {
                            method: "dpo_attested".into(),
                            note,
                            code: None,
                        },
                    )
                    .await?;
                print(&v)?;
            }
        }
        DsarCommand::Extend { id, months, reason } => {
            print(&r.extend(&id, &Extension { months, reason }).await?)?
        }
        DsarCommand::Reject { id, reason, note } => {
            print(&r.reject(&id, &Rejection { reason, note }).await?)?
        }
        DsarCommand::Withdraw { id, note } => print(&r.withdraw(&id, &Withdrawal { note }).await?)?,
        DsarCommand::Execute { id } => {
            let v = executor(&core, r).execute(&id).await?;
            print(&v)?;
        }
        DsarCommand::Package { id, format, out } => {
            if let Some(f) = format.as_deref() {
                Format::parse(f)?;
            }
            let package = executor(&core, r).package(&id).await?;
            let format = Format::for_package(format.as_deref(), &package)?;
            let bytes = match format {
                Format::Json => serde_json::to_vec_pretty(&package)?,
                Format::Html => package.to_html().into_bytes(),
                Format::Zip => package.to_zip()?,
            };
            match out {
                Some(path) => {
                    crate::crypto::write_secret_file_bytes(&path, &bytes)?;
                    eprintln!(
                        "wrote {} ({} bytes, readable only by you)",
                        path.display(),
                        bytes.len()
                    );
                }
                None => std::io::Write::write_all(&mut std::io::stdout(), &bytes)?,
            }
        }
    }
    core.close().await?;
    Ok(ExitCode::SUCCESS)
}
