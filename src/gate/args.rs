//! `latchkey gate`'s flags and environment variables (contract §10), and
//! their resolution into a checked [`GateConfig`]: everything that can be
//! wrong with the configuration is refused here, before the gate listens.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use axum::http::HeaderName;
use clap::Args;

use super::policy::{AccountPattern, AccountSource, Policy};
use super::policy_file;

/// `latchkey gate`: a forward-auth server for reverse proxies.
#[derive(Debug, Clone, Args)]
pub struct GateArgs {
    /// The issuer URL (its `iss`), whose JWKS and status lists the gate follows.
    #[arg(long, env = "LATCHKEY_GATE_ISSUER", value_name = "URL")]
    pub issuer: String,
    /// The audience keys must carry in `aud`.
    #[arg(
        long,
        env = "LATCHKEY_GATE_AUDIENCE",
        value_name = "AUD",
        default_value = "latchkey"
    )]
    pub audience: String,
    /// Address to listen on.
    #[arg(
        long,
        env = "LATCHKEY_GATE_LISTEN",
        value_name = "ADDR",
        default_value = "127.0.0.1:8081"
    )]
    pub listen: SocketAddr,
    /// Where the account is in the path, e.g. /accounts/{account}/.
    #[arg(
        long,
        env = "LATCHKEY_GATE_ACCOUNT_PATH",
        value_name = "PATTERN",
        conflicts_with = "account_header"
    )]
    pub account_path: Option<String>,
    /// The request header that names the account.
    #[arg(long, env = "LATCHKEY_GATE_ACCOUNT_HEADER", value_name = "NAME")]
    pub account_header: Option<String>,
    /// A TOML policy file adding rules by path prefix and method (default:
    /// the contract's §1 policy only).
    #[arg(long, env = "LATCHKEY_GATE_POLICY", value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Refuse every key (503) once status data is this many seconds old.
    #[arg(
        long,
        env = "LATCHKEY_GATE_MAX_STALENESS_SECS",
        value_name = "N",
        default_value_t = 300,
        value_parser = clap::value_parser!(u64).range(1..=86_400)
    )]
    pub max_staleness_secs: u64,
    /// A file holding an active access key of the issuer: turns on usage
    /// reports, so `last_used_at` covers keys used through the gate.
    #[arg(long, env = "LATCHKEY_GATE_USAGE_TOKEN_FILE", value_name = "FILE")]
    pub usage_token_file: Option<PathBuf>,
}

/// An access key read from `--usage-token-file`; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct UsageToken(pub String);

impl std::fmt::Debug for UsageToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UsageToken(<redacted>)")
    }
}

/// The gate's checked configuration.
#[derive(Debug, Clone)]
pub struct GateConfig {
    pub issuer: String,
    pub audience: String,
    pub listen: SocketAddr,
    pub account: AccountSource,
    pub policy: Policy,
    pub max_staleness: Duration,
    pub usage_token: Option<UsageToken>,
}

impl GateArgs {
    /// Checks the arguments and reads the files they name.
    pub fn resolve(&self) -> Result<GateConfig, String> {
        let issuer = self.issuer.trim().to_owned();
        if issuer.is_empty() {
            return Err(
                "--issuer is empty: give the issuer URL, e.g. https://latchkey.example.com".into(),
            );
        }
        let account = match (&self.account_path, &self.account_header) {
            (Some(pattern), _) => AccountSource::Path(
                AccountPattern::parse(pattern).map_err(|e| format!("--account-path: {e}"))?,
            ),
            (None, Some(name)) => {
                let header = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| {
                    format!("--account-header: {name:?} is not a valid HTTP header name")
                })?;
                if header == axum::http::header::AUTHORIZATION
                    || header.as_str().starts_with("x-latchkey-")
                {
                    return Err(format!(
                        "--account-header: {name:?} is reserved; name the header your clients send the account in"
                    ));
                }
                AccountSource::Header(header)
            }
            (None, None) => AccountSource::None,
        };
        let policy = match &self.policy {
            Some(path) => policy_file::load(path).map_err(|e| e.to_string())?,
            None => Policy::default(),
        };
        let usage_token = match &self.usage_token_file {
            Some(path) => Some(read_usage_token(path)?),
            None => None,
        };
        Ok(GateConfig {
            issuer,
            audience: self.audience.clone(),
            listen: self.listen,
            account,
            policy,
            max_staleness: Duration::from_secs(self.max_staleness_secs),
            usage_token,
        })
    }
}

/// The access key in `path` (surrounding whitespace ignored). Messages
/// name the file, never its contents.
fn read_usage_token(path: &std::path::Path) -> Result<UsageToken, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("--usage-token-file: cannot read {}: {e}", path.display()))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(format!(
            "--usage-token-file: {} is empty; write an access key of the issuer into it",
            path.display()
        ));
    }
    if token.split('.').count() != 3 || token.chars().any(char::is_whitespace) {
        return Err(format!(
            "--usage-token-file: {} does not hold one access key (a JWT of three dot-separated parts)",
            path.display()
        ));
    }
    Ok(UsageToken(token.to_owned()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        gate: GateArgs,
    }

    fn parse(args: &[&str]) -> Result<GateArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("gate").chain(args.iter().copied())).map(|c| c.gate)
    }

    #[test]
    fn defaults_follow_the_contract() {
        let args = parse(&["--issuer", "http://issuer.test"]).unwrap();
        assert_eq!(args.audience, "latchkey");
        assert_eq!(args.listen.to_string(), "127.0.0.1:8081");
        assert_eq!(args.max_staleness_secs, 300);
        let config = args.resolve().unwrap();
        assert!(matches!(config.account, AccountSource::None));
        assert!(config.policy.rules().is_empty());
        assert!(config.usage_token.is_none());
    }

    #[test]
    fn account_flags_are_checked() {
        assert!(
            parse(&[
                "--issuer",
                "x",
                "--account-path",
                "/a/{account}",
                "--account-header",
                "x-a"
            ])
            .is_err()
        );
        let bad = parse(&["--issuer", "x", "--account-path", "/a/b"]).unwrap();
        assert!(bad.resolve().unwrap_err().contains("no {account}"));
        let bad = parse(&["--issuer", "x", "--account-header", "bad header"]).unwrap();
        assert!(
            bad.resolve()
                .unwrap_err()
                .contains("not a valid HTTP header name")
        );
        let bad = parse(&["--issuer", "x", "--account-header", "X-Latchkey-Key-Id"]).unwrap();
        assert!(bad.resolve().unwrap_err().contains("reserved"));
        assert!(parse(&["--issuer", "x", "--max-staleness-secs", "0"]).is_err());
    }

    #[test]
    fn the_usage_token_is_read_and_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("usage.key");
        std::fs::write(&path, "aaa.bbb.ccc\n").unwrap();
        let args = parse(&[
            "--issuer",
            "x",
            "--usage-token-file",
            path.to_str().unwrap(),
        ])
        .unwrap();
        let config = args.resolve().unwrap();
        assert_eq!(config.usage_token, Some(UsageToken("aaa.bbb.ccc".into())));
        assert!(!format!("{config:?}").contains("aaa.bbb"));
        std::fs::write(&path, "secret-not-a-jwt").unwrap();
        let e = args.resolve().unwrap_err();
        assert!(!e.contains("secret"), "{e}");
        std::fs::write(&path, " \n").unwrap();
        assert!(args.resolve().unwrap_err().contains("is empty"));
    }
}
