//! `latchkey keys …`: manage access keys on a running server.

use std::io::Write;
use std::path::PathBuf;

use clap::Subcommand;
use reqwest::Method;
use serde_json::json;

use crate::cli::CliError;
use crate::cli::client::{Client, ClientArgs, print_json, print_table};
use crate::http::keys::{KeyList, KeyView, KeyWithToken};

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key and print its token (shown once).
    Create(CreateArgs),
    /// List keys, newest first.
    List(ListArgs),
    /// Show one key (by id or name).
    Show(KeyRef),
    /// Set a key's description.
    Describe(DescribeArgs),
    /// Mint a replacement token for a key.
    Renew(RenewArgs),
    /// Suspend every token of a key until it is resumed.
    Suspend(KeyRef),
    /// Lift a suspension.
    Resume(KeyRef),
    /// Revoke a key and all its tokens, permanently.
    Revoke(RevokeArgs),
}

#[derive(Debug, clap::Args)]
pub struct KeyRef {
    /// Key id, or its exact name.
    pub key: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// Unique name (1–100 characters).
    #[arg(long)]
    pub name: String,
    #[arg(long)]
    pub description: Option<String>,
    /// Role to grant; repeat for several: global_admin, global_viewer, cloud_account_viewer.
    #[arg(long = "role", required = true, value_name = "ROLE")]
    pub roles: Vec<String>,
    /// Account a cloud_account_viewer may read; repeat for several.
    #[arg(
        long = "account",
        value_name = "ACCOUNT",
        conflicts_with = "all_accounts"
    )]
    pub accounts: Vec<String>,
    /// Let a cloud_account_viewer read every account.
    #[arg(long)]
    pub all_accounts: bool,
    /// Lifetime in days [default: six months].
    #[arg(long, value_name = "DAYS")]
    pub expires_in_days: Option<u32>,
    /// Also write the token to APIKey-<name>-<YYYY-MM-DD>.key (mode 0600) in this directory.
    #[arg(long, value_name = "DIR", num_args = 0..=1, default_missing_value = ".")]
    pub download: Option<PathBuf>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// active, suspended, revoked or expired.
    #[arg(long)]
    pub status: Option<String>,
    /// Text to find in names and descriptions.
    #[arg(long = "query", short = 'q')]
    pub query: Option<String>,
    /// Keys per page (1–500).
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
    /// Continue after this cursor (from a previous page).
    #[arg(long)]
    pub cursor: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, clap::Args)]
pub struct DescribeArgs {
    /// Key id, or its exact name.
    pub key: String,
    /// The new description (0–1000 characters).
    #[arg(long)]
    pub description: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, clap::Args)]
pub struct RenewArgs {
    /// Key id, or its exact name.
    pub key: String,
    /// Lifetime of the new token in days [default: six months].
    #[arg(long, value_name = "DAYS")]
    pub expires_in_days: Option<u32>,
    /// Also revoke every earlier token of the key.
    #[arg(long)]
    pub revoke_previous: bool,
    /// Also write the token to APIKey-<name>-<YYYY-MM-DD>.key (mode 0600) in this directory.
    #[arg(long, value_name = "DIR", num_args = 0..=1, default_missing_value = ".")]
    pub download: Option<PathBuf>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, clap::Args)]
