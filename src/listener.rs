//! The accept loop: a cap on open connections, a deadline for the HTTP/2
//! handshake, and a back-off when `accept` fails for want of resources.
//!
//! - At most [`ListenerConfig::max_connections`] connections are open at
//!   once; while the cap is reached, new ones wait in the kernel's backlog.
//! - A connection whose client has not sent the HTTP/2 preface and the
//!   header of its first frame within [`ListenerConfig::handshake_timeout`]
//!   is closed, so that connections that never finish their handshake
//!   cannot pile up.
//! - When `accept` fails because the process or the system is out of file
//!   descriptors or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM), the loop
//!   sleeps, 10 ms at first and up to 1 s, instead of spinning; other
//!   errors concern one connection only and are skipped.
//!
//! ```no_run
//! use errmap::listener::{self, ListenerConfig};
//!
//! # #[tokio::main]
//! # async fn main() -> std::io::Result<()> {
//! let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let incoming = listener::incoming(tcp, ListenerConfig::default());
//! tonic::transport::Server::builder()
//!     .add_service(errmap::service::CatalogService::new().into_server())
//!     .serve_with_incoming(incoming)
//!     .await
//!     .unwrap();
//! # Ok(())
//! # }
//! ```

use std::{
    future::Future as _,
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{mpsc, OwnedSemaphorePermit, Semaphore},
    task::JoinHandle,
    time::Sleep,
};
use tonic::{codegen::tokio_stream::Stream, transport::server::Connected};

use crate::tls::{PeerIdentity, PeerInfo, TlsConfig};

/// Bytes a client sends before its handshake counts as done: the 24-byte
/// HTTP/2 preface and the 9-byte header of its SETTINGS frame.
const HANDSHAKE_BYTES: usize = 24 + 9;

/// The accept loop's settings. `Default` gives the values `errmap serve`
/// starts with.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ListenerConfig {
    /// Connections open at once. Default 1024.
    pub max_connections: usize,
    /// How long a client may take to finish the TLS handshake, and then
    /// again to send the HTTP/2 preface. Default 5 s.
    pub handshake_timeout: Duration,
    /// TLS, or plaintext when `None` (the default).
    pub tls: Option<TlsConfig>,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            handshake_timeout: Duration::from_secs(5),
            tls: None,
        }
    }
}

/// The stream of accepted connections made by [`incoming`]. Dropping it
/// stops accepting and closes the listening socket.
#[derive(Debug)]
pub struct Incoming {
    connections: mpsc::Receiver<io::Result<Connection>>,
    task: JoinHandle<()>,
    open: Arc<Semaphore>,
    max: usize,
}

impl Incoming {
    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.max - self.open.available_permits()
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Stream for Incoming {
    type Item = io::Result<Connection>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.connections.poll_recv(cx)
    }
}

/// Accepts connections from `listener` under `config`'s limits.
pub fn incoming(listener: TcpListener, config: ListenerConfig) -> Incoming {
    let max = config.max_connections.clamp(1, Semaphore::MAX_PERMITS);
    let open = Arc::new(Semaphore::new(max));
    let (tx, rx) = mpsc::channel(1);
    let task = tokio::spawn(accept_loop(listener, config, open.clone(), tx));
    Incoming {
        connections: rx,
        task,
        open,
        max,
    }
}

/// Whether an `accept` error means the process or system is out of
/// resources, so that retrying at once would spin.
fn is_resource_error(error: &io::Error) -> bool {
    error
        .raw_os_error()
        .is_some_and(|errno| RESOURCE_ERRNOS.contains(&errno))
}

/// EMFILE, ENFILE, ENOBUFS, ENOMEM on Linux and the BSDs alike.
#[cfg(target_os = "linux")]
const RESOURCE_ERRNOS: &[i32] = &[24, 23, 105, 12];
#[cfg(not(target_os = "linux"))]
const RESOURCE_ERRNOS: &[i32] = &[24, 23, 55, 12];

