//! The benchmark's load generator: drives notesd over gRPC with a fixed
//! number of calls in flight and prints one JSON object of figures on
//! standard output. `bench/run` builds and runs it; see `bench/README.md`.
//!
//! It speaks gRPC over the `h2` crate directly, with notesd's prost
//! messages: a lean client in the spirit of h2load, so that on a machine it
//! shares with the server it takes as little CPU as it can (a tonic
//! `Channel`, with its tower stack, cost three times as much per call).
//!
//! - `add`: AddNote in a closed loop, then checks in the database that every
//!   note it was told was created is there.
//! - `get`: GetNote of random ids from the deterministic set that
//!   `bench/run` seeds (tenant `bench-get`).
//! - `list`: ListNotes, page 1 and page 1000 of a large tenant.
//! - `search`: SearchNotes of one query, in a closed loop.
//! - `batch-get`: BatchGetNotes of random ids of the `bench-get` tenant.
//! - `batch-add`: BatchAddNotes of notes like `add`'s, then checks them in
//!   the database as `add` does.
//! - `watch`: WatchNotes streams, optionally with AddNote at a fixed rate:
//!   the delay from each change to its delivery, and what every watcher got.
//! - `connect`: a fresh connection for every call (TCP, TLS with
//!   `--tls-ca`, HTTP/2), one GetNote on it, closed: what a handshake costs.
//! - `read-own-writes`: AddNote, then GetNote of that note with the
//!   AddNote's `notesd-consistency-token` (`--token on`) or without: what
//!   reading one's own write from a replica costs (`bench/replica`).
//!
//! Every subcommand can connect with TLS (`--tls-ca`, rustls with the ring
//! provider, as notesd) and compress its requests and accept compressed
//! responses (`--compression gzip|zstd`, with tonic's own codec, the one
//! notesd uses); by default it speaks plaintext, uncompressed, as before.
//! With `--server-pid`, the server's CPU time over the measured window is
//! read from /proc and reported per call (`server_cpu_us_per_call`), next
//! to the load generator's own (`loadgen_cpu_us_per_call`).
//!
//! Exit status: 0 when every call was OK (and, for `add` and `batch-add`,
//! every created note was found in the database); 1 otherwise, after
//! printing the figures.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::{Buf as _, BufMut as _, Bytes, BytesMut};
use clap::{Args, Parser, Subcommand};
use http::header::{CONTENT_TYPE, TE};
use http::{HeaderValue, Request, Uri};
use notesd::proto::notes::v1 as pb;
use prost::Message;
use rand::rngs::SmallRng;
use rand::{Rng as _, SeedableRng as _};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tonic::codec::CompressionEncoding;
use uuid::Uuid;

/// A call that takes longer than this counts as an error (`Timeout`), so a
/// stuck server cannot hang the benchmark.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Parser)]
#[command(
    name = "loadgen",
    about = "notesd load generator (see bench/README.md)"
)]
struct Cli {
    /// Worker threads of the load generator's tokio runtime.
    #[arg(long, default_value_t = 2, global = true)]
    threads: usize,

    /// notesd's process id: its CPU time (utime + stime, /proc/<pid>/stat)
    /// over the measured window is reported, in all and per call.
    #[arg(long, global = true)]
    server_pid: Option<u32>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// AddNote in a closed loop, then verify the created notes in the database.
    Add(AddArgs),
    /// GetNote of random notes of the seeded `bench-get` tenant.
    Get(GetArgs),
    /// ListNotes page 1 and page 1000.
    List(ListArgs),
    /// WatchNotes streams, with AddNote at a fixed rate (or none).
    Watch(WatchArgs),
    /// SearchNotes of one query in a closed loop (4 calls in flight by default).
    #[command(mut_arg("concurrency", |arg| arg.default_value("4")))]
    Search(SearchArgs),
    /// BatchGetNotes of random notes of the seeded `bench-get` tenant (4 calls in flight by default).
    #[command(mut_arg("concurrency", |arg| arg.default_value("4")))]
    BatchGet(BatchGetArgs),
    /// BatchAddNotes in a closed loop, then verify the created notes in the database (4 calls
    /// in flight by default).
    #[command(mut_arg("concurrency", |arg| arg.default_value("4")))]
    BatchAdd(BatchAddArgs),
    /// A fresh connection for each call (TCP, TLS, HTTP/2), one GetNote on it, then closed.
    Connect(ConnectArgs),
    /// AddNote, then GetNote of that note, sending back the AddNote's
    /// consistency token (`--token on`) or not: the GetNote's latency (8 in
    /// flight by default).
    #[command(mut_arg("concurrency", |arg| arg.default_value("8")))]
    ReadOwnWrites(ReadOwnWritesArgs),
}

