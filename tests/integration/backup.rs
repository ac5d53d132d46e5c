//! Online backup and offline restore of the embedded store (contract §9):
//! a backup taken while keys are created, renewed, suspended and revoked
//! restores every acknowledged change; the restored issuer verifies old
//! tokens with their status, refuses tokens it never knew, keeps a chain
//! that verifies and publishes in a new epoch; only global admins may take
//! one. The command-line side is in `backup_cli`.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, header};
use latchkey_verifier::TokenStatus;
use latchkey_verifier::status_list::{StatusList, StatusListClaims};
use serde_json::{Value, json};

use crate::support::{Reply, TestApp, claims_of, wait_until_unlocked};

/// `GET /v1/backup` as `token`.
pub async fn download(app: &TestApp, token: &str) -> Reply {
    app.get("/v1/backup", Some(token)).await
}

/// Copies the signing key files of `from` to `to` (what restoring the keys
/// directory's own backup does).
pub fn copy_keys(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// Whether the issuer accepts `token` (introspection as its admin).
async fn active(app: &TestApp, token: &str) -> bool {
    let reply = app
        .post_json(
            "/v1/introspect",
            Some(&app.admin_token),
            &json!({"token": token}),
        )
        .await;
    reply.expect(200);
    reply.body["active"].as_bool().unwrap()
}

/// The status of `token` in the published list (what a verifier applies).
async fn published_status(app: &TestApp, token: &str) -> TokenStatus {
    let claims = claims_of(token);
    let uri = claims["status"]["status_list"]["uri"].as_str().unwrap();
    let idx = claims["status"]["status_list"]["idx"].as_u64().unwrap() as usize;
    let path = uri.strip_prefix(crate::support::ISSUER).unwrap();
    let reply = app
        .send(
            Request::get(path)
                .header(header::ACCEPT, "application/statuslist+json")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    reply.expect(200);
    let list: StatusListClaims = serde_json::from_value(reply.body.clone()).unwrap();
    StatusList::decode(list.status_list.bits, &list.status_list.lst)
        .unwrap()
        .get(idx)
        .unwrap()
}

async fn epoch(app: &TestApp) -> String {
    let reply = app.get("/v1/status", None).await;
    reply.expect(200);
    reply.body["epoch"].as_str().unwrap().to_owned()
}

/// A change the server acknowledged, and when the test saw the answer.
#[derive(Debug, Clone)]
struct Acked {
    at: Instant,
    id: String,
    /// The key's status once the change is applied.
    status: &'static str,
    /// A token of the key minted by the change (create, renew), or the
    /// token the change was about.
    token: String,
}

/// Creates keys one after another until `stop`, recording each.
async fn keep_creating(
    app: Arc<TestApp>,
    worker: usize,
    log: Arc<Mutex<Vec<Acked>>>,
    stop: Arc<Mutex<bool>>,
) {
    for n in 0..10_000 {
        if *stop.lock().unwrap() {
            return;
        }
        let created = app
            .key(&format!("live-{worker}-{n}"), &["global_viewer"], None)
            .await;
        log.lock().unwrap().push(Acked {
            at: Instant::now(),
            id: created.id(),
            status: "active",
            token: created.token,
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_taken_under_writes_restores_every_acknowledged_change() {
    let app = Arc::new(TestApp::new().await);
    let mut pool = Vec::new();
    for i in 0..24 {
        pool.push(
            app.key(&format!("pool-{i}"), &["global_viewer"], None)
                .await,
        );
    }
    let log = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(Mutex::new(false));
    let creators: Vec<_> = (0..3)
        .map(|worker| {
            tokio::spawn(keep_creating(
                Arc::clone(&app),
                worker,
                Arc::clone(&log),
                Arc::clone(&stop),
            ))
        })
        .collect();
    // One change per pool key, spread over the time the backup is taken.
    let changer = {
        let (app, log) = (Arc::clone(&app), Arc::clone(&log));
        tokio::spawn(async move {
            for (i, key) in pool.iter().enumerate() {
                let id = key.id();
                let (status, token) = match i % 3 {
                    0 => {
                        let path = format!("/v1/keys/{id}/renew");
                        let reply = app
                            .post_json(&path, Some(&app.admin_token), &json!({}))
                            .await;
                        reply.expect(200);
                        ("active", reply.body["token"].as_str().unwrap().to_owned())
                    }
                    1 => {
                        let path = format!("/v1/keys/{id}/suspend");
                        app.post_json(&path, Some(&app.admin_token), &json!({}))
                            .await
                            .expect(200);
                        ("suspended", key.token.clone())
                    }
                    _ => {
                        let path = format!("/v1/keys/{id}");
                        app.delete(&path, Some(&app.admin_token)).await.expect(204);
                        ("revoked", key.token.clone())
                    }
                };
                log.lock().unwrap().push(Acked {
                    at: Instant::now(),
                    id,
                    status,
                    token,
                });
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    // Wait (bounded) until changes are being acknowledged.
    assert!(
        crate::support::eventually(Duration::from_secs(20), || {
            let n = log.lock().unwrap().len();
            async move { n >= 20 }
        })
        .await
    );
    let sent = Instant::now();
    let reply = download(&app, &app.admin_token).await;
    *stop.lock().unwrap() = true;
    for task in creators {
        task.await.unwrap();
    }
    changer.await.unwrap();
    reply.expect(200);
    assert_eq!(
        reply.header("content-type"),
        Some("application/octet-stream")
    );
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    assert!(
        reply
            .header("content-disposition")
            .unwrap()
            .starts_with("attachment; filename=\"latchkey-backup-")
    );
    let sha256 = hex::encode(ring::digest::digest(
        &ring::digest::SHA256,
        reply.text.as_bytes(),
    ));
    assert_eq!(
        reply.header("x-latchkey-backup-sha256"),
        Some(sha256.as_str())
    );
    // The download is audited with the file's checksum.
    let audit = app.audit_all().await;
    let entry = audit
        .iter()
        .rev()
        .find(|e| e["action"] == "backup.create")
        .expect("a backup.create entry");
    assert_eq!(entry["details"]["sha256"], json!(sha256));
    assert_eq!(entry["actor"]["id"], json!(app.admin_id));

    // Restore into a fresh directory, the keys directory copied as its own backup would be.
    let fresh = tempfile::tempdir().unwrap();
    copy_keys(&app.keys_dir(), &fresh.path().join("keys"));
    let file = fresh.path().join("backup.jsonl");
    std::fs::write(&file, reply.text.as_bytes()).unwrap();
    let contents = latchkey::cli::backup::validate(&file).unwrap();
    let data = fresh.path().join("data");
    let restored = latchkey::store::sled_restore::restore(
        &file,
        &contents,
        &data,
        10_000,
        time::OffsetDateTime::from_unix_timestamp(app.now()).unwrap(),
    )
    .unwrap();
    assert_eq!(restored.contents.sha256, sha256);
    wait_until_unlocked(&data.join("db")).await;
    let copy = TestApp::open_existing(
        fresh,
        app.now(),
        app.admin_token.clone(),
        app.admin_id.clone(),
    )
    .await;

    let acked = log.lock().unwrap().clone();
    let before: Vec<&Acked> = acked.iter().filter(|a| a.at < sent).collect();
    assert!(before.len() >= 20, "changes acknowledged before the backup");
    for change in &before {
        let key = copy.describe(&change.id).await;
        assert_eq!(key["status"], json!(change.status), "{change:?}");
        assert_eq!(
            active(&copy, &change.token).await,
            change.status == "active",
            "{change:?}"
        );
    }
    // Whatever the backup missed: its tokens no longer verify anywhere.
    let mut missed = 0;
    for change in acked
        .iter()
        .filter(|a| a.at >= sent && a.status == "active")
    {
        let reply = copy
            .get(&format!("/v1/keys/{}", change.id), Some(&copy.admin_token))
            .await;
        if reply.status == 404 {
            missed += 1;
            assert!(!active(&copy, &change.token).await);
            assert_eq!(
                published_status(&copy, &change.token).await,
                TokenStatus::Invalid,
                "a token minted after the backup is refused by verifiers"
            );
        }
    }
    println!("keys created after the backup and not in it: {missed}");

    let report = copy.state.issuer.verify_audit().await.unwrap().unwrap();
    assert_eq!(report.entries, restored.audit_entries);
    let copied_audit = copy.audit_all().await;
    assert_eq!(
        copied_audit.last().unwrap()["action"],
        json!("backup.restore")
    );
    assert_eq!(
        copied_audit.last().unwrap()["details"]["sha256"],
        json!(sha256)
    );
    assert_ne!(epoch(&copy).await, epoch(&app).await);
    assert_eq!(epoch(&copy).await, restored.epoch);
}

#[tokio::test]
async fn only_global_admins_may_take_a_backup_and_nothing_stays_behind() {
    let app = TestApp::new().await;
    let viewer = app.key("viewer", &["global_viewer"], None).await;
    let scoped = app
        .key("scoped", &["cloud_account_viewer"], Some(&["a1"]))
        .await;
    download(&app, &viewer.token).await.expect_problem(403);
    download(&app, &scoped.token).await.expect_problem(403);
    app.get("/v1/backup", None).await.expect_problem(401);
    download(&app, "not-a-token").await.expect_problem(401);
    let refused = app.audit_all().await;
    assert!(
        refused
            .iter()
            .any(|e| e["action"] == "auth.denied" && e["actor"]["id"] == json!(viewer.id())),
        "a 403 is audited"
    );
    assert!(!refused.iter().any(|e| e["action"] == "backup.create"));

    let reply = download(&app, &app.admin_token).await;
    reply.expect(200);
    let lines: Vec<Value> = reply
        .text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["format"], json!("latchkey-backup"));
    assert_eq!(lines[0]["version"], json!(1));
    assert_eq!(lines[0]["issuer"], json!(crate::support::ISSUER));
    assert_eq!(lines.last().unwrap()["end"], json!(true));
    assert_eq!(
        lines.last().unwrap()["records"],
        json!(lines.len() - 2),
        "one record per line between header and end"
    );
    assert!(
        !reply.text.contains("PRIVATE KEY") && !reply.text.contains(&app.admin_token),
        "no private key and no token in a backup"
    );
    let data = app.dir.path().join("data");
    let left: Vec<String> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name != "db")
        .collect();
    assert!(
        left.is_empty(),
        "temporary files left in the data directory: {left:?}"
    );
}

#[tokio::test]
async fn the_api_documents_the_backup_route() {
    let app = TestApp::new().await;
    let reply = app.get("/openapi.json", None).await;
    reply.expect(200);
    let route = &reply.body["paths"]["/v1/backup"]["get"];
    assert!(route["responses"]["200"]["content"]["application/octet-stream"].is_object());
    for status in ["401", "403", "409"] {
        assert!(
            route["responses"][status].is_object(),
            "{status} documented"
        );
    }
}
