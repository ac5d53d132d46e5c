//! The running service's shared state and how it is opened from a
//! configuration: database, registry, signing keys, and the documents
//! prepared from them.

use std::ops::Deref;
use std::sync::Arc;

use latchkey_verifier::verify::Expectations;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::clock::SharedClock;
use crate::config::Config;
use crate::keyring::{KeyRing, PreparedDocument};
use crate::registry::{IssuanceSettings, Registry};

/// Everything a request handler needs. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState(Arc<AppInner>);

#[derive(Debug)]
pub struct AppInner {
    pub config: Config,
    pub registry: Registry,
    pub keyring: KeyRing,
    pub clock: SharedClock,
    pub settings: IssuanceSettings,
    pub expectations: Expectations,
    /// `/.well-known/oauth-authorization-server`, prepared once.
    pub metadata: PreparedDocument,
    pub metrics: PrometheusHandle,
    /// Signed status list tokens, cached per list.
    pub status_documents: crate::http::status::StatusDocuments,
    /// Bearer tokens whose signature and claims already verified, per key set.
    pub token_cache:
        latchkey_verifier::cache::TokenCache<std::sync::Arc<crate::http::auth::VerifiedBearer>>,
    /// Open `/v1/status/stream` connections.
    pub stream_subscribers: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// Refusals of requests without a valid key, counted per minute.
    pub denials: crate::denials::DenialWindows,
}

impl Deref for AppState {
    type Target = AppInner;
    fn deref(&self) -> &AppInner {
        &self.0
    }
}

impl AppState {
    pub fn new(
        config: Config,
        registry: Registry,
        keyring: KeyRing,
        clock: SharedClock,
    ) -> AppState {
        let settings = IssuanceSettings {
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            max_expiry_days: config.max_expiry_days,
        };
        let expectations =
            Expectations::new(config.issuer.clone(), config.primary_audience().to_owned());
        let metadata = metadata_document(&config);
        AppState(Arc::new(AppInner {
            config,
            registry,
            keyring,
            clock,
            settings,
            expectations,
            metadata,
            metrics: crate::metrics::handle(),
            status_documents: Default::default(),
            stream_subscribers: Default::default(),
            denials: Default::default(),
            token_cache: latchkey_verifier::cache::TokenCache::new(10_000),
        }))
    }

    /// The current time, to the second (the precision of JWT NumericDates).
    pub fn now(&self) -> time::OffsetDateTime {
        let now = self.clock.now();
        now.replace_nanosecond(0).unwrap_or(now)
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
