//! Logs and traces of every Floret binary: one place that reads `--log-level`,
//! `--log-format`, `--otlp-endpoint` and the standard `OTEL_*` variables and installs the
//! `tracing` subscriber.
//!
//! Tracing is off unless an OTLP endpoint is given (the flag, or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT`): then no
//! OpenTelemetry layer is installed at all, spans carry no context and messages no
//! `traceparent`, so a run pays nothing for it. When on, spans leave through a bounded
//! batch queue on the SDK's own thread: a slow or unreachable collector costs dropped spans
//! (counted, see `export`), never a slower run.

mod export;
mod log_format;

use crate::UserError;
use export::{CountingExporter, CountingProcessor};
use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider};
use std::time::Duration;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

pub use export::{
    DROPPED_METRIC, ENDED_METRIC, EXPORTED_METRIC, SPANS_DROPPED, SPANS_ENDED, SPANS_EXPORTED,
};

/// Spans waiting for export at most; beyond it new spans are dropped (and counted).
const QUEUE_SPANS: usize = 8192;
/// How long finished spans wait to be batched (the SDK's default).
const EXPORT_DELAY: Duration = Duration::from_secs(5);
/// The same for processes that may be killed at any moment.
const SHORT_EXPORT_DELAY: Duration = Duration::from_millis(200);
/// How long one export may take before it counts as failed.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long exit waits for the last spans to leave: a collector that is gone must not
/// hold a finished command.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(2);
/// The same when the last export failed.
const SHUTDOWN_TIMEOUT_COLLECTOR_DOWN: Duration = Duration::from_millis(100);

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (for log shippers), with `trace_id` when traced.
    Json,
}

/// The logging and tracing flags every binary takes. Command line and `OTEL_*` / `RUST_LOG`
/// only: they are read before anything else, so that the rest can log.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TelemetryArgs {
    /// What to log: error, warn, info, debug, trace, or a filter such as
    /// `info,floret_actors=debug` [default: RUST_LOG, else the binary's default].
    #[arg(long, value_name = "LEVEL", global = true)]
    pub log_level: Option<String>,
    /// Log line format on stderr.
    #[arg(long, value_enum, value_name = "text|json", global = true)]
    pub log_format: Option<LogFormat>,
    /// Send traces to this OTLP/gRPC collector, e.g. http://127.0.0.1:4317 [default:
    /// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT; off when unset].
    #[arg(long, value_name = "URL", global = true)]
    pub otlp_endpoint: Option<String>,
}

/// Makes `--otlp-endpoint` the collector of the processes this one starts (a daemon's
/// app processes, the app binary `flwr run` runs), which inherit its environment, so
/// that their spans join the same trace.
///
/// Call it before any other thread exists: it sets an environment variable.
pub fn pass_on_to_children(args: &TelemetryArgs) {
    if let Some(endpoint) = &args.otlp_endpoint {
        // SAFETY: single-threaded at this point (the caller's contract), so no thread can
        // read the environment while it changes.
        unsafe { std::env::set_var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", endpoint) };
    }
}

/// What `init` found out, checked: everything that can be wrong with the settings is an
/// error here, before a port is bound or a run started.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The `EnvFilter` directive: `--log-level`, else `RUST_LOG`, else the binary's default.
    pub filter: String,
    /// `--log-format`, or text.
    pub format: LogFormat,
    /// The collector, when tracing is on.
    pub endpoint: Option<String>,
    /// How long finished spans wait to be sent in a batch.
    pub export_delay: Duration,
}

