//! The accept loop and the connections it hands out: a cap on open
//! connections with eviction of the idlest, one deadline for a client's
//! first request head, a progress deadline on writes, and a back-off when
//! `accept` fails for want of resources.
//!
//! - At most [`ListenerConfig::max_connections`] connections are open at
//!   once. When the cap is reached, the connection that has been idle
//!   longest (no call in flight) is asked to close, with GOAWAY on HTTP/2
//!   and a close on HTTP/1.1, and the newcomer takes its place. A
//!   connection with a call in flight is not evicted, unless its peer has
//!   read nothing for [`STALLED_IS_IDLE_AFTER`] while the server had bytes
//!   queued for it: such a call waits for the peer, not the peer for it.
//!   When no connection can yield, newcomers wait.
//! - A connection whose client has not sent its first request head within
//!   [`ListenerConfig::handshake_timeout`] is closed: for HTTP/2 the
//!   preface and the header of its first frame, for HTTP/1.1 the whole
//!   head up to its empty line. So connections that never finish their
//!   first request cannot pile up, however slowly they trickle bytes.
//! - A write that makes no progress for [`ListenerConfig::write_timeout`]
//!   (the peer does not read while the server has bytes queued) fails, and
//!   the connection closes.
//! - When `accept` fails because the process or the system is out of file
//!   descriptors or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM), the loop
//!   sleeps, 10 ms at first and up to 1 s, instead of spinning; other
//!   errors concern one connection only and are skipped.
//!
//! The connections are served by [`crate::connections`].
//!
//! ```no_run
//! use errmap_server::listener::{self, ListenerConfig};
//!
//! # #[tokio::main]
//! # async fn main() -> std::io::Result<()> {
//! let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let incoming = listener::incoming(tcp, ListenerConfig::default());
//! tonic::transport::Server::builder()
//!     .add_service(errmap_server::service::CatalogService::new().into_server())
//!     .serve_with_incoming(incoming)
//!     .await
//!     .unwrap();
//! # Ok(())
//! # }
//! ```

use std::{
    collections::HashMap,
    future::Future as _,
    io,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{mpsc, Notify, OwnedSemaphorePermit, Semaphore},
    task::JoinHandle,
    time::Sleep,
};
use tonic::{codegen::tokio_stream::Stream, transport::server::Connected};

use crate::{
    sanitize::RateLimit,
    tls::{PeerIdentity, PeerInfo, TlsConfig},
};

/// Bytes a connection may read in one turn: past them it yields to the
/// other tasks (and reads on at its next turn). A peer that sends as fast
/// as it can, thousands of 15 KB heads, cannot hold a worker thread for
/// longer than this much of its input takes to process.
pub const READ_PER_TURN: usize = 64 * 1024;

/// The HTTP/2 client preface.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Bytes an HTTP/2 client sends before its first request counts as begun:
/// the 24-byte preface and the 9-byte header of its SETTINGS frame.
const H2_HANDSHAKE_BYTES: usize = 24 + 9;

/// The accept loop's settings. `Default` gives the values `errmap serve`
/// starts with.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ListenerConfig {
    /// Connections open at once; at the cap, the idlest yields to a
    /// newcomer. Default 1024.
    pub max_connections: usize,
    /// How long a client may take to finish the TLS handshake, and then
    /// again to send its first request head (the HTTP/2 preface, or a whole
    /// HTTP/1.1 head). Default 5 s.
    pub handshake_timeout: Duration,
    /// How long a write may make no progress (the peer reads nothing while
    /// bytes are queued) before the connection is closed. Default 10 s.
    pub write_timeout: Duration,
    /// The whole answer sent, in place of hyper's empty one, to an HTTP/1.1
    /// request whose head is over the header budget (`431`, then close).
    /// Default: a `431` with the catalog's 40 in the legacy JSON body.
    pub oversized_head_response: Bytes,
    /// TLS, or plaintext when `None` (the default).
    pub tls: Option<TlsConfig>,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            handshake_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(10),
            oversized_head_response: oversized_head_response(
                "application/json",
                br#"{"v":"1","error":{"message":"One or more params are missing or invalid; read about the requested method and its params.","code":40,"status":"API_INVALID_REQUEST"}}"#,
            ),
            tls: None,
        }
    }
}