pub struct RevokeArgs {
    /// Key id, or its exact name.
    pub key: String,
    /// Confirm that revocation is permanent.
    #[arg(long)]
    pub yes: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

pub async fn run(command: KeysCommand) -> Result<(), CliError> {
    match command {
        KeysCommand::Create(args) => create(args).await,
        KeysCommand::List(args) => list(args).await,
        KeysCommand::Show(args) => {
            let client = Client::new(&args.client)?;
            let id = resolve(&client, &args.key).await?;
            let key: KeyView = expect_body(
                client
                    .send(Method::GET, &format!("/v1/keys/{id}"), &[], None)
                    .await?,
            )?;
            print_key(&key, args.client.json)
        }
        KeysCommand::Describe(args) => {
            let client = Client::new(&args.client)?;
            let id = resolve(&client, &args.key).await?;
            let body = json!({"description": args.description});
            let key: KeyView = expect_body(
                client
                    .send(Method::PATCH, &format!("/v1/keys/{id}"), &[], Some(body))
                    .await?,
            )?;
            print_key(&key, args.client.json)
        }
        KeysCommand::Renew(args) => {
            let client = Client::new(&args.client)?;
            let id = resolve(&client, &args.key).await?;
            let body = json!({"expires_in_days": args.expires_in_days, "revoke_previous": args.revoke_previous});
            let minted: KeyWithToken = expect_body(
                client
                    .send(
                        Method::POST,
                        &format!("/v1/keys/{id}/renew"),
                        &[],
                        Some(body),
                    )
                    .await?,
            )?;
            print_minted(&minted, args.download.as_deref(), args.client.json)
        }
        KeysCommand::Suspend(args) => state_change(args, "suspend").await,
        KeysCommand::Resume(args) => state_change(args, "resume").await,
        KeysCommand::Revoke(args) => {
            if !args.yes {
                return Err(CliError::new(format!(
                    "revoking {:?} is permanent: every token of the key stops working. Run again with --yes to confirm",
                    args.key
                )));
            }
            let client = Client::new(&args.client)?;
            let id = resolve(&client, &args.key).await?;
            client
                .send::<serde_json::Value>(Method::DELETE, &format!("/v1/keys/{id}"), &[], None)
                .await?;
            if args.client.json {
                print_json(&json!({"id": id, "status": "revoked"}))
            } else {
                println!("revoked {id}");
                Ok(())
            }
        }
    }
}

fn expect_body<T>(body: Option<T>) -> Result<T, CliError> {
    body.ok_or_else(|| CliError::new("the server sent an empty response"))
}

/// Accepts a key id or an exact (case-insensitive) name.
async fn resolve(client: &Client, key: &str) -> Result<String, CliError> {
    if uuid::Uuid::parse_str(key).is_ok() {
        return Ok(key.to_owned());
    }
    let page: KeyList = expect_body(
        client
            .send(
                Method::GET,
                "/v1/keys",
                &[("q", key.to_owned()), ("limit", "500".into())],
                None,
            )
            .await?,
    )?;
    page.items
        .into_iter()
        .find(|k| k.name.eq_ignore_ascii_case(key))
        .map(|k| k.id)
        .ok_or_else(|| CliError::new(format!("no key with id or name {key:?}")))
}

async fn create(args: CreateArgs) -> Result<(), CliError> {
    let client = Client::new(&args.client)?;
    let accounts = if args.all_accounts {
        Some(vec!["*".to_owned()])
    } else if args.accounts.is_empty() {
        None
    } else {
        Some(args.accounts.clone())
    };
    let mut body = json!({"name": args.name, "roles": args.roles});
    if let Some(d) = &args.description {
        body["description"] = json!(d);
    }
    if let Some(a) = accounts {
        body["accounts"] = json!(a);
    }
    if let Some(days) = args.expires_in_days {
        body["expires_in_days"] = json!(days);
    }
    let minted: KeyWithToken = expect_body(
        client
            .send(Method::POST, "/v1/keys", &[], Some(body))
            .await?,
    )?;
    print_minted(&minted, args.download.as_deref(), args.client.json)
}

/// `APIKey-<name>-<YYYY-MM-DD>.key`, with characters a file system may
/// refuse replaced by `_`.
pub fn download_file_name(name: &str, date: time::Date) -> String {
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("APIKey-{safe}-{date}.key")
}

fn print_minted(
    minted: &KeyWithToken,
    download: Option<&std::path::Path>,
    json_out: bool,
) -> Result<(), CliError> {
    let mut written = None;
    if let Some(dir) = download {
        let path = dir.join(download_file_name(
            &minted.key.name,
            time::OffsetDateTime::now_utc().date(),
        ));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(&path).map_err(|e| {
            CliError::new(format!(
                "cannot create {}: {e}; the token is printed below instead",
                path.display()
            ))
        })?;
        writeln!(file, "{}", minted.token)
            .and_then(|_| file.sync_all())
            .map_err(|e| CliError::new(format!("cannot write {}: {e}", path.display())))?;
        written = Some(path);
    }
    if json_out {
        let mut value = serde_json::to_value(minted).map_err(|e| CliError::new(e.to_string()))?;
        if let Some(path) = &written {
            value["file"] = json!(path.display().to_string());
        }
        return print_json(&value);
    }
    print_key(&minted.key, false)?;
    match written {
        Some(path) => println!(
            "\ntoken written to {} (mode 0600); it cannot be shown again",
            path.display()
        ),
        None => println!(
            "\ntoken (shown once; it cannot be shown again):\n{}",
            minted.token
        ),
    }
    Ok(())
}

fn print_key(key: &KeyView, json_out: bool) -> Result<(), CliError> {
    if json_out {
        return print_json(key);
    }
    let roles: Vec<String> = key.roles.iter().map(|r| r.to_string()).collect();
    let rows = [
        ("id", key.id.clone()),
        ("name", key.name.clone()),
        ("description", key.description.clone()),
        ("roles", roles.join(", ")),
        (
            "accounts",
            key.accounts
                .as_ref()
                .map(|a| a.join(", "))
                .unwrap_or_else(|| "-".into()),
        ),
        ("status", format!("{:?}", key.status).to_lowercase()),
        ("created", key.created_at.clone()),
        (
            "created by",
            match &key.created_by {
                crate::audit::Actor::Key { name, .. } => name.clone(),
                crate::audit::Actor::Named(n) => n.clone(),
            },
        ),
        ("expires", key.expires_at.clone()),
        (
            "last used",
            key.last_used_at.clone().unwrap_or_else(|| "Never".into()),
        ),
        ("signing kid", key.signing_kid.clone()),
    ];
    for (label, value) in rows {
        println!("{label:<12} {value}");
    }
    Ok(())
}

async fn list(args: ListArgs) -> Result<(), CliError> {
    let client = Client::new(&args.client)?;
    let mut query = vec![("limit", args.limit.to_string())];
    if let Some(s) = &args.status {
        query.push(("status", s.clone()));
    }
    if let Some(q) = &args.query {
        query.push(("q", q.clone()));
    }
    if let Some(c) = &args.cursor {
        query.push(("cursor", c.clone()));
    }
    let page: KeyList = expect_body(client.send(Method::GET, "/v1/keys", &query, None).await?)?;
    if args.client.json {
        return print_json(&page);
    }
    let rows: Vec<Vec<String>> = page
        .items
        .iter()
        .map(|k| {
            vec![
                k.id.clone(),
                k.name.clone(),
                k.roles
                    .iter()
                    .map(|r| r.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
                k.accounts
                    .as_ref()
                    .map(|a| a.join(","))
                    .unwrap_or_else(|| "-".into()),
                format!("{:?}", k.status).to_lowercase(),
                k.expires_at.clone(),
                k.last_used_at.clone().unwrap_or_else(|| "Never".into()),
            ]
        })
        .collect();
    print_table(
        &[
            "ID",
            "NAME",
            "ROLES",
            "ACCOUNTS",
            "STATUS",
            "EXPIRES",
            "LAST USED",
        ],
        &rows,
    );
    if let Some(cursor) = page.next_cursor {
        println!("\nmore keys: --cursor {cursor}");
    }
    Ok(())
}

async fn state_change(args: KeyRef, action: &str) -> Result<(), CliError> {
    let client = Client::new(&args.client)?;
    let id = resolve(&client, &args.key).await?;
    let key: KeyView = expect_body(
        client
            .send(Method::POST, &format!("/v1/keys/{id}/{action}"), &[], None)
            .await?,
    )?;
    print_key(&key, args.client.json)
}
