//! The PostgreSQL schema, as numbered migrations applied in order.
//!
//! Every replica applies what is missing at start, under a session
//! advisory lock, so replicas that start together apply each migration
//! once and the others wait, then find nothing to do. A database whose
//! schema is newer than this binary knows is refused (an older replica
//! must not write into a layout it does not understand).
//! `latchkey migrate` runs the same code and exits.

use tokio_postgres::Client;

/// The advisory lock key held while migrating and while initialising an
/// empty database ("latchkey" in ASCII, as a number).
pub const SCHEMA_LOCK: i64 = 0x6c61_7463_686b_6579;

/// The migrations, in order; a migration is never edited once released.
pub const MIGRATIONS: &[(i32, &str, &str)] = &[(
    1,
    "keys, names, tokens, statuses, status events, audit chain, signing keys",
    r#"
CREATE TABLE latchkey_meta (
    key   text PRIMARY KEY,
    value text NOT NULL
);
-- One row: the head of the audit chain and of the status change sequence.
-- Every write locks it first, which gives the chain one total order across
-- replicas.
CREATE TABLE latchkey_chain (
    id         smallint PRIMARY KEY CHECK (id = 1),
    audit_seq  bigint NOT NULL,
    audit_hash text   NOT NULL,
    status_seq bigint NOT NULL
);
CREATE TABLE latchkey_keys (
    id     text PRIMARY KEY,
    record bytea NOT NULL
);
-- Names are unique in their folded form (NFKC, case-folded), revoked
-- keys included: the primary key is the constraint.
CREATE TABLE latchkey_names (
    folded text PRIMARY KEY,
    key_id text NOT NULL REFERENCES latchkey_keys (id) DEFERRABLE INITIALLY DEFERRED
);
CREATE TABLE latchkey_tokens (
    jti    text PRIMARY KEY,
    key_id text NOT NULL
);
CREATE TABLE latchkey_statuses (
    slot   bigint PRIMARY KEY,
    status smallint NOT NULL
);
CREATE TABLE latchkey_status_events (
    seq    bigint PRIMARY KEY,
    slot   bigint NOT NULL,
    status smallint NOT NULL
);
CREATE TABLE latchkey_audit (
    seq   bigint PRIMARY KEY,
    entry bytea NOT NULL
);
-- sealed_key: the private key sealed with AES-256-GCM under the
-- key-encryption key, which is never stored here.
CREATE TABLE latchkey_signing_keys (
    kid        text PRIMARY KEY,
    info       bytea NOT NULL,
    sealed_key bytea
);
-- Status slots are handed out in blocks (block n holds slots from
-- n * block size, see slot_block) and never reused.
CREATE SEQUENCE latchkey_status_slots MINVALUE 0 START 0 INCREMENT 1;
"#,
)];

/// The newest schema version this binary writes.
pub fn latest() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.0)
}

/// Applies missing migrations under the advisory lock; returns the
/// versions applied now.
pub async fn apply(client: &mut Client) -> Result<Vec<i32>, String> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&SCHEMA_LOCK])
        .await
        .map_err(|e| format!("could not take the schema lock: {e}"))?;
    let result = apply_locked(client).await;
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&SCHEMA_LOCK])
        .await;
    result
}

async fn apply_locked(client: &mut Client) -> Result<Vec<i32>, String> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS latchkey_schema_migrations (
                version    integer PRIMARY KEY,
                name       text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )",
        )
        .await
        .map_err(|e| format!("could not create the migrations table: {e}"))?;
    let row = client
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM latchkey_schema_migrations",
            &[],
        )
        .await
        .map_err(|e| format!("could not read the schema version: {e}"))?;
    let current: i32 = row.get(0);
    if current > latest() {
        return Err(format!(
            "the database's schema is version {current}, newer than this latchkey knows ({}); run the newer latchkey",
            latest()
        ));
    }
    let mut applied = Vec::new();
    for &(version, name, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
        let tx = client
            .transaction()
            .await
            .map_err(|e| format!("migration {version}: {e}"))?;
        tx.batch_execute(sql)
            .await
            .map_err(|e| format!("migration {version} ({name}) failed: {e}"))?;
        tx.execute(
            "INSERT INTO latchkey_schema_migrations (version, name) VALUES ($1, $2)",
            &[&version, &name],
        )
        .await
        .map_err(|e| format!("migration {version}: {e}"))?;
        tx.commit()
            .await
            .map_err(|e| format!("migration {version} could not commit: {e}"))?;
        tracing::info!(version, name, "applied a database migration");
        applied.push(version);
    }
    Ok(applied)
}
