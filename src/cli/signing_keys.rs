//! `latchkey signing-keys …`: list, rotate and retire the issuer's signing
//! keys on a running server, and import a PEM key offline.

use reqwest::Method;

use crate::cli::CliError;
use crate::cli::client::{Client, ClientArgs, print_json, print_table};
use crate::http::signing_keys::SigningKeyList;
use crate::model::{SigningKeyInfo, rfc3339};

#[derive(Debug, clap::Subcommand)]
pub enum SigningKeysCommand {
    /// List signing keys and their states.
    List(ClientArgs),
    /// Publish a new signing key now; it signs after the lead time (or at once with --now).
    Rotate(RotateArgs),
    /// Emergency: remove a key from the JWKS; every token it signed stops verifying.
    Retire(RetireArgs),
    /// Offline (server stopped): add a PKCS#8 PEM private key, e.g. RSA for RS256.
    Import(Box<ImportArgs>),
    /// PostgreSQL: re-encrypt every stored private key under a new key-encryption key.
    Reseal(crate::cli::database::ResealArgs),
}

#[derive(Debug, clap::Args)]
pub struct RotateArgs {
    /// Sign with the new key at once, skipping the lead time.
    #[arg(long)]
    pub now: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, clap::Args)]
pub struct RetireArgs {
    /// The key's kid.
    pub kid: String,
    /// Required: confirms that every token signed by this key stops working.
    #[arg(long = "i-understand-tokens-die")]
    pub confirmed: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// PEM file holding a PKCS#8 private key (-----BEGIN PRIVATE KEY-----).
    #[arg(long, value_name = "FILE")]
    pub pem: std::path::PathBuf,
    /// RS256 (RSA, 2048–4096 bits), ES256 (P-256) or EdDSA (Ed25519).
    #[arg(long, default_value = "RS256")]
    pub alg: String,
    /// Make it the signing key at once instead of after the lead time.
    #[arg(long)]
    pub now: bool,
    #[command(flatten)]
    pub server: crate::config::ServerArgs,
}

fn print_info(info: &SigningKeyInfo, json: bool) -> Result<(), CliError> {
    if json {
        return print_json(info);
    }
    println!(
        "{} {} {} (signs from {})",
        info.kid,
        info.alg,
        format!("{:?}", info.state).to_lowercase(),
        info.activates_at.map(rfc3339).unwrap_or_else(|| "-".into())
    );
    Ok(())
}

pub async fn run(command: SigningKeysCommand) -> Result<(), CliError> {
    match command {
        SigningKeysCommand::List(args) => {
            let client = Client::new(&args)?;
            let list: SigningKeyList = client
                .send(Method::GET, "/v1/signing-keys", &[], None)
                .await?
                .ok_or_else(|| CliError::new("the server sent an empty response"))?;
            if args.json {
                return print_json(&list);
            }
            let rows: Vec<Vec<String>> = list
                .items
                .iter()
                .map(|k| {
                    vec![
                        k.kid.clone(),
                        k.alg.clone(),
                        format!("{:?}", k.state).to_lowercase(),
                        rfc3339(k.created_at),
                        k.activates_at.map(rfc3339).unwrap_or_else(|| "-".into()),
                    ]
                })
                .collect();
            print_table(&["KID", "ALG", "STATE", "CREATED", "ACTIVE FROM"], &rows);
            Ok(())
        }
        SigningKeysCommand::Rotate(args) => {
            let client = Client::new(&args.client)?;
            let info: SigningKeyInfo = client
                .send(
                    Method::POST,
                    "/v1/signing-keys/rotate",
                    &[],
                    Some(serde_json::json!({"now": args.now})),
                )
                .await?
                .ok_or_else(|| CliError::new("the server sent an empty response"))?;
            print_info(&info, args.client.json)
        }
        SigningKeysCommand::Retire(args) => {
            if !args.confirmed {
                return Err(CliError::new(format!(
                    "retiring {} makes every token it signed fail verification; pass --i-understand-tokens-die to confirm",
                    args.kid
                )));
            }
            let client = Client::new(&args.client)?;
            let info: SigningKeyInfo = client
                .send(
                    Method::POST,
                    &format!("/v1/signing-keys/{}/retire", args.kid),
                    &[],
                    Some(serde_json::json!({"confirm": crate::http::signing_keys::RETIRE_CONFIRMATION})),
                )
                .await?
                .ok_or_else(|| CliError::new("the server sent an empty response"))?;
            print_info(&info, args.client.json)
        }
        SigningKeysCommand::Import(args) => import(*args).await,
        SigningKeysCommand::Reseal(args) => crate::cli::database::reseal(args).await,
    }
}

async fn import(args: ImportArgs) -> Result<(), CliError> {
    use latchkey_verifier::jwk::SigningAlgorithm;
    let alg = SigningAlgorithm::from_jose(&args.alg)
        .ok_or_else(|| CliError::new(format!("--alg {:?}: use RS256, ES256 or EdDSA", args.alg)))?;
    let pem = std::fs::read_to_string(&args.pem)
        .map_err(|e| CliError::new(format!("cannot read {}: {e}", args.pem.display())))?;
    let der = crate::signing::pkcs8_from_pem(&pem).map_err(|e| CliError::new(e.to_string()))?;
    let config =
        crate::config::Config::resolve(&args.server).map_err(|e| CliError::new(e.to_string()))?;
    let opened =
        crate::service::open(config, std::sync::Arc::new(crate::clock::SystemClock)).await?;
    let info = opened
        .state
        .issuer
        .import(&crate::audit::Actor::bootstrap(), alg, &der, args.now)
        .await
        .map_err(|e| CliError::new(e.to_string()))?;
    print_info(&info, false)
}
