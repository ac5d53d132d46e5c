//! Configuration, layered as contract §6 says: built-in defaults, then a
//! TOML file (`--config`), then `LATCHKEY_*` environment variables, then
//! command-line flags. clap merges the last two (a flag beats its variable);
//! [`Config::resolve`] lays them over the file and the defaults and checks
//! every value, so a mistake is reported at start-up with what to fix.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use latchkey_verifier::Audience;
use latchkey_verifier::jwk::SigningAlgorithm;
use serde::Deserialize;

/// Flags (and their environment variables) shared by the commands that open
/// the data directory.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServerArgs {
    /// TOML configuration file.
    #[arg(long, env = "LATCHKEY_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "LATCHKEY_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Directory of the sled database [default: ./data].
    #[arg(long, env = "LATCHKEY_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Directory of the private signing keys [default: ./keys].
    #[arg(long, env = "LATCHKEY_KEYS_DIR", value_name = "DIR")]
    pub keys_dir: Option<PathBuf>,
    /// Issuer URL put in `iss` and the metadata [default: http:// + listen address].
    #[arg(long, env = "LATCHKEY_ISSUER", value_name = "URL")]
    pub issuer: Option<String>,
    /// Audience(s) put in `aud`, comma-separated [default: latchkey].
    #[arg(long, env = "LATCHKEY_AUDIENCE", value_name = "AUD")]
    pub audience: Option<String>,
    /// Write the bootstrap admin token to this file (0600) instead of stderr.
    #[arg(long, env = "LATCHKEY_BOOTSTRAP_TOKEN_FILE", value_name = "FILE")]
    pub bootstrap_token_file: Option<PathBuf>,
    /// Algorithm of generated signing keys: EdDSA or ES256 [default: EdDSA].
    #[arg(long, env = "LATCHKEY_SIGNING_ALGORITHM", value_name = "ALG")]
    pub signing_algorithm: Option<String>,
    /// Longest lifetime a client may ask for, in days [default: 730].
    #[arg(long, env = "LATCHKEY_MAX_EXPIRY_DAYS", value_name = "DAYS")]
    pub max_expiry_days: Option<u32>,
    /// Log format: text or json [default: text].
    #[arg(long, env = "LATCHKEY_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<String>,
    /// Seconds a rotated key is published before it signs [default: 3600].
    #[arg(long, env = "LATCHKEY_ROTATION_LEAD_TIME_SECS", value_name = "SECS")]
    pub rotation_lead_time_secs: Option<u64>,
    /// Rotate the signing key automatically every this many days; 0 turns it off [default: 90].
    #[arg(long, env = "LATCHKEY_ROTATION_PERIOD_DAYS", value_name = "DAYS")]
    pub rotation_period_days: Option<u32>,
    /// Seconds verifiers may cache a status list (its `ttl`) [default: 300].
    #[arg(long, env = "LATCHKEY_STATUS_LIST_TTL_SECS", value_name = "SECS")]
    pub status_list_ttl_secs: Option<u64>,
    /// PostgreSQL URL (postgres://USER:PASSWORD@HOST:PORT/DB?sslmode=...):
    /// replicas share this database [default: the embedded store in --data-dir].
    #[arg(
        long,
        env = "LATCHKEY_DATABASE_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub database_url: Option<String>,
    /// Key-encryption key file sealing signing keys in PostgreSQL
    /// (`latchkey kek generate --out FILE`); required with --database-url.
    #[arg(long, env = "LATCHKEY_KEY_ENCRYPTION_KEY_FILE", value_name = "FILE")]
    pub key_encryption_key_file: Option<PathBuf>,
}

