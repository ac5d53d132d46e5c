//! Two replicas on one database, in one process: every rule of §2–§5
//! across them (contract §9). Each replica is a whole service (store,
//! committer, listener, board) over the same database, as two `serve`
//! processes would be; `processes.rs` runs real processes.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use latchkey_verifier::TokenStatus;
use serde_json::{Value, json};

use crate::status_rotation::{published_status, read_events, subscribe};
use crate::support::{TestApp, eventually};

/// A second replica on `a`'s database, with the same key-encryption key.
async fn replica_of(a: &TestApp) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(a.dir.path().join("kek"), dir.path().join("kek")).unwrap();
    TestApp::open_existing_database(
        dir,
        a.database.clone(),
        a.now(),
        a.admin_token.clone(),
        a.admin_id.clone(),
    )
    .await
}

#[tokio::test]
async fn a_key_created_on_one_replica_is_read_and_revoked_on_the_other() {
    let a = TestApp::new().await;
    let b = replica_of(&a).await;
    let created = a.key("made-on-a", &["global_viewer"], None).await;
    // Read on B at once: reads go to the database.
    assert_eq!(b.describe(&created.id()).await["name"], "made-on-a");
    // The key authenticates on B.
    b.get("/v1/keys?limit=1", Some(&created.token))
        .await
        .expect(200);
    b.delete(&format!("/v1/keys/{}", created.id()), Some(&b.admin_token))
        .await
        .expect(204);
    // Refused on A at once (the record is read from the database)...
    a.get("/v1/keys?limit=1", Some(&created.token))
        .await
        .expect_problem(401);
    // ...and A's published list shows it within the push latency.
    let started = Instant::now();
    assert!(
        eventually(Duration::from_secs(2), || async {
            published_status(&a, &created.token).await == TokenStatus::Invalid
        })
        .await,
        "A's status list never showed the revocation made on B"
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_revoke_on_one_replica_reaches_the_others_stream_with_the_same_event_id() {
    let a = TestApp::new().await;
    let b = replica_of(&a).await;
    let keys = [
        a.key("streamed-1", &["global_viewer"], None).await,
        a.key("streamed-2", &["global_viewer"], None).await,
    ];
    let mut on_a = subscribe(&a, None).await;
    let _ready = read_events(&mut on_a, 1).await;
    b.delete(&format!("/v1/keys/{}", keys[0].id()), Some(&b.admin_token))
        .await
        .expect(204);
    let sent = Instant::now();
    let events = read_events(&mut on_a, 1).await;
    let latency = sent.elapsed();
    assert_eq!(events.len(), 1, "A's stream never carried B's revocation");
    let (name, id, data) = &events[0];
    assert_eq!(name, "status");
    assert_eq!(data["status"], 1);
    assert!(latency < Duration::from_millis(500), "{latency:?}");
    let first_id: u64 = id.as_deref().unwrap().parse().unwrap();

    // Event ids are global: a subscriber that saw `first_id` on A resumes
    // on B and gets the next change, made on A, and nothing twice.
    a.delete(&format!("/v1/keys/{}", keys[1].id()), Some(&a.admin_token))
        .await
        .expect(204);
    let mut on_b = subscribe(&b, Some(&first_id.to_string())).await;
    let resumed = read_events(&mut on_b, 2).await;
    let statuses: Vec<&(String, Option<String>, Value)> =
        resumed.iter().filter(|e| e.0 == "status").collect();
    assert_eq!(statuses.len(), 1, "{resumed:?}");
    assert_eq!(
        statuses[0].1.as_deref(),
        Some((first_id + 1).to_string().as_str())
    );
}

#[tokio::test]
async fn the_same_name_on_both_replicas_at_once_gives_exactly_one_201() {
    let a = TestApp::new().await;
    let b = replica_of(&a).await;
    for round in 0..10 {
        let body = json!({"name": format!("Contested-{round}"), "roles": ["global_viewer"]});
        let folded = json!({"name": format!("contested-{round}"), "roles": ["global_viewer"]});
        let (ra, rb) = tokio::join!(
            a.post_json("/v1/keys", Some(&a.admin_token), &body),
            b.post_json("/v1/keys", Some(&b.admin_token), &folded),
        );
        let mut statuses = [ra.status, rb.status];
        statuses.sort();
        assert_eq!(
            statuses,
            [201, 409],
            "round {round}: {} / {}",
            ra.text,
            rb.text
        );
    }
}

#[tokio::test]
async fn interleaved_writes_on_two_replicas_keep_one_audit_chain() {
    let a = TestApp::new().await;
    let b = replica_of(&a).await;
    let mut work = Vec::new();
    for i in 0..40 {
        let app = if i % 2 == 0 { &a } else { &b };
        work.push(async move {
            let created = app
                .key(&format!("chain-{i}"), &["global_viewer"], None)
                .await;
            app.post_json(
                &format!("/v1/keys/{}/suspend", created.id()),
                Some(&app.admin_token),
                &json!({}),
            )
            .await
            .expect(200);
        });
    }
    futures_util::future::join_all(work).await;
    for app in [&a, &b] {
        let report = app.state.issuer.verify_audit().await.unwrap();
        let report = report.expect("the chain verifies");
        let entries = app.audit_all().await;
        assert_eq!(report.entries as usize, entries.len());
        let seqs: Vec<u64> = entries.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
        assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    }
    // Every change is in the one log.
    let creates = a
        .audit_all()
        .await
        .iter()
        .filter(|e| e["action"] == "key.create")
        .count();
    assert_eq!(creates, 41, "40 keys and the bootstrap admin");
}

#[tokio::test]
async fn revoke_on_one_replica_racing_renew_on_the_other_ends_consistent() {
    let a = TestApp::new().await;
    let b = replica_of(&a).await;
    for round in 0..8 {
        let created = a
            .key(&format!("raced-{round}"), &["global_viewer"], None)
            .await;
        let id = created.id();
        let (revoke_path, renew_path, empty) = (
            format!("/v1/keys/{id}"),
            format!("/v1/keys/{id}/renew"),
            json!({}),
        );
        let (revoked, renewed) = tokio::join!(
            a.delete(&revoke_path, Some(&a.admin_token)),
            b.post_json(&renew_path, Some(&b.admin_token), &empty),
        );
        assert_eq!(revoked.status, 204, "{}", revoked.text);
        // The renew came first (200) or found the key revoked (409).
        assert!(
            [200, 409].contains(&renewed.status.as_u16()),
            "{}",
            renewed.text
        );
        let record = a.describe(&id).await;
        assert_eq!(record["status"], "revoked");
        // Every token of the key is refused on both replicas and published
        // as revoked on both.
        let mut tokens = vec![created.token.clone()];
        if renewed.status == 200 {
            tokens.push(renewed.body["token"].as_str().unwrap().to_owned());
        }
        for token in &tokens {
            for app in [&a, &b] {
                app.get("/v1/keys?limit=1", Some(token))
                    .await
                    .expect_problem(401);
                assert!(
                    eventually(Duration::from_secs(2), || async {
                        published_status(app, token).await == TokenStatus::Invalid
                    })
                    .await,
                    "round {round}: a token of the revoked key is not published as revoked"
                );
            }
        }
    }
}

#[tokio::test]
async fn a_rotation_on_one_replica_is_published_by_the_other() {
    let a = TestApp::new().await;
    let b = replica_of(&a).await;
    let rotated = a
        .post_json("/v1/signing-keys/rotate", Some(&a.admin_token), &json!({}))
        .await;
    rotated.expect(201);
    let kid = rotated.body["kid"].as_str().unwrap().to_owned();
    // B hears of it through the database (no restart, no maintenance tick).
    assert!(
        eventually(Duration::from_secs(3), || async {
            b.jwks().await["keys"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k["kid"] == kid.as_str())
        })
        .await,
        "B never published the key rotated on A"
    );
    // A second rotation request on B while A's is staged stages another
    // key only through B's own request: the maintenance pass on both finds
    // nothing to rotate, and exactly two keys besides the first exist.
    latchkey::rotation::maintain(&a.state).await.unwrap();
    latchkey::rotation::maintain(&b.state).await.unwrap();
    let kids: HashSet<String> = a.jwks().await["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kids.len(), 2, "{kids:?}");
}

#[tokio::test]
async fn two_replicas_rotating_at_once_add_one_key() {
    let a = TestApp::new().await;
    let b = replica_of(&a).await;
    let actor = latchkey::audit::Actor::system();
    let (ra, rb) = tokio::join!(
        a.state.issuer.rotate(&actor, false),
        b.state.issuer.rotate(&actor, false),
    );
    let ok = [ra.is_ok(), rb.is_ok()];
    // Both were computed from the same key set; the store accepts one.
    assert_eq!(ok.iter().filter(|o| **o).count(), 1, "{ra:?} / {rb:?}");
    a.state.issuer.reload_signing_keys().await.unwrap();
    assert_eq!(a.jwks().await["keys"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn a_replica_without_the_key_encryption_key_or_with_another_refuses_to_start() {
    let a = TestApp::new().await;
    let url = a.database.clone().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = latchkey::config::Config {
        database_url: Some(url.clone()),
        key_encryption_key_file: None,
        ..latchkey::config::Config::default()
    };
    // Without one: configuration refuses it, naming the flag.
    let args = latchkey::config::ServerArgs {
        database_url: Some(a.database_text()),
        ..Default::default()
    };
    let missing = latchkey::config::Config::resolve(&args)
        .unwrap_err()
        .to_string();
    assert!(missing.contains("--key-encryption-key-file"), "{missing}");
    // A KEK file that does not exist.
    config.key_encryption_key_file = Some(dir.path().join("absent"));
    let absent = latchkey::service::open(config.clone(), a.state.clock.clone())
        .await
        .unwrap_err();
    assert!(absent.contains("does not exist"), "{absent}");
    // Another KEK: refused, naming the database's key and ours.
    let other = dir.path().join("other-kek");
    let other_kek = latchkey::kek::Kek::generate_file(&other).unwrap();
    config.key_encryption_key_file = Some(other.clone());
    let wrong = latchkey::service::open(config, a.state.clock.clone())
        .await
        .unwrap_err();
    let ours = latchkey::kek::Kek::load(&a.dir.path().join("kek")).unwrap();
    assert!(wrong.contains(&ours.fingerprint()), "{wrong}");
    assert!(wrong.contains(&other_kek.fingerprint()), "{wrong}");
    assert!(wrong.contains("other-kek"), "{wrong}");
    let kek_text = std::fs::read_to_string(a.dir.path().join("kek")).unwrap();
    assert!(!wrong.contains(kek_text.trim()), "the error shows the key");
}

#[tokio::test]
async fn replicas_starting_together_on_an_empty_database_initialise_once() {
    let url = crate::pg_cluster::shared().create_database();
    let dir = tempfile::tempdir().unwrap();
    let kek = dir.path().join("kek");
    latchkey::kek::Kek::generate_file(&kek).unwrap();
    let config = latchkey::config::Config {
        database_url: Some(latchkey::store::postgres::DatabaseUrl::parse(&url).unwrap()),
        key_encryption_key_file: Some(kek),
        issuer: crate::support::ISSUER.to_owned(),
        issuer_explicit: true,
        ..latchkey::config::Config::default()
    };
    let clock: latchkey::clock::SharedClock = std::sync::Arc::new(latchkey::clock::SystemClock);
    let open = |config: latchkey::config::Config| {
        let clock = clock.clone();
        async move {
            let mut opened = latchkey::service::open(config, clock).await.unwrap();
            let had_token = opened.bootstrap.is_some();
            if had_token {
                latchkey::service::confirm_bootstrap_delivered(&opened.state)
                    .await
                    .unwrap();
            }
            // Handed over: the replicas waiting behind this one go on.
            opened.init_lock = None;
            let keys = opened.state.issuer.signing_keys();
            (had_token, keys.len(), opened)
        }
    };
    let results = futures_util::future::join_all((0..3).map(|_| open(config.clone()))).await;
    let tokens = results.iter().filter(|r| r.0).count();
    assert_eq!(tokens, 1, "exactly one replica printed a bootstrap token");
    for r in &results {
        assert_eq!(r.1, 1, "one signing key, seen by every replica");
    }
    let names: Vec<String> = results[0]
        .2
        .state
        .issuer
        .list(&Default::default(), None, 10)
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|k| k.name)
        .collect();
    assert_eq!(names, ["bootstrap-admin"]);
}
