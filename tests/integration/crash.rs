//! Crash safety: a real `latchkey serve` child process is killed with
//! SIGKILL while creates, renewals and revocations are in flight, then
//! restarted on the same data directory, for many cycles. After every
//! restart: every acknowledged change is present, nothing unacknowledged is
//! half-applied, the published status lists agree with the registry, and the
//! audit chain verifies. Each start picks a new port, so this also shows
//! that the issuer recorded at initialisation stays the tokens' `iss`.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use latchkey_verifier::TokenStatus;
use latchkey_verifier::status_list::StatusList;
use serde_json::{Value, json};

use crate::replica::Replica;
use crate::support::{claims_of, latchkey};

const CYCLES: usize = 20;

/// `serve` on the test's data directory, healthy; each start picks a new port.
async fn start(dir: &Path) -> Replica {
    let path = |name: &str| dir.join(name).display().to_string();
    Replica::spawn(
        Path::new(env!("CARGO_BIN_EXE_latchkey")),
        &[
            "--data-dir",
            &path("data"),
            "--keys-dir",
            &path("keys"),
            "--bootstrap-token-file",
            &path("bootstrap.token"),
        ],
        &[],
    )
    .await
}

/// What the client was told, per key.
#[derive(Debug, Default, Clone)]
struct Acked {
    /// Every token handed out, with whether an acknowledged renewal revoked it.
    tokens: Vec<(String, bool)>,
    revoked: bool,
    expires_at: Option<String>,
}