#[derive(Debug, Clone, Args)]
struct Target {
    /// notesd's gRPC address.
    #[arg(long, default_value = "http://127.0.0.1:50151")]
    addr: String,
    /// The API key sent as `x-api-key`.
    #[arg(long)]
    key: String,
    /// Connect with TLS, trusting the CA certificates of this PEM file
    /// (`--addr` then starts with `https://`).
    #[arg(long)]
    tls_ca: Option<PathBuf>,
    /// The name the server's certificate must hold, sent as SNI.
    #[arg(long, default_value = "localhost")]
    tls_domain: String,
    /// Compress every request message with this encoding and accept
    /// responses in it (`grpc-encoding`, `grpc-accept-encoding`).
    #[arg(long, value_enum, default_value_t = Compression::None)]
    compression: Compression,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    fn encoding(self) -> Option<CompressionEncoding> {
        match self {
            Compression::None => None,
            Compression::Gzip => Some(CompressionEncoding::Gzip),
            Compression::Zstd => Some(CompressionEncoding::Zstd),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }
}

#[derive(Debug, Clone, Args)]
struct Load {
    /// Calls in flight (one task each).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// HTTP/2 connections the tasks are spread over.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Seconds measured, after the warmup.
    #[arg(long, visible_alias = "secs", default_value_t = 20.0)]
    duration_secs: f64,
    /// Seconds of load before measuring starts.
    #[arg(long, default_value_t = 3.0)]
    warmup_secs: f64,
    /// Calls a second in all, paced: each task starts a call every
    /// `concurrency / rate` seconds, or at once when its previous call ended
    /// later than that. 0: each task calls again as soon as a call ends.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
}

impl Load {
    fn window(&self) -> Window {
        Window::new(self.warmup_secs, self.duration_secs).paced(self.rate)
    }
}

#[derive(Debug, Args)]
struct AddArgs {
    #[command(flatten)]
    target: Target,
    #[command(flatten)]
    load: Load,
    /// Write the id of every note created (warmup included), one a line.
    #[arg(long)]
    ids_out: Option<std::path::PathBuf>,
    /// The database notesd writes to, to verify the created notes (connect
    /// as a role that row-level security does not restrict).
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    /// The tenant of the key.
    #[arg(long, default_value = "bench-add")]
    tenant: String,
    /// Send no request id (by default each call has a fresh one, as a
    /// client that retries safely does).
    #[arg(long)]
    no_request_id: bool,
    /// A text body of this many bytes of made-up prose (one of 16, at
    /// random), instead of the 110-byte default.
    #[arg(long)]
    body_bytes: Option<usize>,
}

#[derive(Debug, Args)]
struct GetArgs {
    #[command(flatten)]
    target: Target,
    #[command(flatten)]
    load: Load,
    #[command(flatten)]
    ids: Ids,
}

/// The notes read, at random.
#[derive(Debug, Clone, Args)]
struct Ids {
    /// The seeded notes are k = 1..=N, with id `00000000-0000-7000-8000-<k as 12 hex digits>`.
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    /// Read the notes of this file instead, one id a line (as `add
    /// --ids-out` writes them), with a key of their tenant.
    #[arg(long)]
    ids_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct ConnectArgs {
    #[command(flatten)]
    target: Target,
    #[command(flatten)]
    ids: Ids,
    /// Connections made at once, each by its own task, one after another.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Seconds measured, after the warmup.
    #[arg(long, visible_alias = "secs", default_value_t = 20.0)]
    duration_secs: f64,
    /// Seconds of connections before measuring starts.
    #[arg(long, default_value_t = 3.0)]
    warmup_secs: f64,
    /// Resume TLS sessions with the tickets of earlier connections (by
    /// default every connection makes a full handshake).
    #[arg(long)]
    tls_resume: bool,
}

#[derive(Debug, Args)]
struct ReadOwnWritesArgs {
    #[command(flatten)]
    target: Target,
    #[command(flatten)]
    load: Load,
    /// Send the AddNote's `notesd-consistency-token` with the GetNote of
    /// its note (on), or not (off: a replica may not have the note yet).
    #[arg(long, value_enum, default_value_t = OnOff::On)]
    token: OnOff,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum OnOff {
    On,
    Off,
}

#[derive(Debug, Args)]
struct ListArgs {
    #[command(flatten)]
    target: Target,
    /// Notes per page.
    #[arg(long, default_value_t = 100)]
    page_size: i32,
    /// The far page measured (page 1 is the near one).
    #[arg(long, default_value_t = 1000)]
    far_page: u32,
    /// Calls in flight while measuring a page.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// HTTP/2 connections the tasks are spread over.
    #[arg(long, default_value_t = 2)]
    connections: usize,
    /// Seconds measured, for each page.
    #[arg(long, default_value_t = 20.0)]
    duration_secs: f64,
    /// Seconds of load before measuring each page.
    #[arg(long, default_value_t = 1.0)]
    warmup_secs: f64,
    /// Measure page 1 only (no walk to the far page).
    #[arg(long)]
    page1_only: bool,
    /// Calls a second in all, paced as `get --rate` does; 0: none.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
}

#[derive(Debug, Args)]
struct SearchArgs {
    #[command(flatten)]
    target: Target,
    #[command(flatten)]
    load: Load,
    /// What to search for, as typed into a search box: words, "quoted
    /// phrases", `or`, `-word`.
    #[arg(long)]
    query: String,
    /// The order of the hits.
    #[arg(long, value_enum, default_value_t = SearchOrder::Newest)]
    order: SearchOrder,
    /// Hits per page (the server's default is 20, its maximum 100).
    #[arg(long, default_value_t = 20)]
    page_size: i32,
    /// Accept calls that find nothing (by default a call with no hit fails).
    #[arg(long)]
    allow_empty: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum SearchOrder {
    Newest,
    Relevance,
}

#[derive(Debug, Args)]
struct BatchGetArgs {
    #[command(flatten)]
    get: GetArgs,
    /// Ids a call (random, possibly repeated); every call must return them all.
    #[arg(long, default_value_t = 100)]
    batch: usize,
}

#[derive(Debug, Args)]
struct BatchAddArgs {
    #[command(flatten)]
    add: AddArgs,
    /// Notes a call, each with its own request id (unless --no-request-id).
    #[arg(long, default_value_t = 100)]
    batch: usize,
}

#[derive(Debug, Args)]
struct WatchArgs {
    #[command(flatten)]
    target: Target,
    /// WatchNotes streams held open.
    #[arg(long, default_value_t = 100)]
    watchers: usize,
    /// HTTP/2 connections the streams are spread over (notesd allows 128
    /// streams a connection).
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// AddNote calls a second, open loop, with `--writer-key`; 0: none.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// The key the writer adds notes with (same tenant as `--key`).
    #[arg(long)]
    writer_key: Option<String>,
    /// Seconds the streams stay open (and the writer writes).
    #[arg(long, default_value_t = 20.0)]
    duration_secs: f64,
    /// Seconds of writing not measured, at the start.
    #[arg(long, default_value_t = 2.0)]
    warmup_secs: f64,
    /// Watcher i follows only subject `contact/c-<i>` (one of the 1000
    /// subjects `add` writes about) instead of every change.
    #[arg(long)]
    own_subject: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    SERVER_PID.get_or_init(|| cli.server_pid);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.threads.max(1))
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Add(args) => add(args).await,
            Command::Get(args) => get(args).await,
            Command::List(args) => list(args).await,
            Command::Watch(args) => watch(args).await,
            Command::Search(args) => search(args).await,
            Command::BatchGet(args) => batch_get(args).await,
            Command::BatchAdd(args) => batch_add(args).await,
            Command::Connect(args) => connect(args).await,
            Command::ReadOwnWrites(args) => read_own_writes(args).await,
        }
    });
    match result {
        Ok((report, ok)) => {
            println!("{report}");
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(err) => {
            eprintln!("loadgen: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The RPCs the load generator calls, by their HTTP/2 path.
const ADD_NOTE: &str = "/notes.v1.NotesService/AddNote";
const GET_NOTE: &str = "/notes.v1.NotesService/GetNote";
const LIST_NOTES: &str = "/notes.v1.NotesService/ListNotes";
const WATCH_NOTES: &str = "/notes.v1.NotesService/WatchNotes";
const SEARCH_NOTES: &str = "/notes.v1.NotesService/SearchNotes";
const BATCH_GET_NOTES: &str = "/notes.v1.NotesService/BatchGetNotes";
const BATCH_ADD_NOTES: &str = "/notes.v1.NotesService/BatchAddNotes";

/// A gRPC client on one HTTP/2 connection; clones share the connection.
#[derive(Clone)]
struct Client {
    send: h2::client::SendRequest<Bytes>,
    /// `http://host:port` (or `https://`), the scheme and authority of every call.
    base: String,
    key: HeaderValue,
    /// The encoding of every request, which responses may come in too.
    compression: Option<(CompressionEncoding, HeaderValue)>,
    wire: Arc<WireStats>,
}

/// What went over the wire, warmup included, for every client of a
/// [`Connector`]: gRPC messages as framed (5-byte prefix included), headers
/// and TLS records not counted.
#[derive(Default)]
struct WireStats {
    calls: AtomicU64,
    request_bytes: AtomicU64,
    response_bytes: AtomicU64,
    compressed_responses: AtomicU64,
    /// The first TLS connection's protocol version, cipher suite and key
    /// exchange group.
    tls_session: OnceLock<String>,
}

impl WireStats {
    /// The counters: calls, request bytes, response bytes, compressed responses.
    fn snapshot(&self) -> [u64; 4] {
        [
            &self.calls,
            &self.request_bytes,
            &self.response_bytes,
            &self.compressed_responses,
        ]
        .map(|counter| counter.load(Ordering::Relaxed))
    }

    /// Bytes a call and the share of compressed responses since `before`.
    fn figures_since(&self, before: [u64; 4]) -> serde_json::Map<String, Value> {
        let now = self.snapshot();
        let [calls, request, response, compressed] =
            [0, 1, 2, 3].map(|i| now[i].saturating_sub(before[i]) as f64);
        let per_call = |n: f64| if calls > 0.0 { round1(n / calls) } else { 0.0 };
        let mut figures = serde_json::Map::new();
        figures.insert("request_bytes_per_call".into(), json!(per_call(request)));
        figures.insert("response_bytes_per_call".into(), json!(per_call(response)));
        figures.insert(
            "compressed_responses_pct".into(),
            json!(per_call(100.0 * compressed)),
        );
        if let Some(session) = self.tls_session.get() {
            figures.insert("tls_session".into(), json!(session));
        }
        figures
    }
}

/// Makes connections to one server: TCP, TLS when asked, HTTP/2.
struct Connector {
    /// `host:port`, connected to.
    authority: String,
    base: String,
    key: HeaderValue,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    compression: Compression,
    wire: Arc<WireStats>,
}

/// A new connection: its client, the task that drives it (which ends when
/// the connection is closed), and whether its TLS handshake was a resumed
/// one.
struct Connected {
    client: Client,
    driver: tokio::task::JoinHandle<()>,
    tls_resumed: bool,
}

impl Connector {
    /// `resume`: whether TLS sessions may be resumed (rustls's default).
    fn new(target: &Target, resume: bool) -> anyhow::Result<Self> {
        let base = target.addr.trim_end_matches('/').to_owned();
        let uri = base.parse::<Uri>()?;
        let authority = uri
            .authority()
            .ok_or_else(|| anyhow::anyhow!("--addr {base} has no host:port"))?
            .to_string();
        let https = uri.scheme_str() == Some("https");
        let tls = match &target.tls_ca {
            None => {
                anyhow::ensure!(!https, "an https:// --addr needs --tls-ca");
                None
            }
            Some(ca) => {
                anyhow::ensure!(https, "with --tls-ca, --addr starts with https://");
                Some((
                    tls_connector(ca, resume)?,
                    ServerName::try_from(target.tls_domain.clone())?,
                ))
            }
        };
        Ok(Connector {
            authority,
            base,
            key: HeaderValue::from_str(&target.key)?,
            tls,
            compression: target.compression,
            wire: Arc::default(),
        })
    }

    /// One new connection; an error is named as a failed call's code is.
    async fn connect(&self) -> Result<Connected, String> {
        let tcp = tokio::net::TcpStream::connect(&self.authority)
            .await
            .map_err(|err| format!("Connect({err})"))?;
        tcp.set_nodelay(true)
            .map_err(|err| format!("Connect({err})"))?;
        let handshake = |err: h2::Error| format!("Handshake({err})");
        let (send, driver, tls_resumed) = match &self.tls {
            None => {
                let (send, driver) = h2_handshake(tcp).await.map_err(handshake)?;
                (send, driver, false)
            }
            Some((connector, name)) => {
                let tls = connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|err| format!("Tls({err})"))?;
                let session = tls.get_ref().1;
                let resumed = session.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
                self.wire.tls_session.get_or_init(|| {
                    let name = |debug: Option<String>| debug.unwrap_or_else(|| "?".to_owned());
                    format!(
                        "{} {} {}",
                        name(session.protocol_version().map(|v| format!("{v:?}"))),
                        name(
                            session
                                .negotiated_cipher_suite()
                                .map(|s| format!("{:?}", s.suite()))
                        ),
                        name(
                            session
                                .negotiated_key_exchange_group()
                                .map(|g| format!("{:?}", g.name()))
                        ),
                    )
                });
                let (send, driver) = h2_handshake(tls).await.map_err(handshake)?;
                (send, driver, resumed)
            }
        };
        let compression = self
            .compression
            .encoding()
            .map(|encoding| (encoding, HeaderValue::from_static(self.compression.name())));
        Ok(Connected {
            client: Client {
                send,
                base: self.base.clone(),
                key: self.key.clone(),
                compression,
                wire: Arc::clone(&self.wire),
            },
            driver,
            tls_resumed,
        })
    }
}

/// A TLS client configuration trusting the certificates of `ca` (PEM),
/// offering only `h2` (ALPN), with rustls's ring provider, as notesd.
fn tls_connector(ca: &std::path::Path, resume: bool) -> anyhow::Result<tokio_rustls::TlsConnector> {
    let pem = std::fs::read(ca).map_err(|err| anyhow::anyhow!("{}: {err}", ca.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert?)?;
    }
    anyhow::ensure!(!roots.is_empty(), "{}: holds no certificate", ca.display());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    if !resume {
        config.resumption = rustls::client::Resumption::disabled();
    }
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// The HTTP/2 handshake on `io`, and a task driving the connection.
async fn h2_handshake<T>(
    io: T,
) -> Result<(h2::client::SendRequest<Bytes>, tokio::task::JoinHandle<()>), h2::Error>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (send, connection) = h2::client::Builder::new()
        .initial_window_size(4 << 20)
        .initial_connection_window_size(16 << 20)
        .handshake(io)
        .await?;
    let driver = tokio::spawn(async move {
        if let Err(err) = connection.await {
            eprintln!("loadgen: connection closed: {err}");
        }
    });
    Ok((send, driver))
}

/// `connections` clients, each on its own HTTP/2 connection.
async fn clients(target: &Target, connections: usize) -> anyhow::Result<Vec<Client>> {
    let connector = Connector::new(target, true)?;
    let mut clients = Vec::new();
    for _ in 0..connections.max(1) {
        let connected = tokio::time::timeout(Duration::from_secs(5), connector.connect())
            .await
            .map_err(|_| anyhow::anyhow!("connecting to {}: timed out", connector.base))?
            .map_err(|err| anyhow::anyhow!("connecting to {}: {err}", connector.base))?;
        clients.push(connected.client);
    }
    Ok(clients)
}

/// Passes a gRPC message through tonic's codec untouched: tonic only frames
/// it and compresses or decompresses it.
struct RawCodec;

impl tonic::codec::Encoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Bytes,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Bytes>, tonic::Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// The gRPC message (prefix included) of `message` compressed with
/// `encoding`, by tonic's client encoder.
async fn compress(encoding: CompressionEncoding, message: Bytes) -> Result<Bytes, String> {
    use http_body_util::BodyExt as _;
    let source = futures_util::stream::once(std::future::ready(Ok(message)));
    let body = tonic::codec::EncodeBody::new_client(RawCodec, source, Some(encoding), None);
    body.collect()
        .await
        .map(|collected| collected.to_bytes())
        .map_err(|status| format!("Compress({})", status.message()))
}

/// The protobuf bytes of a compressed gRPC message (prefix included) that
/// came with `grpc-encoding: encoding`, by tonic's decoder.
async fn decompress(encoding: Option<&HeaderValue>, message: Bytes) -> Result<Bytes, String> {
    let encoding = match encoding.map(HeaderValue::as_bytes) {
        Some(b"gzip") => CompressionEncoding::Gzip,
        Some(b"zstd") => CompressionEncoding::Zstd,
        _ => return Err("BadEncoding".to_owned()),
    };
    let mut stream = tonic::codec::Streaming::new_response(
        RawCodec,
        http_body_util::Full::new(message),
        http::StatusCode::OK,
        Some(encoding),
        Some(MAX_MESSAGE_BYTES),
    );
    match stream.message().await {
        Ok(Some(bytes)) => Ok(bytes),
        Ok(None) => Err("NoMessage".to_owned()),
        Err(status) => Err(format!("Decompress({})", status.message())),
    }
}

/// The largest message notesd sends or accepts, decompressed.
const MAX_MESSAGE_BYTES: usize = 32 << 20;

impl Client {
    /// One unary call: `Ok` with the response, or `Err` with the name of
    /// the gRPC code (or of what went wrong on the wire).
    async fn unary<Rsp: Message + Default>(
        &mut self,
        path: &str,
        request: &impl Message,
    ) -> Result<Rsp, String> {
        match tokio::time::timeout(CALL_TIMEOUT, self.call(path, request)).await {
            Ok(outcome) => outcome,
            Err(_) => Err("Timeout".to_owned()),
        }
    }

    async fn call<Rsp: Message + Default>(
        &mut self,
        path: &str,
        request: &impl Message,
    ) -> Result<Rsp, String> {
        self.call_with(path, request, None)
            .await
            .map(|(response, _)| response)
    }

    /// A call with one more request header (metadata), if any: the
    /// response and its headers (the response metadata).
    async fn call_with<Rsp: Message + Default>(
        &mut self,
        path: &str,
        request: &impl Message,
        header: Option<(&'static str, HeaderValue)>,
    ) -> Result<(Rsp, http::HeaderMap), String> {
        let wire = |err: h2::Error| format!("Transport({err})");
        let response = self.open(path, request, header).await?;
        if response.status() != http::StatusCode::OK {
            return Err(format!("Http{}", response.status().as_u16()));
        }
        // An error with no message comes as headers only.
        if let Some(status) = response.headers().get("grpc-status") {
            return grpc_outcome(status).and(Err("NoMessage".to_owned()));
        }
        let (head, mut body) = response.into_parts();
        let encoding = head.headers.get("grpc-encoding").cloned();
        let mut message = BytesMut::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.map_err(wire)?;
            let _ = body.flow_control().release_capacity(chunk.len());
            message.extend_from_slice(&chunk);
        }
        let trailers = body.trailers().await.map_err(wire)?;
        let status = trailers
            .as_ref()
            .and_then(|t| t.get("grpc-status"))
            .ok_or_else(|| "NoStatus".to_owned())?;
        grpc_outcome(status)?;
        if message.len() < 5 {
            return Err("NoMessage".to_owned());
        }
        self.wire
            .response_bytes
            .fetch_add(message.len() as u64, Ordering::Relaxed);
        let mut message = message.freeze();
        // The prefix's first byte: 1 when the message is compressed.
        if message[0] == 0 {
            message.advance(5);
        } else {
            self.wire
                .compressed_responses
                .fetch_add(1, Ordering::Relaxed);
            message = decompress(encoding.as_ref(), message).await?;
        }
        Rsp::decode(message)
            .map(|response| (response, head.headers))
            .map_err(|_| "BadMessage".to_owned())
    }

    /// Sends one request message on a new stream; the response's head.
    async fn open(
        &mut self,
        path: &str,
        request: &impl Message,
        header: Option<(&'static str, HeaderValue)>,
    ) -> Result<http::Response<h2::RecvStream>, String> {
        let wire = |err: h2::Error| format!("Transport({err})");
        // A gRPC message: uncompressed flag, big-endian length, protobuf.
        let len = request.encoded_len();
        let mut body = BytesMut::with_capacity(5 + len);
        body.put_u8(0);
        body.put_u32(len as u32);
        request.encode(&mut body).map_err(|e| e.to_string())?;
        let mut head = Request::post(format!("{}{path}", self.base))
            .header(CONTENT_TYPE, "application/grpc")
            .header(TE, "trailers")
            .header("x-api-key", self.key.clone());
        if let Some((name, value)) = header {
            head = head.header(name, value);
        }
        let body = match &self.compression {
            None => body.freeze(),
            Some((encoding, name)) => {
                head = head
                    .header("grpc-encoding", name.clone())
                    .header("grpc-accept-encoding", name.clone());
                compress(*encoding, body.freeze().slice(5..)).await?
            }
        };
        let head = head.body(()).map_err(|e| e.to_string())?;
        self.wire.calls.fetch_add(1, Ordering::Relaxed);
        self.wire
            .request_bytes
            .fetch_add(body.len() as u64, Ordering::Relaxed);

        let mut send = self.send.clone().ready().await.map_err(wire)?;
        let (response, mut stream) = send.send_request(head, false).map_err(wire)?;
        stream.send_data(body, true).map_err(wire)?;
        response.await.map_err(wire)
    }
}

/// `grpc-status` 0 is OK; another code becomes its name (`NotFound`...).
fn grpc_outcome(status: &HeaderValue) -> Result<(), String> {
    let code: i32 = status
        .to_str()
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| "BadStatus".to_owned())?;
    match tonic::Code::from_i32(code) {
        tonic::Code::Ok => Ok(()),
        other => Err(format!("{other:?}")),
    }
}

/// What one task saw.
#[derive(Default)]
struct TaskResult {
    /// Latencies in microseconds of the calls that finished in the measured
    /// window, OK or not.
    latencies_us: Vec<u32>,
    ok: u64,
    /// Notes the measured OK calls returned or wrote (hits, for a search).
    notes: u64,
    errors: BTreeMap<String, u64>,
    /// Calls that finished during the warmup.
    warmup_ok: u64,
    warmup_errors: u64,
    /// Created note ids (add and batch-add only), warmup included.
    created: Vec<Uuid>,
    /// When the task's last measured call finished.
    last_finish: Option<Instant>,
}

/// When the warmup ends and when the last call may start; and the pace of
/// the calls, if any.
#[derive(Clone, Copy)]
struct Window {
    measure_from: Instant,
    stop_at: Instant,
    /// Calls a second, all tasks together.
    rate: Option<f64>,
}

impl Window {
    fn new(warmup_secs: f64, duration_secs: f64) -> Self {
        let now = Instant::now();
        let measure_from = now + Duration::from_secs_f64(warmup_secs.max(0.0));
        Window {
            measure_from,
            stop_at: measure_from + Duration::from_secs_f64(duration_secs.max(0.0)),
            rate: None,
        }
    }

    /// Paced at `rate` calls a second (none when it is not positive).
    fn paced(self, rate: f64) -> Self {
        Window {
            rate: (rate > 0.0).then_some(rate),
            ..self
        }
    }
}

/// The pace of one of `tasks` tasks (task `index`) at the window's rate:
/// its start times are spread over the interval, so the calls are too.
struct Pace {
    interval: Duration,
    next: Instant,
}

impl Pace {
    fn new(window: Window, tasks: usize, index: usize) -> Option<Self> {
        let rate = window.rate?;
        let interval = Duration::from_secs_f64(tasks.max(1) as f64 / rate);
        Some(Pace {
            interval,
            next: Instant::now() + interval.mul_f64(index as f64 / tasks.max(1) as f64),
        })
    }

    /// Waits for the next call's start. A task that fell behind starts at
    /// once and keeps its pace from there: it does not catch up in a burst.
    async fn wait(&mut self) {
        tokio::time::sleep_until(self.next.into()).await;
        self.next = (self.next + self.interval).max(Instant::now());
    }
}

/// What an OK call carried: how many notes it returned or wrote, and the
/// ids of those it created.
struct Answer {
    notes: u64,
    created: Vec<Uuid>,
}

impl Answer {
    /// `n` notes read.
    fn read(n: usize) -> Self {
        Answer {
            notes: n as u64,
            created: Vec::new(),
        }
    }

    /// The notes the server created.
    fn created(ids: Vec<Uuid>) -> Self {
        Answer {
            notes: ids.len() as u64,
            created: ids,
        }
    }
}

impl TaskResult {
    /// Records one call that started at `start`.
    fn record(&mut self, window: Window, start: Instant, outcome: Result<Answer, String>) {
        let end = Instant::now();
        let outcome = outcome.map(|answer| {
            self.created.extend(answer.created);
            answer.notes
        });
        if end < window.measure_from {
            match outcome {
                Ok(_) => self.warmup_ok += 1,
                Err(_) => self.warmup_errors += 1,
            }
            return;
        }
        let micros = end.duration_since(start).as_micros();
        self.latencies_us
            .push(u32::try_from(micros).unwrap_or(u32::MAX));
        self.last_finish = Some(end);
        match outcome {
            Ok(notes) => {
                self.ok += 1;
                self.notes += notes;
            }
            Err(code) => *self.errors.entry(code).or_default() += 1,
        }
    }
}

/// The merged results of all tasks, as JSON figures.
struct Summary {
    figures: serde_json::Map<String, Value>,
    errors: u64,
    created: Vec<Uuid>,
}

/// Makes each call's request from the task's random numbers.
type MakeRequest<Req> = dyn Fn(&mut SmallRng) -> Req + Send + Sync;
/// Checks a call's response against its request.
type CheckResponse<Req, Rsp> = dyn Fn(&Req, Rsp) -> Result<Answer, String> + Send + Sync;

/// Calls `path` in a closed loop from `concurrency` tasks, spread over
/// `clients`, until the window ends, and merges what they measured. Task
/// `i` draws its random numbers from seed `seed + i`; a response that
/// `check` refuses counts as a failed call, with the name it gives.
async fn closed_loop<Req, Rsp>(
    clients: &[Client],
    concurrency: usize,
    window: Window,
    seed: u64,
    path: &'static str,
    request: Arc<MakeRequest<Req>>,
    check: Arc<CheckResponse<Req, Rsp>>,
) -> anyhow::Result<Summary>
where
    Req: Message + Send + 'static,
    Rsp: Message + Default + Send + 'static,
{
    let cpu_start = own_cpu_secs().map(|cpu| (cpu, Instant::now()));
    let cpu_window = CpuWindow::start(window);
    let wire_before = clients.first().map(|client| client.wire.snapshot());
    let mut tasks = Vec::with_capacity(concurrency);
    for i in 0..concurrency {
        let mut client = clients[i % clients.len()].clone();
        let (request, check) = (Arc::clone(&request), Arc::clone(&check));
        tasks.push(tokio::spawn(async move {
            let mut rng = SmallRng::seed_from_u64(seed + i as u64);
            let mut result = TaskResult::default();
            let mut pace = Pace::new(window, concurrency, i);
            while Instant::now() < window.stop_at {
                if let Some(pace) = pace.as_mut() {
                    pace.wait().await;
                    if Instant::now() >= window.stop_at {
                        break;
                    }
                }
                let request = request(&mut rng);
                let start = Instant::now();
                let outcome = client
                    .unary(path, &request)
                    .await
                    .and_then(|response| check(&request, response));
                result.record(window, start, outcome);
            }
            result
        }));
    }
    let mut results = Vec::with_capacity(tasks.len());
    for task in tasks {
        results.push(task.await?);
    }
    let measured: u64 = results.iter().map(|r| r.latencies_us.len() as u64).sum();
    let cpu = cpu_window.figures(measured).await;
    let mut summary = summarize(results, window, cpu_start);
    let figures = &mut summary.figures;
    figures.insert("concurrency".into(), json!(concurrency));
    if let Some(rate) = window.rate {
        figures.insert("target_rate".into(), json!(rate));
    }
    figures.extend(cpu);
    if let (Some(client), Some(before)) = (clients.first(), wire_before) {
        figures.extend(client.wire.figures_since(before));
        figures.insert(
            "compression".into(),
            json!(
                client
                    .compression
                    .as_ref()
                    .map_or("none", |(_, name)| { name.to_str().unwrap_or("?") })
            ),
        );
        figures.insert("tls".into(), json!(client.base.starts_with("https:")));
    }
    Ok(summary)
}

fn summarize(
    results: Vec<TaskResult>,
    window: Window,
    cpu_start: Option<(f64, Instant)>,
) -> Summary {
    let mut latencies = Vec::new();
    let mut ok = 0;
    let mut notes = 0;
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut warmup_ok = 0;
    let mut warmup_errors = 0;
    let mut created = Vec::new();
    let mut last_finish = window.measure_from;
    for result in results {
        latencies.extend_from_slice(&result.latencies_us);
        ok += result.ok;
        notes += result.notes;
        for (code, n) in result.errors {
            *errors.entry(code).or_default() += n;
        }
        warmup_ok += result.warmup_ok;
        warmup_errors += result.warmup_errors;
        created.extend(result.created);
        if let Some(t) = result.last_finish {
            last_finish = last_finish.max(t);
        }
    }
    let elapsed = last_finish
        .duration_since(window.measure_from)
        .as_secs_f64();
    let error_count: u64 = errors.values().sum();
    let calls = latencies.len() as u64;
    let mut figures = serde_json::Map::new();
    figures.insert("calls".into(), json!(calls));
    figures.insert("ok".into(), json!(ok));
    figures.insert("errors".into(), json!(error_count));
    figures.insert("errors_by_code".into(), json!(errors));
    figures.insert("warmup_ok".into(), json!(warmup_ok));
    figures.insert("warmup_errors".into(), json!(warmup_errors));
    figures.insert("measured_secs".into(), json!(round3(elapsed)));
    let per_sec = |n: u64| {
        if elapsed > 0.0 {
            round1(n as f64 / elapsed)
        } else {
            0.0
        }
    };
    figures.insert("rps".into(), json!(per_sec(calls)));
    // Notes returned or written by the OK calls (hits, for a search).
    figures.insert("notes".into(), json!(notes));
    figures.insert("notes_per_sec".into(), json!(per_sec(notes)));
    figures.insert(
        "notes_per_call".into(),
        json!(if ok > 0 {
            round1(notes as f64 / ok as f64)
        } else {
            0.0
        }),
    );
    for (name, value) in latency_figures(&mut latencies) {
        figures.insert(name.into(), json!(value));
    }
    if let (Some((cpu, since)), Some(now)) = (cpu_start, own_cpu_secs()) {
        // CPU the load generator itself used over warmup and measurement,
        // in cores: near --threads means the generator was the bottleneck.
        let wall = since.elapsed().as_secs_f64();
        figures.insert("loadgen_cpu_secs".into(), json!(round3(now - cpu)));
        figures.insert(
            "loadgen_cpu_cores".into(),
            json!(if wall > 0.0 {
                round3((now - cpu) / wall)
            } else {
                0.0
            }),
        );
    }
    Summary {
        figures,
        errors: error_count + warmup_errors,
        created,
    }
}

/// p50, p90, p99, max and mean in milliseconds (nearest-rank percentiles).
fn latency_figures(latencies_us: &mut [u32]) -> Vec<(&'static str, f64)> {
    latencies_us.sort_unstable();
    let n = latencies_us.len();
    let ms = |us: u32| round3(f64::from(us) / 1000.0);
    let pct = |p: f64| {
        if n == 0 {
            return 0.0;
        }
        let rank = ((p / 100.0) * n as f64).ceil() as usize;
        ms(latencies_us[rank.clamp(1, n) - 1])
    };
    let mean = if n == 0 {
        0.0
    } else {
        let sum: u64 = latencies_us.iter().map(|&us| u64::from(us)).sum();
        round3(sum as f64 / n as f64 / 1000.0)
    };
    vec![
        ("p50_ms", pct(50.0)),
        ("p90_ms", pct(90.0)),
        ("p99_ms", pct(99.0)),
        ("max_ms", latencies_us.last().map_or(0.0, |&us| ms(us))),
        ("mean_ms", mean),
    ]
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// This process's user + system CPU seconds, from /proc/self/stat (Linux).
fn own_cpu_secs() -> Option<f64> {
    Some(proc_ticks("self")? as f64 / clock_ticks_per_sec())
}

/// utime + stime of process `pid` (all its threads), in clock ticks, from
/// /proc/<pid>/stat (Linux).
fn proc_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which is in parentheses).
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Clock ticks a second (`getconf CLK_TCK`), the unit of /proc's CPU times.
fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf reads a constant of the system; it has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// `--server-pid`, set once in `main`.
static SERVER_PID: OnceLock<Option<u32>> = OnceLock::new();

fn server_pid() -> Option<u32> {
    SERVER_PID.get().copied().flatten()
}

/// CPU counters at one moment: this process's and the server's, in ticks.
#[derive(Clone, Copy)]
struct CpuSample {
    at: Instant,
    own_ticks: Option<u64>,
    server_ticks: Option<u64>,
}

impl CpuSample {
    fn now() -> Self {
        CpuSample {
            at: Instant::now(),
            own_ticks: proc_ticks("self"),
            server_ticks: server_pid().and_then(|pid| proc_ticks(&pid.to_string())),
        }
    }
}

/// The CPU used over a measured window: sampled when the window opens
/// (by a task that waits for it) and when its last call has finished.
struct CpuWindow(tokio::task::JoinHandle<CpuSample>);

impl CpuWindow {
    fn start(window: Window) -> Self {
        CpuWindow(tokio::spawn(async move {
            tokio::time::sleep_until(window.measure_from.into()).await;
            CpuSample::now()
        }))
    }

    /// The figures, per call for the `calls` that finished in the window:
    /// the server's (with `--server-pid`) and the load generator's CPU.
    async fn figures(self, calls: u64) -> serde_json::Map<String, Value> {
        let end = CpuSample::now();
        let mut figures = serde_json::Map::new();
        let Ok(start) = self.0.await else {
            return figures;
        };
        let tck = clock_ticks_per_sec();
        let wall = end.at.duration_since(start.at).as_secs_f64();
        figures.insert("cpu_window_secs".into(), json!(round3(wall)));
        figures.insert("clk_tck".into(), json!(tck));
        // `totals` names the window's ticks, seconds and cores, `per_call`
        // the µs a call.
        let mut side = |totals: &str, per_call: &str, a: Option<u64>, b: Option<u64>| {
            let (Some(a), Some(b)) = (a, b) else {
                return;
            };
            let secs = b.saturating_sub(a) as f64 / tck;
            figures.insert(format!("{totals}_ticks"), json!(b.saturating_sub(a)));
            figures.insert(format!("{totals}_secs"), json!(round3(secs)));
            figures.insert(
                format!("{totals}_cores"),
                json!(if wall > 0.0 { round3(secs / wall) } else { 0.0 }),
            );
            figures.insert(
                per_call.to_owned(),
                json!(if calls > 0 {
                    round3(secs * 1e6 / calls as f64)
                } else {
                    0.0
                }),
            );
        };
        side(
            "server_cpu",
            "server_cpu_us_per_call",
            start.server_ticks,
            end.server_ticks,
        );
        // Not `loadgen_cpu_*`, which count the warmup too.
        side(
            "loadgen_window_cpu",
            "loadgen_cpu_us_per_call",
            start.own_ticks,
            end.own_ticks,
        );
        if let Some(pid) = server_pid() {
            figures.insert("server_pid".into(), json!(pid));
        }
        figures
    }
}

/// The note every AddNote task sends, but for its request id and subject id.
fn template_note() -> pb::Note {
    pb::Note {
        subject: Some(pb::Subject {
            r#type: "contact".to_owned(),
            id: "c-0".to_owned(),
        }),
        visibility: pb::Visibility::Team as i32,
        body: Some(pb::NoteBody {
            // 110 bytes of plain text.
            text: "Called back about the renewal: wants the annual plan, \
                   asks for an invoice in EUR and a call next Tuesday at 9."
                .to_owned(),
            html: String::new(),
        }),
        ..Default::default()
    }
}

/// Words of the made-up prose of `--body-bytes` notes, separated by
/// spaces: a CRM note's vocabulary, so that it compresses about as well as
/// real notes do.
const WORDS: &str = "the a to and of in for on with we they she he it is was will would can \
     should not about after before next last this that their our customer account contract \
     renewal invoice payment order delivery shipment price discount quote proposal meeting \
     call email demo trial plan annual monthly support ticket issue bug feature request team \
     manager director finance legal procurement budget quarter week Monday Tuesday Wednesday \
     Thursday Friday morning afternoon asked wants needs agreed confirmed declined promised \
     sent received signed reviewed scheduled moved cancelled followed up back again soon \
     today tomorrow yesterday already still new old current second first users seats licences \
     integration export import report dashboard login password reset access permissions data \
     migration upgrade downgrade onboarding training workshop feedback happy unhappy \
     concerned interested ready late early on time EUR USD terms net thirty days copy office \
     site visit warehouse Berlin Lyon Madrid Milan Oslo Porto";

/// `bytes` bytes of made-up prose: sentences of 6 to 18 words of [`WORDS`],
/// now and then a number.
fn prose(rng: &mut SmallRng, bytes: usize) -> String {
    let words: Vec<&str> = WORDS.split_whitespace().collect();
    let mut text = String::with_capacity(bytes + 64);
    while text.len() < bytes {
        let count = rng.random_range(6..=18);
        for i in 0..count {
            let word = words[rng.random_range(0..words.len())];
            if i == 0 {
                let mut chars = word.chars();
                if let Some(first) = chars.next() {
                    text.extend(first.to_uppercase());
                    text.push_str(chars.as_str());
                }
            } else {
                text.push(' ');
                if rng.random_ratio(1, 15) {
                    text.push_str(&rng.random_range(2..5000u32).to_string());
                    text.push(' ');
                }
                text.push_str(word);
            }
        }
        text.push_str(". ");
    }
    text.truncate(bytes);
    text.truncate(text.trim_end().len());
    text
}

/// The notes AddNote sends, but for their request id and subject id: the
/// template note, or with `body_bytes`, 16 notes of that much prose each.
fn note_pool(body_bytes: Option<usize>) -> Arc<Vec<pb::Note>> {
    let template = template_note();
    let Some(bytes) = body_bytes else {
        return Arc::new(vec![template]);
    };
    let mut rng = SmallRng::seed_from_u64(42);
    Arc::new(
        (0..16)
            .map(|_| {
                let mut note = template.clone();
                note.body = Some(pb::NoteBody {
                    text: prose(&mut rng, bytes),
                    html: String::new(),
                });
                note
            })
            .collect(),
    )
}

/// One note of the pool, at random (no draw when there is one).
fn pick<'a>(notes: &'a [pb::Note], rng: &mut SmallRng) -> &'a pb::Note {
    if notes.len() == 1 {
        &notes[0]
    } else {
        &notes[rng.random_range(0..notes.len())]
    }
}

/// An AddNote request for `note` about a random one of 1000 contacts,
/// with a fresh request id unless `with_request_id` is false.
fn add_request(note: &pb::Note, rng: &mut SmallRng, with_request_id: bool) -> pb::AddNoteRequest {
    let mut note = note.clone();
    if let Some(subject) = note.subject.as_mut() {
        subject.id = format!("c-{}", rng.random_range(0..1000u32));
    }
    pb::AddNoteRequest {
        request_id: if with_request_id {
            Uuid::now_v7().to_string()
        } else {
            String::new()
        },
        note: Some(note),
    }
}

/// The ids of notes a response says were created, in order.
fn created_ids(notes: &[pb::Note]) -> Result<Vec<Uuid>, String> {
    notes
        .iter()
        .map(|note| Uuid::parse_str(&note.id).map_err(|_| "BadResponse".to_owned()))
        .collect()
}

async fn add(args: AddArgs) -> anyhow::Result<(Value, bool)> {
    let clients = clients(&args.target, args.load.connections).await?;
    let notes = note_pool(args.body_bytes);
    let with_request_id = !args.no_request_id;
    let mut summary = closed_loop(
        &clients,
        args.load.concurrency,
        args.load.window(),
        0,
        ADD_NOTE,
        Arc::new(move |rng: &mut SmallRng| {
            let note = pick(&notes, rng);
            add_request(note, rng, with_request_id)
        }),
        Arc::new(
            |_: &pb::AddNoteRequest, response: pb::AddNoteResponse| match response.note {
                Some(note) => created_ids(&[note]).map(Answer::created),
                None => Err("BadResponse".to_owned()),
            },
        ),
    )
    .await?;
    if let Some(bytes) = args.body_bytes {
        summary.figures.insert("body_bytes".into(), json!(bytes));
    }
    verify_created(&args, summary).await
}

async fn batch_add(args: BatchAddArgs) -> anyhow::Result<(Value, bool)> {
    anyhow::ensure!(args.batch >= 1, "--batch must be at least 1");
    let add = args.add;
    let clients = clients(&add.target, add.load.connections).await?;
    let notes = note_pool(add.body_bytes);
    let (batch, with_request_id) = (args.batch, !add.no_request_id);
    let mut summary = closed_loop(
        &clients,
        add.load.concurrency,
        add.load.window(),
        3_000,
        BATCH_ADD_NOTES,
        Arc::new(move |rng: &mut SmallRng| pb::BatchAddNotesRequest {
            requests: (0..batch)
                .map(|_| {
                    let note = pick(&notes, rng);
                    add_request(note, rng, with_request_id)
                })
                .collect(),
            partial_success: false,
        }),
        Arc::new(
            move |_: &pb::BatchAddNotesRequest, response: pb::BatchAddNotesResponse| {
                if response.notes.len() != batch {
                    return Err("WrongCount".to_owned());
                }
                created_ids(&response.notes).map(Answer::created)
            },
        ),
    )
    .await?;
    summary.figures.insert("batch".into(), json!(batch));
    verify_created(&add, summary).await
}

/// Checks that every note the server said it created (`summary.created`)
/// is in the database, adds what it found to the figures, and writes the
/// ids to `--ids-out`: the report, and whether every call was OK and
/// every note found.
async fn verify_created(args: &AddArgs, mut summary: Summary) -> anyhow::Result<(Value, bool)> {
    let mut created = std::mem::take(&mut summary.created);
    let reported = created.len();
    created.sort_unstable();
    created.dedup();
    let duplicates = reported - created.len();
    if let Some(path) = &args.ids_out {
        let text: String = created.iter().map(|id| format!("{id}\n")).collect();
        std::fs::write(path, text)?;
    }
    let verify_start = Instant::now();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&args.database_url)
        .await?;
    let mut found: i64 = 0;
    for chunk in created.chunks(10_000) {
        let (n,): (i64,) =
            sqlx::query_as("select count(*) from notes where tenant_id = $1 and id = any($2)")
                .bind(&args.tenant)
                .bind(chunk)
                .fetch_one(&pool)
                .await?;
        found += n;
    }
    pool.close().await;
    let missing = created.len() as i64 - found;
    let figures = &mut summary.figures;
    figures.insert("created_ok_total".into(), json!(reported));
    figures.insert("duplicate_ids".into(), json!(duplicates));
    figures.insert("verified_in_db".into(), json!(found));
    figures.insert("missing_in_db".into(), json!(missing));
    figures.insert(
        "verify_secs".into(),
        json!(round3(verify_start.elapsed().as_secs_f64())),
    );
    if missing > 0 {
        eprintln!("loadgen: {missing} notes answered OK are missing from the database");
    }
    if duplicates > 0 {
        eprintln!("loadgen: the server returned {duplicates} note ids twice");
    }
    let ok = missing == 0 && duplicates == 0 && summary.errors == 0;
    Ok((Value::Object(summary.figures), ok))
}

/// The id of seeded note `k` of tenant `bench-get`, as bench/run makes it:
/// `00000000-0000-7000-8000-` followed by k in 12 hex digits.
fn seeded_id(k: u64) -> Uuid {
    Uuid::from_u128(0x0000_0000_0000_7000_8000_0000_0000_0000 | u128::from(k))
}

/// The ids of the notes to read, as strings: those of `--ids-file`, or
/// of the seeded notes k = 1..=`--keys`.
fn note_ids(ids: &Ids) -> anyhow::Result<Arc<Vec<String>>> {
    if let Some(path) = &ids.ids_file {
        let text = std::fs::read_to_string(path)
            .map_err(|err| anyhow::anyhow!("{}: {err}", path.display()))?;
        let ids: Vec<String> = text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .map(str::to_owned)
            .collect();
        anyhow::ensure!(!ids.is_empty(), "{}: holds no id", path.display());
        return Ok(Arc::new(ids));
    }
    anyhow::ensure!(ids.keys >= 1, "--keys must be at least 1");
    Ok(Arc::new(
        (1..=ids.keys).map(|k| seeded_id(k).to_string()).collect(),
    ))
}

async fn get(args: GetArgs) -> anyhow::Result<(Value, bool)> {
    let ids = note_ids(&args.ids)?;
    let clients = clients(&args.target, args.load.connections).await?;
    let summary = closed_loop(
        &clients,
        args.load.concurrency,
        args.load.window(),
        1_000,
        GET_NOTE,
        Arc::new(move |rng: &mut SmallRng| pb::GetNoteRequest {
            id: ids[rng.random_range(0..ids.len())].clone(),
        }),
        Arc::new(
            |request: &pb::GetNoteRequest, response: pb::GetNoteResponse| match response.note {
                Some(note) if note.id == request.id => Ok(Answer::read(1)),
                _ => Err("WrongNote".to_owned()),
            },
        ),
    )
    .await?;
    let ok = summary.errors == 0;
    Ok((Value::Object(summary.figures), ok))
}

async fn batch_get(args: BatchGetArgs) -> anyhow::Result<(Value, bool)> {
    anyhow::ensure!(args.batch >= 1, "--batch must be at least 1");
    let (get, batch) = (args.get, args.batch);
    let ids = note_ids(&get.ids)?;
    let clients = clients(&get.target, get.load.connections).await?;
    let mut summary = closed_loop(
        &clients,
        get.load.concurrency,
        get.load.window(),
        2_000,
        BATCH_GET_NOTES,
        Arc::new(move |rng: &mut SmallRng| pb::BatchGetNotesRequest {
            ids: (0..batch)
                .map(|_| ids[rng.random_range(0..ids.len())].clone())
                .collect(),
        }),
        Arc::new(
            |request: &pb::BatchGetNotesRequest, response: pb::BatchGetNotesResponse| {
                let in_order = response.notes.len() == request.ids.len()
                    && response
                        .notes
                        .iter()
                        .zip(&request.ids)
                        .all(|(n, id)| &n.id == id);
                if in_order {
                    Ok(Answer::read(response.notes.len()))
                } else {
                    Err("WrongNotes".to_owned())
                }
            },
        ),
    )
    .await?;
    summary.figures.insert("batch".into(), json!(batch));
    let ok = summary.errors == 0;
    Ok((Value::Object(summary.figures), ok))
}

async fn search(args: SearchArgs) -> anyhow::Result<(Value, bool)> {
    let clients = clients(&args.target, args.load.connections).await?;
    let order = match args.order {
        SearchOrder::Newest => pb::SearchOrder::Newest,
        SearchOrder::Relevance => pb::SearchOrder::Relevance,
    };
    let request = pb::SearchNotesRequest {
        query: args.query.clone(),
        page_size: args.page_size,
        order: order as i32,
        ..Default::default()
    };
    let (allow_empty, page_size) = (args.allow_empty, args.page_size);
    let mut summary = closed_loop(
        &clients,
        args.load.concurrency,
        args.load.window(),
        0,
        SEARCH_NOTES,
        Arc::new(move |_: &mut SmallRng| request.clone()),
        Arc::new(
            move |_: &pb::SearchNotesRequest, response: pb::SearchNotesResponse| {
                let hits = response.hits.len();
                if hits == 0 && !allow_empty {
                    Err("NoHits".to_owned())
                } else if i32::try_from(hits).unwrap_or(i32::MAX) > page_size.max(1) {
                    Err("PageTooLong".to_owned())
                } else {
                    Ok(Answer::read(hits))
                }
            },
        ),
    )
    .await?;
    let figures = &mut summary.figures;
    figures.insert("query".into(), json!(args.query));
    figures.insert(
        "order".into(),
        json!(format!("{:?}", args.order).to_lowercase()),
    );
    figures.insert("page_size".into(), json!(args.page_size));
    let ok = summary.errors == 0;
    Ok((Value::Object(summary.figures), ok))
}

async fn list(args: ListArgs) -> anyhow::Result<(Value, bool)> {
    anyhow::ensure!(args.far_page >= 2, "--far-page must be at least 2");
    let clients = clients(&args.target, args.connections).await?;
    let request = |page_token: String| pb::ListNotesRequest {
        page_size: args.page_size,
        page_token,
        ..Default::default()
    };

    let expected = usize::try_from(args.page_size).unwrap_or(0);
    let measure = |token: String| {
        let page = request(token);
        closed_loop(
            &clients,
            args.concurrency,
            Window::new(args.warmup_secs, args.duration_secs).paced(args.rate),
            0,
            LIST_NOTES,
            Arc::new(move |_: &mut SmallRng| page.clone()),
            Arc::new(
                move |_: &pb::ListNotesRequest, response: pb::ListNotesResponse| {
                    if response.notes.len() == expected {
                        Ok(Answer::read(expected))
                    } else {
                        Err("ShortPage".to_owned())
                    }
                },
            ),
        )
    };
    let mut report = serde_json::Map::new();
    report.insert("page_size".into(), json!(args.page_size));
    if args.page1_only {
        let summary = measure(String::new()).await?;
        report.insert("page1".into(), Value::Object(summary.figures));
        return Ok((Value::Object(report), summary.errors == 0));
    }

    // Walk to the far page: its token is the one page far_page - 1 returns.
    let walk_start = Instant::now();
    let mut client = clients[0].clone();
    let mut token = String::new();
    for page in 1..args.far_page {
        let response: pb::ListNotesResponse = client
            .unary(LIST_NOTES, &request(token))
            .await
            .map_err(|code| anyhow::anyhow!("ListNotes page {page}: {code}"))?;
        anyhow::ensure!(
            !response.next_page_token.is_empty(),
            "ListNotes ended at page {page}: the tenant has too few notes for page {}",
            args.far_page
        );
        token = response.next_page_token;
    }
    let walk_secs = walk_start.elapsed().as_secs_f64();
    let far_len = client
        .unary::<pb::ListNotesResponse>(LIST_NOTES, &request(token.clone()))
        .await
        .map_err(|code| anyhow::anyhow!("ListNotes page {}: {code}", args.far_page))?
        .notes
        .len();
    let far_full = far_len == expected;
    if !far_full {
        eprintln!(
            "loadgen list: page {} holds {far_len} notes, not {expected}",
            args.far_page
        );
    }

    report.insert("far_page".into(), json!(args.far_page));
    report.insert("walk_secs".into(), json!(round3(walk_secs)));
    report.insert("far_page_len".into(), json!(far_len));
    report.insert("far_page_full".into(), json!(far_full));
    let mut errors = 0;
    for (name, token) in [
        ("page1".to_owned(), String::new()),
        (format!("page{}", args.far_page), token),
    ] {
        let summary = measure(token).await?;
        errors += summary.errors;
        report.insert(name, Value::Object(summary.figures));
    }
    let p99 = |name: &str| report[name]["p99_ms"].as_f64().unwrap_or(0.0);
    let far_name = format!("page{}", args.far_page);
    let ratio = if p99("page1") > 0.0 {
        p99(&far_name) / p99("page1")
    } else {
        0.0
    };
    report.insert("p99_ratio_far_to_page1".into(), json!(round3(ratio)));
    Ok((Value::Object(report), errors == 0 && far_full))
}

/// What one watcher received.
#[derive(Default)]
struct WatcherResult {
    /// Changes (not heartbeats) received.
    changes: u64,
    heartbeats: u64,
    /// Milliseconds from each change's `change_time` to its arrival, for
    /// changes made in the measured window, in microseconds.
    delays_us: Vec<u32>,
    /// How the stream ended before the run did, if it did.
    ended: Option<String>,
}

impl Client {
    /// Opens a WatchNotes stream and reads it until `stop_at`.
    async fn watch_until(
        &mut self,
        request: &pb::WatchNotesRequest,
        measure_from: chrono::DateTime<chrono::Utc>,
        stop_at: Instant,
    ) -> WatcherResult {
        let mut result = WatcherResult::default();
        let deadline = tokio::time::Instant::from_std(stop_at);
        match tokio::time::timeout_at(
            deadline,
            self.read_watch(request, measure_from, &mut result),
        )
        .await
        {
            Ok(Err(end)) => result.ended = Some(end),
            Ok(Ok(())) => result.ended = Some("EndOfStream".to_owned()),
            Err(_) => {}
        }
        result
    }