impl Settings {
    /// Reads `args` over the environment `env`; `default_level` applies when neither
    /// `--log-level` nor `RUST_LOG` says anything.
    pub fn resolve(
        args: &TelemetryArgs,
        env: impl Fn(&str) -> Option<String>,
        default_level: &str,
    ) -> Result<Settings, UserError> {
        let filter = match &args.log_level {
            Some(level) => {
                EnvFilter::try_new(level).map_err(|e| {
                    UserError::new(format!(
                        "--log-level {level:?}: {e}; pass error, warn, info, debug or trace, or a filter such as info,floret_actors=debug"
                    ))
                })?;
                level.clone()
            }
            None => match env("RUST_LOG").filter(|v| !v.is_empty()) {
                // A bad RUST_LOG keeps the default rather than failing: it is often set
                // for other programs too.
                Some(v) if EnvFilter::try_new(&v).is_ok() => v,
                _ => default_level.to_string(),
            },
        };
        let disabled = env("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
            || env("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"));
        let endpoint = if let Some(url) = &args.otlp_endpoint {
            Some(check_endpoint(url, "--otlp-endpoint")?)
        } else if disabled {
            None
        } else {
            let mut found = None;
            for var in [
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "OTEL_EXPORTER_OTLP_ENDPOINT",
            ] {
                if let Some(url) = env(var).filter(|v| !v.trim().is_empty()) {
                    found = Some(check_endpoint(&url, var)?);
                    break;
                }
            }
            found
        };
        Ok(Settings {
            filter,
            format: args.log_format.unwrap_or_default(),
            endpoint,
            export_delay: EXPORT_DELAY,
        })
    }

    /// For app processes: their daemon ends them with SIGKILL, which leaves no time to
    /// flush, so their spans leave within [`SHORT_EXPORT_DELAY`] of ending instead.
    pub fn short_lived(mut self) -> Settings {
        self.export_delay = SHORT_EXPORT_DELAY;
        self
    }
}

/// An OTLP/gRPC endpoint must be an absolute `http://` or `https://` URL with a host.
fn check_endpoint(url: &str, source: &str) -> Result<String, UserError> {
    let bad = |why: &str| {
        UserError::new(format!(
            "{source} {url:?}: {why}; pass the collector's OTLP/gRPC address as a URL, e.g. http://127.0.0.1:4317"
        ))
    };
    let uri: http::Uri = url.trim().parse().map_err(|_| bad("not a URL"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        Some(other) => return Err(bad(&format!("scheme {other:?} is not http or https"))),
        None => return Err(bad("it has no scheme")),
    }
    match uri.host() {
        Some(host) if !host.is_empty() => Ok(url.trim().to_string()),
        _ => Err(bad("it has no host")),
    }
}

/// The installed provider, for [`flush`].
static PROVIDER: std::sync::OnceLock<SdkTracerProvider> = std::sync::OnceLock::new();

/// Sends the spans finished so far now, waiting up to the export timeout. For an app
/// process after each task: its daemon kills it with SIGKILL when the run ends, with no
/// time to flush at exit. Nothing when tracing is off.
pub async fn flush() {
    if let Some(provider) = PROVIDER.get() {
        let provider = provider.clone();
        let flushed = tokio::task::spawn_blocking(move || provider.force_flush()).await;
        if let Ok(Err(e)) = flushed {
            tracing::debug!("trace flush failed: {e}");
        }
    }
}

/// Installed logging and tracing; dropping it sends the spans still queued (for at most
/// [`SHUTDOWN_TIMEOUT`]). Keep it alive for the life of the program, inside the runtime.
#[must_use = "dropping it stops tracing"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn tracing(&self) -> bool {
        self.provider.is_some()
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        // A collector that refused the last batch would only make exit wait through the
        // exporter's retries: give the last spans a moment, not the full timeout.
        let timeout = if export::collector_down() {
            SHUTDOWN_TIMEOUT_COLLECTOR_DOWN
        } else {
            SHUTDOWN_TIMEOUT
        };
        if let Some(provider) = self.provider.take()
            && let Err(e) = provider.shutdown_with_timeout(timeout)
        {
            tracing::debug!("trace export did not finish: {e}");
        }
        let dropped =
            SPANS_DROPPED.load(std::sync::atomic::Ordering::Relaxed) + export::lost_in_queue();
        if dropped > 0 {
            tracing::warn!(
                dropped,
                "spans were lost: the OTLP collector could not be reached or refused them"
            );
        }
    }
}

