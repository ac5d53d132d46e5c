//! The `latchkey` binary end to end (contract §6): `serve` on a real port,
//! the `keys` client commands against it, the bootstrap token shown once,
//! `recover-admin` and `init` on the data directory.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use latchkey_verifier::{Expectations, KeySet, verify_signed};
use serde_json::{Value, json};

use crate::replica::Replica;
use crate::support::{Ran, latchkey, run};

const FIXED_ISSUER: &str = "http://latchkey.cli.test";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn http() -> reqwest::Client {
    latchkey::cli::client::install_tls_provider();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// `serve` on a test's data directory, with the client calls the tests make.
pub(crate) struct Server {
    replica: Replica,
    pub(crate) base: String,
}

impl Server {
    /// Starts `serve` on a free port of 127.0.0.1 and waits until it is healthy.
    pub(crate) async fn start(dir: &Path, extra: &[&str]) -> Server {
        Self::start_logging(dir, extra, "warn").await
    }

    /// [`Server::start`] with this `LATCHKEY_LOG` filter.
    async fn start_logging(dir: &Path, extra: &[&str], log: &str) -> Server {
        let data = dir.join("data").display().to_string();
        let keys = dir.join("keys").display().to_string();
        let mut args = vec!["--data-dir", &data, "--keys-dir", &keys];
        args.extend_from_slice(extra);
        let replica = Replica::spawn(
            Path::new(env!("CARGO_BIN_EXE_latchkey")),
            &args,
            &[("LATCHKEY_LOG", log)],
        )
        .await;
        let base = replica.url();
        Server { replica, base }
    }

    fn stderr(&self) -> String {
        self.replica.stderr_text()
    }

    /// Waits (bounded) until stderr contains `needle`.
    async fn wait_for_stderr(&self, needle: &str) -> String {
        assert!(
            self.replica
                .stderr_shows(needle, Duration::from_secs(10))
                .await,
            "{needle:?} never appeared on stderr: {}",
            self.stderr()
        );
        self.stderr()
    }

    /// Whether `needle` appears on stderr within a short bounded wait.
    async fn stderr_shows(&self, needle: &str) -> bool {
        self.replica
            .stderr_shows(needle, Duration::from_secs(2))
            .await
    }

    /// Stops the server with SIGTERM (bounded wait, then SIGKILL) and
    /// returns everything it wrote to stderr.
    pub(crate) async fn stop(mut self) -> String {
        self.replica.terminate().await;
        self.stderr()
    }

    /// Kills the server with SIGKILL: no graceful shutdown, no final flush.
    fn crash(mut self) {
        self.replica.kill9();
    }

    /// A `latchkey` client command aimed at this server with `token`.
    pub(crate) fn client(&self, token: &str) -> std::process::Command {
        let mut command = latchkey();
        command
            .env("LATCHKEY_SERVER", &self.base)
            .env("LATCHKEY_TOKEN", token);
        command
    }

    pub(crate) async fn get(&self, path: &str, token: &str) -> (u16, Value) {
        let response = http()
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(Value::Null);
        (status, body)
    }
}

#[track_caller]
pub(crate) fn ok(ran: &Ran) -> &Ran {
    assert!(
        ran.success,
        "exit {:?}\nstdout: {}\nstderr: {}",
        ran.code, ran.stdout, ran.stderr
    );
    ran
}

pub(crate) fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Lines that look like a compact JWS.
fn tokens_in(text: &str) -> Vec<String> {
    text.split_whitespace()
        .filter(|w| w.starts_with("eyJ") && w.split('.').count() == 3)
        .map(str::to_owned)
        .collect()
}

pub(crate) fn read_token(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap().trim().to_owned()
}

fn today() -> String {
    time::OffsetDateTime::now_utc().date().to_string()
}

#[tokio::test]
async fn keys_commands_drive_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("admin.token");
    // Verbose logs, to check that no token ever reaches them.
    let server = Server::start_logging(
        dir.path(),
        &["--bootstrap-token-file", token_file.to_str().unwrap()],
        "debug",
    )
    .await;
    assert_eq!(mode(&token_file), 0o600);
    let admin = read_token(&token_file);
    assert!(
        tokens_in(&server.stderr()).is_empty(),
        "the token went to a file, not stderr"
    );

    // keys create --download
    let downloads = dir.path().join("downloads");
    std::fs::create_dir(&downloads).unwrap();
    let day_before = today();
    let ran = run(server
        .client(&admin)
        .args([
            "keys",
            "create",
            "--name",
            "x",
            "--role",
            "cloud_account_viewer",
            "--account",
            "a1",
            "--account",
            "a2",
            "--json",
            "--download",
        ])
        .arg(&downloads));
    ok(&ran);
    let day_after = today();
    let created: Value = serde_json::from_str(&ran.stdout).unwrap();
    assert_eq!(created["key"]["name"], json!("x"));
    assert_eq!(created["key"]["accounts"], json!(["a1", "a2"]));
    let id = created["key"]["id"].as_str().unwrap().to_owned();
    let file: PathBuf = [&day_before, &day_after]
        .iter()
        .map(|d| downloads.join(format!("APIKey-x-{d}.key")))
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!(
                "no APIKey-x-<date>.key in {:?}",
                std::fs::read_dir(&downloads).unwrap().collect::<Vec<_>>()
            )
        });
    assert_eq!(mode(&file), 0o600);
    let key_token = read_token(&file);
    if let Some(printed) = created["token"].as_str() {
        assert_eq!(printed, key_token);
    }
    // A valid key whose role cannot list keys.
    assert_eq!(server.get("/v1/keys", &key_token).await.0, 403);

    // A downstream verifier with the served JWKS accepts it offline.
    let jwks = http()
        .get(format!("{}/.well-known/jwks.json", server.base))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let claims = verify_signed(
        &key_token,
        &KeySet::from_jwks_json(&jwks).unwrap(),
        &Expectations::new(server.base.clone(), "latchkey"),
        time::OffsetDateTime::now_utc().unix_timestamp(),
    )
    .unwrap();
    assert_eq!(claims.sub, id);
    assert_eq!(
        claims.accounts,
        Some(vec!["a1".to_owned(), "a2".to_owned()])
    );

    // keys list --json
    let ran = run(server.client(&admin).args(["keys", "list", "--json"]));
    let listed: Value = serde_json::from_str(&ok(&ran).stdout).unwrap();
    let names: Vec<&str> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["x", "bootstrap-admin"]);

    // keys show <name>
    let ran = run(server.client(&admin).args(["keys", "show", "x"]));
    assert!(ok(&ran).stdout.contains(&id), "{}", ran.stdout);

    // keys describe <id> --description
    ok(&run(server.client(&admin).args([
        "keys",
        "describe",
        &id,
        "--description",
        "set from the cli",
    ])));
    let (_, key) = server.get(&format!("/v1/keys/{id}"), &admin).await;
    assert_eq!(key["description"], json!("set from the cli"));

    // keys renew
    let ran = run(server.client(&admin).args([
        "keys",
        "renew",
        "x",
        "--expires-in-days",
        "10",
        "--json",
    ]));
    let renewed: Value = serde_json::from_str(&ok(&ran).stdout).unwrap();
    let new_token = renewed["token"].as_str().unwrap().to_owned();
    assert_ne!(new_token, key_token);
    let (_, key) = server.get(&format!("/v1/keys/{id}"), &admin).await;
    let expires = crate::support::parse_time(key["expires_at"].as_str().unwrap());
    let ten_days = time::OffsetDateTime::now_utc().unix_timestamp() + 10 * 86_400;
    assert!((expires - ten_days).abs() < 300, "{key}");
    assert_eq!(server.get("/v1/keys", &new_token).await.0, 403);
    assert_eq!(server.get("/v1/keys", &key_token).await.0, 403);

    // keys suspend / resume
    ok(&run(server.client(&admin).args(["keys", "suspend", "x"])));
    let (_, key) = server.get(&format!("/v1/keys/{id}"), &admin).await;
    assert_eq!(key["status"], json!("suspended"));
    assert_eq!(server.get("/v1/keys", &key_token).await.0, 401);
    ok(&run(server.client(&admin).args(["keys", "resume", &id])));
    let (_, key) = server.get(&format!("/v1/keys/{id}"), &admin).await;
    assert_eq!(key["status"], json!("active"));
    assert_eq!(server.get("/v1/keys", &key_token).await.0, 403);

    // keys revoke needs --yes
    let ran = run(server.client(&admin).args(["keys", "revoke", "x"]));
    assert!(!ran.success, "revoke without --yes: {}", ran.stdout);
    assert!(ran.stderr.contains("--yes"), "{}", ran.stderr);
    let (_, key) = server.get(&format!("/v1/keys/{id}"), &admin).await;
    assert_eq!(key["status"], json!("active"));
    ok(&run(server
        .client(&admin)
        .args(["keys", "revoke", "x", "--yes"])));
    let (_, key) = server.get(&format!("/v1/keys/{id}"), &admin).await;
    assert_eq!(key["status"], json!("revoked"));
    assert_eq!(server.get("/v1/keys", &new_token).await.0, 401);

    // A bad token: non-zero exit with the server's own explanation.
    let (status, problem) = server.get("/v1/keys", "not-a-token").await;
    assert_eq!(status, 401);
    let detail = problem["detail"].as_str().unwrap().to_owned();
    let ran = run(server.client("not-a-token").args(["keys", "list"]));
    assert!(!ran.success);
    assert!(
        ran.stderr.contains(&detail),
        "stderr should carry {detail:?}: {}",
        ran.stderr
    );
    assert!(ran.stdout.is_empty(), "{}", ran.stdout);

    // The audit log and signing keys, through the server.
    let ran = run(server.client(&admin).args(["audit", "--json"]));
    assert!(ok(&ran).stdout.contains("key.revoke"), "{}", ran.stdout);
    let ran = run(server.client(&admin).args(["audit", "verify"]));
    ok(&ran);
    let ran = run(server
        .client(&admin)
        .args(["signing-keys", "list", "--json"]));
    let signing: Value = serde_json::from_str(&ok(&ran).stdout).unwrap();
    assert_eq!(
        signing["items"][0]["kid"].as_str(),
        crate::support::header_of(&key_token)["kid"].as_str()
    );

    let stderr = server.stop().await;
    for token in [&admin, &key_token, &new_token] {
        assert!(!stderr.contains(token.as_str()), "a token was logged");
    }
}

