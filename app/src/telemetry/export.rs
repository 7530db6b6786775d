//! The span exporter, counted: spans that reached the collector and spans lost to a failed
//! export, both as Prometheus counters (`floret_trace_spans_exported_total`,
//! `floret_trace_spans_dropped_total`) and as process totals reported at exit.
//!
//! Spans the batch queue refused because it was full never reach the exporter: they are
//! the difference between `floret_trace_spans_ended_total` (counted by
//! [`CountingProcessor`] as spans end) and the two above, and are added to the dropped
//! total at exit.

use opentelemetry::Context;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Counter of spans the collector accepted.
pub const EXPORTED_METRIC: &str = "floret_trace_spans_exported_total";
/// Counter of spans lost to failed exports.
pub const DROPPED_METRIC: &str = "floret_trace_spans_dropped_total";

/// Counter of spans finished in this process, exported or not.
pub const ENDED_METRIC: &str = "floret_trace_spans_ended_total";

/// Spans finished in this process.
pub static SPANS_ENDED: AtomicU64 = AtomicU64::new(0);
/// Spans the collector accepted, in this process.
pub static SPANS_EXPORTED: AtomicU64 = AtomicU64::new(0);
/// Spans lost because their export failed (collector unreachable, slow or refusing).
pub static SPANS_DROPPED: AtomicU64 = AtomicU64::new(0);
/// Whether the last export failed.
static LAST_FAILED: AtomicBool = AtomicBool::new(false);

/// Whether the collector refused or missed the last batch.
pub(super) fn collector_down() -> bool {
    LAST_FAILED.load(Ordering::Relaxed)
}

/// Wraps the OTLP exporter to count what happens to each batch.
#[derive(Debug)]
pub(super) struct CountingExporter<E> {
    inner: E,
}

impl<E> CountingExporter<E> {
    pub(super) fn new(inner: E) -> Self {
        CountingExporter { inner }
    }
}

impl<E: SpanExporter> SpanExporter for CountingExporter<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len() as u64;
        let result = self.inner.export(batch).await;
        match &result {
            Ok(()) => {
                LAST_FAILED.store(false, Ordering::Relaxed);
                SPANS_EXPORTED.fetch_add(spans, Ordering::Relaxed);
                metrics::counter!(EXPORTED_METRIC).increment(spans);
            }
            Err(_) => {
                LAST_FAILED.store(true, Ordering::Relaxed);
                let before = SPANS_DROPPED.fetch_add(spans, Ordering::Relaxed);
                metrics::counter!(DROPPED_METRIC).increment(spans);
                // Once, not per batch: an absent collector would otherwise fill the log.
                if before == 0 {
                    tracing::warn!(
                        "trace export failed; spans are dropped until the collector answers"
                    );
                }
            }
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.inner.set_resource(resource);
    }
}

/// Wraps the batch processor to count spans as they end, before its queue may drop them.
#[derive(Debug)]
pub(super) struct CountingProcessor<P> {
    inner: P,
}

impl<P> CountingProcessor<P> {
    pub(super) fn new(inner: P) -> Self {
        CountingProcessor { inner }
    }
}

impl<P: SpanProcessor> SpanProcessor for CountingProcessor<P> {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        SPANS_ENDED.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(ENDED_METRIC).increment(1);
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.inner.set_resource(resource);
    }
}

/// Spans that ended but neither reached the collector nor failed an export: the batch
/// queue dropped them (or shutdown cut them off). Call after the provider shut down.
pub(super) fn lost_in_queue() -> u64 {
    let ended = SPANS_ENDED.load(Ordering::Relaxed);
    let left = SPANS_EXPORTED.load(Ordering::Relaxed) + SPANS_DROPPED.load(Ordering::Relaxed);
    ended.saturating_sub(left)
}