async fn accept_loop(
    listener: TcpListener,
    config: ListenerConfig,
    open: Arc<Semaphore>,
    tx: mpsc::Sender<io::Result<Connection>>,
) {
    let mut backoff = Duration::from_millis(10);
    let mut warned_full = false;
    loop {
        let permit = match open.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                if !warned_full {
                    tracing::warn!(
                        max_connections = config.max_connections,
                        "connection cap reached; new connections wait"
                    );
                    warned_full = true;
                }
                match open.clone().acquire_owned().await {
                    Ok(permit) => permit,
                    Err(_) => return,
                }
            }
        };
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => {
                backoff = Duration::from_millis(10);
                warned_full = false;
                accepted
            }
            Err(error) if is_resource_error(&error) => {
                tracing::warn!(%error, backoff_ms = backoff.as_millis() as u64, "accept failed; backing off");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
            Err(error) => {
                tracing::debug!(%error, "accept failed for one connection");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let Some(tls) = &config.tls else {
            let connection = Connection::new(Io::Tcp(stream), None, &config, permit);
            if tx.send(Ok(connection)).await.is_err() {
                return;
            }
            continue;
        };
        // The TLS handshake runs on its own task, so that a slow client
        // does not hold up the accept loop; it has the handshake deadline.
        let acceptor = tls.acceptor();
        let tx = tx.clone();
        let config = config.clone();
        tokio::spawn(async move {
            let handshake =
                tokio::time::timeout(config.handshake_timeout, acceptor.accept(stream)).await;
            let stream = match handshake {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => {
                    tracing::debug!(%error, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!("TLS handshake not finished in time; closing");
                    return;
                }
            };
            let identity = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|certs| certs.first())
                .and_then(|cert| PeerIdentity::from_der(&cert.clone().into_owned()))
                .map(Arc::new);
            let connection = Connection::new(Io::Tls(Box::new(stream)), identity, &config, permit);
            let _ = tx.send(Ok(connection)).await;
        });
    }
}

/// The stream under a [`Connection`].
#[derive(Debug)]
enum Io {
    Tcp(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl Io {
    fn tcp(&self) -> &TcpStream {
        match self {
            Io::Tcp(tcp) => tcp,
            Io::Tls(tls) => tls.get_ref().0,
        }
    }
}

/// An accepted connection (TCP, or TLS over TCP) that holds its place
/// under the connection cap, and fails its reads once the handshake
/// deadline passes before the client sent its HTTP/2 preface.
#[derive(Debug)]
pub struct Connection {
    stream: Io,
    identity: Option<Arc<PeerIdentity>>,
    read: usize,
    handshake: Option<Pin<Box<Sleep>>>,
    _permit: OwnedSemaphorePermit,
}

impl Connection {
    fn new(
        stream: Io,
        identity: Option<Arc<PeerIdentity>>,
        config: &ListenerConfig,
        permit: OwnedSemaphorePermit,
    ) -> Self {
        Self {
            stream,
            identity,
            read: 0,
            handshake: Some(Box::pin(tokio::time::sleep(config.handshake_timeout))),
            _permit: permit,
        }
    }
}

impl Connected for Connection {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        PeerInfo {
            tcp: self.stream.tcp().connect_info(),
            identity: self.identity.clone(),
        }
    }
}

macro_rules! on_stream {
    ($self:expr, $s:ident => $e:expr) => {
        match &mut $self.stream {
            Io::Tcp($s) => {
                let $s = Pin::new($s);
                $e
            }
            Io::Tls($s) => {
                let $s = Pin::new(&mut **$s);
                $e
            }
        }
    };
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        let polled = on_stream!(this, s => s.poll_read(cx, buf));
        if let Some(deadline) = this.handshake.as_mut() {
            if let Poll::Ready(Ok(())) = polled {
                this.read += buf.filled().len() - before;
                if this.read >= HANDSHAKE_BYTES {
                    this.handshake = None;
                    return polled;
                }
            }
            if deadline.as_mut().poll(cx).is_ready() {
                tracing::debug!("HTTP/2 handshake not finished in time; closing");
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "HTTP/2 handshake timeout",
                )));
            }
        }
        polled
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        on_stream!(self, s => s.poll_write(cx, buf))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        on_stream!(self, s => s.poll_flush(cx))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        on_stream!(self, s => s.poll_shutdown(cx))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        on_stream!(self, s => s.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match &self.stream {
            Io::Tcp(tcp) => tcp.is_write_vectored(),
            Io::Tls(tls) => tls.is_write_vectored(),
        }
    }
}