/// The TOML file: the same settings, with underscores.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub keys_dir: Option<PathBuf>,
    pub issuer: Option<String>,
    pub audience: Option<AudienceSetting>,
    pub bootstrap_token_file: Option<PathBuf>,
    pub signing_algorithm: Option<String>,
    pub max_expiry_days: Option<u32>,
    pub log_format: Option<String>,
    pub status_list_capacity: Option<u64>,
    pub status_list_ttl_secs: Option<u64>,
    pub jwks_max_age_secs: Option<u64>,
    pub rotation_lead_time_secs: Option<u64>,
    pub rotation_period_days: Option<u32>,
    pub max_stream_subscribers: Option<usize>,
    pub database_url: Option<String>,
    pub key_encryption_key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum AudienceSetting {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub keys_dir: PathBuf,
    /// Without a trailing slash.
    pub issuer: String,
    /// Whether `issuer` was set (flag, environment or file) rather than
    /// derived from `listen`; a derived one yields to the issuer recorded
    /// when the data directory was initialised.
    pub issuer_explicit: bool,
    pub audience: Audience,
    pub bootstrap_token_file: Option<PathBuf>,
    pub signing_algorithm: SigningAlgorithm,
    pub max_expiry_days: u32,
    pub log_format: LogFormat,
    /// Entries per status list (fixed when the data directory is created).
    pub status_list_capacity: u64,
    pub status_list_ttl_secs: u64,
    pub jwks_max_age_secs: u64,
    /// Seconds between publishing a rotated key and signing with it.
    pub rotation_lead_time_secs: u64,
    /// Automatic rotation period; `None` when off.
    pub rotation_period_days: Option<u32>,
    /// Most concurrent `/v1/status/stream` subscribers; more get 503.
    pub max_stream_subscribers: usize,
    /// The PostgreSQL database replicas share; `None`: the embedded store.
    pub database_url: Option<crate::store::postgres::DatabaseUrl>,
    /// The key-encryption key sealing signing keys in PostgreSQL.
    pub key_encryption_key_file: Option<PathBuf>,
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_MAX_EXPIRY_DAYS: u32 = 730;
pub const DEFAULT_STATUS_LIST_CAPACITY: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
#[error("configuration error: {0}")]
pub struct ConfigError(pub String);

impl Default for Config {
    fn default() -> Self {
        let listen: SocketAddr = DEFAULT_LISTEN
            .parse()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 8080)));
        Config {
            listen,
            data_dir: PathBuf::from("./data"),
            keys_dir: PathBuf::from("./keys"),
            issuer: format!("http://{listen}"),
            issuer_explicit: false,
            audience: Audience::One("latchkey".into()),
            bootstrap_token_file: None,
            signing_algorithm: SigningAlgorithm::EdDSA,
            max_expiry_days: DEFAULT_MAX_EXPIRY_DAYS,
            log_format: LogFormat::Text,
            status_list_capacity: DEFAULT_STATUS_LIST_CAPACITY,
            status_list_ttl_secs: 300,
            jwks_max_age_secs: 300,
            rotation_lead_time_secs: 3600,
            rotation_period_days: Some(90),
            max_stream_subscribers: 10_000,
            database_url: None,
            key_encryption_key_file: None,
        }
    }
}