/// A whole HTTP/1.1 `431 Request Header Fields Too Large` answer with
/// `body`, that closes the connection.
pub fn oversized_head_response(content_type: &str, body: &[u8]) -> Bytes {
    let mut out = format!(
        "HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    Bytes::from(out)
}

/// How hyper's own answer to an oversized HTTP/1.1 head begins; the
/// connection sends [`ListenerConfig::oversized_head_response`] instead.
const HYPER_431: &[u8] = b"HTTP/1.1 431 ";

/// What the listener knows of one connection: its calls in flight, since
/// when it has been idle, and whether it was asked to yield. The serving
/// side ([`crate::connections`]) counts the calls and obeys the request.
#[derive(Debug)]
pub struct ConnectionState {
    id: u64,
    in_flight: AtomicUsize,
    /// Milliseconds since the table's epoch when the last call ended (or
    /// the connection was accepted).
    idle_since: AtomicU64,
    /// Milliseconds since the epoch (plus one) when a write began to wait
    /// for the peer to read; 0 while writes make progress.
    stalled_since: AtomicU64,
    evicted: AtomicBool,
    evict: Notify,
    epoch: Instant,
    /// Reads that brought bytes, so far.
    reads: AtomicU64,
    /// `reads` when the last HTTP/1.1 request was taken, and how many
    /// requests in a row were taken with no read between them (pipelined).
    last_reads: AtomicU64,
    pipelined: AtomicU64,
    /// The connection's place under the cap: handed to the newcomer when
    /// the connection is evicted, so that the newcomer need not wait for
    /// it to finish closing.
    place: Mutex<Option<OwnedSemaphorePermit>>,
}

/// How long a connection's writes must have waited for its peer before it
/// counts as idle, whatever its calls: a peer that reads nothing holds no
/// call that it is waiting for.
pub const STALLED_IS_IDLE_AFTER: Duration = Duration::from_secs(1);

impl ConnectionState {
    /// The state of a connection no listener accepted: calls made
    /// in-process through a server's per-call path ([`crate::measure`]).
    pub(crate) fn detached() -> Arc<Self> {
        Arc::new(Self {
            id: 0,
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            stalled_since: AtomicU64::new(0),
            evicted: AtomicBool::new(false),
            evict: Notify::new(),
            epoch: Instant::now(),
            place: Mutex::new(None),
            reads: AtomicU64::new(0),
            last_reads: AtomicU64::new(0),
            pipelined: AtomicU64::new(0),
        })
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Since when (in the table's milliseconds) this connection has been
    /// evictable, if it is: no call in flight, or writes that waited for
    /// the peer for [`STALLED_IS_IDLE_AFTER`].
    fn evictable_since(&self, now: u64) -> Option<u64> {
        if self.evicted.load(Ordering::Acquire) {
            return None;
        }
        let stalled = self.stalled_since.load(Ordering::Acquire);
        if stalled != 0
            && now.saturating_sub(stalled - 1) >= STALLED_IS_IDLE_AFTER.as_millis() as u64
        {
            return Some(stalled - 1);
        }
        (self.in_flight() == 0).then(|| self.idle_since.load(Ordering::Acquire))
    }

    /// A call begins on this connection.
    pub fn call_started(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
    }

    /// A call on this connection ended (its answer was sent or dropped).
    pub fn call_ended(&self) {
        if self.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle_since
                .store(self.epoch.elapsed().as_millis() as u64, Ordering::Release);
        }
    }

    /// An HTTP/1.1 request is taken: gives how many requests in a row
    /// (this one included) were taken with no new bytes read between them,
    /// that is pipelined behind an answer.
    pub fn http1_request_taken(&self) -> u64 {
        let reads = self.reads.load(Ordering::Acquire);
        if self.last_reads.swap(reads, Ordering::AcqRel) == reads {
            self.pipelined.fetch_add(1, Ordering::AcqRel) + 1
        } else {
            self.pipelined.store(0, Ordering::Release);
            0
        }
    }

    /// Calls in flight now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Completes once the listener asks this connection to yield its place.
    pub async fn evicted(&self) {
        loop {
            let notified = self.evict.notified();
            if self.evicted.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }
}

/// The open connections, for eviction.
#[derive(Debug)]
struct Table {
    epoch: Instant,
    next: AtomicU64,
    open: Mutex<HashMap<u64, Arc<ConnectionState>>>,
    evictions: AtomicU64,
}

impl Table {
    fn register(self: &Arc<Self>, place: OwnedSemaphorePermit) -> Registration {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(ConnectionState {
            id,
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(self.epoch.elapsed().as_millis() as u64),
            stalled_since: AtomicU64::new(0),
            evicted: AtomicBool::new(false),
            evict: Notify::new(),
            epoch: self.epoch,
            place: Mutex::new(Some(place)),
            reads: AtomicU64::new(0),
            last_reads: AtomicU64::new(0),
            pipelined: AtomicU64::new(0),
        });
        if let Ok(mut open) = self.open.lock() {
            open.insert(id, state.clone());
        }
        Registration {
            table: self.clone(),
            state,
        }
    }

    /// Asks the connection idle longest to yield, and takes its place under
    /// the cap for a newcomer; `None` when no open connection can yield.
    fn evict_idlest(&self) -> Option<OwnedSemaphorePermit> {
        let Ok(open) = self.open.lock() else {
            return None;
        };
        let now = self.epoch.elapsed().as_millis() as u64;
        let mut candidates: Vec<_> = open
            .values()
            .filter_map(|c| Some((c.evictable_since(now)?, c.id, c)))
            .collect();
        candidates.sort_unstable_by_key(|(since, id, _)| (*since, *id));
        for (_, _, state) in candidates {
            let place = state.place.lock().ok().and_then(|mut p| p.take());
            state.evicted.store(true, Ordering::Release);
            state.evict.notify_one();
            if let Some(place) = place {
                self.evictions.fetch_add(1, Ordering::Relaxed);
                return Some(place);
            }
        }
        None
    }
}

/// A connection's place in the table and under the cap, given back on drop.
#[derive(Debug)]
struct Registration {
    table: Arc<Table>,
    state: Arc<ConnectionState>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Ok(mut open) = self.table.open.lock() {
            open.remove(&self.state.id);
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
    table: Arc<Table>,
    max: usize,
}

impl Incoming {
    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.max - self.open.available_permits()
    }

    /// A cheap handle on how many places are taken, for whoever serves the
    /// connections.
    pub fn places(&self) -> Places {
        Places {
            open: self.open.clone(),
            max: self.max,
        }
    }

    /// Idle connections asked to yield to a newcomer so far.
    pub fn evictions(&self) -> u64 {
        self.table.evictions.load(Ordering::Relaxed)
    }

    /// Stops accepting (the listening socket closes) and gives what tells
    /// when every connection handed out has closed.
    pub fn stop(self) -> Closed {
        self.task.abort();
        Closed {
            open: self.open.clone(),
            max: self.max,
        }
    }
}

/// Made by [`Incoming::places`]: the connections open under the cap.
#[derive(Debug, Clone)]
pub struct Places {
    open: Arc<Semaphore>,
    max: usize,
}

impl Places {
    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.max - self.open.available_permits()
    }

    /// The cap.
    pub fn max_connections(&self) -> usize {
        self.max
    }
}

/// Made by [`Incoming::stop`]: waits for the open connections to close.
#[derive(Debug)]
pub struct Closed {
    open: Arc<Semaphore>,
    max: usize,
}

impl Closed {
    /// Completes once no connection is open.
    pub async fn all_closed(&self) {
        let _ = self.open.acquire_many(self.max as u32).await;
    }

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
    let max = config
        .max_connections
        .clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
    let open = Arc::new(Semaphore::new(max));
    let table = Arc::new(Table {
        epoch: Instant::now(),
        next: AtomicU64::new(0),
        open: Mutex::new(HashMap::new()),
        evictions: AtomicU64::new(0),
    });
    let (tx, rx) = mpsc::channel(1);
    let task = tokio::spawn(accept_loop(
        listener,
        config,
        open.clone(),
        table.clone(),
        tx,
    ));
    Incoming {
        connections: rx,
        task,
        open,
        table,
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

/// One line a second for the cap, with the count of what it stands for.
static CAP_LOG: RateLimit = RateLimit::new(1, Duration::from_secs(1));
/// One line a second for `accept` failing for want of resources.
static ACCEPT_LOG: RateLimit = RateLimit::new(1, Duration::from_secs(1));

/// Waits for a place under the cap, asking the idlest connection to yield
/// while there is none.
async fn place(open: &Arc<Semaphore>, table: &Table, max: usize) -> Option<OwnedSemaphorePermit> {
    if let Ok(permit) = open.clone().try_acquire_owned() {
        return Some(permit);
    }
    if let Some(suppressed) = CAP_LOG.check() {
        tracing::warn!(
            max_connections = max,
            since_last_line = suppressed,
            "connection cap reached; the idlest connection yields, or the newcomer waits"
        );
    }
    loop {
        // The evicted connection hands its place over at once, and closes
        // within its close deadline; with none to evict, look again soon.
        if let Some(place) = table.evict_idlest() {
            return Some(place);
        }
        match tokio::time::timeout(Duration::from_millis(100), open.clone().acquire_owned()).await {
            Ok(Ok(permit)) => return Some(permit),
            Ok(Err(_)) => return None,
            Err(_) => {}
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    config: ListenerConfig,
    open: Arc<Semaphore>,
    table: Arc<Table>,
    tx: mpsc::Sender<io::Result<Connection>>,
) {
    let mut backoff = Duration::from_millis(10);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => {
                backoff = Duration::from_millis(10);
                accepted
            }
            Err(error) if is_resource_error(&error) => {
                if let Some(suppressed) = ACCEPT_LOG.check() {
                    tracing::warn!(%error, backoff_ms = backoff.as_millis() as u64, since_last_line = suppressed, "accept failed; backing off");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
            Err(error) => {
                tracing::debug!(%error, "accept failed for one connection");
                continue;
            }
        };
        // The newcomer is held here, not in the backlog, while the idlest
        // connection yields its place.
        let Some(permit) = place(&open, &table, config.max_connections).await else {
            return;
        };
        let _ = stream.set_nodelay(true);
        limit_unsent(&stream);
        let registration = table.register(permit);
        let Some(tls) = &config.tls else {
            let connection = Connection::new(Io::Tcp(stream), None, &config, registration);
            if tx.send(Ok(connection)).await.is_err() {
                return;
            }
            continue;
        };
        // The TLS handshake runs on its own task, so that a slow client
        // does not hold up the accept loop; it has the handshake deadline,
        // and yields its place when evicted like an idle connection.
        let acceptor = tls.acceptor();
        let tx = tx.clone();
        let config = config.clone();
        tokio::spawn(async move {
            let state = registration.state.clone();
            let handshake = tokio::select! {
                handshake = tokio::time::timeout(config.handshake_timeout, acceptor.accept(stream)) => handshake,
                () = state.evicted() => return,
            };
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
            let connection =
                Connection::new(Io::Tls(Box::new(stream)), identity, &config, registration);
            let _ = tx.send(Ok(connection)).await;
        });
    }
}

/// Unsent bytes the kernel queues for one connection (`TCP_NOTSENT_LOWAT`):
/// beyond them a write waits. Without it, Linux grows a socket's send buffer
/// to megabytes, so a peer that pipelines requests and reads nothing gets
/// thousands of answers computed before its writes stall.
pub const MAX_UNSENT_BYTES: u32 = 16 * 1024;

#[cfg(target_os = "linux")]
fn limit_unsent(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_tcp_notsent_lowat(MAX_UNSENT_BYTES);
}

#[cfg(not(target_os = "linux"))]
fn limit_unsent(_: &TcpStream) {}

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

/// Which protocol the first bytes named, and how far the first request
/// head has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Head {
    /// Fewer bytes than tell HTTP/2 from HTTP/1.1.
    Unknown,
    /// HTTP/2: done after [`H2_HANDSHAKE_BYTES`].
    H2,
    /// HTTP/1.1: `matched` bytes of `\r\n\r\n` seen at the end so far.
    H1 { matched: u8 },
}

/// An accepted connection (TCP, or TLS over TCP) that holds its place
/// under the connection cap and in the table of open connections. Its
/// reads fail once the handshake deadline passes before the client sent
/// its first request head; its writes fail once one has made no progress
/// for the write timeout.
#[derive(Debug)]
pub struct Connection {
    stream: Io,
    identity: Option<Arc<PeerIdentity>>,
    read: usize,
    head: Head,
    /// Bytes read since the socket last had nothing to read, or since the
    /// connection last yielded.
    read_this_turn: usize,
    handshake: Option<Pin<Box<Sleep>>>,
    write_timeout: Duration,
    write_stalled: Option<Pin<Box<Sleep>>>,
    write_stalled_armed: bool,
    oversized_head_response: Bytes,
    /// The part of the oversized-head answer still to write, and the length
    /// of hyper's write it stands for.
    replacing: Option<(Bytes, usize)>,
    registration: Registration,
}

impl Connection {
    fn new(
        stream: Io,
        identity: Option<Arc<PeerIdentity>>,
        config: &ListenerConfig,
        registration: Registration,
    ) -> Self {
        Self {
            stream,
            identity,
            read: 0,
            head: Head::Unknown,
            read_this_turn: 0,
            handshake: Some(Box::pin(tokio::time::sleep(config.handshake_timeout))),
            write_timeout: config.write_timeout,
            write_stalled: None,
            write_stalled_armed: false,
            oversized_head_response: config.oversized_head_response.clone(),
            replacing: None,
            registration,
        }
    }

    /// The connection's state, shared with the listener: the serving side
    /// counts calls on it and closes the connection when it is evicted.
    pub fn state(&self) -> Arc<ConnectionState> {
        self.registration.state.clone()
    }

    /// What the server knows of the peer.
    pub fn peer_info(&self) -> PeerInfo {
        PeerInfo {
            tcp: self.stream.tcp().connect_info(),
            identity: self.identity.clone(),
        }
    }

    /// Follows the first request head through `bytes` (the next ones
    /// read); true once it is whole.
    fn first_head_done(&mut self, bytes: &[u8]) -> bool {
        head_done(&mut self.read, &mut self.head, bytes)
    }

    /// Whether this connection speaks HTTP/1.1 (known from its first
    /// bytes).
    fn is_http1(&self) -> bool {
        matches!(self.head, Head::H1 { .. })
    }

    /// Arms (once) and polls the write-progress deadline after a write
    /// that could not proceed.
    fn write_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let timeout = self.write_timeout;
        let sleep = self
            .write_stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if !self.write_stalled_armed {
            sleep.as_mut().reset(tokio::time::Instant::now() + timeout);
            self.write_stalled_armed = true;
            let state = &self.registration.state;
            state
                .stalled_since
                .store(state.now_ms() + 1, Ordering::Release);
        }
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => {
                tracing::debug!("a write made no progress in time; closing");
                Poll::Ready(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "write timeout: the peer reads nothing",
                ))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn progress<T>(
        &mut self,
        polled: Poll<io::Result<T>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<T>> {
        match polled {
            Poll::Pending => match self.write_pending(cx) {
                Poll::Ready(error) => Poll::Ready(Err(error)),
                Poll::Pending => Poll::Pending,
            },
            ready => {
                if self.write_stalled_armed {
                    self.write_stalled_armed = false;
                    self.registration
                        .state
                        .stalled_since
                        .store(0, Ordering::Release);
                }
                ready
            }
        }
    }

    /// Writes the oversized-head answer in place of hyper's; `Ready(n)`
    /// with hyper's length once all of it is out.
    fn poll_replace(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        loop {
            let Some((rest, stands_for)) = self.replacing.take() else {
                return Poll::Ready(Ok(0));
            };
            if rest.is_empty() {
                return Poll::Ready(Ok(stands_for));
            }
            let polled = on_stream!(self, s => s.poll_write(cx, &rest));
            match self.progress(polled, cx) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => self.replacing = Some((rest.slice(n..), stands_for)),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    self.replacing = Some((rest, stands_for));
                    return Poll::Pending;
                }
            }
        }
    }
}

/// Follows a connection's first request head through `bytes`, the next
/// ones read after `read` bytes; true once the head is whole.
fn head_done(read: &mut usize, head: &mut Head, bytes: &[u8]) -> bool {
    let before = *read;
    *read += bytes.len();
    if *head == Head::Unknown {
        // The bytes before these matched the preface so far (else the
        // protocol would be known); compare the new ones.
        let known = (*read).min(H2_PREFACE.len());
        let new = known.saturating_sub(before);
        if bytes[..new] != H2_PREFACE[before..known] {
            *head = Head::H1 { matched: 0 };
            // The head may end in what was read before (a prefix of the
            // preface) and these bytes: scan both.
            return scan_h1(head, &H2_PREFACE[..before]) || scan_h1(head, bytes);
        }
        if known == H2_PREFACE.len() {
            *head = Head::H2;
        }
    }
    match *head {
        Head::H2 => *read >= H2_HANDSHAKE_BYTES,
        Head::H1 { .. } => scan_h1(head, bytes),
        Head::Unknown => false,
    }
}

/// Looks for the `\r\n\r\n` that ends an HTTP/1.1 head, across reads.
fn scan_h1(head: &mut Head, bytes: &[u8]) -> bool {
    let Head::H1 { mut matched } = *head else {
        return false;
    };
    const END: &[u8; 4] = b"\r\n\r\n";
    for &b in bytes {
        matched = if b == END[matched as usize] {
            matched + 1
        } else if b == b'\r' {
            1
        } else {
            0
        };
        if matched == 4 {
            *head = Head::H1 { matched: 0 };
            return true;
        }
    }
    *head = Head::H1 { matched };
    false
}

impl Connected for Connection {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.peer_info()
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
use on_stream;

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.read_this_turn >= READ_PER_TURN {
            // Enough for one turn: let the other connections run.
            this.read_this_turn = 0;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let before = buf.filled().len();
        let polled = on_stream!(this, s => s.poll_read(cx, buf));
        match polled {
            Poll::Ready(Ok(())) if buf.filled().len() > before => {
                this.read_this_turn += buf.filled().len() - before;
                this.registration
                    .state
                    .reads
                    .fetch_add(1, Ordering::Release);
            }
            Poll::Pending => this.read_this_turn = 0,
            _ => {}
        }
        if this.handshake.is_some() {
            if let Poll::Ready(Ok(())) = polled {
                if this.first_head_done(&buf.filled()[before..]) {
                    this.handshake = None;
                    return polled;
                }
            }
            if let Some(deadline) = this.handshake.as_mut() {
                if deadline.as_mut().poll(cx).is_ready() {
                    tracing::debug!("first request head not whole in time; closing");
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "first request head timeout",
                    )));
                }
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
        let this = &mut *self;
        if this.replacing.is_none() && this.is_http1() && buf.starts_with(HYPER_431) {
            this.replacing = Some((this.oversized_head_response.clone(), buf.len()));
        }
        if this.replacing.is_some() {
            return this.poll_replace(cx);
        }
        let polled = on_stream!(this, s => s.poll_write(cx, buf));
        this.progress(polled, cx)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let polled = on_stream!(this, s => s.poll_flush(cx));
        this.progress(polled, cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let polled = on_stream!(this, s => s.poll_shutdown(cx));
        this.progress(polled, cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.replacing.is_none()
            && this.is_http1()
            && bufs
                .iter()
                .find(|b| !b.is_empty())
                .is_some_and(|b| b.starts_with(HYPER_431))
        {
            let all = bufs.iter().map(|b| b.len()).sum();
            this.replacing = Some((this.oversized_head_response.clone(), all));
        }
        if this.replacing.is_some() {
            return this.poll_replace(cx);
        }
        let polled = on_stream!(this, s => s.poll_write_vectored(cx, bufs));
        this.progress(polled, cx)
    }

    fn is_write_vectored(&self) -> bool {
        match &self.stream {
            Io::Tcp(tcp) => tcp.is_write_vectored(),
            Io::Tls(tls) => tls.is_write_vectored(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connection_head(chunks: &[&[u8]]) -> Vec<bool> {
        let (mut read, mut head) = (0, Head::Unknown);
        chunks
            .iter()
            .map(|chunk| head_done(&mut read, &mut head, chunk))
            .collect()
    }

    #[test]
    fn an_http1_head_is_whole_only_at_its_empty_line() {
        assert_eq!(
            connection_head(&[
                b"GET / HTTP/1.1\r\n",
                b"Host: a\r\n",
                b"X: y\r",
                b"\n\r",
                b"\n"
            ]),
            [false, false, false, false, true]
        );
        // 33 bytes of a request line are not a head.
        assert_eq!(
            connection_head(&[b"GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa HTTP/1.1\r\n"]),
            [false]
        );
        assert_eq!(connection_head(&[b"GET / HTTP/1.1\r\n\r\n"]), [true]);
        assert_eq!(
            connection_head(&[b"G", b"ET / HTTP/1.1\r\n\r\n"]),
            [false, true]
        );
    }

    #[test]
    fn an_http2_handshake_is_the_preface_and_a_frame_header() {
        assert_eq!(connection_head(&[H2_PREFACE, &[0; 9]]), [false, true]);
        assert_eq!(
            connection_head(&[&H2_PREFACE[..3], &H2_PREFACE[3..], &[0; 8], &[0]]),
            [false, false, false, true]
        );
        // A prefix of the preface that then differs is HTTP/1.1.
        assert_eq!(connection_head(&[b"PRI * HTTP/1.1\r\n\r\n"]), [true]);
    }
}
