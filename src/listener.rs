//! The connections of one port, plaintext or TLS, for tonic and axum alike.
//!
//! One task accepts TCP connections. In plaintext each goes straight to the
//! server; with TLS each gets its own task for the handshake, so a slow
//! client holds up nobody else. Handshakes are bounded before anything is
//! known of the client: at most [`MAX_HANDSHAKES`] at once, and at most
//! [`MAX_HANDSHAKES_PER_ADDRESS`] from one address (an IPv6 /64 counts as
//! one), so that one client's silent connections cannot take the slots of
//! others (a connection beyond either is closed at once); and each within
//! the handshake timeout (then it is closed). A verified client certificate's names are read once
//! per connection, here.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::server::TlsStream;

use crate::auth::PeerCertificate;
use crate::tls::TlsConfigs;

/// TLS handshakes in progress at once, per port.
const MAX_HANDSHAKES: usize = 512;

/// TLS handshakes in progress at once from one address, per port.
const MAX_HANDSHAKES_PER_ADDRESS: usize = 16;

/// Connections accepted (and through their handshake) that the server has
/// not yet taken.
const QUEUED_CONNECTIONS: usize = 64;

/// What is known of a connection's peer; in the extensions of each of its
/// gRPC calls.
#[derive(Debug, Clone)]
pub(crate) struct PeerInfo {
    pub(crate) remote_addr: SocketAddr,
    /// The verified client certificate's names (mTLS), if it sent one.
    pub(crate) certificate: Option<Arc<PeerCertificate>>,
}

/// One accepted connection.
pub(crate) struct Conn {
    io: Io,
    info: PeerInfo,
}

enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// The connections of one listener, accepted by a task that ends when this
/// is dropped.
pub(crate) struct Incoming {
    connections: mpsc::Receiver<Conn>,
    local_addr: SocketAddr,
    _accepting: AbortOnDrop,
}

/// A task that ends when this is dropped.
pub(crate) struct AbortOnDrop(pub(crate) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Incoming {
    /// Accepts on `listener`, with TLS when `tls` is given.
    pub(crate) fn start(listener: TcpListener, tls: Option<TlsConfigs>) -> io::Result<Self> {
        let local_addr = listener.local_addr()?;
        let (tx, connections) = mpsc::channel(QUEUED_CONNECTIONS);
        let accepting = AbortOnDrop(tokio::spawn(accept(listener, tls, tx)));
        Ok(Self {
            connections,
            local_addr,
            _accepting: accepting,
        })
    }

    /// The connections as tonic takes them.
    pub(crate) fn into_stream(self) -> impl Stream<Item = io::Result<Conn>> + Send + 'static {
        let Self {
            mut connections,
            _accepting: accepting,
            ..
        } = self;
        futures_util::stream::poll_fn(move |cx| {
            let _accepting = &accepting;
            connections.poll_recv(cx).map(|conn| conn.map(Ok))
        })
    }
}

/// Things in progress per client address, each address held to a share
/// (TLS handshakes here; bodies read before their caller is known in the
/// facades).
#[derive(Debug)]
pub(crate) struct PerAddress {
    max: usize,
    counts: std::sync::Mutex<std::collections::HashMap<IpAddr, usize>>,
}

/// One thing counted against its address until dropped.
pub(crate) struct AddressSlot {
    counts: Arc<PerAddress>,
    address: IpAddr,
}

impl PerAddress {
    /// At most `max` at once per address.
    pub(crate) fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            counts: std::sync::Mutex::default(),
        })
    }

    /// The address things are counted under: the IP, or an IPv6
    /// address's /64 (one host or site may hold a whole /64).
    fn key(ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(_) => ip,
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(std::net::Ipv6Addr::from(
                    u128::from(v6) & !((1u128 << 64) - 1),
                )),
            },
        }
    }

    /// A slot for one more from `ip`, unless it has its share.
    pub(crate) fn take(self: &Arc<Self>, ip: IpAddr) -> Option<AddressSlot> {
        let address = Self::key(ip);
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let count = counts.entry(address).or_default();
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(AddressSlot {
            counts: self.clone(),
            address,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = counts.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.address);
            }
        }
    }
}

async fn accept(listener: TcpListener, tls: Option<TlsConfigs>, tx: mpsc::Sender<Conn>) {
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    let per_address = PerAddress::new(MAX_HANDSHAKES_PER_ADDRESS);
    loop {
        let (tcp, remote_addr) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                accept_failed(err).await;
                continue;
            }
        };
        // No Nagle: a small response must not wait for the client's
        // delayed ACK (40 ms on Linux).
        let _ = tcp.set_nodelay(true);
        let Some(tls) = &tls else {
            let conn = Conn {
                io: Io::Plain(tcp),
                info: PeerInfo {
                    remote_addr,
                    certificate: None,
                },
            };
            if tx.send(conn).await.is_err() {
                return;
            }
            continue;
        };
        let Some(slot) = per_address.take(remote_addr.ip()) else {
            tracing::debug!(%remote_addr, "too many TLS handshakes from one address: connection closed");
            continue;
        };
        let Ok(permit) = handshakes.clone().try_acquire_owned() else {
            // Debug only: the client is unknown, and would choose how much
            // is logged.
            tracing::debug!(%remote_addr, "too many TLS handshakes at once: connection closed");
            continue;
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.server.borrow().clone());
        let timeout = tls.handshake_timeout;
        let tx = tx.clone();
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(err)) => {
                    tracing::debug!(%remote_addr, error = %err, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%remote_addr, ?timeout, "TLS handshake timed out");
                    return;
                }
            };
            drop((permit, slot));
            let certificate = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(PeerCertificate::from_chain)
                .map(Arc::new);
            let conn = Conn {
                io: Io::Tls(Box::new(stream)),
                info: PeerInfo {
                    remote_addr,
                    certificate,
                },
            };
            let _ = tx.send(conn).await;
        });
    }
}

/// As hyper and axum do: a connection reset before it was accepted is
/// nothing; anything else (out of file descriptors) is logged, and
/// accepting pauses a second so the process can close some.
async fn accept_failed(err: io::Error) {
    if matches!(
        err.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %err, "cannot accept a connection");
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
}

impl axum::serve::Listener for Incoming {
    type Io = Conn;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Conn, SocketAddr) {
        match self.connections.recv().await {
            Some(conn) => {
                let addr = conn.info.remote_addr;
                (conn, addr)
            }
            // The accepting task is gone only when this is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local_addr)
    }
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(io) => Pin::new(io).poll_read(cx, buf),
            Io::Tls(io) => Pin::new(io).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(io) => Pin::new(io).poll_write(cx, buf),
            Io::Tls(io) => Pin::new(io).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            Io::Tls(io) => Pin::new(io).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(io) => io.is_write_vectored(),
            Io::Tls(io) => io.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(io) => Pin::new(io).poll_flush(cx),
            Io::Tls(io) => Pin::new(io).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(io) => Pin::new(io).poll_shutdown(cx),
            Io::Tls(io) => Pin::new(io).poll_shutdown(cx),
        }
    }
}
