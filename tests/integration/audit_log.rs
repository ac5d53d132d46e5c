//! The audit log: every mutation recorded with actor, action, target and
//! time; entries hash-chained; `latchkey audit verify` detecting edits,
//! removals and truncation made directly in the database.

use serde_json::{Value, json};
use tempfile::TempDir;

use crate::support::{TestApp, latchkey, rfc3339, run};

const ZERO_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[tokio::test]
async fn every_mutation_is_recorded_with_actor_action_target_and_time() {
    let app = TestApp::new().await;
    let admin = Some(app.admin_token.as_str());

    // Initialisation is on the record, done by the bootstrap actor.
    let initial = app.audit_all().await;
    let bootstrap_create = initial
        .iter()
        .find(|e| e["action"] == "key.create")
        .expect("the bootstrap key's creation is audited");
    assert_eq!(bootstrap_create["actor"], json!("bootstrap"));
    assert_eq!(bootstrap_create["target"], json!(app.admin_id));

    let before = app.audit_head().await;
    let mut expected: Vec<(&str, i64)> = Vec::new();
    let created = app.key("audited", &["global_viewer"], None).await;
    let id = created.id();
    expected.push(("key.create", app.now()));
    app.clock.advance(60);
    app.patch_json(
        &format!("/v1/keys/{id}"),
        admin,
        &json!({"description": "why"}),
    )
    .await
    .expect(200);
    expected.push(("key.update", app.now()));
    app.clock.advance(60);
    let renewed = app
        .post_json(&format!("/v1/keys/{id}/renew"), admin, &json!({}))
        .await;
    renewed.expect(200);
    expected.push(("key.renew", app.now()));
    app.clock.advance(60);
    app.post_json(&format!("/v1/keys/{id}/suspend"), admin, &json!({}))
        .await
        .expect(200);
    expected.push(("key.suspend", app.now()));
    app.clock.advance(60);
    app.post_json(&format!("/v1/keys/{id}/resume"), admin, &json!({}))
        .await
        .expect(200);
    expected.push(("key.resume", app.now()));
    app.clock.advance(60);
    app.delete(&format!("/v1/keys/{id}"), admin)
        .await
        .expect(204);
    expected.push(("key.revoke", app.now()));

    let entries = app.audit_after(before).await;
    let got: Vec<(String, String)> = entries
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_owned(),
                e["time"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = expected
        .iter()
        .map(|(action, at)| (action.to_string(), rfc3339(*at)))
        .collect();
    assert_eq!(got, want);
    for entry in &entries {
        assert_eq!(
            entry["actor"],
            json!({"id": app.admin_id, "name": "bootstrap-admin"}),
            "{entry}"
        );
        assert_eq!(entry["target"], json!(id), "{entry}");
    }
    // Tokens are never logged.
    let everything = serde_json::to_string(&app.audit_all().await).unwrap();
    for token in [
        &app.admin_token,
        &created.token,
        &renewed.body["token"].as_str().unwrap().to_owned(),
    ] {
        let signature = token.rsplit('.').next().unwrap();
        assert!(
            !everything.contains(signature),
            "a token is in the audit log"
        );
    }
}

#[tokio::test]
async fn entries_are_numbered_and_chained() {
    let app = TestApp::new().await;
    for i in 0..3 {
        app.key(&format!("chained-{i}"), &["global_viewer"], None)
            .await;
    }
    app.get("/v1/keys", Some("not-a-token"))
        .await
        .expect_problem(401);
    // An anonymous refusal is audited once its minute is over.
    app.clock.advance(60);
    let entries = app.audit_all().await;
    assert!(entries.len() >= 6, "{entries:?}");
    let mut hashes = std::collections::HashSet::new();
    for (i, entry) in entries.iter().enumerate() {
        let fields: std::collections::BTreeSet<&str> = entry
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        for field in [
            "seq",
            "time",
            "actor",
            "action",
            "target",
            "hash",
            "prev_hash",
        ] {
            assert!(fields.contains(field), "{field} missing from {entry}");
        }
        assert_eq!(entry["seq"], json!(i as u64 + 1), "numbered without gaps");
        let hash = entry["hash"].as_str().unwrap();
        assert_eq!(hash.len(), 64);
        assert!(hash.bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(hashes.insert(hash.to_owned()), "hashes are distinct");
        let previous = if i == 0 {
            json!(ZERO_HASH)
        } else {
            entries[i - 1]["hash"].clone()
        };
        assert_eq!(entry["prev_hash"], previous, "entry {} links back", i + 1);
    }
    let last = entries.last().unwrap();
    assert_eq!(last["action"], json!("auth.denied"));
    assert_eq!(last["actor"], json!("anonymous"));
    assert_eq!(last["details"]["count"], json!(1));
    assert_eq!(last["details"]["reason"], json!("malformed"));
}

#[tokio::test]
async fn the_log_pages_by_sequence_number() {
    let app = TestApp::new().await;
    for i in 0..5 {
        app.key(&format!("paged-{i}"), &["global_viewer"], None)
            .await;
    }
    let admin = Some(app.admin_token.as_str());
    let all = app.audit_all().await;
    let reply = app.get("/v1/audit?after=2&limit=2", admin).await;
    reply.expect(200);
    let seqs: Vec<u64> = reply.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [3, 4]);
    assert_eq!(reply.body["next_after"], json!(4));

    let mut walked = Vec::new();
    let mut after = 0;
    for _ in 0..100 {
        let reply = app
            .get(&format!("/v1/audit?after={after}&limit=3"), admin)
            .await;
        reply.expect(200);
        let items = reply.body["items"].as_array().unwrap().clone();
        walked.extend(items);
        match reply.body["next_after"].as_u64() {
            Some(next) => after = next,
            None => break,
        }
    }
    assert_eq!(walked, all);

    for bad in ["limit=0", "limit=1001", "after=x"] {
        app.get(&format!("/v1/audit?{bad}"), admin)
            .await
            .expect_problem(422);
    }
}

/// An app with a varied log, closed so its database can be opened directly.
async fn closed_log() -> (TempDir, u64) {
    let app = TestApp::new().await;
    let admin = Some(app.admin_token.as_str());
    let created = app.key("logged", &["global_viewer"], None).await;
    let id = created.id();
    app.patch_json(
        &format!("/v1/keys/{id}"),
        admin,
        &json!({"description": "d"}),
    )
    .await
    .expect(200);
    app.post_json(&format!("/v1/keys/{id}/suspend"), admin, &json!({}))
        .await
        .expect(200);
    app.get("/v1/keys", Some("bogus")).await.expect_problem(401);
    // The refusal's minute ends, so the next request writes its entry.
    app.clock.advance(60);
    app.delete(&format!("/v1/keys/{id}"), admin)
        .await
        .expect(204);
    let entries = app.audit_head().await;
    assert!(entries >= 7);
    (app.close().await, entries)
}

/// `latchkey audit verify --data-dir`. sled's I/O threads may hold the
/// database lock for a moment after a handle is dropped, so "in use" is
/// retried (bounded).
fn verify(dir: &TempDir) -> crate::support::Ran {
    for _ in 0..100 {
        let ran = run(latchkey()
            .args(["audit", "verify", "--data-dir"])
            .arg(dir.path().join("data")));
        if !ran.stderr.contains("in use") {
            return ran;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("the database stayed locked");
}

/// Opens the audit tree directly (the service must be closed) and lets `edit` change it.
fn edit_audit(dir: &TempDir, edit: impl FnOnce(&sled::Tree)) {
    let db = crate::support::open_db_when_free(&dir.path().join("data").join("db"));
    let tree = db.open_tree("audit").unwrap();
    edit(&tree);
    db.flush().unwrap();
}

fn seq_key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

fn mentions(text: &str, words: &[&str]) -> bool {
    let lower = text.to_lowercase();
    words.iter().any(|w| lower.contains(w))
}

#[track_caller]
fn assert_refused(ran: &crate::support::Ran, seq: u64, words: &[&str]) {
    assert!(
        !ran.success,
        "verify passed a damaged log: {}{}",
        ran.stdout, ran.stderr
    );
    assert!(
        ran.stderr.contains(&format!("entry {seq}")) || ran.stderr.contains(&format!("#{seq}")),
        "the message should name entry {seq}: {}",
        ran.stderr
    );
    assert!(
        mentions(&ran.stderr, words),
        "the message should say what happened ({words:?}): {}",
        ran.stderr
    );
}

#[tokio::test]
async fn audit_verify_passes_an_intact_log() {
    let (dir, entries) = closed_log().await;
    let ran = verify(&dir);
    assert!(ran.success, "{}{}", ran.stdout, ran.stderr);
    assert!(ran.stdout.contains("OK"), "{}", ran.stdout);
    assert!(ran.stdout.contains(&entries.to_string()), "{}", ran.stdout);
}

#[tokio::test]
async fn audit_verify_detects_an_edited_entry() {
    let (dir, _) = closed_log().await;
    edit_audit(&dir, |tree| {
        let bytes = tree.get(seq_key(4)).unwrap().unwrap();
        let mut entry: Value = serde_json::from_slice(&bytes).unwrap();
        entry["details"]["edited_by"] = json!("an intruder");
        tree.insert(seq_key(4), serde_json::to_vec(&entry).unwrap())
            .unwrap();
    });
    assert_refused(
        &verify(&dir),
        4,
        &["edited", "altered", "modified", "tampered", "hash"],
    );
}

#[tokio::test]
async fn audit_verify_detects_a_removed_middle_entry() {
    let (dir, _) = closed_log().await;
    edit_audit(&dir, |tree| {
        tree.remove(seq_key(3)).unwrap().unwrap();
    });
    assert_refused(&verify(&dir), 3, &["missing", "removed", "gap", "deleted"]);
}

#[tokio::test]
async fn audit_verify_detects_a_removed_last_entry() {
    let (dir, entries) = closed_log().await;
    edit_audit(&dir, |tree| {
        tree.remove(seq_key(entries)).unwrap().unwrap();
    });
    assert_refused(
        &verify(&dir),
        entries,
        &["missing", "removed", "truncated", "deleted"],
    );
}
