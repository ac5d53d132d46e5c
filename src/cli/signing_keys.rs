//! `latchkey signing-keys …`: inspect the issuer's signing keys.

use reqwest::Method;

use crate::cli::CliError;
use crate::cli::client::{Client, ClientArgs, print_json, print_table};
use crate::http::signing_keys::SigningKeyList;
use crate::registry::rfc3339;

#[derive(Debug, clap::Subcommand)]
pub enum SigningKeysCommand {
    /// List signing keys and their states.
    List(ClientArgs),
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
    }
}
