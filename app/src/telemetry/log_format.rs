//! Log lines that carry the trace id of the span they were logged in, so a line found in
//! one process's log leads to the whole run's trace (and back).
//!
//! Text lines start with `trace_id=<hex> `; JSON objects get a `"trace_id"` member. Only
//! when tracing is on: otherwise the formatters are the stock ones.

use std::fmt;
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{Format, Full, Json, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// A stock event format plus the trace id.
pub(super) struct WithTraceId<F> {
    inner: F,
    traced: bool,
    json: bool,
}

impl WithTraceId<Format<Full>> {
    pub(super) fn text(traced: bool) -> Self {
        WithTraceId {
            inner: tracing_subscriber::fmt::format(),
            traced,
            json: false,
        }
    }
}

impl WithTraceId<Format<Json>> {
    pub(super) fn json(traced: bool) -> Self {
        WithTraceId {
            inner: tracing_subscriber::fmt::format().json(),
            traced,
            json: true,
        }
    }
}

/// The trace id of the current span, when it is traced. The current span of the whole
/// subscriber, not of the log layer: with `--log-level warn` the log layer sees no info
/// span, yet the line belongs to one. Nothing holds a span's extensions at this point, so
/// the OpenTelemetry layer may read them.
fn trace_id() -> Option<String> {
    floret_core::trace_context::trace_id(&tracing::Span::current())
}

impl<S, N, F> FormatEvent<S, N> for WithTraceId<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let id = if self.traced { trace_id() } else { None };
        let Some(id) = id else {
            return self.inner.format_event(ctx, writer, event);
        };
        if !self.json {
            write!(writer, "trace_id={id} ")?;
            return self.inner.format_event(ctx, writer, event);
        }
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        match line.strip_prefix('{') {
            Some(rest) => write!(writer, "{{\"trace_id\":\"{id}\",{rest}"),
            None => writer.write_str(&line),
        }
    }
}
