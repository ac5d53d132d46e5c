//! Key names (contract §2) through the HTTP API: look-alikes of a taken name
//! (other letter case, compatibility forms) are refused with 409; invisible,
//! format, bidi and line-separator characters with a 422 that names the
//! character and its position; ordinary non-ASCII names are accepted; and a
//! data directory whose name index is in the old lower-cased layout is
//! rebuilt at open.

use serde_json::json;

use crate::support::{TestApp, claims_of};

#[tokio::test]
async fn case_and_compatibility_variants_of_a_taken_name_are_409() {
    let app = TestApp::new().await;
    app.key("Straße-bot", &["global_viewer"], None).await;
    app.key("ﬁle-reader", &["global_viewer"], None).await;
    let before = app.audit_head().await;
    for (taken, variant) in [
        ("bootstrap-admin", "BOOTSTRAP-ADMIN"),
        ("bootstrap-admin", "Bootstrap-Admin"),
        ("bootstrap-admin", "ｂｏｏｔｓｔｒａｐ-ａｄｍｉｎ"),
        ("bootstrap-admin", "ＢＯＯＴＳＴＲＡＰ－ＡＤＭＩＮ"),
        ("bootstrap-admin", "  bootstrap-admin  "),
        ("Straße-bot", "STRASSE-BOT"),
        ("Straße-bot", "strasse-bot"),
        ("ﬁle-reader", "FILE-READER"),
    ] {
        let reply = app
            .post_json(
                "/v1/keys",
                Some(&app.admin_token),
                &json!({"name": variant, "roles": ["global_viewer"]}),
            )
            .await;
        reply.expect_problem(409);
        assert_eq!(
            reply.error_fields(),
            ["name"],
            "{variant:?} beside {taken:?}: {}",
            reply.text
        );
        let message = reply.body["errors"][0]["message"].as_str().unwrap();
        assert!(message.contains("already taken"), "{message}");
    }
    assert!(
        app.audit_after(before).await.is_empty(),
        "a refused create left a trace"
    );
    // A zero-width space does not make a new name either: it is refused
    // outright (422, below), before the name is compared.
    let reply = app
        .post_json(
            "/v1/keys",
            Some(&app.admin_token),
            &json!({"name": "bootstrap\u{200B}-admin", "roles": ["global_viewer"]}),
        )
        .await;
    reply.expect_problem(422);
    assert_eq!(reply.error_fields(), ["name"]);
}

#[tokio::test]
async fn each_forbidden_category_is_422_naming_the_character_and_its_position() {
    let app = TestApp::new().await;
    let before = app.audit_head().await;
    let cases = [
        // (name, code point, position counting from 1, category)
        ("bell\u{7}bot", "U+0007", 5, "Cc"),
        ("del\u{7F}", "U+007F", 4, "Cc"),
        ("c1\u{85}next", "U+0085", 3, "Cc"),
        ("bootstrap\u{200B}-admin", "U+200B", 10, "Cf"),
        ("zero\u{200D}joiner", "U+200D", 5, "Cf"),
        ("\u{202E}nimda", "U+202E", 1, "Cf"),
        ("isolate\u{2067}x", "U+2067", 8, "Cf"),
        ("soft\u{AD}hyphen", "U+00AD", 5, "Cf"),
        ("bom\u{FEFF}bot", "U+FEFF", 4, "Cf"),
        ("line\u{2028}two", "U+2028", 5, "Zl"),
        ("para\u{2029}two", "U+2029", 5, "Zp"),
        // Positions count in the name as sent, surrounding spaces included.
        ("  lead\u{200B}", "U+200B", 7, "Cf"),
    ];
    for (name, code, position, category) in cases {
        let reply = app
            .post_json(
                "/v1/keys",
                Some(&app.admin_token),
                &json!({"name": name, "roles": ["global_viewer"]}),
            )
            .await;
        reply.expect_problem(422);
        assert_eq!(reply.error_fields(), ["name"], "{name:?}: {}", reply.text);
        let message = reply.body["errors"][0]["message"].as_str().unwrap();
        assert!(
            message.starts_with(&format!("{code} at position {position} ")),
            "{name:?}: {message}"
        );
        assert!(message.contains(&format!("({category})")), "{message}");
    }
    assert!(app.audit_after(before).await.is_empty(), "nothing created");
}

#[tokio::test]
async fn ordinary_non_ascii_names_are_accepted_as_given() {
    let app = TestApp::new().await;
    for name in [
        "café-reader",
        "日本語キー",
        "Ωmega ops",
        "Ärger-Überwachung",
        "naïve_bot.v2",
    ] {
        let created = app.key(name, &["global_viewer"], None).await;
        assert_eq!(created.key["name"], json!(name));
        assert_eq!(claims_of(&created.token)["name"], json!(name));
        assert_eq!(app.describe(&created.id()).await["name"], json!(name));
    }
    // Different letters are different names.
    app.key("cafe-reader", &["global_viewer"], None).await;
}