async fn list_status(
    client: &reqwest::Client,
    base: &str,
    uri: &str,
    cache: &mut HashMap<String, StatusList>,
) -> StatusList {
    if let Some(list) = cache.get(uri) {
        return list.clone();
    }
    let path = uri
        .split_once("/v1/")
        .map(|(_, p)| format!("{base}/v1/{p}"))
        .unwrap();
    let body: Value = client
        .get(path)
        .header("accept", "application/statuslist+json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let list = StatusList::decode(2, body["status_list"]["lst"].as_str().unwrap()).unwrap();
    cache.insert(uri.to_owned(), list.clone());
    list
}

/// Every `jti` that an audited renewal revoked.
async fn revoked_jtis_from_audit(
    client: &reqwest::Client,
    base: &str,
    admin: &str,
) -> std::collections::HashSet<String> {
    let mut revoked = std::collections::HashSet::new();
    let mut after = 0;
    loop {
        let page: Value = client
            .get(format!("{base}/v1/audit?after={after}&limit=1000"))
            .bearer_auth(admin)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for entry in page["items"].as_array().unwrap() {
            after = entry["seq"].as_u64().unwrap();
            if entry["action"] == "key.renew" {
                for jti in entry["details"]["revoked_jtis"].as_array().unwrap() {
                    revoked.insert(jti.as_str().unwrap().to_owned());
                }
            }
        }
        if page["next_after"].is_null() {
            return revoked;
        }
    }
}

fn published(list: &StatusList, token: &str) -> TokenStatus {
    let idx = claims_of(token)["status"]["status_list"]["idx"]
        .as_u64()
        .unwrap() as usize;
    list.get(idx).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_changes_survive_sigkill_loops() {
    latchkey::cli::client::install_tls_provider();
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let mut acked: HashMap<String, Acked> = HashMap::new();
    let mut admin = String::new();
    let mut attempted_names: Vec<String> = Vec::new();

    for cycle in 0..CYCLES {
        let mut server = start(dir.path()).await;
        if admin.is_empty() {
            admin = std::fs::read_to_string(dir.path().join("bootstrap.token"))
                .unwrap()
                .trim()
                .to_owned();
        }
        let base = server.url();

        // --- Check everything acknowledged so far against what the restarted server publishes.
        // Changes that committed without being acknowledged (killed before the
        // response) are allowed, but only whole: the audit log says which
        // tokens were revoked, and the list must agree with it exactly.
        let audit_revoked = revoked_jtis_from_audit(&client, &base, &admin).await;
        let mut lists = HashMap::new();
        for (id, key) in &acked {
            let reply = client
                .get(format!("{base}/v1/keys/{id}"))
                .bearer_auth(&admin)
                .send()
                .await
                .unwrap();
            assert_eq!(
                reply.status(),
                200,
                "cycle {cycle}: acknowledged key {id} is missing"
            );
            let record: Value = reply.json().await.unwrap();
            if key.revoked {
                assert_eq!(
                    record["status"], "revoked",
                    "cycle {cycle}: acknowledged revocation of {id} was lost"
                );
            }
            if let Some(expires) = &key.expires_at
                && !key.revoked
            {
                assert!(
                    record["expires_at"].as_str().unwrap() >= expires.as_str(),
                    "cycle {cycle}: renewal of {id} lost"
                );
            }
            let revoked_now = record["status"] == "revoked";
            for (token, revoked_by_renewal) in &key.tokens {
                let jti = claims_of(token)["jti"].as_str().unwrap().to_owned();
                if *revoked_by_renewal {
                    assert!(
                        audit_revoked.contains(&jti),
                        "cycle {cycle}: acknowledged revoke_previous of {jti} lost"
                    );
                }
                let uri = claims_of(token)["status"]["status_list"]["uri"]
                    .as_str()
                    .unwrap()
                    .to_owned();
                let list = list_status(&client, &base, &uri, &mut lists).await;
                let expected = if revoked_now || audit_revoked.contains(&jti) {
                    TokenStatus::Invalid
                } else {
                    TokenStatus::Valid
                };
                assert_eq!(
                    published(&list, token),
                    expected,
                    "cycle {cycle}: status list disagrees for key {id}"
                );
            }
        }
        // Unacknowledged creates are either complete or absent: a listed key
        // can be read back, and its name is taken.
        let listed: Value = client
            .get(format!("{base}/v1/keys?limit=500"))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let items = listed["items"]
            .as_array()
            .unwrap_or_else(|| panic!("cycle {cycle}: {listed}"));
        for item in items {
            let id = item["id"].as_str().unwrap();
            let again = client
                .get(format!("{base}/v1/keys/{id}"))
                .bearer_auth(&admin)
                .send()
                .await
                .unwrap();
            assert_eq!(again.status(), 200);
            let name = item["name"].as_str().unwrap();
            let dup = client
                .post(format!("{base}/v1/keys"))
                .bearer_auth(&admin)
                .json(&json!({"name": name.to_uppercase(), "roles": ["global_viewer"]}))
                .send()
                .await
                .unwrap();
            assert_eq!(
                dup.status(),
                409,
                "cycle {cycle}: listed key {name} does not hold its name"
            );
        }
        // The audit chain is intact (checked through the server).
        let verify = latchkey()
            .args(["audit", "verify", "--server", &base])
            .env("LATCHKEY_TOKEN", &admin)
            .output()
            .unwrap();
        assert!(
            verify.status.success(),
            "cycle {cycle}: {}",
            String::from_utf8_lossy(&verify.stderr)
        );

        // --- Mixed load, then SIGKILL while requests are in flight.
        let mut ids: Vec<String> = acked
            .iter()
            .filter(|(_, k)| !k.revoked)
            .map(|(id, _)| id.clone())
            .collect();
        ids.sort();
        let mut tasks = tokio::task::JoinSet::new();
        // Creates acknowledged in this cycle so far.
        let created_now = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        for n in 0..12 {
            let (client, base, admin) = (client.clone(), base.clone(), admin.clone());
            let created_now = created_now.clone();
            let name = format!("crash-{cycle}-{n}");
            attempted_names.push(name.clone());
            let target = ids.get(n).cloned();
            tasks.spawn(async move {
                let mut done = Vec::new();
                let created = client
                    .post(format!("{base}/v1/keys"))
                    .bearer_auth(&admin)
                    .json(&json!({"name": name, "roles": ["global_viewer"]}))
                    .send()
                    .await;
                if let Ok(r) = created
                    && r.status() == 201
                    && let Ok(body) = r.json::<Value>().await
                {
                    created_now.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    done.push(("create", body));
                }
                if let Some(id) = target {
                    if n % 2 == 0 {
                        let r = client.delete(format!("{base}/v1/keys/{id}")).bearer_auth(&admin).send().await;
                        if let Ok(r) = r
                            && r.status() == 204
                        {
                            done.push(("revoke", json!({"id": id})));
                        }
                    } else {
                        let r = client
                            .post(format!("{base}/v1/keys/{id}/renew"))
                            .bearer_auth(&admin)
                            .json(&json!({"revoke_previous": n % 3 == 0, "expires_in_days": 30 + cycle}))
                            .send()
                            .await;
                        if let Ok(r) = r
                            && r.status() == 200
                            && let Ok(mut body) = r.json::<Value>().await
                        {
                            body["revoke_previous"] = json!(n % 3 == 0);
                            done.push(("renew", body));
                        }
                    }
                }
                done
            });
        }
        // Let some requests complete and leave others in flight: wait for
        // the first acknowledged create (bounded; a loaded machine can take
        // a while), then a few milliseconds more.
        for _ in 0..300 {
            if created_now.load(std::sync::atomic::Ordering::SeqCst) > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(5 + (cycle as u64 * 7) % 40)).await;
        // SIGKILL: no shutdown hook, no final flush.
        server.kill9();
        while let Some(result) = tasks.join_next().await {
            for (kind, body) in result.unwrap() {
                match kind {
                    "create" => {
                        let id = body["key"]["id"].as_str().unwrap().to_owned();
                        acked.insert(
                            id,
                            Acked {
                                tokens: vec![(body["token"].as_str().unwrap().to_owned(), false)],
                                ..Default::default()
                            },
                        );
                    }
                    "revoke" => {
                        acked.get_mut(body["id"].as_str().unwrap()).unwrap().revoked = true;
                    }
                    _ => {
                        let key = acked.get_mut(body["key"]["id"].as_str().unwrap()).unwrap();
                        if body["revoke_previous"] == true {
                            for token in key.tokens.iter_mut() {
                                token.1 = true;
                            }
                        }
                        key.tokens
                            .push((body["token"].as_str().unwrap().to_owned(), false));
                        key.expires_at =
                            Some(body["key"]["expires_at"].as_str().unwrap().to_owned());
                    }
                }
            }
        }
    }
    assert!(
        acked.len() >= CYCLES,
        "the load acknowledged too little to prove anything: {}",
        acked.len()
    );
    assert!(
        acked.values().any(|k| k.revoked),
        "no revocation was acknowledged"
    );
    // Finally, offline: the whole chain and its recorded head.
    let verify = latchkey()
        .args(["audit", "verify", "--data-dir"])
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
}
