//! Reaching PostgreSQL: the `postgres://` URL (with `sslmode`), TLS through
//! rustls with ring, and the connection pool.
//!
//! TLS always verifies the server's certificate, against `sslrootcert=FILE`
//! when the URL names one, else the system's roots: `sslmode=require`,
//! `verify-ca` and `verify-full` all mean "TLS, verified, with the host
//! name checked"; `prefer` tries that and falls back to plain TCP;
//! `disable` (or a loopback host without `sslmode`) is plain TCP. latchkey
//! has no mode that encrypts without knowing whom it talks to.
//!
//! The URL holds the database password, so [`DatabaseUrl`] never shows it:
//! its `Display` and `Debug` print the URL with the password replaced.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

/// How long connecting may take before the database counts as unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// A parsed `postgres://` URL. Never shows its password.
#[derive(Clone)]
pub struct DatabaseUrl {
    config: tokio_postgres::Config,
    tls: Tls,
    shown: String,
}

#[derive(Clone)]
enum Tls {
    Off,
    Prefer(MakeRustlsConnect),
    Require(MakeRustlsConnect),
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl std::fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

/// Whether `url` selects the PostgreSQL engine.
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

impl DatabaseUrl {
    /// Parses `url`; the error says what is wrong without repeating the URL.
    pub fn parse(url: &str) -> Result<DatabaseUrl, String> {
        if !is_postgres_url(url) {
            return Err(
                "the database URL must start with postgres:// (e.g. postgres://latchkey:PASSWORD@db:5432/latchkey)"
                    .into(),
            );
        }
        let (base, query) = match url.split_once('?') {
            Some((base, query)) => (base, query),
            None => (url, ""),
        };
        let mut sslmode = None;
        let mut root_cert = None;
        let mut rest = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "sslmode" => sslmode = Some(value.to_owned()),
                "sslrootcert" => root_cert = Some(percent_decode(value)),
                _ => rest.push(pair),
            }
        }
        let stripped = if rest.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", rest.join("&"))
        };
        let mut config = tokio_postgres::Config::from_str(&stripped).map_err(|e| {
            format!("the database URL is not valid: {e} (expected postgres://USER:PASSWORD@HOST:PORT/DATABASE?sslmode=...)")
        })?;
        if config.get_dbname().is_none() {
            return Err("the database URL names no database: add /DATABASE after the host".into());
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        config.application_name("latchkey");
        let loopback = config.get_hosts().iter().all(|h| match h {
            tokio_postgres::config::Host::Tcp(name) => {
                name == "localhost" || name == "127.0.0.1" || name == "::1"
            }
            #[cfg(unix)]
            tokio_postgres::config::Host::Unix(_) => true,
        });
        let mode = match sslmode.as_deref() {
            None if loopback => "disable",
            None => "prefer",
            Some(mode) => mode,
        };
        let tls = match mode {
            "disable" => Tls::Off,
            "prefer" | "allow" => Tls::Prefer(rustls_connector(root_cert.as_deref())?),
            "require" | "verify-ca" | "verify-full" => {
                Tls::Require(rustls_connector(root_cert.as_deref())?)
            }
            other => {
                return Err(format!(
                    "sslmode={other} is not one of disable, prefer, require, verify-ca, verify-full"
                ));
            }
        };
        config.ssl_mode(match tls {
            Tls::Off => SslMode::Disable,
            Tls::Prefer(_) => SslMode::Prefer,
            Tls::Require(_) => SslMode::Require,
        });
        Ok(DatabaseUrl {
            shown: redact(url),
            config,
            tls,
        })
    }

    /// A pool of at most `size` connections.
    pub fn pool(&self, size: usize) -> Result<Pool, String> {
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match &self.tls {
            Tls::Off => {
                Manager::from_config(self.config.clone(), tokio_postgres::NoTls, manager_config)
            }
            Tls::Prefer(tls) | Tls::Require(tls) => {
                Manager::from_config(self.config.clone(), tls.clone(), manager_config)
            }
        };
        Pool::builder(manager)
            .max_size(size)
            .wait_timeout(Some(CONNECT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| format!("could not build the connection pool: {e}"))
    }

    /// One connection outside the pool (the notification listener), with
    /// the task that drives it and forwards notifications to `notices`.
    pub async fn connect_listener(
        &self,
        notices: tokio::sync::mpsc::UnboundedSender<String>,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        match &self.tls {
            Tls::Off => {
                let (client, connection) = self.config.connect(tokio_postgres::NoTls).await?;
                tokio::spawn(drive(connection, notices));
                Ok(client)
            }
            Tls::Prefer(tls) | Tls::Require(tls) => {
                let (client, connection) = self.config.connect(tls.clone()).await?;
                tokio::spawn(drive(connection, notices));
                Ok(client)
            }
        }
    }
}

