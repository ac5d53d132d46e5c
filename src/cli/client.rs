//! The HTTP client behind the CLI's server commands: where the server is,
//! which token to send, and turning problem documents into messages.

use std::path::PathBuf;

use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;

use crate::cli::CliError;

/// Options shared by every command that talks to a running server.
#[derive(Debug, Clone, clap::Args)]
pub struct ClientArgs {
    /// Server URL.
    #[arg(
        long,
        env = "LATCHKEY_SERVER",
        default_value = "http://127.0.0.1:8080",
        value_name = "URL",
        global = true
    )]
    pub server: String,
    /// File holding the access key to authenticate with (else LATCHKEY_TOKEN).
    #[arg(long, value_name = "FILE", global = true)]
    pub token_file: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

/// An authenticated client of one server.
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// Makes sure rustls uses ring, the project's one crypto library.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl Client {
    pub fn new(args: &ClientArgs) -> Result<Client, CliError> {
        install_tls_provider();
        let token = match &args.token_file {
            Some(path) => std::fs::read_to_string(path).map_err(|e| {
                CliError::new(format!("cannot read --token-file {}: {e}", path.display()))
            })?,
            None => std::env::var("LATCHKEY_TOKEN").map_err(|_| {
                CliError::new("no access key: set LATCHKEY_TOKEN or pass --token-file FILE")
            })?,
        };
        let token = token.trim().to_owned();
        if token.is_empty() {
            return Err(CliError::new(
                "the access key is empty (LATCHKEY_TOKEN or --token-file)",
            ));
        }
        let base = args.server.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(CliError::new(format!(
                "--server {base:?} must be an http:// or https:// URL"
            )));
        }
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(|e| CliError::new(format!("cannot build an HTTP client: {e}")))?;
        Ok(Client { http, base, token })
    }

    /// Sends a request and returns the status and parsed body, or the
    /// server's problem `detail` as the error.
    pub async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<serde_json::Value>,
    ) -> Result<Option<T>, CliError> {
        let url = format!("{}{path}", self.base);
        let mut request = self
            .http
            .request(method, &url)
            .bearer_auth(&self.token)
            .query(query);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|e| {
            CliError::new(format!("cannot reach {}: {}", self.base, short_error(&e)))
        })?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| CliError::new(format!("reading the response failed: {e}")))?;
        if status.is_success() {
            if status == StatusCode::NO_CONTENT || bytes.is_empty() {
                return Ok(None);
            }
            return serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| CliError::new(format!("unexpected response from the server: {e}")));
        }
        Err(problem_error(status, &bytes))
    }

    /// Sends a GET whose body the caller reads itself (a download), allowed
    /// `timeout` in all; a non-2xx answer is the server's problem `detail`.
    pub async fn download(
        &self,
        path: &str,
        timeout: std::time::Duration,
    ) -> Result<reqwest::Response, CliError> {
        let url = format!("{}{path}", self.base);
        let response = self
            .http
            .get(&url)
            .bearer_auth(&self.token)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| {
                CliError::new(format!("cannot reach {}: {}", self.base, short_error(&e)))
            })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let bytes = response.bytes().await.unwrap_or_default();
        Err(problem_error(status, &bytes))
    }
}

fn short_error(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        text = format!("{text}: {inner}");
        source = inner.source();
    }
    text
}

/// Turns a problem+json body into a message and exit code.
pub fn problem_error(status: StatusCode, body: &[u8]) -> CliError {
    let value: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let detail = value
        .get("detail")
        .and_then(|d| d.as_str())
        .unwrap_or("the server gave no detail");
    let mut message = format!(
        "{} {}: {detail}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    if let Some(errors) = value.get("errors").and_then(|e| e.as_array()) {
        for error in errors {
            let field = error.get("field").and_then(|f| f.as_str()).unwrap_or("?");
            let msg = error.get("message").and_then(|m| m.as_str()).unwrap_or("");
            message.push_str(&format!("\n  {field}: {msg}"));
        }
    }
    CliError { message, code: 1 }
}

/// Prints rows as aligned columns under a header.
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        let text: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = widths.get(i).copied().unwrap_or(0)))
            .collect();
        println!("{}", text.join("  ").trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row.clone());
    }
}

pub fn print_json<T: serde::Serialize>(value: &T) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value).map_err(|e| CliError::new(e.to_string()))?;
    println!("{text}");
    Ok(())
}
