//! latchkey's integration tests, one binary: requests go through the same
//! `http::router` the server runs (via `oneshot`), and the CLI tests run the
//! built `latchkey` binary.

// In tests a panic is the failure report, helpers included.
#![allow(clippy::unwrap_used)]

/// This binary runs the API suite on the embedded store.
pub const ENGINE: support::Engine = support::Engine::Sled;

mod attacks;
mod audit_denials;
mod audit_log;
mod auth_matrix;
mod backup;
mod backup_cli;
mod balancer;
mod cli;
mod crash;
mod deploy_nginx;
mod external;
mod gate;
mod introspection;
mod kek_cli;
mod keys_api;
mod names;
mod never_goes_back;
mod pg_cluster;
mod public_docs;
mod replica;
mod status_rotation;
mod support;
mod verifier_e2e;
