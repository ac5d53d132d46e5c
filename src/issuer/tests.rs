//! Unit tests of the domain: one per rule, against a temporary sled store
//! and a fixed clock.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;

use latchkey_verifier::TokenStatus;

use crate::audit::Actor;
use crate::clock::{Clock, FixedClock};
use crate::config::Config;
use crate::issuer::{Issuer, IssuerError, IssuerSettings, initialise_signing_keys};
use crate::model::{KeyStatus, SigningKeyState};
use crate::store::Store;
use crate::store::sled::SledStore;
use crate::validation::NewKeyRequest;

/// 2026-06-01T00:00:00Z.
const START: i64 = 1_780_272_000;

struct Fixture {
    issuer: Arc<Issuer>,
    store: Arc<SledStore>,
    clock: FixedClock,
}

fn config(dir: &Path) -> Config {
    Config {
        data_dir: dir.join("data"),
        keys_dir: dir.join("keys"),
        issuer: "https://issuer.test".into(),
        ..Config::default()
    }
}

/// Opens the store in `dir` (waiting, bounded, for a previous opening to
/// let go of it) and the issuer over it.
async fn open(dir: &Path, clock: FixedClock) -> Fixture {
    let config = config(dir);
    let mut attempt = 0;
    let store = loop {
        match SledStore::open_dir(&config.data_dir, 64) {
            Ok(store) => break Arc::new(store),
            Err(e) if attempt < 200 => {
                attempt += 1;
                assert!(e.contains("in use"), "{e}");
                tokio::time::sleep(std::time::Duration::from_millis(25)).await;
            }
            Err(e) => panic!("{e}"),
        }
    };
    initialise_signing_keys(
        store.as_ref(),
        &crate::keyring::KeyMaterial::Files(config.keys_dir.clone()),
        config.signing_algorithm,
        clock.now(),
    )
    .await
    .unwrap();
    let dyn_store: Arc<dyn Store> = store.clone();
    let issuer = Issuer::open(
        dyn_store,
        IssuerSettings::from_config(&config),
        crate::keyring::KeyMaterial::Files(config.keys_dir.clone()),
        Arc::new(clock.clone()),
    )
    .await
    .unwrap();
    Fixture {
        issuer: Arc::new(issuer),
        store,
        clock,
    }
}

fn request(name: &str) -> NewKeyRequest {
    NewKeyRequest {
        name: name.into(),
        roles: vec!["global_viewer".into()],
        ..Default::default()
    }
}

fn admin() -> Actor {
    Actor::bootstrap()
}

/// The actions of every audit entry, in order, after checking the chain.
async fn audited(issuer: &Issuer) -> Vec<String> {
    let report = issuer.verify_audit().await.unwrap().unwrap();
    let entries = issuer.audit_page(0, 10_000).await.unwrap();
    assert_eq!(
        report.entries,
        entries.len() as u64,
        "chain covers every entry"
    );
    entries.into_iter().map(|e| e.action).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_are_unique_under_concurrent_creates_in_any_letter_case() {
    let dir = tempfile::tempdir().unwrap();
    let f = open(dir.path(), FixedClock::at(START)).await;
    let variants: [&'static str; 6] = [
        "Shared-Name",
        "shared-name",
        "SHARED-NAME",
        "ｓｈａｒｅｄ-ｎａｍｅ",
        "Shared-Ｎame",
        "sHARED-nAME",
    ];
    let mut tasks = Vec::new();
    for &name in variants.iter().cycle().take(4 * variants.len()) {
        let issuer = Arc::clone(&f.issuer);
        tasks.push(tokio::spawn(async move {
            issuer.create(&admin(), &request(name)).await
        }));
    }
    let mut created = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => created += 1,
            Err(IssuerError::NameTaken(_)) => {}
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(created, 1, "exactly one of the look-alike names is created");
    let page = f.issuer.list(&Default::default(), None, 100).await.unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(
        audited(&f.issuer).await,
        ["signing_key.create", "key.create"]
    );
}

#[tokio::test]
async fn renew_keeps_or_revokes_the_previous_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let f = open(dir.path(), FixedClock::at(START)).await;
    let first = f
        .issuer
        .create(&admin(), &request("renewed"))
        .await
        .unwrap();
    let id = first.record.id.clone();

    f.clock.advance(60);
    let second = f
        .issuer
        .renew(&admin(), &id, Some(30), false)
        .await
        .unwrap();
    assert_eq!(second.record.tokens.len(), 2);
    assert_eq!(
        second.record.expires_at.unix_timestamp(),
        START + 60 + 30 * 86_400
    );
    for token in [&first.token, &second.token] {
        assert!(
            f.issuer.authenticate(token, None).await.is_ok(),
            "both tokens live"
        );
    }

    let third = f.issuer.renew(&admin(), &id, None, true).await.unwrap();
    for old in [&first.token, &second.token] {
        let refusal = f.issuer.authenticate(old, None).await.unwrap_err();
        assert_eq!(refusal.code, "revoked");
    }
    assert!(f.issuer.authenticate(&third.token, None).await.is_ok());
    let record = f.issuer.describe(&id).await.unwrap();
    assert_eq!(record.status(f.clock.now()), KeyStatus::Active);
    let revoked: Vec<bool> = record.tokens.iter().map(|t| t.revoked).collect();
    assert_eq!(revoked, [true, true, false]);
    for token in &record.tokens[..2] {
        assert_eq!(f.issuer.board().get(token.slot), Some(TokenStatus::Invalid));
    }
    let entries = f.issuer.audit_page(0, 100).await.unwrap();
    let last = entries.last().unwrap();
    assert_eq!(last.action, "key.renew");
    assert_eq!(last.details["revoke_previous"], true);
    assert_eq!(last.details["revoked_jtis"].as_array().unwrap().len(), 2);

    let invalid = f.issuer.renew(&admin(), &id, Some(0), false).await;
    assert!(
        matches!(invalid, Err(IssuerError::Validation(_))),
        "{invalid:?}"
    );
}