    async fn read_watch(
        &mut self,
        request: &pb::WatchNotesRequest,
        measure_from: chrono::DateTime<chrono::Utc>,
        result: &mut WatcherResult,
    ) -> Result<(), String> {
        let wire = |err: h2::Error| format!("Transport({err})");
        let response = self.open(WATCH_NOTES, request, None).await?;
        if let Some(status) = response.headers().get("grpc-status") {
            return grpc_outcome(status).and(Err("NoMessage".to_owned()));
        }
        let mut body = response.into_body();
        let mut buffer = BytesMut::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.map_err(wire)?;
            let _ = body.flow_control().release_capacity(chunk.len());
            buffer.extend_from_slice(&chunk);
            while buffer.len() >= 5 {
                let len = u32::from_be_bytes([buffer[1], buffer[2], buffer[3], buffer[4]]) as usize;
                if buffer.len() < 5 + len {
                    break;
                }
                let mut message = buffer.split_to(5 + len).freeze();
                message.advance(5);
                let event =
                    pb::WatchNotesResponse::decode(message).map_err(|_| "BadMessage".to_owned())?;
                let arrived = chrono::Utc::now();
                if event.r#type == pb::WatchEventType::Heartbeat as i32 {
                    result.heartbeats += 1;
                    continue;
                }
                result.changes += 1;
                if let Some(t) = event.change_time {
                    let changed = chrono::DateTime::from_timestamp(t.seconds, t.nanos as u32)
                        .unwrap_or(arrived);
                    if changed >= measure_from {
                        let micros = (arrived - changed).num_microseconds().unwrap_or(0).max(0);
                        result
                            .delays_us
                            .push(u32::try_from(micros).unwrap_or(u32::MAX));
                    }
                }
            }
        }
        let trailers = body.trailers().await.map_err(wire)?;
        match trailers.as_ref().and_then(|t| t.get("grpc-status")) {
            Some(status) => grpc_outcome(status),
            None => Err("NoStatus".to_owned()),
        }
    }
}

