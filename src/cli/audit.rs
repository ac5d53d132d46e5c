//! `latchkey audit`: read the audit log (optionally following it) and
//! verify its hash chain, through a running server or offline.

use std::path::PathBuf;

use reqwest::Method;

use crate::audit::{self, AuditEntry};
use crate::cli::CliError;
use crate::cli::client::{Client, ClientArgs, print_json, print_table};
use crate::http::audit::AuditPage;

#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    #[command(subcommand)]
    pub command: Option<AuditCommand>,
    /// Show entries after this sequence number.
    #[arg(long, default_value_t = 0)]
    pub after: u64,
    /// Keep waiting for new entries (poll every second) until interrupted.
    #[arg(long)]
    pub follow: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, clap::Subcommand)]
pub enum AuditCommand {
    /// Check every entry's hash and link. Through the server by default;
    /// with --data-dir, offline (server stopped), also checking the recorded head.
    Verify(VerifyArgs),
}

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// Verify this data directory directly instead of asking the server.
    #[arg(long, env = "LATCHKEY_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    #[command(flatten)]
    pub client: ClientArgs,
}

pub async fn run(args: AuditArgs) -> Result<(), CliError> {
    match args.command {
        Some(AuditCommand::Verify(verify)) => run_verify(verify).await,
        None => show(args).await,
    }
}

async fn fetch_page(client: &Client, after: u64) -> Result<AuditPage, CliError> {
    client
        .send::<AuditPage>(
            Method::GET,
            "/v1/audit",
            &[("after", after.to_string()), ("limit", "1000".into())],
            None,
        )
        .await?
        .ok_or_else(|| CliError::new("the server sent an empty response"))
}

fn print_entries(entries: &[AuditEntry], json_out: bool, header: bool) -> Result<(), CliError> {
    if json_out {
        for entry in entries {
            println!(
                "{}",
                serde_json::to_string(entry).map_err(|e| CliError::new(e.to_string()))?
            );
        }
        return Ok(());
    }
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            vec![
                e.seq.to_string(),
                e.time.clone(),
                match &e.actor {
                    audit::Actor::Key { name, .. } => name.clone(),
                    audit::Actor::Named(n) => n.clone(),
                },
                e.action.clone(),
                e.target.clone().unwrap_or_else(|| "-".into()),
                e.details.to_string(),
            ]
        })
        .collect();
    if header {
        print_table(
            &["SEQ", "TIME", "ACTOR", "ACTION", "TARGET", "DETAILS"],
            &rows,
        );
    } else {
        for row in rows {
            println!("{}", row.join("  "));
        }
    }
    Ok(())
}

async fn show(args: AuditArgs) -> Result<(), CliError> {
    let client = Client::new(&args.client)?;
    let mut after = args.after;
    let mut first = true;
    loop {
        let page = fetch_page(&client, after).await?;
        if !page.items.is_empty() {
            print_entries(&page.items, args.client.json, first)?;
            first = false;
        }
        if let Some(last) = page.items.last() {
            after = last.seq;
        }
        if page.next_after.is_some() {
            continue;
        }
        if !args.follow {
            return Ok(());
        }
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

async fn run_verify(args: VerifyArgs) -> Result<(), CliError> {
    let report = match &args.data_dir {
        Some(dir) => crate::service::verify_audit_offline(dir).await?,
        None => {
            let client = Client::new(&args.client)?;
            let mut entries = Vec::new();
            let mut after = 0;
            loop {
                let page = fetch_page(&client, after).await?;
                let done = page.next_after.is_none();
                if let Some(last) = page.items.last() {
                    after = last.seq;
                }
                entries.extend(page.items);
                if done {
                    break;
                }
            }
            audit::verify_entries(entries.into_iter())
        }
    };
    match report {
        Ok(report) => {
            if args.client.json {
                print_json(
                    &serde_json::json!({"ok": true, "entries": report.entries, "head": report.head.hash}),
                )
            } else {
                println!(
                    "audit log OK: {} entries, head {}",
                    report.entries, report.head.hash
                );
                Ok(())
            }
        }
        Err(problem) => Err(CliError {
            message: format!("audit log FAILED verification: {problem}"),
            code: 3,
        }),
    }
}
