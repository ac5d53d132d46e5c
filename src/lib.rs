//! latchkey: issues signed JWT access keys and publishes what downstream
//! services need to verify them offline (a JWKS and a Token Status List).
//!
//! The binary (`src/main.rs`) only parses the command line; everything else
//! lives here so that tests drive the same code.

pub mod app;
pub mod audit;
pub mod cli;
pub mod clock;
pub mod config;
pub mod denials;
pub mod gate;
pub mod http;
pub mod issuer;
pub mod kek;
pub mod keyring;
pub mod metrics;
pub mod model;
pub mod names;
pub mod rotation;
pub mod server;
pub mod service;
pub mod signing;
pub mod status_board;
pub mod store;
pub mod validation;
