//! `latchkey verify --issuer URL [--audience AUD] <token|->`: offline
//! verification of an access key against an issuer's published JWKS and
//! status lists, through the verifier crate (contract §6, §8) — exactly what
//! a downstream service would conclude. Prints the claims and the status;
//! exits 0 only if the key is valid.

use std::io::Read;

use latchkey_verifier::{AccessClaims, TokenStatus, Verifier, VerifyError};
use serde_json::json;

use crate::cli::CliError;
use crate::cli::client::print_json;
use crate::model::rfc3339;

#[derive(Debug, Clone, clap::Args)]
pub struct VerifyArgs {
    /// The issuer URL, exactly as in its tokens' `iss` (fetches its metadata, JWKS and status lists).
    #[arg(long, env = "LATCHKEY_ISSUER", value_name = "URL")]
    pub issuer: String,
    /// The audience the key must be meant for.
    #[arg(long, default_value = "latchkey", value_name = "AUD")]
    pub audience: String,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// The access key, or `-` to read it from standard input (keeps it out of the process list).
    #[arg(value_name = "TOKEN|-")]
    pub token: String,
}

fn read_token(arg: &str) -> Result<String, CliError> {
    let token = if arg == "-" {
        let mut text = String::new();
        std::io::stdin()
            .take(64 * 1024)
            .read_to_string(&mut text)
            .map_err(|e| CliError::new(format!("cannot read the token from stdin: {e}")))?;
        text
    } else {
        arg.to_owned()
    };
    let token = token.trim().to_owned();
    if token.is_empty() {
        return Err(CliError::new("the token is empty"));
    }
    Ok(token)
}

fn status_name(status: TokenStatus) -> &'static str {
    match status {
        TokenStatus::Valid => "valid",
        TokenStatus::Invalid => "revoked",
        TokenStatus::Suspended => "suspended",
    }
}

fn time(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .map(rfc3339)
        .unwrap_or_else(|_| unix.to_string())
}

fn print_text(claims: &AccessClaims, status: &Result<TokenStatus, VerifyError>) {
    let status_text = match status {
        Ok(s) => status_name(*s).to_owned(),
        Err(e) => format!("unknown ({e})"),
    };
    let valid = matches!(status, Ok(TokenStatus::Valid));
    println!("valid:     {}", if valid { "yes" } else { "no" });
    println!("status:    {status_text}");
    println!("name:      {}", claims.name);
    println!("key id:    {}", claims.sub);
    let roles: Vec<&str> = claims.roles.iter().map(|r| r.as_str()).collect();
    println!("roles:     {}", roles.join(", "));
    if let Some(accounts) = &claims.accounts {
        println!("accounts:  {}", accounts.join(", "));
    }
    println!("issued:    {}", time(claims.iat));
    println!("expires:   {}", time(claims.exp));
    println!("jti:       {}", claims.jti);
    println!("issuer:    {}", claims.iss);
    let list = &claims.status.status_list;
    println!("status at: {} #{}", list.uri, list.idx);
}

pub async fn run(args: VerifyArgs) -> Result<(), CliError> {
    let token = read_token(&args.token)?;
    let verifier = Verifier::builder(&args.issuer, &args.audience)
        .stream(false)
        .cache_capacity(0)
        .build()
        .await
        .map_err(|e| CliError::new(format!("cannot load what verification needs: {e}")))?;
    let claims = match verifier.verify_claims(&token) {
        Ok(claims) => claims,
        Err(e) => {
            if args.json {
                print_json(&json!({"valid": false, "error": e.code(), "message": e.to_string()}))?;
            } else {
                println!("valid:     no");
                println!("reason:    {e}");
            }
            return Err(CliError::new(format!("the access key is not valid: {e}")));
        }
    };
    let status = verifier.status(&claims.status.status_list);
    if args.json {
        print_json(&json!({
            "valid": matches!(status, Ok(TokenStatus::Valid)),
            "status": match &status { Ok(s) => status_name(*s), Err(_) => "unknown" },
            "error": status.as_ref().err().map(VerifyError::code),
            "claims": claims,
        }))?;
    } else {
        print_text(&claims, &status);
    }
    match status {
        Ok(TokenStatus::Valid) => Ok(()),
        Ok(other) => Err(CliError::new(format!(
            "the access key is not valid: it is {}",
            status_name(other)
        ))),
        Err(e) => Err(CliError::new(format!("the access key is not valid: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_from_argument() {
        assert_eq!(read_token(" a.b.c\n").ok().as_deref(), Some("a.b.c"));
        assert!(read_token("  ").is_err());
    }
}
