//! A TCP proxy on 127.0.0.1 that drops every connection once, after a given number of bytes
//! have gone from the server to the client, then forwards new connections untouched: a link
//! that breaks in the middle of a transfer and comes back.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub(crate) struct CutProxy {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

struct Shared {
    upstream: SocketAddr,
    limit: usize,
    downstream_bytes: AtomicUsize,
    cut: Arc<AtomicBool>,
    kill: watch::Sender<bool>,
}

impl CutProxy {
    pub(crate) async fn start(upstream: SocketAddr, cut_after: usize) -> CutProxy {
        let listener = TcpListener::bind(super::localhost()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Shared {
            upstream,
            limit: cut_after,
            downstream_bytes: AtomicUsize::new(0),
            cut: cut.clone(),
            kill: watch::channel(false).0,
        });
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(connection(shared.clone(), client));
            }
        });
        CutProxy { addr, cut, task }
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub(crate) fn was_cut(&self) -> bool {
        self.cut.load(Ordering::SeqCst)
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn connection(shared: Arc<Shared>, client: TcpStream) {
    let Ok(server) = TcpStream::connect(shared.upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    // Connections opened after the cut are never cut.
    let limited = !shared.cut.load(Ordering::SeqCst);
    let mut kill = shared.kill.subscribe();
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let up = async {
        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
    };
    let down = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match server_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let mut n_ok = n;
            if limited && !shared.cut.load(Ordering::SeqCst) {
                let before = shared.downstream_bytes.fetch_add(n, Ordering::SeqCst);
                if before + n >= shared.limit {
                    n_ok = shared.limit.saturating_sub(before);
                    let _ = client_write.write_all(&buf[..n_ok]).await;
                    shared.cut.store(true, Ordering::SeqCst);
                    shared.kill.send_replace(true);
                    return;
                }
            }
            if client_write.write_all(&buf[..n_ok]).await.is_err() {
                return;
            }
        }
    };
    let killed = async {
        if limited {
            let _ = kill.wait_for(|&k| k).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        () = up => {}
        () = down => {}
        () = killed => {}
    }
}