#[tokio::test]
async fn the_bootstrap_token_is_printed_once() {
    let dir = tempfile::tempdir().unwrap();
    let first = Server::start(dir.path(), &["--issuer", FIXED_ISSUER]).await;
    let stderr = first.wait_for_stderr("eyJ").await;
    let printed = tokens_in(&stderr);
    assert_eq!(printed.len(), 1, "{stderr}");
    let token = printed[0].clone();
    assert_eq!(first.get("/v1/keys", &token).await.0, 200);
    let stderr = first.stop().await;
    assert_eq!(tokens_in(&stderr).len(), 1);

    let second = Server::start(dir.path(), &["--issuer", FIXED_ISSUER]).await;
    // The data survived the restart and the first token still works.
    assert_eq!(second.get("/v1/keys", &token).await.0, 200);
    let stderr = second.stop().await;
    assert!(
        tokens_in(&stderr).is_empty() && !stderr.contains(&token),
        "a restart printed a token: {stderr}"
    );
}

#[tokio::test]
async fn recover_admin_refuses_while_serving_and_works_offline() {
    let dir = tempfile::tempdir().unwrap();
    let bootstrap_file = dir.path().join("bootstrap.token");
    let server = Server::start(
        dir.path(),
        &[
            "--issuer",
            FIXED_ISSUER,
            "--bootstrap-token-file",
            bootstrap_file.to_str().unwrap(),
        ],
    )
    .await;
    let recovered_file = dir.path().join("recovered.token");
    let recover = || {
        run(latchkey()
            .arg("recover-admin")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--keys-dir")
            .arg(dir.path().join("keys"))
            .args(["--issuer", FIXED_ISSUER])
            .arg("--token-file")
            .arg(&recovered_file))
    };
    let ran = recover();
    assert!(!ran.success, "recover-admin ran beside a live server");
    assert!(ran.stderr.contains("in use"), "{}", ran.stderr);
    assert!(!recovered_file.exists());
    server.stop().await;

    ok(&recover());
    assert_eq!(mode(&recovered_file), 0o600);
    let recovered = read_token(&recovered_file);

    let server = Server::start(dir.path(), &["--issuer", FIXED_ISSUER]).await;
    let (status, listed) = server.get("/v1/keys", &recovered).await;
    assert_eq!(status, 200, "{listed}");
    let admins: Vec<&Value> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["roles"] == json!(["global_admin"]))
        .collect();
    assert_eq!(admins.len(), 2, "{listed}");
    // The recovered key can do admin work.
    let status = http()
        .post(format!("{}/v1/keys", server.base))
        .bearer_auth(&recovered)
        .json(&json!({"name": "after-recovery", "roles": ["global_viewer"]}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16();
    assert_eq!(status, 201);
    server.stop().await;
}

#[test]
fn init_refuses_an_initialised_directory() {
    let dir = tempfile::tempdir().unwrap();
    let init = |extra: &[&str]| {
        run(latchkey()
            .arg("init")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--keys-dir")
            .arg(dir.path().join("keys"))
            .args(extra))
    };
    let ran = init(&[]);
    ok(&ran);
    assert_eq!(tokens_in(&ran.stderr).len(), 1, "{}", ran.stderr);
    let ran = init(&[]);
    assert!(!ran.success);
    assert!(ran.stderr.contains("already initialised"), "{}", ran.stderr);
    assert!(tokens_in(&ran.stderr).is_empty());
}

/// Every mutation is durable before its 2xx: a crash right after the
/// response loses nothing.
#[tokio::test]
async fn acknowledged_mutations_survive_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("admin.token");
    let args = [
        "--issuer",
        FIXED_ISSUER,
        "--bootstrap-token-file",
        token_file.to_str().unwrap(),
    ];
    let start = || Server::start(dir.path(), &args);
    let server = start().await;
    let admin = read_token(&token_file);
    let response = http()
        .post(format!("{}/v1/keys", server.base))
        .bearer_auth(&admin)
        .json(&json!({"name": "durable", "roles": ["global_viewer"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let created: Value = response.json().await.unwrap();
    let id = created["key"]["id"].as_str().unwrap().to_owned();
    let token = created["token"].as_str().unwrap().to_owned();
    server.crash();

    let server = start().await;
    let (status, key) = server.get(&format!("/v1/keys/{id}"), &admin).await;
    assert_eq!(status, 200, "{key}");
    assert_eq!(key["name"], json!("durable"));
    assert_eq!(server.get("/v1/keys", &token).await.0, 200);
    let response = http()
        .post(format!("{}/v1/keys/{id}/suspend", server.base))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    server.crash();

    let server = start().await;
    let (_, key) = server.get(&format!("/v1/keys/{id}"), &admin).await;
    assert_eq!(key["status"], json!("suspended"));
    assert_eq!(server.get("/v1/keys", &token).await.0, 401);
    let response = http()
        .delete(format!("{}/v1/keys/{id}", server.base))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    server.crash();

    let server = start().await;
    let (_, key) = server.get(&format!("/v1/keys/{id}"), &admin).await;
    assert_eq!(key["status"], json!("revoked"));
    assert_eq!(server.get("/v1/keys", &token).await.0, 401);
    server.stop().await;
}

/// A first start that fails (here: the port is taken) must not consume the
/// one chance to show the bootstrap token.
#[tokio::test]
async fn a_failed_first_start_does_not_lose_the_bootstrap_token() {
    let dir = tempfile::tempdir().unwrap();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_addr = busy.local_addr().unwrap().to_string();
    let ran = run(latchkey()
        .arg("serve")
        .args(["--listen", &busy_addr, "--issuer", FIXED_ISSUER])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--keys-dir")
        .arg(dir.path().join("keys")));
    assert!(!ran.success, "serve on a busy port succeeded");
    drop(busy);
    let printed_then = tokens_in(&ran.stderr);

    let server = Server::start(dir.path(), &["--issuer", FIXED_ISSUER]).await;
    let printed_now = server.stderr_shows("eyJ").await;
    let token = printed_then
        .first()
        .cloned()
        .or_else(|| tokens_in(&server.stderr()).first().cloned());
    let Some(token) = token else {
        panic!(
            "no bootstrap token was ever shown (printed now: {printed_now}); first start said: {}",
            ran.stderr
        );
    };
    assert_eq!(server.get("/v1/keys", &token).await.0, 200);
    server.stop().await;
}

/// Same when the bootstrap token file cannot be created (it already exists).
#[tokio::test]
async fn an_undeliverable_bootstrap_token_is_not_lost() {
    let dir = tempfile::tempdir().unwrap();
    let existing = dir.path().join("existing.token");
    std::fs::write(&existing, "keep me\n").unwrap();
    let port = free_port();
    let ran = run(latchkey()
        .arg("serve")
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--issuer",
            FIXED_ISSUER,
        ])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--keys-dir")
        .arg(dir.path().join("keys"))
        .arg("--bootstrap-token-file")
        .arg(&existing));
    assert!(
        !ran.success,
        "serve overwrote or ignored an existing token file"
    );
    assert_eq!(std::fs::read_to_string(&existing).unwrap(), "keep me\n");

    let fresh = dir.path().join("fresh.token");
    let server = Server::start(
        dir.path(),
        &[
            "--issuer",
            FIXED_ISSUER,
            "--bootstrap-token-file",
            fresh.to_str().unwrap(),
        ],
    )
    .await;
    assert!(
        fresh.exists(),
        "the bootstrap token was minted during the failed start and never delivered: {}",
        ran.stderr
    );
    assert_eq!(server.get("/v1/keys", &read_token(&fresh)).await.0, 200);
    server.stop().await;
}

/// RS256 comes only from an imported key (ring cannot generate RSA): import
/// a PKCS#8 PEM offline, and the next start signs RS256 tokens that an
/// independent JOSE library verifies against the served JWKS.
#[tokio::test]
async fn an_imported_rsa_key_signs_rs256_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let keys = dir.path().join("keys");
    let token_file = dir.path().join("bootstrap.token");
    ok(&run(latchkey()
        .arg("init")
        .arg("--data-dir")
        .arg(&data)
        .arg("--keys-dir")
        .arg(&keys)
        .arg("--bootstrap-token-file")
        .arg(&token_file)));
    let admin = read_token(&token_file);

    let garbage = dir.path().join("not-a-key.pem");
    std::fs::write(&garbage, "hello").unwrap();
    let refused = run(latchkey()
        .args(["signing-keys", "import", "--alg", "RS256", "--pem"])
        .arg(&garbage)
        .arg("--data-dir")
        .arg(&data)
        .arg("--keys-dir")
        .arg(&keys));
    assert!(!refused.success);
    assert!(refused.stderr.contains("PKCS#8 PEM"), "{}", refused.stderr);

    let pem = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rsa-2048-test-only.pem");
    let imported = run(latchkey()
        .args(["signing-keys", "import", "--alg", "RS256", "--now", "--pem"])
        .arg(&pem)
        .arg("--data-dir")
        .arg(&data)
        .arg("--keys-dir")
        .arg(&keys));
    ok(&imported);
    assert!(
        imported.stdout.contains("RS256") && imported.stdout.contains("active"),
        "{}",
        imported.stdout
    );

    let server = Server::start(dir.path(), &[]).await;
    let client = http();
    // The bootstrap token, signed by the generated Ed25519 key, still works.
    let created: Value = client
        .post(format!("{}/v1/keys", server.base))
        .bearer_auth(&admin)
        .json(&json!({"name": "rsa-signed", "roles": ["global_viewer"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = created["token"].as_str().unwrap();
    let header = crate::support::header_of(token);
    assert_eq!(header["alg"], "RS256");
    let jwks: jsonwebtoken::jwk::JwkSet = client
        .get(format!("{}/.well-known/jwks.json", server.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let jwk = jwks
        .find(header["kid"].as_str().unwrap())
        .expect("the RSA key is published");
    latchkey_verifier::install_ring_provider();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_audience(&["latchkey"]);
    let decoded = jsonwebtoken::decode::<Value>(
        token,
        &jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap(),
        &validation,
    )
    .expect("an independent JOSE library accepts the RS256 token");
    assert_eq!(decoded.claims["name"], "rsa-signed");
    // And latchkey accepts it on its own API.
    let (status, _) = server.get("/v1/keys?limit=1", token).await;
    assert_eq!(status, 200);
}