/// Installs the subscriber for `service` (`flower-superlink`, `flwr`, ...). Must run
/// inside a tokio runtime when tracing is on (the exporter's channel lives there).
/// `attributes` are added to the OpenTelemetry resource.
pub fn install(
    service: &str,
    settings: &Settings,
    attributes: Vec<KeyValue>,
) -> Result<Telemetry, UserError> {
    use std::io::IsTerminal;
    let filter = EnvFilter::try_new(&settings.filter)
        .map_err(|e| UserError::new(format!("--log-level {:?}: {e}", settings.filter)))?;
    let provider = match &settings.endpoint {
        Some(endpoint) => Some(provider(
            service,
            endpoint,
            settings.export_delay,
            attributes,
        )?),
        None => None,
    };
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("floret"))
            .with_tracked_inactivity(false)
            // Its own filter, not --log-level's: a quiet log (`flwr` logs at warn) must
            // not empty the trace. Spans at info and up, events (span events in the
            // trace) at warn and up; ractor wraps every actor's life in a span of its
            // own, roots of no run's trace, only noise in the collector.
            .with_filter(tracing_subscriber::filter::filter_fn(|meta| {
                let wanted = if meta.is_span() {
                    tracing::Level::INFO
                } else {
                    tracing::Level::WARN
                };
                *meta.level() <= wanted && !meta.target().starts_with("ractor")
            }))
    });
    let ansi = std::io::stderr().is_terminal();
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi && settings.format == LogFormat::Text);
    let registry = tracing_subscriber::registry().with(otel);
    let traced = provider.is_some();
    if let Some(provider) = &provider {
        floret_core::trace_context::enable();
        let _ = PROVIDER.set(provider.clone());
    }
    let installed = match settings.format {
        LogFormat::Text => registry
            .with(
                fmt.event_format(log_format::WithTraceId::text(traced))
                    .with_filter(filter),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(
                fmt.json()
                    .event_format(log_format::WithTraceId::json(traced))
                    .with_filter(filter),
            )
            .try_init(),
    };
    // Already installed (a test harness, or a second call): keep the first one.
    if installed.is_err() {
        tracing::debug!("a tracing subscriber was already installed");
    }
    if let Some(endpoint) = &settings.endpoint {
        tracing::info!(endpoint, "exporting traces over OTLP/gRPC");
    }
    Ok(Telemetry { provider })
}

fn provider(
    service: &str,
    endpoint: &str,
    export_delay: Duration,
    attributes: Vec<KeyValue>,
) -> Result<SdkTracerProvider, UserError> {
    let mut builder = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .with_timeout(EXPORT_TIMEOUT)
        // Two quick retries ride out a collector's hiccup; the exporter's default (three,
        // up to 1.6 s apart) mostly made a command wait at exit for a collector that is
        // not there.
        .with_retry_policy(
            opentelemetry_otlp::RetryPolicy::default()
                .with_max_retries(2)
                .with_initial_delay(Duration::from_millis(50))
                .with_max_delay(Duration::from_millis(200))
                .with_max_jitter(Duration::from_millis(20)),
        );
    if endpoint.starts_with("https://") {
        // A collector behind TLS, e.g. a vendor's endpoint: trust the public web roots.
        builder = builder.with_tls_config(
            opentelemetry_otlp::tonic_types::transport::ClientTlsConfig::new().with_webpki_roots(),
        );
    }
    let exporter = builder
        .build()
        .map_err(|e| {
            UserError::new(format!(
                "cannot export traces to {endpoint:?}: {e}; pass the collector's OTLP/gRPC address, e.g. http://127.0.0.1:4317"
            ))
        })?;
    let batches = BatchSpanProcessor::builder(CountingExporter::new(exporter))
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_max_queue_size(QUEUE_SPANS)
                .with_scheduled_delay(export_delay)
                .build(),
        )
        .build();
    let processor = CountingProcessor::new(batches);
    let mut resource = Resource::builder();
    // OTEL_SERVICE_NAME (or service.name in OTEL_RESOURCE_ATTRIBUTES) wins over ours.
    let named_by_env = std::env::var("OTEL_SERVICE_NAME").is_ok_and(|v| !v.is_empty())
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|v| v.contains("service.name="));
    if !named_by_env {
        resource = resource.with_service_name(service.to_string());
    }
    let resource = resource
        .with_attributes(attributes)
        .with_attribute(KeyValue::new(
            "service.instance.id",
            format!("{}:{}", hostname(), std::process::id()),
        ))
        .build();
    Ok(SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(resource)
        .build())
}