async fn watch(args: WatchArgs) -> anyhow::Result<(Value, bool)> {
    let clients = clients(&args.target, args.connections).await?;
    let cpu_start = own_cpu_secs().map(|cpu| (cpu, Instant::now()));
    let run_start = Instant::now();
    let stop_at = run_start + Duration::from_secs_f64(args.duration_secs.max(0.0));
    let measure_from =
        chrono::Utc::now() + chrono::Duration::milliseconds((args.warmup_secs * 1000.0) as i64);
    let mut watchers = Vec::new();
    for i in 0..args.watchers {
        let mut client = clients[i % clients.len()].clone();
        let request = pb::WatchNotesRequest {
            subject: args.own_subject.then(|| pb::Subject {
                r#type: "contact".to_owned(),
                id: format!("c-{i}"),
            }),
            ..Default::default()
        };
        watchers.push(tokio::spawn(async move {
            client.watch_until(&request, measure_from, stop_at).await
        }));
    }
    // Let every stream open before the first change.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut adds_ok = 0u64;
    let mut add_errors = 0u64;
    if args.rate > 0.0 {
        let writer_key = args
            .writer_key
            .clone()
            .ok_or_else(|| anyhow::anyhow!("--rate needs --writer-key"))?;
        let writers = clients_for(&args.target, &writer_key, 2).await?;
        // Stop writing a little before the streams close, so that every
        // change has time to arrive.
        let write_until = stop_at - Duration::from_secs(2).min(stop_at - Instant::now());
        let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let in_flight = Arc::new(tokio::sync::Semaphore::new(256));
        let mut calls = tokio::task::JoinSet::new();
        let note = template_note();
        let mut n = 0usize;
        while Instant::now() < write_until {
            ticker.tick().await;
            let permit = Arc::clone(&in_flight).acquire_owned().await?;
            let mut client = writers[n % writers.len()].clone();
            n += 1;
            let request = pb::AddNoteRequest {
                request_id: Uuid::now_v7().to_string(),
                note: Some(note.clone()),
            };
            calls.spawn(async move {
                let outcome: Result<pb::AddNoteResponse, String> =
                    client.unary(ADD_NOTE, &request).await;
                drop(permit);
                outcome.is_ok()
            });
            while let Some(done) = calls.try_join_next() {
                if done.unwrap_or(false) {
                    adds_ok += 1;
                } else {
                    add_errors += 1;
                }
            }
        }
        while let Some(done) = calls.join_next().await {
            if done.unwrap_or(false) {
                adds_ok += 1;
            } else {
                add_errors += 1;
            }
        }
    }

    let mut delays = Vec::new();
    let mut received = Vec::new();
    let mut heartbeats = 0;
    let mut ended: BTreeMap<String, u64> = BTreeMap::new();
    for watcher in watchers {
        let result = watcher.await?;
        delays.extend_from_slice(&result.delays_us);
        received.push(result.changes);
        heartbeats += result.heartbeats;
        if let Some(end) = result.ended {
            *ended.entry(end).or_default() += 1;
        }
    }
    let mut figures = serde_json::Map::new();
    figures.insert("watchers".into(), json!(args.watchers));
    figures.insert("rate".into(), json!(args.rate));
    figures.insert("adds_ok".into(), json!(adds_ok));
    figures.insert("add_errors".into(), json!(add_errors));
    figures.insert(
        "changes_min".into(),
        json!(received.iter().min().copied().unwrap_or(0)),
    );
    figures.insert(
        "changes_max".into(),
        json!(received.iter().max().copied().unwrap_or(0)),
    );
    figures.insert("changes_total".into(), json!(received.iter().sum::<u64>()));
    figures.insert("heartbeats".into(), json!(heartbeats));
    figures.insert("ended_early".into(), json!(ended));
    figures.insert("delay_samples".into(), json!(delays.len()));
    let mut delay = serde_json::Map::new();
    for (name, value) in latency_figures(&mut delays) {
        delay.insert(name.into(), json!(value));
    }
    figures.insert("delay".into(), Value::Object(delay));
    if let (Some((cpu, since)), Some(now)) = (cpu_start, own_cpu_secs()) {
        figures.insert("loadgen_cpu_secs".into(), json!(round3(now - cpu)));
        figures.insert(
            "loadgen_cpu_cores".into(),
            json!(round3(
                (now - cpu) / since.elapsed().as_secs_f64().max(1e-9)
            )),
        );
    }
    // With a writer, every watcher must have got every change it wrote
    // (the streams start before the first write).
    let complete = args.rate <= 0.0 || args.own_subject || received.iter().all(|&n| n >= adds_ok);
    figures.insert("every_watcher_got_every_change".into(), json!(complete));
    let ok = complete && add_errors == 0 && ended.is_empty();
    Ok((Value::Object(figures), ok))
}

