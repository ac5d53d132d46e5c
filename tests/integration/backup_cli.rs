//! `latchkey backup` and `latchkey restore`, the built binary end to end:
//! a backup of a served instance restores into a new data directory that
//! serves the same keys; a cut-off, damaged or foreign file, a data
//! directory that holds a database and a keys directory without the keys
//! are each refused with a message that says what is wrong, and leave
//! nothing behind.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::backup::{copy_keys, download};
use crate::cli::{Server, mode, ok, read_token};
use crate::support::{Ran, TestApp, latchkey, run};

/// `latchkey restore FILE` into `dir/data` with the keys of `dir/keys`.
fn restore(file: &Path, dir: &Path) -> Ran {
    run(latchkey()
        .arg("restore")
        .arg(file)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--keys-dir")
        .arg(dir.join("keys")))
}

#[track_caller]
fn refused(ran: &Ran, needle: &str) {
    assert!(
        !ran.success,
        "restore should have been refused: {}",
        ran.stdout
    );
    assert!(
        ran.stderr.contains(needle) && ran.stderr.contains("nothing was restored"),
        "expected {needle:?} in: {}",
        ran.stderr
    );
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A backup of a small instance, written to a file in a new directory.
async fn backup_file() -> (TestApp, tempfile::TempDir, PathBuf, String) {
    let app = TestApp::new().await;
    app.key("kept", &["global_viewer"], None).await;
    let reply = download(&app, &app.admin_token).await;
    reply.expect(200);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("backup.jsonl");
    std::fs::write(&file, reply.text.as_bytes()).unwrap();
    (app, dir, file, reply.text)
}

#[tokio::test]
async fn restore_refuses_bad_files_and_occupied_directories() {
    let (app, dir, file, text) = backup_file().await;
    let target = tempfile::tempdir().unwrap();
    copy_keys(&app.keys_dir(), &target.path().join("keys"));

    let cut = dir.path().join("cut.jsonl");
    std::fs::write(&cut, &text.as_bytes()[..text.len() / 2]).unwrap();
    refused(&restore(&cut, target.path()), "truncated");

    let damaged = dir.path().join("damaged.jsonl");
    let flipped = text.replacen("http://latchkey.test", "http://latchkey.tesu", 1);
    assert_ne!(flipped, text);
    std::fs::write(&damaged, flipped).unwrap();
    refused(&restore(&damaged, target.path()), "checksum does not match");

    let newer = dir.path().join("newer.jsonl");
    std::fs::write(&newer, text.replacen("\"version\":1", "\"version\":2", 1)).unwrap();
    refused(&restore(&newer, target.path()), "version 2");

    let foreign = dir.path().join("foreign.txt");
    std::fs::write(&foreign, "name,roles\nx,global_admin\n").unwrap();
    refused(
        &restore(&foreign, target.path()),
        "line 1: not a latchkey backup",
    );

    // None of these created the data directory.
    assert_eq!(entries(target.path()), ["keys"]);

    // Without the private keys the restored store could not sign or start.
    let keyless = tempfile::tempdir().unwrap();
    std::fs::create_dir(keyless.path().join("keys")).unwrap();
    let ran = restore(&file, keyless.path());
    refused(&ran, "lacks signing keys the backup needs");
    let kid = crate::support::header_of(&app.admin_token)["kid"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        ran.stderr.contains(&kid),
        "names the missing kid: {}",
        ran.stderr
    );
    assert_eq!(entries(keyless.path()), ["keys"]);

    // A data directory that holds a database is never written to.
    let occupied = target.path().join("data").join("db");
    std::fs::create_dir_all(&occupied).unwrap();
    std::fs::write(occupied.join("marker"), "old").unwrap();
    let ran = restore(&file, target.path());
    assert!(!ran.success);
    assert!(
        ran.stderr.contains("already holds a database")
            && ran.stderr.contains("move it away first"),
        "{}",
        ran.stderr
    );
    assert_eq!(entries(&target.path().join("data")), ["db"]);
    assert_eq!(entries(&occupied), ["marker"]);
}

#[tokio::test]
async fn backup_of_a_served_instance_restores_and_serves_the_same_keys() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("admin.token");
    let server = Server::start(
        dir.path(),
        &["--bootstrap-token-file", token_file.to_str().unwrap()],
    )
    .await;
    let admin = read_token(&token_file);
    let created = ok(&run(server.client(&admin).args([
        "keys",
        "create",
        "--name",
        "kept",
        "--role",
        "global_viewer",
        "--json",
    ])))
    .stdout
    .clone();
    let created: Value = serde_json::from_str(&created).unwrap();
    let viewer = created["token"].as_str().unwrap().to_owned();

    let out = dir.path().join("latchkey.backup");
    let ran = ok(&run(server
        .client(&admin)
        .arg("backup")
        .arg("--out")
        .arg(&out)))
    .stdout
    .clone();
    assert!(
        ran.contains(": 2 keys,"),
        "the bootstrap admin and kept: {ran}"
    );
    assert!(ran.contains("back up the keys directory too"), "{ran}");
    assert_eq!(mode(&out), 0o600);
    let sha256 = hex::encode(ring::digest::digest(
        &ring::digest::SHA256,
        &std::fs::read(&out).unwrap(),
    ));
    assert!(ran.contains(&sha256), "prints the file's SHA-256: {ran}");

    // Never overwritten; a viewer is refused and no file is left.
    let again = run(server.client(&admin).arg("backup").arg("--out").arg(&out));
    assert!(
        !again.success && again.stderr.contains("never overwritten"),
        "{}",
        again.stderr
    );
    let denied = dir.path().join("denied.backup");
    let ran = run(server
        .client(&viewer)
        .arg("backup")
        .arg("--out")
        .arg(&denied));
    assert!(!ran.success && ran.stderr.contains("403"), "{}", ran.stderr);
    assert!(!denied.exists());
    let (_, keys_before) = server.get("/v1/keys", &admin).await;
    server.stop().await;

    let fresh = tempfile::tempdir().unwrap();
    copy_keys(&dir.path().join("keys"), &fresh.path().join("keys"));
    let ran = ok(&restore(&out, fresh.path())).stdout.clone();
    assert!(ran.contains("new status epoch"), "{ran}");
    let restored = Server::start(fresh.path(), &[]).await;
    let (status, keys_after) = restored.get("/v1/keys", &admin).await;
    assert_eq!(
        status, 200,
        "the old admin token works on the restored issuer"
    );
    // The same keys, in the same states (`last_used_at` moves with every request).
    let without_last_used = |list: &Value| {
        let mut items = list["items"].as_array().unwrap().clone();
        for item in &mut items {
            item.as_object_mut().unwrap().remove("last_used_at");
        }
        items
    };
    assert_eq!(
        without_last_used(&keys_after),
        without_last_used(&keys_before)
    );
    let (status, _) = restored.get("/v1/keys", &viewer).await;
    assert_eq!(
        status, 200,
        "the viewer's token verifies on the restored issuer"
    );
    let (_, audit) = restored.get("/v1/audit?limit=500", &admin).await;
    let actions: Vec<&Value> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["action"])
        .collect();
    let restore_at = actions
        .iter()
        .position(|a| **a == json!("backup.restore"))
        .expect("the restore is audited");
    // The backup's own `backup.create` entry follows its snapshot.
    assert!(!actions[..restore_at].contains(&&json!("backup.create")));
    let verify = run(restored.client(&admin).args(["audit", "verify"]));
    ok(&verify);
    restored.stop().await;
}