/// Drives a connection, passing on the channel name of each notification.
async fn drive<S, T>(
    mut connection: tokio_postgres::Connection<S, T>,
    notices: tokio::sync::mpsc::UnboundedSender<String>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        let message = std::future::poll_fn(|cx| connection.poll_message(cx)).await;
        match message {
            Some(Ok(tokio_postgres::AsyncMessage::Notification(n))) => {
                if notices.send(n.channel().to_owned()).is_err() {
                    return;
                }
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                tracing::warn!(error = %e, "the database notification connection failed");
                return;
            }
            None => return,
        }
    }
}

fn rustls_connector(root_cert: Option<&str>) -> Result<MakeRustlsConnect, String> {
    let mut roots = rustls::RootCertStore::empty();
    match root_cert {
        Some(path) => {
            let pem =
                std::fs::read(path).map_err(|e| format!("cannot read sslrootcert {path}: {e}"))?;
            let mut reader = std::io::BufReader::new(pem.as_slice());
            let mut added = 0;
            for cert in rustls_pemfile_certs(&mut reader) {
                roots.add(cert).map_err(|e| {
                    format!("sslrootcert {path} holds an unusable certificate: {e}")
                })?;
                added += 1;
            }
            if added == 0 {
                return Err(format!("sslrootcert {path} holds no PEM certificate"));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                let _ = roots.add(cert);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

/// The certificates of a PEM file.
fn rustls_pemfile_certs(
    reader: &mut dyn std::io::BufRead,
) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject as _;
    let mut text = Vec::new();
    if reader.read_to_end(&mut text).is_err() {
        return Vec::new();
    }
    rustls::pki_types::CertificateDer::pem_slice_iter(&text)
        .filter_map(Result::ok)
        .collect()
}

fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).and_then(|&b| hex(b)),
                bytes.get(i + 2).and_then(|&b| hex(b)),
            )
        {
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The URL with any password replaced by `***`.
pub fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return "<database URL>".into();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            let user = userinfo.split(':').next().unwrap_or("");
            let shown_user = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                user.to_owned()
            };
            format!(
                "{}{}@{}",
                &url[..scheme_end + 3],
                shown_user,
                &rest[at + 1..]
            )
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_never_shows() {
        let url = DatabaseUrl::parse(
            "postgres://latchkey:s3cret@db.example:5432/latchkey?sslmode=disable",
        )
        .unwrap();
        assert_eq!(
            url.to_string(),
            "postgres://latchkey:***@db.example:5432/latchkey?sslmode=disable"
        );
        assert!(!format!("{url:?}").contains("s3cret"));
    }

    #[test]
    fn bad_urls_say_what_to_fix() {
        assert!(
            DatabaseUrl::parse("mysql://x/y")
                .unwrap_err()
                .contains("postgres://")
        );
        assert!(
            DatabaseUrl::parse("postgres://u:p@h:5432")
                .unwrap_err()
                .contains("no database")
        );
        let e = DatabaseUrl::parse("postgres://u:p@h/db?sslmode=sometimes").unwrap_err();
        assert!(e.contains("sslmode=sometimes"), "{e}");
        assert!(!e.contains(":p@"));
    }

    #[test]
    fn loopback_defaults_to_plain_and_others_to_tls() {
        let local = DatabaseUrl::parse("postgres://u:p@127.0.0.1:5432/db").unwrap();
        assert_eq!(local.config.get_ssl_mode(), SslMode::Disable);
        let remote = DatabaseUrl::parse("postgres://u:p@db.example/db").unwrap();
        assert_eq!(remote.config.get_ssl_mode(), SslMode::Prefer);
        let required =
            DatabaseUrl::parse("postgres://u:p@db.example/db?sslmode=verify-full").unwrap();
        assert_eq!(required.config.get_ssl_mode(), SslMode::Require);
    }
}