/// Clients for `target`'s address with another key.
async fn clients_for(
    target: &Target,
    key: &str,
    connections: usize,
) -> anyhow::Result<Vec<Client>> {
    let target = Target {
        key: key.to_owned(),
        ..target.clone()
    };
    clients(&target, connections).await
}

/// Fresh connections, one after another in each of `--concurrency` tasks:
/// each connects (TCP, TLS, HTTP/2), makes one GetNote, closes and waits
/// until the connection is down. The figures are per connection.
async fn connect(args: ConnectArgs) -> anyhow::Result<(Value, bool)> {
    let ids = note_ids(&args.ids)?;
    let connector = Arc::new(Connector::new(&args.target, args.tls_resume)?);
    let window = Window::new(args.warmup_secs, args.duration_secs);
    let resumed = Arc::new(AtomicU64::new(0));
    let cpu_start = own_cpu_secs().map(|cpu| (cpu, Instant::now()));
    let cpu_window = CpuWindow::start(window);
    let mut tasks = Vec::new();
    for i in 0..args.concurrency.max(1) {
        let (connector, ids, resumed) = (
            Arc::clone(&connector),
            Arc::clone(&ids),
            Arc::clone(&resumed),
        );
        tasks.push(tokio::spawn(async move {
            let mut rng = SmallRng::seed_from_u64(4_000 + i as u64);
            let mut result = TaskResult::default();
            while Instant::now() < window.stop_at {
                let request = pb::GetNoteRequest {
                    id: ids[rng.random_range(0..ids.len())].clone(),
                };
                let start = Instant::now();
                let once = async {
                    let connected = connector.connect().await?;
                    if connected.tls_resumed && start >= window.measure_from {
                        resumed.fetch_add(1, Ordering::Relaxed);
                    }
                    let mut client = connected.client;
                    let response: pb::GetNoteResponse = client.call(GET_NOTE, &request).await?;
                    // Close: the connection ends when its last handle is gone.
                    drop(client);
                    let _ = connected.driver.await;
                    match response.note {
                        Some(note) if note.id == request.id => Ok(Answer::read(1)),
                        _ => Err("WrongNote".to_owned()),
                    }
                };
                let outcome = match tokio::time::timeout(CALL_TIMEOUT, once).await {
                    Ok(outcome) => outcome,
                    Err(_) => Err("Timeout".to_owned()),
                };
                result.record(window, start, outcome);
            }
            result
        }));
    }
    let mut results = Vec::with_capacity(tasks.len());
    for task in tasks {
        results.push(task.await?);
    }
    let measured: u64 = results.iter().map(|r| r.latencies_us.len() as u64).sum();
    let cpu = cpu_window.figures(measured).await;
    let summary = summarize(results, window, cpu_start);
    let mut figures = summary.figures;
    figures.insert("concurrency".into(), json!(args.concurrency.max(1)));
    figures.extend(cpu);
    figures.insert("tls".into(), json!(connector.tls.is_some()));
    figures.insert("tls_resume".into(), json!(args.tls_resume));
    figures.insert("tls_resumed".into(), json!(resumed.load(Ordering::Relaxed)));
    figures.insert("compression".into(), json!(connector.compression.name()));
    if let Some(session) = connector.wire.tls_session.get() {
        figures.insert("tls_session".into(), json!(session));
    }
    let ok = summary.errors == 0;
    Ok((Value::Object(figures), ok))
}

