//! The running service's shared state: the configuration, the domain
//! ([`Issuer`]) and what is prepared once from the configuration.

use std::ops::Deref;
use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;

use crate::clock::SharedClock;
use crate::config::Config;
use crate::issuer::Issuer;
use crate::keyring::PreparedDocument;

/// Everything the HTTP API, the command line and the tasks share. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState(Arc<AppInner>);

#[derive(Debug)]
pub struct AppInner {
    pub config: Config,
    pub issuer: Issuer,
    pub clock: SharedClock,
    /// `/.well-known/oauth-authorization-server`, prepared once.
    pub metadata: PreparedDocument,
    pub metrics: PrometheusHandle,
}

impl Deref for AppState {
    type Target = AppInner;
    fn deref(&self) -> &AppInner {
        &self.0
    }
}

impl AppState {
    pub fn new(config: Config, issuer: Issuer, clock: SharedClock) -> AppState {
        let metadata = metadata_document(&config);
        AppState(Arc::new(AppInner {
            config,
            issuer,
            clock,
            metadata,
            metrics: crate::metrics::handle(),
        }))
    }

    /// The current time, to the second (the precision of JWT NumericDates).
    pub fn now(&self) -> time::OffsetDateTime {
        self.issuer.now()
    }
}

/// RFC 8414 authorization server metadata.
fn metadata_document(config: &Config) -> PreparedDocument {
    let issuer = &config.issuer;
    PreparedDocument::json(&serde_json::json!({
        "issuer": issuer,
        "jwks_uri": format!("{issuer}/.well-known/jwks.json"),
        "introspection_endpoint": format!("{issuer}/v1/introspect"),
        "status_list_endpoint": format!("{issuer}/v1/status"),
        "status_list_stream_endpoint": format!("{issuer}/v1/status/stream"),
        "usage_endpoint": format!("{issuer}/v1/usage"),
        "service_documentation": format!("{issuer}/openapi.json"),
        "token_endpoint_auth_methods_supported": ["none"],
        "introspection_endpoint_auth_methods_supported": ["bearer"],
        "access_token_signing_alg_values_supported": ["EdDSA", "ES256", "RS256"],
        "status_list_signing_alg_values_supported": ["EdDSA", "ES256", "RS256"],
        "grant_types_supported": [],
        "response_types_supported": [],
    }))
}
