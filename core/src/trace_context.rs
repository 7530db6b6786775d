//! W3C trace context carried by messages, so that one run is one trace.
//!
//! A message records the `traceparent` of the span that sent it (`Metadata::trace_context`);
//! whoever handles it — the SuperLink delivering it, a SuperNode training on it, an app
//! process — opens its span as a child of that one. The header travels inside the message,
//! so it crosses every transport (in-memory, gRPC, QUIC, AppIo) and survives a message
//! stored in the SuperLink's database and delivered later.
//!
//! With no OpenTelemetry layer installed (tracing off, the default) every span's context
//! is empty: [`traceparent`] returns `""`, [`set_parent`] does nothing, and messages carry
//! no header. The format is the W3C one (`00-<trace id>-<span id>-<flags>`), written and
//! parsed here so that the data model needs the OpenTelemetry API only, not its SDK.

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use std::sync::atomic::{AtomicBool, Ordering};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Set once a binary installs an OpenTelemetry layer; until then the per-message spans
/// below are not even created.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Turns on per-message spans: called by whoever installs the OpenTelemetry layer.
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// Whether traces are exported by this process.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// A span for handling `message` (delivering it, training on it, receiving a reply),
/// named `name` in the trace and a child of the span that sent the message. `node_id` is
/// the node doing the work or the one it is for; `transport` how the message travels
/// (`""` where that is not known, as in the SuperLink's state: both transports share it).
/// `Span::none()` while tracing is off, so the data path pays nothing for it.
pub fn message_span(
    name: &str,
    message: &crate::Message,
    node_id: u64,
    transport: &'static str,
) -> Span {
    if !enabled() {
        return Span::none();
    }
    let md = &message.metadata;
    let span = tracing::info_span!(
        "message",
        otel.name = name,
        run_id = md.run_id,
        node_id,
        message_id = %md.message_id,
        message_type = %md.message_type,
        group_id = %md.group_id,
        bytes = message.array_bytes() as u64,
        transport = tracing::field::Empty,
        error_code = tracing::field::Empty,
    );
    set_parent(&span, &md.trace_context);
    if !transport.is_empty() {
        span.record("transport", transport);
    }
    if let Some(e) = message.error() {
        span.record("error_code", e.code);
    }
    span
}

/// Opens the SuperLink's `deliver` span for `message`, handed to node `node_id` now, and
/// makes it the message's parent for the node: the trace then shows when the SuperLink
/// let go of each instruction.
pub fn delivered(mut message: crate::Message, node_id: u64) -> crate::Message {
    if enabled() {
        let span = message_span("deliver", &message, node_id, "");
        let header = traceparent(&span);
        if !header.is_empty() {
            message.metadata.trace_context = header;
        }
    }
    message
}

/// The span name for handling a message of `message_type`: its base type (`train` for
/// `train.fedprox`), so traces group by what the node did.
pub fn phase_of(message_type: &str) -> &str {
    message_type.split('.').next().unwrap_or(message_type)
}

/// The `traceparent` of `span`, or `""` when it is not traced.
pub fn traceparent(span: &Span) -> String {
    let cx = span.context();
    let otel = cx.span();
    let sc = otel.span_context();
    if !sc.is_valid() {
        return String::new();
    }
    format!(
        "00-{}-{}-{:02x}",
        sc.trace_id(),
        sc.span_id(),
        sc.trace_flags().to_u8()
    )
}

/// The `traceparent` of the current span, or `""`.
pub fn current() -> String {
    traceparent(&Span::current())
}

/// Gives every message without one the current span's `traceparent`: what a grid does on
/// `send`, so that each message's handling joins the sender's trace.
pub fn stamp(messages: &mut [crate::Message]) {
    if messages.is_empty() {
        return;
    }
    let header = current();
    if header.is_empty() {
        return;
    }
    for m in messages {
        if m.metadata.trace_context.is_empty() {
            m.metadata.trace_context.clone_from(&header);
        }
    }
}

/// The trace id of `span` in hex, when it is traced: what log lines show.
pub fn trace_id(span: &Span) -> Option<String> {
    let cx = span.context();
    let otel = cx.span();
    let sc = otel.span_context();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

/// Makes `traceparent` the parent of `span`, which must not have been entered yet.
/// Returns whether it did: `false` for an empty or malformed header (a peer's bug must not
/// fail a message; the span then starts a trace of its own) or when tracing is off.
pub fn set_parent(span: &Span, traceparent: &str) -> bool {
    match parse(traceparent) {
        Some(parent) => span
            .set_parent(opentelemetry::Context::new().with_remote_span_context(parent))
            .is_ok(),
        None => false,
    }
}

/// Parses a version-00 `traceparent`: `00-<32 hex>-<16 hex>-<2 hex>`, ids not all zero.
pub fn parse(traceparent: &str) -> Option<SpanContext> {
    let mut parts = traceparent.split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || version != "00" {
        return None;
    }
    let lower_hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    if !lower_hex(trace, 32) || !lower_hex(span, 16) || !lower_hex(flags, 2) {
        return None;
    }
    let trace_id = TraceId::from_hex(trace).ok()?;
    let span_id = SpanId::from_hex(span).ok()?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    let sc = SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::new(flags),
        true,
        TraceState::default(),
    );
    sc.is_valid().then_some(sc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::layer::SubscriberExt;

    const HEADER: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_w3c_header_parses_and_garbage_does_not() {
        let sc = parse(HEADER).unwrap();
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");
        assert!(sc.is_sampled() && sc.is_remote());
        for bad in [
            "",
            "garbage",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        ] {
            assert!(parse(bad).is_none(), "{bad:?} parsed");
        }
    }

    #[test]
    fn without_a_tracing_layer_nothing_is_carried() {
        let span = tracing::info_span!("untraced");
        assert_eq!(traceparent(&span), "");
        assert!(!set_parent(&span, HEADER));
    }

    #[test]
    fn a_child_opened_from_the_header_joins_the_senders_trace() {
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("test"));
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            let sender = tracing::info_span!("broadcast");
            let header = traceparent(&sender);
            let sent = parse(&header).unwrap();

            let handler = tracing::info_span!("train");
            assert!(set_parent(&handler, &header));
            let handled = parse(&traceparent(&handler)).unwrap();
            assert_eq!(handled.trace_id(), sent.trace_id());
            assert_ne!(handled.span_id(), sent.span_id());
            assert_eq!(trace_id(&handler), Some(sent.trace_id().to_string()));
        });
    }
}