/// The `names` tree as the version before NFKC folding wrote it:
/// lower-cased name → key id, and no layout marker.
fn rewrite_in_old_layout(db: &sled::Db) {
    let keys = db.open_tree("keys").unwrap();
    let names = db.open_tree("names").unwrap();
    let meta = db.open_tree("meta").unwrap();
    meta.remove("names_layout").unwrap().unwrap();
    names.clear().unwrap();
    for item in keys.iter() {
        let (id, record) = item.unwrap();
        let record: serde_json::Value = serde_json::from_slice(&record).unwrap();
        let old = record["name"].as_str().unwrap().to_lowercase();
        assert!(
            names.insert(old.as_bytes(), id).unwrap().is_none(),
            "the old layout held each lower-cased name once"
        );
    }
    db.flush().unwrap();
}

#[tokio::test]
async fn an_index_in_the_old_layout_is_rebuilt_at_open() {
    let app = TestApp::new().await;
    let cafe = app.key("Café-Reader", &["global_viewer"], None).await;
    let plain = app.key("strasse-reader", &["global_viewer"], None).await;
    let sharp = app.key("placeholder", &["global_viewer"], None).await;
    // Lower-casing leaves full-width letters full-width: the old index held
    // "ｆｕｌｌ-ｗｉｄｔｈ", which "full-width" did not match.
    let wide = app
        .key("Ｆｕｌｌ-Ｗｉｄｔｈ", &["global_viewer"], None)
        .await;
    let forger = app.forger();
    let now = app.now();
    let (admin_token, admin_id) = (app.admin_token.clone(), app.admin_id.clone());
    let dir = app.close().await;

    // An older version let "Straße-Reader" sit beside "strasse-reader" (its
    // index lower-cased only): make the third key that key, with the token
    // such a version would have signed for it.
    {
        let db = crate::support::open_db_when_free(&dir.path().join("data").join("db"));
        let keys = db.open_tree("keys").unwrap();
        let mut record: serde_json::Value =
            serde_json::from_slice(&keys.get(sharp.id()).unwrap().unwrap()).unwrap();
        record["name"] = json!("Straße-Reader");
        keys.insert(sharp.id(), serde_json::to_vec(&record).unwrap())
            .unwrap();
        rewrite_in_old_layout(&db);
    }
    let mut claims = claims_of(&sharp.token);
    claims["name"] = json!("Straße-Reader");
    let sharp_token = forger.issuer_signed(&forger.access_header(), &claims);

    let app = TestApp::open_existing(dir, now, admin_token.clone(), admin_id.clone()).await;

    // Every key keeps its name and keeps working, both of the pair included.
    for (created, token, name) in [
        (&wide, wide.token.as_str(), "Ｆｕｌｌ-Ｗｉｄｔｈ"),
        (&cafe, cafe.token.as_str(), "Café-Reader"),
        (&plain, plain.token.as_str(), "strasse-reader"),
        (&sharp, sharp_token.as_str(), "Straße-Reader"),
    ] {
        assert_eq!(app.describe(&created.id()).await["name"], json!(name));
        app.get("/v1/keys", Some(token)).await.expect(200);
    }
    let reply = app
        .post_json(
            "/v1/introspect",
            Some(&app.admin_token),
            &json!({"token": sharp_token}),
        )
        .await;
    reply.expect(200);
    assert_eq!(reply.body["active"], json!(true));
    assert_eq!(reply.body["name"], json!("Straße-Reader"));

    // The folded names are taken, the pair's shared one included.
    for variant in [
        "STRASSE-READER",
        "straße-reader",
        "ＣＡＦÉ-ＲＥＡＤＥＲ",
        "café-reader",
        "cafe\u{301}-reader",
        "BOOTSTRAP-ADMIN",
        "full-width",
        "FULL-WIDTH",
    ] {
        app.post_json(
            "/v1/keys",
            Some(&app.admin_token),
            &json!({"name": variant, "roles": ["global_viewer"]}),
        )
        .await
        .expect_problem(409);
    }
    app.key("fresh-after-migration", &["global_viewer"], None)
        .await;

    // Opened again, the marked index is kept as it is.
    let now = app.now();
    let dir = app.close().await;
    let app = TestApp::open_existing(dir, now, admin_token, admin_id).await;
    for variant in ["Strasse-Reader", "FRESH-AFTER-MIGRATION"] {
        app.post_json(
            "/v1/keys",
            Some(&app.admin_token),
            &json!({"name": variant, "roles": ["global_viewer"]}),
        )
        .await
        .expect_problem(409);
    }
    app.key("another-fresh-one", &["global_viewer"], None).await;

    // The index holds the folded names, not the old lower-cased ones.
    let dir = app.close().await;
    let db = crate::support::open_db_when_free(&dir.path().join("data").join("db"));
    let meta = db.open_tree("meta").unwrap();
    assert_eq!(
        meta.get("names_layout").unwrap().as_deref(),
        Some(&b"nfkc-casefold-1"[..]),
        "the rebuilt index is marked"
    );
    let names = db.open_tree("names").unwrap();
    assert!(
        names.get("ｆｕｌｌ-ｗｉｄｔｈ").unwrap().is_none(),
        "old entry left"
    );
    assert_eq!(
        names.get("full-width").unwrap().as_deref(),
        Some(wide.id().as_bytes())
    );
    assert_eq!(
        names.get("strasse-reader").unwrap().as_deref(),
        Some(plain.id().as_bytes()),
        "the older key of the pair holds the shared name"
    );
}