#[tokio::test]
async fn suspend_and_resume_move_the_status_bit_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let f = open(dir.path(), FixedClock::at(START)).await;
    let minted = f.issuer.create(&admin(), &request("paused")).await.unwrap();
    let id = minted.record.id.clone();
    let slot = minted.record.tokens[0].slot;

    let suspended = f.issuer.suspend(&admin(), &id).await.unwrap();
    assert_eq!(suspended.status(f.clock.now()), KeyStatus::Suspended);
    assert_eq!(f.issuer.board().get(slot), Some(TokenStatus::Suspended));
    assert_eq!(
        f.issuer
            .authenticate(&minted.token, None)
            .await
            .unwrap_err()
            .code,
        "suspended"
    );
    assert!(matches!(
        f.issuer.suspend(&admin(), &id).await,
        Err(IssuerError::InvalidState(_))
    ));

    f.issuer.resume(&admin(), &id).await.unwrap();
    assert_eq!(f.issuer.board().get(slot), Some(TokenStatus::Valid));
    assert!(f.issuer.authenticate(&minted.token, None).await.is_ok());
    assert!(matches!(
        f.issuer.resume(&admin(), &id).await,
        Err(IssuerError::InvalidState(_))
    ));
    assert_eq!(
        audited(&f.issuer).await,
        [
            "signing_key.create",
            "key.create",
            "key.suspend",
            "key.resume"
        ],
        "refused changes write nothing"
    );
}

#[tokio::test]
async fn revoke_is_final_even_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let clock = FixedClock::at(START);
    let f = open(dir.path(), clock.clone()).await;
    let minted = f.issuer.create(&admin(), &request("gone")).await.unwrap();
    let id = minted.record.id.clone();
    f.issuer.revoke(&admin(), &id).await.unwrap();
    assert_eq!(
        f.issuer
            .authenticate(&minted.token, None)
            .await
            .unwrap_err()
            .code,
        "revoked"
    );
    drop(f);

    let f = open(dir.path(), clock).await;
    let slot = minted.record.tokens[0].slot;
    assert_eq!(f.issuer.board().get(slot), Some(TokenStatus::Invalid));
    assert_eq!(
        f.issuer
            .authenticate(&minted.token, None)
            .await
            .unwrap_err()
            .code,
        "revoked"
    );
    assert!(matches!(
        f.issuer.resume(&admin(), &id).await,
        Err(IssuerError::AlreadyRevoked)
    ));
    assert!(matches!(
        f.issuer.suspend(&admin(), &id).await,
        Err(IssuerError::AlreadyRevoked)
    ));
    assert!(matches!(
        f.issuer.renew(&admin(), &id, None, false).await,
        Err(IssuerError::AlreadyRevoked)
    ));
    assert!(matches!(
        f.issuer
            .update_description(&admin(), &id, "back?".into())
            .await,
        Err(IssuerError::AlreadyRevoked)
    ));
    assert!(matches!(
        f.issuer.revoke(&admin(), &id).await,
        Err(IssuerError::AlreadyRevoked)
    ));
    assert_eq!(
        f.issuer.describe(&id).await.unwrap().status(f.clock.now()),
        KeyStatus::Revoked
    );
}

