//! The API suite again, on the PostgreSQL engine: the same test files as
//! the embedded `integration` binary, each test on a fresh database of a
//! throwaway cluster (`initdb` on loopback, started by the tests), plus the
//! tests only replicas have (`replicas.rs`).

// In tests a panic is the failure report, helpers included.
#![allow(clippy::unwrap_used)]
// The shared harness has helpers only the embedded suite uses.
#![allow(dead_code)]

/// This binary runs the API suite on PostgreSQL.
pub const ENGINE: support::Engine = support::Engine::Postgres;

#[path = "../integration/attacks.rs"]
mod attacks;
#[path = "../integration/audit_denials.rs"]
mod audit_denials;
#[path = "../integration/auth_matrix.rs"]
mod auth_matrix;
#[path = "../integration/balancer.rs"]
mod balancer;
#[path = "../integration/introspection.rs"]
mod introspection;
#[path = "../integration/keys_api.rs"]
mod keys_api;
mod moving;
#[path = "../integration/pg_cluster.rs"]
mod pg_cluster;
mod processes;
#[path = "../integration/public_docs.rs"]
mod public_docs;
#[path = "../integration/replica.rs"]
mod replica;
mod replicas;
#[path = "../integration/status_rotation.rs"]
mod status_rotation;
#[path = "../integration/support.rs"]
mod support;