/// The metadata a write answers with and a read may send back (docs/api.md,
/// "Read replicas and consistency tokens").
const CONSISTENCY_TOKEN: &str = "notesd-consistency-token";

/// In each of `--concurrency` tasks, one after another: AddNote, then
/// GetNote of the note it created, with the AddNote's consistency token
/// (`--token on`, when the server sent one) or without. The figures are the
/// GetNote's (`add`: the AddNote's); a GetNote that finds no note is a
/// stale read (`stale_reads`), a failure only with the token.
async fn read_own_writes(args: ReadOwnWritesArgs) -> anyhow::Result<(Value, bool)> {
    let clients = clients(&args.target, args.load.connections).await?;
    let notes = note_pool(None);
    let window = args.load.window();
    let send_token = args.token == OnOff::On;
    let concurrency = args.load.concurrency.max(1);
    // Measured AddNote answers that carried a token.
    let tokens = Arc::new(AtomicU64::new(0));
    // GetNote calls of the warmup that found no note.
    let stale_warmup = Arc::new(AtomicU64::new(0));
    let cpu_start = own_cpu_secs().map(|cpu| (cpu, Instant::now()));
    let cpu_window = CpuWindow::start(window);
    let mut tasks = Vec::with_capacity(concurrency);
    for i in 0..concurrency {
        let mut client = clients[i % clients.len()].clone();
        let (notes, tokens, stale_warmup) = (
            Arc::clone(&notes),
            Arc::clone(&tokens),
            Arc::clone(&stale_warmup),
        );
        tasks.push(tokio::spawn(async move {
            let mut rng = SmallRng::seed_from_u64(5_000 + i as u64);
            let (mut adds, mut gets) = (TaskResult::default(), TaskResult::default());
            let mut pace = Pace::new(window, concurrency, i);
            while Instant::now() < window.stop_at {
                if let Some(pace) = pace.as_mut() {
                    pace.wait().await;
                    if Instant::now() >= window.stop_at {
                        break;
                    }
                }
                let request = add_request(pick(&notes, &mut rng), &mut rng, true);
                let start = Instant::now();
                let added = tokio::time::timeout(
                    CALL_TIMEOUT,
                    client.call_with::<pb::AddNoteResponse>(ADD_NOTE, &request, None),
                )
                .await
                .unwrap_or_else(|_| Err("Timeout".to_owned()));
                let (id, token) = match added {
                    Ok((pb::AddNoteResponse { note: Some(note) }, headers)) => {
                        (note.id, headers.get(CONSISTENCY_TOKEN).cloned())
                    }
                    Ok(_) => {
                        adds.record(window, start, Err("BadResponse".to_owned()));
                        continue;
                    }
                    Err(code) => {
                        adds.record(window, start, Err(code));
                        continue;
                    }
                };
                adds.record(window, start, Ok(Answer::read(1)));
                if token.is_some() && start >= window.measure_from {
                    tokens.fetch_add(1, Ordering::Relaxed);
                }
                let header = token
                    .filter(|_| send_token)
                    .map(|token| (CONSISTENCY_TOKEN, token));
                let request = pb::GetNoteRequest { id };
                let start = Instant::now();
                let got = tokio::time::timeout(
                    CALL_TIMEOUT,
                    client.call_with::<pb::GetNoteResponse>(GET_NOTE, &request, header),
                )
                .await
                .unwrap_or_else(|_| Err("Timeout".to_owned()));
                let outcome = match got {
                    Ok((pb::GetNoteResponse { note: Some(note) }, _)) if note.id == request.id => {
                        Ok(Answer::read(1))
                    }
                    Ok(_) => Err("WrongNote".to_owned()),
                    Err(code) => Err(code),
                };
                let not_found = matches!(&outcome, Err(code) if code == "NotFound");
                let warmup_errors = gets.warmup_errors;
                gets.record(window, start, outcome);
                if not_found && gets.warmup_errors > warmup_errors {
                    stale_warmup.fetch_add(1, Ordering::Relaxed);
                }
            }
            (adds, gets)
        }));
    }
    let (mut adds, mut gets) = (Vec::new(), Vec::new());
    for task in tasks {
        let (a, g) = task.await?;
        adds.push(a);
        gets.push(g);
    }
    let pairs: u64 = gets.iter().map(|r| r.latencies_us.len() as u64).sum();
    let cpu = cpu_window.figures(pairs).await;
    let added = summarize(adds, window, None);
    let got = summarize(gets, window, cpu_start);
    let stale = got.figures["errors_by_code"]
        .get("NotFound")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let mut figures = got.figures;
    figures.insert("concurrency".into(), json!(concurrency));
    figures.insert("token".into(), json!(if send_token { "on" } else { "off" }));
    figures.insert(
        "tokens_received".into(),
        json!(tokens.load(Ordering::Relaxed)),
    );
    figures.insert("stale_reads".into(), json!(stale));
    let calls = figures["calls"].as_u64().unwrap_or(0);
    figures.insert(
        "stale_reads_pct".into(),
        json!(if calls > 0 {
            round3(100.0 * stale as f64 / calls as f64)
        } else {
            0.0
        }),
    );
    // notesd's CPU a pair (AddNote and GetNote): `server_cpu_us_per_call`.
    figures.extend(cpu);
    figures.insert("add".into(), Value::Object(added.figures));
    if stale > 0 {
        eprintln!("loadgen: {stale} GetNote calls did not find the note just added");
    }
    // Without the token a stale read is what is measured, not a failure.
    let stale_all = stale + stale_warmup.load(Ordering::Relaxed);
    let get_failures = got.errors - if send_token { 0 } else { stale_all };
    let ok = added.errors == 0 && get_failures == 0;
    Ok((Value::Object(figures), ok))
}