#[tokio::test]
async fn each_change_is_one_audit_entry_and_the_chain_holds() {
    let dir = tempfile::tempdir().unwrap();
    let f = open(dir.path(), FixedClock::at(START)).await;
    let minted = f
        .issuer
        .create(&admin(), &request("audited"))
        .await
        .unwrap();
    let id = minted.record.id.clone();
    let invalid = f.issuer.create(&admin(), &request("")).await;
    assert!(matches!(invalid, Err(IssuerError::Validation(_))));
    let taken = f.issuer.create(&admin(), &request("AUDITED")).await;
    assert!(matches!(taken, Err(IssuerError::NameTaken(_))));
    f.issuer
        .update_description(&admin(), &id, "described".into())
        .await
        .unwrap();
    let too_long = "x".repeat(1001);
    assert!(matches!(
        f.issuer.update_description(&admin(), &id, too_long).await,
        Err(IssuerError::Validation(_))
    ));
    f.issuer.renew(&admin(), &id, None, false).await.unwrap();
    f.issuer.suspend(&admin(), &id).await.unwrap();
    f.issuer.resume(&admin(), &id).await.unwrap();
    f.issuer.revoke(&admin(), &id).await.unwrap();
    f.issuer.rotate(&admin(), false).await.unwrap();
    assert_eq!(
        audited(&f.issuer).await,
        [
            "signing_key.create",
            "key.create",
            "key.update",
            "key.renew",
            "key.suspend",
            "key.resume",
            "key.revoke",
            "signing_key.rotate",
        ]
    );
    let entries = f.issuer.audit_page(0, 100).await.unwrap();
    for pair in entries.windows(2) {
        assert_eq!(pair[1].prev_hash, pair[0].hash);
        assert_eq!(pair[1].seq, pair[0].seq + 1);
    }
}

#[tokio::test]
async fn a_signing_key_change_and_its_audit_entry_commit_together() {
    let dir = tempfile::tempdir().unwrap();
    let clock = FixedClock::at(START);
    let f = open(dir.path(), clock.clone()).await;
    let keys_before = f.store.signing_keys().await.unwrap();
    let head_before = f.store.audit_head().await.unwrap();

    // A crash after the key records are written, before their audit entry.
    f.store.inject_crash_before_signing_key_audit();
    let failed = f.issuer.rotate(&admin(), true).await;
    assert!(
        matches!(failed, Err(IssuerError::Internal(_))),
        "{failed:?}"
    );
    assert_eq!(
        f.store.signing_keys().await.unwrap(),
        keys_before,
        "no key change"
    );
    assert_eq!(
        f.store.audit_head().await.unwrap(),
        head_before,
        "no audit entry"
    );
    assert_eq!(
        f.issuer.signing_keys(),
        keys_before,
        "still signing with the old key"
    );
    drop(f);

    // Reopened from disk: neither half is there, and no stray key file.
    let f = open(dir.path(), clock).await;
    assert_eq!(f.store.signing_keys().await.unwrap(), keys_before);
    assert_eq!(f.store.audit_head().await.unwrap(), head_before);
    let files = std::fs::read_dir(dir.path().join("keys")).unwrap().count();
    assert_eq!(
        files,
        keys_before.len(),
        "the unrecorded key's file is removed"
    );

    // Without the crash, both halves are written.
    let info = f.issuer.rotate(&admin(), true).await.unwrap();
    assert_eq!(info.state, SigningKeyState::Active);
    let entries = f.issuer.audit_page(head_before.seq, 10).await.unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].action, "signing_key.rotate");
    assert_eq!(entries[0].target.as_deref(), Some(info.kid.as_str()));
    let states: Vec<_> = f
        .store
        .signing_keys()
        .await
        .unwrap()
        .into_iter()
        .map(|k| (k.kid, k.state))
        .collect();
    assert!(states.contains(&(info.kid.clone(), SigningKeyState::Active)));
    assert!(states.contains(&(keys_before[0].kid.clone(), SigningKeyState::Previous)));
    assert!(f.issuer.verify_audit().await.unwrap().is_ok());
}
