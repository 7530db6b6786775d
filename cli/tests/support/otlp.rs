//! An OTLP receiver on loopback for trace tests (`fake-opentelemetry-collector`), and the
//! span tree the processes sent to it.

use fake_opentelemetry_collector::{ExportedSpan, FakeCollectorServer};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The receiver and the runtime it serves on, for synchronous tests. A task takes every
/// span as it arrives: the receiver holds only 64 before it stops answering exports, which
/// would stall a process flushing hundreds at exit.
pub(crate) struct Collector {
    _runtime: tokio::runtime::Runtime,
    endpoint: String,
    received: Arc<Mutex<Vec<ExportedSpan>>>,
}

impl Collector {
    pub(crate) fn start() -> Collector {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let mut server = runtime.block_on(FakeCollectorServer::start()).unwrap();
        let endpoint = server.endpoint();
        let received = Arc::new(Mutex::new(Vec::new()));
        let sink = received.clone();
        runtime.spawn(async move {
            loop {
                let batch = server.exported_spans(1, Duration::from_millis(200)).await;
                sink.lock().unwrap().extend(batch);
            }
        });
        Collector {
            _runtime: runtime,
            endpoint,
            received,
        }
    }

    /// `http://127.0.0.1:PORT`, for `--otlp-endpoint`.
    pub(crate) fn endpoint(&self) -> String {
        self.endpoint.clone()
    }

    /// Every span received, once none has come for 3 s (stop the processes first: a
    /// clean stop sends what they still queue).
    pub(crate) fn spans(&mut self) -> Spans {
        let mut seen = usize::MAX;
        loop {
            let now = self.received.lock().unwrap().len();
            if now == seen {
                return Spans {
                    all: std::mem::take(&mut *self.received.lock().unwrap()),
                };
            }
            seen = now;
            std::thread::sleep(Duration::from_secs(3));
        }
    }
}

/// The spans of a test, from every process.
pub(crate) struct Spans {
    pub all: Vec<ExportedSpan>,
}

impl Spans {
    pub(crate) fn named<'a>(
        &'a self,
        name: &'a str,
    ) -> impl Iterator<Item = &'a ExportedSpan> + 'a {
        self.all.iter().filter(move |s| s.name == name)
    }

    pub(crate) fn by_id(&self, span_id: &str) -> Option<&ExportedSpan> {
        self.all.iter().find(|s| s.span_id == span_id)
    }

    pub(crate) fn parent(&self, span: &ExportedSpan) -> Option<&ExportedSpan> {
        self.by_id(&span.parent_span_id)
    }

    /// The names from `span` up to its root, as far as the received spans reach.
    pub(crate) fn ancestry<'a>(&'a self, span: &'a ExportedSpan) -> Vec<&'a str> {
        let mut names = vec![span.name.as_str()];
        let mut at = span;
        while let Some(parent) = self.parent(at) {
            names.push(parent.name.as_str());
            at = parent;
        }
        names
    }

    /// Names of every span received, for failure messages.
    pub(crate) fn names(&self) -> Vec<&str> {
        self.all.iter().map(|s| s.name.as_str()).collect()
    }
}

/// The value of attribute `key`: the receiver shows each as the Debug text of an OTLP
/// `AnyValue` (`Some(AnyValue { value: Some(IntValue(1)) })`); this takes out `1`.
pub(crate) fn attr(span: &ExportedSpan, key: &str) -> Option<String> {
    let raw = span.attributes.get(key)?;
    let inner = raw.split_once("Value(")?.1;
    let inner = inner.split(')').next()?;
    Some(inner.trim_matches('"').to_string())
}
