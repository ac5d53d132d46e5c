//! Prometheus metrics. The recorder is process-wide (that is how the
//! `metrics` facade works); it is installed once, and every service in the
//! process reports through it.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The handle that renders `/metrics`, installing the recorder on first use.
pub fn handle() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (an embedding
            // application's); then ours only renders what it records itself.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}