/// The machine's name, for `service.instance.id`: two SuperNodes on two hosts must differ.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(args: TelemetryArgs, env: &[(&str, &str)]) -> Result<Settings, UserError> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::resolve(
            &args,
            |k| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()),
            "info",
        )
    }

    #[test]
    fn tracing_is_off_unless_an_endpoint_is_given() {
        let s = resolve(TelemetryArgs::default(), &[]).unwrap();
        assert_eq!(s.endpoint, None);
        assert_eq!(s.filter, "info");
        assert_eq!(s.format, LogFormat::Text);
    }

    #[test]
    fn the_flag_wins_over_the_standard_variables_and_traces_wins_over_generic() {
        let env = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://a:4317"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://b:4317"),
        ];
        let s = resolve(TelemetryArgs::default(), &env).unwrap();
        assert_eq!(s.endpoint.as_deref(), Some("http://b:4317"));
        let args = TelemetryArgs {
            otlp_endpoint: Some("https://c:4317".into()),
            ..TelemetryArgs::default()
        };
        assert_eq!(
            resolve(args, &env).unwrap().endpoint.as_deref(),
            Some("https://c:4317")
        );
        let off = resolve(
            TelemetryArgs::default(),
            &[env[0], ("OTEL_SDK_DISABLED", "true")],
        )
        .unwrap();
        assert_eq!(off.endpoint, None);
    }

    #[test]
    fn a_malformed_endpoint_names_its_source_and_the_fix() {
        for (url, why) in [
            ("127.0.0.1:4317", "scheme"),
            ("localhost", "no scheme"),
            ("ftp://h:1", "not http or https"),
            ("http://", "not a URL"),
            ("http://exa mple:1", "not a URL"),
        ] {
            let args = TelemetryArgs {
                otlp_endpoint: Some(url.into()),
                ..TelemetryArgs::default()
            };
            let e = resolve(args, &[]).unwrap_err().to_string();
            assert!(e.starts_with("--otlp-endpoint"), "{e}");
            assert!(e.contains("http://127.0.0.1:4317"), "{e}");
            assert!(e.contains(why), "{url}: {e}");
        }
        let e = resolve(
            TelemetryArgs::default(),
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", "nonsense")],
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("OTEL_EXPORTER_OTLP_ENDPOINT"), "{e}");
    }

    /// TLS collectors work: the exporter builds its TLS channel (connecting lazily, so
    /// nothing is contacted here) instead of refusing the scheme.
    #[tokio::test]
    async fn an_https_collector_gets_a_tls_channel() {
        let provider = provider("flwr", "https://127.0.0.1:1", EXPORT_DELAY, Vec::new());
        assert!(provider.is_ok(), "{:?}", provider.err());
    }

    #[test]
    fn log_level_takes_a_filter_and_refuses_garbage() {
        let args = |l: &str| TelemetryArgs {
            log_level: Some(l.into()),
            ..TelemetryArgs::default()
        };
        assert_eq!(resolve(args("debug"), &[]).unwrap().filter, "debug");
        assert_eq!(
            resolve(args("warn,floret_actors=debug"), &[])
                .unwrap()
                .filter,
            "warn,floret_actors=debug"
        );
        let e = resolve(args("loud=="), &[]).unwrap_err().to_string();
        assert!(e.starts_with("--log-level"), "{e}");
        // RUST_LOG applies without the flag; a bad one falls back to the default.
        assert_eq!(
            resolve(TelemetryArgs::default(), &[("RUST_LOG", "trace")])
                .unwrap()
                .filter,
            "trace"
        );
        assert_eq!(
            resolve(TelemetryArgs::default(), &[("RUST_LOG", "x==")])
                .unwrap()
                .filter,
            "info"
        );
    }
}