impl Config {
    /// Defaults, then the file named by `args.config`, then `args` (flags and environment).
    pub fn resolve(args: &ServerArgs) -> Result<Config, ConfigError> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let mut config = Config::default();
        let listen = match (&args.listen, &file.listen) {
            (Some(addr), _) => Some(*addr),
            (None, Some(text)) => Some(text.parse().map_err(|_| {
                ConfigError(format!(
                    "listen = {text:?} is not a socket address like 127.0.0.1:8080"
                ))
            })?),
            (None, None) => None,
        };
        if let Some(listen) = listen {
            config.listen = listen;
        }
        if let Some(dir) = args.data_dir.clone().or(file.data_dir) {
            config.data_dir = dir;
        }
        if let Some(dir) = args.keys_dir.clone().or(file.keys_dir) {
            config.keys_dir = dir;
        }
        config.issuer_explicit = args.issuer.is_some() || file.issuer.is_some();
        config.issuer = match args.issuer.clone().or(file.issuer) {
            Some(url) => validate_issuer(&url)?,
            None => format!("http://{}", config.listen),
        };
        let audience = match (&args.audience, file.audience) {
            (Some(text), _) => Some(split_audience(text)),
            (None, Some(AudienceSetting::One(a))) => Some(vec![a]),
            (None, Some(AudienceSetting::Many(a))) => Some(a),
            (None, None) => None,
        };
        if let Some(list) = audience {
            let list: Vec<String> = list
                .into_iter()
                .map(|a| a.trim().to_owned())
                .filter(|a| !a.is_empty())
                .collect();
            config.audience = match list.len() {
                0 => {
                    return Err(ConfigError(
                        "audience must name at least one audience".into(),
                    ));
                }
                1 => Audience::One(list.into_iter().next().unwrap_or_default()),
                _ => Audience::Many(list),
            };
        }
        if let Some(url) = args.database_url.clone().or(file.database_url) {
            let url = url.trim();
            if !url.is_empty() {
                config.database_url = Some(
                    crate::store::postgres::DatabaseUrl::parse(url)
                        .map_err(|e| ConfigError(format!("database_url: {e}")))?,
                );
            }
        }
        config.key_encryption_key_file = args
            .key_encryption_key_file
            .clone()
            .or(file.key_encryption_key_file);
        if config.database_url.is_some() && config.key_encryption_key_file.is_none() {
            return Err(ConfigError(
                "--database-url needs --key-encryption-key-file (LATCHKEY_KEY_ENCRYPTION_KEY_FILE): signing keys are stored sealed under it; create one with `latchkey kek generate --out FILE`".into(),
            ));
        }
        config.bootstrap_token_file = args
            .bootstrap_token_file
            .clone()
            .or(file.bootstrap_token_file);
        if let Some(alg) = args.signing_algorithm.clone().or(file.signing_algorithm) {
            config.signing_algorithm = match alg.as_str() {
                "EdDSA" | "eddsa" | "ed25519" | "Ed25519" => SigningAlgorithm::EdDSA,
                "ES256" | "es256" => SigningAlgorithm::ES256,
                "RS256" | "rs256" => {
                    return Err(ConfigError(
                        "signing_algorithm RS256 cannot be generated; import an RSA key with `latchkey signing-keys import` instead".into(),
                    ));
                }
                other => {
                    return Err(ConfigError(format!(
                        "signing_algorithm {other:?} is not supported; use EdDSA or ES256"
                    )));
                }
            };
        }
        if let Some(days) = args.max_expiry_days.or(file.max_expiry_days) {
            if !(1..=36_500).contains(&days) {
                return Err(ConfigError(format!(
                    "max_expiry_days = {days} is out of range (1 to 36500)"
                )));
            }
            config.max_expiry_days = days;
        }
        if let Some(format) = args.log_format.clone().or(file.log_format) {
            config.log_format = match format.as_str() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                other => {
                    return Err(ConfigError(format!(
                        "log_format {other:?} is not supported; use text or json"
                    )));
                }
            };
        }
        if let Some(capacity) = file.status_list_capacity {
            if !(16..=1 << 24).contains(&capacity) || capacity % 4 != 0 {
                return Err(ConfigError(format!(
                    "status_list_capacity = {capacity}: use a multiple of 4 from 16 to 16777216"
                )));
            }
            config.status_list_capacity = capacity;
        }
        if let Some(lead) = args
            .rotation_lead_time_secs
            .or(file.rotation_lead_time_secs)
        {
            if lead > 30 * 86_400 {
                return Err(ConfigError(format!(
                    "rotation_lead_time_secs = {lead}: use 0 to 2592000 (30 days)"
                )));
            }
            config.rotation_lead_time_secs = lead;
        }
        if let Some(max) = file.max_stream_subscribers {
            if !(1..=1_000_000).contains(&max) {
                return Err(ConfigError(format!(
                    "max_stream_subscribers = {max}: use 1 to 1000000"
                )));
            }
            config.max_stream_subscribers = max;
        }
        if let Some(days) = args.rotation_period_days.or(file.rotation_period_days) {
            config.rotation_period_days = (days > 0).then_some(days);
        }
        if let Some(ttl) = args.status_list_ttl_secs.or(file.status_list_ttl_secs) {
            if !(1..=86_400).contains(&ttl) {
                return Err(ConfigError(format!(
                    "status_list_ttl_secs = {ttl}: use 1 to 86400"
                )));
            }
            config.status_list_ttl_secs = ttl;
        }
        if let Some(age) = file.jwks_max_age_secs {
            if age > 86_400 {
                return Err(ConfigError(format!(
                    "jwks_max_age_secs = {age}: use 0 to 86400"
                )));
            }
            config.jwks_max_age_secs = age;
        }
        Ok(config)
    }

    /// The audience a token must carry to be accepted by this issuer's own API.
    pub fn primary_audience(&self) -> &str {
        match &self.audience {
            Audience::One(a) => a,
            Audience::Many(list) => list.first().map(String::as_str).unwrap_or("latchkey"),
        }
    }
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
    toml::from_str(&text).map_err(|e| ConfigError(format!("{}: {e}", path.display())))
}

fn split_audience(text: &str) -> Vec<String> {
    text.split(',').map(str::to_owned).collect()
}

fn validate_issuer(url: &str) -> Result<String, ConfigError> {
    let trimmed = url.trim().trim_end_matches('/');
    let rest = trimmed
        .strip_prefix("https://")
        .or_else(|| trimmed.strip_prefix("http://"))
        .ok_or_else(|| ConfigError(format!("issuer {url:?} must be an http:// or https:// URL")))?;
    if rest.is_empty() || rest.contains(['?', '#', ' ']) {
        return Err(ConfigError(format!(
            "issuer {url:?} must be a plain URL without query, fragment or spaces"
        )));
    }
    Ok(trimmed.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_defaults_file_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("latchkey.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:9000\"\naudience = [\"a\", \"b\"]\nmax_expiry_days = 90\n",
        )
        .unwrap();
        let args = ServerArgs {
            config: Some(file),
            max_expiry_days: Some(30),
            ..Default::default()
        };
        let config = Config::resolve(&args).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:9000");
        assert_eq!(config.issuer, "http://127.0.0.1:9000");
        assert_eq!(
            config.audience,
            Audience::Many(vec!["a".into(), "b".into()])
        );
        assert_eq!(config.max_expiry_days, 30);
    }

    #[test]
    fn bad_values_say_what_to_fix() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, "listne = \"x\"\n").unwrap();
        let err = Config::resolve(&ServerArgs {
            config: Some(file),
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("listne"), "{err}");
        let err = Config::resolve(&ServerArgs {
            issuer: Some("ftp://x".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("http"), "{err}");
    }
}
