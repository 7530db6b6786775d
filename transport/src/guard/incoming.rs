//! The gRPC servers' accept loop and the connection wrapper that closes silent and idle
//! connections.

use super::{ConnInfo, ConnState, Slot, Tracker};
use crate::limits::{Closed, Verdict, accept_backoff};
use futures_util::{Stream, StreamExt};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};
use tonic::transport::server::Connected;

/// The connections `listener` accepts, within the caps of `tracker`, once they have sent
/// something: a connection over a cap is closed at once (and logged); one that sends
/// nothing within the handshake timeout is closed without ever reaching HTTP/2 (TLS or
/// hyper), so that a flood of silent connections costs a parked task each rather than
/// their buffers; a failed accept (no file descriptors left, say) waits
/// [`accept_backoff`] before the next try instead of spinning. Dropping the stream stops
/// accepting and closes the listener.
pub(crate) fn incoming(
    listener: TcpListener,
    tracker: Arc<Tracker>,
) -> impl Stream<Item = Result<GuardedIo, io::Error>> + Send + 'static {
    let (ready, connections) = tokio::sync::mpsc::channel(1024);
    tokio::spawn(accept(listener, tracker, ready));
    tokio_stream::wrappers::ReceiverStream::new(connections).map(Ok)
}

/// Accepts until `ready`'s receiver (the server) is gone, handing over each connection
/// once it is readable.
async fn accept(
    listener: TcpListener,
    tracker: Arc<Tracker>,
    ready: tokio::sync::mpsc::Sender<GuardedIo>,
) {
    let mut failures = 0u32;
    loop {
        let accepted = tokio::select! {
            () = ready.closed() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                failures = 0;
                let slot = match tracker.admit(peer) {
                    Ok(slot) => slot,
                    Err(refused) => {
                        tracker.warn(&refused);
                        continue;
                    }
                };
                let (tracker, ready) = (tracker.clone(), ready.clone());
                tokio::spawn(async move {
                    let wait = tracker.limits().handshake_timeout;
                    match tokio::time::timeout(wait, stream.readable()).await {
                        Ok(Ok(())) => {
                            let io = GuardedIo::new(stream, peer, slot, tracker);
                            let _ = ready.send(io).await;
                        }
                        Ok(Err(_)) => {}
                        Err(_) => tracker.warn(&format_args!("{peer}: {}", Closed::Silent(wait))),
                    }
                });
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                let wait = accept_backoff(failures);
                tracker.warn(&format_args!(
                    "accepting a connection failed: {e}; trying again in {wait:?} (raise the open-file limit, `ulimit -n`, or lower --max-connections)"
                ));
                tokio::select! {
                    () = ready.closed() => return,
                    () = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}

/// A TCP connection that closes itself (reads fail) when
/// [`ServerLimits::connection_verdict`](crate::limits::ServerLimits::connection_verdict)
/// says so. HTTP/2 always has a read pending on its connection, so the check runs on time.
pub(crate) struct GuardedIo {
    stream: TcpStream,
    info: ConnInfo,
    /// When to ask for the verdict again.
    check: Pin<Box<Sleep>>,
    tracker: Arc<Tracker>,
    /// Counts the connection until it is dropped.
    _slot: Slot,
}

impl GuardedIo {
    fn new(
        stream: TcpStream,
        peer: std::net::SocketAddr,
        slot: Slot,
        tracker: Arc<Tracker>,
    ) -> Self {
        let _ = stream.set_nodelay(true);
        // Finds peers that vanished without a FIN (HTTP/2 pings do too, once it is up).
        let _ = socket2::SockRef::from(&stream)
            .set_tcp_keepalive(&socket2::TcpKeepalive::new().with_time(Duration::from_secs(60)));
        let state = ConnState::new();
        // The first check comes at whichever timeout can end it first; each check arms the
        // next (a connection may outlive its idle timeout by up to one idle timeout).
        let limits = tracker.limits();
        let first = state.at(limits.handshake_timeout.min(limits.idle_timeout));
        GuardedIo {
            stream,
            info: ConnInfo {
                remote: peer,
                state,
                quic: false,
            },
            check: Box::pin(tokio::time::sleep_until(first)),
            tracker,
            _slot: slot,
        }
    }

    /// `Err` once the connection must close; else arms the timer for the next check.
    fn poll_verdict(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        while self.check.as_mut().poll(cx).is_ready() {
            let state = &self.info.state;
            match self
                .tracker
                .limits()
                .connection_verdict(&state.activity(Instant::now()))
            {
                Verdict::Keep { recheck_at } => {
                    let at = state.at(recheck_at);
                    self.check.as_mut().reset(at);
                }
                Verdict::Close(why) => {
                    self.tracker
                        .warn(&format_args!("{}: {why}", self.info.remote));
                    return Err(io::Error::new(io::ErrorKind::TimedOut, why.to_string()));
                }
            }
        }
        Ok(())
    }
}

impl Connected for GuardedIo {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}

impl AsyncRead for GuardedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        this.poll_verdict(cx)?;
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.info.state.received();
        }
        polled
    }
}

impl AsyncWrite for GuardedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
