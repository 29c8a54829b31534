//! The test harness: a real notesd server on 127.0.0.1:0 over a fresh
//! PostgreSQL database per test, and gRPC clients carrying API keys.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use notesd::local_postgres::{LocalPostgres, LocalPostgresOptions, PgBinaries};
use notesd::proto::notes::v1 as pb;
use notesd::proto::notes::v1::notes_service_client::NotesServiceClient;
use notesd::startup::{Application, CallLimits, Settings};
use notesd::{
    APP_ROLE, ApiKeyStore, BatchSettings, DatabaseOptions, QuotaSettings, ReplicaSettings,
    RetentionSettings, WatchSettings,
};
use notesd::{Authenticator, KeyKind, KeySpec, MemberId, TenantId};
use sqlx::PgPool;
use tokio::sync::oneshot;
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use uuid::Uuid;

/// The server that tests create their databases on, as a URL of its
/// `postgres` database (tests connect to it to create and drop their own):
/// the server of `DATABASE_URL` when it is set; else one private
/// PostgreSQL for the whole run, started by the first test that asks, in a
/// temporary data directory that is removed when the test process exits.
pub fn server_url() -> String {
    static SERVER: OnceLock<String> = OnceLock::new();
    SERVER
        .get_or_init(|| match std::env::var("DATABASE_URL") {
            Ok(url) => url_of(&url, "postgres"),
            Err(_) => private_server().url("postgres"),
        })
        .clone()
}

/// The run's private PostgreSQL, started by the first test that asks.
fn private_server() -> &'static LocalPostgres {
    static SERVER: OnceLock<LocalPostgres> = OnceLock::new();
    SERVER.get_or_init(start_private_server)
}

/// A hot standby of the run's private PostgreSQL, streaming from it, for
/// the read-replica tests: made by the first test that asks, with
/// `pg_basebackup`, in a data directory of its own, and removed with the
/// run. (With DATABASE_URL set, the private server is started for it.)
pub struct Standby {
    pub server: LocalPostgres,
    pub binaries: PgBinaries,
    pub options: LocalPostgresOptions,
}

impl Standby {
    /// The URL of `database` on the primary, the private server.
    pub fn primary_url(&self, database: &str) -> String {
        private_server().url(database)
    }

    /// The URL of `database` on the standby.
    pub fn url(&self, database: &str) -> String {
        self.server.url(database)
    }
}

pub fn standby() -> &'static Standby {
    static STANDBY: OnceLock<Standby> = OnceLock::new();
    STANDBY.get_or_init(|| {
        let primary = private_server();
        let binaries = pg_binaries();
        let options = LocalPostgresOptions {
            data_dir: std::env::temp_dir()
                .join(format!("notesd-test-{}-standby", std::process::id())),
            max_connections: PRIVATE_SERVER_MAX_CONNECTIONS,
            scratch: true,
            standby_of: Some(primary.data_dir().to_owned()),
        };
        let server = LocalPostgres::start(&binaries, &options)
            .unwrap_or_else(|err| panic!("the tests' standby does not start: {err:#}"));
        Standby {
            server,
            binaries,
            options,
        }
    })
}

/// Each test's notesd has a pool of 8 and the test one more of 10; with
/// tests running in parallel (one per core) and processes of their own,
/// PostgreSQL's default of 100 connections is too few.
const PRIVATE_SERVER_MAX_CONNECTIONS: u32 = 300;

fn pg_binaries() -> PgBinaries {
    PgBinaries::find(
        std::env::var_os("NOTESD_POSTGRES_BIN_DIR")
            .as_deref()
            .map(Path::new),
    )
    .unwrap_or_else(|err| {
        panic!(
            "the tests need PostgreSQL's server binaries installed, or DATABASE_URL set: {err:#}"
        )
    })
}

fn start_private_server() -> LocalPostgres {
    let binaries = pg_binaries();
    let options = LocalPostgresOptions {
        data_dir: std::env::temp_dir().join(format!("notesd-test-{}", std::process::id())),
        max_connections: PRIVATE_SERVER_MAX_CONNECTIONS,
        scratch: true,
        standby_of: None,
    };
    LocalPostgres::start(&binaries, &options)
        .unwrap_or_else(|err| panic!("the tests' PostgreSQL does not start: {err:#}"))
}

/// `url` with its database replaced by `name`.
fn url_of(url: &str, name: &str) -> String {
    let mut url = url::Url::parse(url).expect("DATABASE_URL is a URL");
    url.set_path(&format!("/{name}"));
    url.to_string()
}

fn database_url(name: &str) -> String {
    url_of(&server_url(), name)
}

pub type Client = NotesServiceClient<InterceptedService<Channel, Metadata>>;

/// Adds fixed metadata (the key, an actor) to every call.
#[derive(Clone, Default)]
pub struct Metadata(pub Vec<(&'static str, String)>);

impl Interceptor for Metadata {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        for (name, value) in &self.0 {
            request.metadata_mut().insert(
                *name,
                MetadataValue::try_from(value.as_str()).expect("ascii metadata"),
            );
        }
        Ok(request)
    }
}

pub struct TestApp {
    pub addr: SocketAddr,
    /// The HTTP port: /metrics, /healthz, /readyz.
    pub http_addr: SocketAddr,
    pub database_name: String,
    pub database_url: String,
    /// Connects as the database owner, which row-level security does not
    /// restrict: for setting up keys and inspecting rows. The server itself
    /// runs as `notesd_app`.
    pub pool: PgPool,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// Starts notesd on a fresh database (created and migrated by the server
/// itself, as in production) and waits until it accepts calls.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

impl TestApp {
    /// The URL of `path` on the HTTP port (metrics and the vendor facades).
    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http_addr)
    }

    /// A member key of `tenant` acting as `member`.
    pub async fn member_key(&self, tenant: &str, member: &str) -> String {
        self.issue(
            tenant,
            KeyKind::Member(MemberId::parse("member", member).unwrap()),
        )
        .await
    }

    /// A service key of `tenant`: calls must name their actor.
    pub async fn service_key(&self, tenant: &str) -> String {
        self.issue(tenant, KeyKind::Service).await
    }

    async fn issue(&self, tenant: &str, kind: KeyKind) -> String {
        self.issue_key(
            tenant,
            KeySpec {
                kind,
                allowed_cidrs: Vec::new(),
                label: "test".to_owned(),
                expires_at: None,
            },
        )
        .await
        .1
    }

    /// A key of `tenant` as `spec` describes it: its id and the key.
    pub async fn issue_key(&self, tenant: &str, spec: KeySpec) -> (Uuid, String) {
        let auth = Authenticator::new(ApiKeyStore::new(self.pool.clone()));
        let tenant = TenantId::parse("tenant", tenant).unwrap();
        let issued = auth.issue(&tenant, spec).await.expect("key issued");
        (issued.id, issued.key.expose().to_owned())
    }

    /// An admin key of `tenant`, recorded as `member`.
    pub async fn admin_key(&self, tenant: &str, member: &str) -> String {
        self.issue(
            tenant,
            KeyKind::Admin(MemberId::parse("member", member).unwrap()),
        )
        .await
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .expect("connects to notesd")
    }

    /// A client sending exactly this metadata on every call.
    pub async fn client_with(&self, metadata: Vec<(&'static str, String)>) -> Client {
        NotesServiceClient::with_interceptor(self.channel().await, Metadata(metadata))
            .max_decoding_message_size(64 * 1024 * 1024)
            .max_encoding_message_size(64 * 1024 * 1024)
    }

    /// A client calling with `x-api-key: key`.
    pub async fn client(&self, key: &str) -> Client {
        self.client_with(vec![("x-api-key", key.to_owned())]).await
    }

    /// A client for a new member key of `tenant`/`member`.
    pub async fn member(&self, tenant: &str, member: &str) -> Client {
        let key = self.member_key(tenant, member).await;
        self.client(&key).await
    }

    /// Stops the server gracefully and waits for it.
    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(server) = self.server.take() {
            server
                .await
                .expect("server task")
                .expect("server stops cleanly");
        }
    }
}

impl Drop for TestApp {
    /// Drops the test's database (on a thread of its own: Drop cannot await).
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        // No `pool.close()` here: it waits for connections still checked
        // out by server tasks (a key's last-use update, say), and those
        // tasks cannot run while this thread, which may be the test's only
        // runtime thread, is blocked in `join`. `with (force)` ends them.
        let name = self.database_name.clone();
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                if let Ok(admin) = PgPool::connect(&server_url()).await {
                    let _ =
                        sqlx::query(&format!("drop database if exists \"{name}\" with (force)"))
                            .execute(&admin)
                            .await;
                }
            });
        })
        .join();
    }
}

/// A minimal valid note about `subject_type/subject_id` with a text body.
pub fn text_note(subject_type: &str, subject_id: &str, text: &str) -> pb::Note {
    pb::Note {
        subject: Some(pb::Subject {
            r#type: subject_type.to_owned(),
            id: subject_id.to_owned(),
        }),
        body: Some(pb::NoteBody {
            text: text.to_owned(),
            html: String::new(),
        }),
        ..Default::default()
    }
}

/// Adds a note and returns it, panicking on error.
pub async fn add(client: &mut Client, note: pb::Note) -> pb::Note {
    client
        .add_note(pb::AddNoteRequest {
            request_id: String::new(),
            note: Some(note),
        })
        .await
        .expect("AddNote succeeds")
        .into_inner()
        .note
        .expect("AddNote returns the note")
}

/// The ErrorInfo reason of a failed call.
pub fn reason(status: &tonic::Status) -> String {
    use tonic_types::StatusExt as _;
    status
        .get_details_error_info()
        .map(|info| info.reason)
        .unwrap_or_default()
}

/// The ErrorInfo domain of a failed call.
pub fn error_domain(status: &tonic::Status) -> String {
    use tonic_types::StatusExt as _;
    status
        .get_details_error_info()
        .map(|info| info.domain)
        .unwrap_or_default()
}

/// The field paths a failed call's BadRequest names.
pub fn violated_fields(status: &tonic::Status) -> Vec<String> {
    use tonic_types::StatusExt as _;
    status
        .get_details_bad_request()
        .map(|br| br.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------
// Calls, returning the note or the status.
// ---------------------------------------------------------------------------

/// AddNote with a request id.
pub async fn add_with_request_id(
    client: &mut Client,
    request_id: &str,
    note: pb::Note,
) -> Result<pb::Note, tonic::Status> {
    client
        .add_note(pb::AddNoteRequest {
            request_id: request_id.to_owned(),
            note: Some(note),
        })
        .await
        .map(|r| r.into_inner().note.expect("AddNote returns the note"))
}

/// AddNote, returning the status on failure.
pub async fn try_add(client: &mut Client, note: pb::Note) -> Result<pb::Note, tonic::Status> {
    add_with_request_id(client, "", note).await
}

pub async fn get(client: &mut Client, id: &str) -> Result<pb::Note, tonic::Status> {
    client
        .get_note(pb::GetNoteRequest { id: id.to_owned() })
        .await
        .map(|r| r.into_inner().note.expect("GetNote returns the note"))
}

/// UpdateNote with these mask paths (none: an empty mask).
pub async fn update(
    client: &mut Client,
    note: pb::Note,
    paths: &[&str],
) -> Result<pb::Note, tonic::Status> {
    let update_mask = (!paths.is_empty()).then(|| prost_types::FieldMask {
        paths: paths.iter().map(|p| (*p).to_owned()).collect(),
    });
    client
        .update_note(pb::UpdateNoteRequest {
            note: Some(note),
            update_mask,
        })
        .await
        .map(|r| r.into_inner().note.expect("UpdateNote returns the note"))
}

pub async fn delete(client: &mut Client, id: &str, etag: &str) -> Result<pb::Note, tonic::Status> {
    client
        .delete_note(pb::DeleteNoteRequest {
            id: id.to_owned(),
            etag: etag.to_owned(),
        })
        .await
        .map(|r| r.into_inner().note.expect("DeleteNote returns the note"))
}

pub async fn undelete(
    client: &mut Client,
    id: &str,
    etag: &str,
) -> Result<pb::Note, tonic::Status> {
    client
        .undelete_note(pb::UndeleteNoteRequest {
            id: id.to_owned(),
            etag: etag.to_owned(),
        })
        .await
        .map(|r| r.into_inner().note.expect("UndeleteNote returns the note"))
}

pub async fn list(
    client: &mut Client,
    request: pb::ListNotesRequest,
) -> Result<pb::ListNotesResponse, tonic::Status> {
    client.list_notes(request).await.map(|r| r.into_inner())
}

/// Every note of a listing, following its page tokens to the end.
pub async fn list_all(client: &mut Client, mut request: pb::ListNotesRequest) -> Vec<pb::Note> {
    let mut notes = Vec::new();
    loop {
        let page = list(client, request.clone())
            .await
            .expect("ListNotes succeeds");
        notes.extend(page.notes);
        if page.next_page_token.is_empty() {
            return notes;
        }
        assert_ne!(
            page.next_page_token, request.page_token,
            "the page token moves on"
        );
        request.page_token = page.next_page_token;
    }
}

/// The ids of every note `client` lists with `request`, in order.
pub async fn listed_ids(client: &mut Client, request: pb::ListNotesRequest) -> Vec<String> {
    list_all(client, request)
        .await
        .into_iter()
        .map(|n| n.id)
        .collect()
}

pub async fn revisions(
    client: &mut Client,
    note_id: &str,
    page_size: i32,
    page_token: &str,
) -> Result<pb::ListNoteRevisionsResponse, tonic::Status> {
    client
        .list_note_revisions(pb::ListNoteRevisionsRequest {
            note_id: note_id.to_owned(),
            page_size,
            page_token: page_token.to_owned(),
        })
        .await
        .map(|r| r.into_inner())
}

// ---------------------------------------------------------------------------
// Values.
// ---------------------------------------------------------------------------

/// A note's fields as an update sends them: `id` and the given changes.
pub fn patch(id: &str) -> pb::Note {
    pb::Note {
        id: id.to_owned(),
        ..Default::default()
    }
}

pub fn text_body(text: &str) -> Option<pb::NoteBody> {
    Some(pb::NoteBody {
        text: text.to_owned(),
        html: String::new(),
    })
}

pub fn html_body(html: &str) -> Option<pb::NoteBody> {
    Some(pb::NoteBody {
        text: String::new(),
        html: html.to_owned(),
    })
}

pub fn subject(kind: &str, id: &str) -> Option<pb::Subject> {
    Some(pb::Subject {
        r#type: kind.to_owned(),
        id: id.to_owned(),
    })
}

/// A note with this visibility and edit policy.
pub fn shared_note(text: &str, visibility: pb::Visibility, policy: pb::EditPolicy) -> pb::Note {
    pb::Note {
        visibility: visibility as i32,
        edit_policy: policy as i32,
        ..text_note("customer", "c-1", text)
    }
}

/// The text of a note's body.
pub fn body_text(note: &pb::Note) -> &str {
    note.body.as_ref().map_or("", |b| b.text.as_str())
}

pub fn timestamp(time: chrono::DateTime<chrono::Utc>) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp {
        seconds: time.timestamp(),
        nanos: time.timestamp_subsec_nanos() as i32,
    })
}

/// A fixed instant, `minutes` after 2024-01-01T00:00:00Z.
pub fn at_minute(minutes: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339("2024-01-01T00:00:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc)
        + chrono::Duration::minutes(minutes)
}

// ---------------------------------------------------------------------------
// Assertions on failed calls.
// ---------------------------------------------------------------------------

/// Asserts the call failed with `code` and ErrorInfo `reason`.
#[track_caller]
pub fn assert_status(
    result: Result<impl std::fmt::Debug, tonic::Status>,
    code: tonic::Code,
    reason_: &str,
) -> tonic::Status {
    let status = result.expect_err("the call fails");
    assert_eq!(status.code(), code, "code of {status:?}");
    assert_eq!(reason(&status), reason_, "reason of {status:?}");
    assert_eq!(
        error_domain(&status),
        "notesd.dev",
        "ErrorInfo domain of {status:?}"
    );
    status
}

/// Asserts the call failed with INVALID_ARGUMENT, `reason`, and a
/// BadRequest naming `field`.
#[track_caller]
pub fn assert_invalid(
    result: Result<impl std::fmt::Debug, tonic::Status>,
    reason_: &str,
    field: &str,
) {
    let status = assert_status(result, tonic::Code::InvalidArgument, reason_);
    let fields = violated_fields(&status);
    assert!(
        fields.iter().any(|f| f == field),
        "expected a violation of {field}, got {fields:?} ({status:?})"
    );
}

pub const NOT_FOUND: (tonic::Code, &str) = (tonic::Code::NotFound, "NOT_FOUND");
pub const NOT_OWNER: (tonic::Code, &str) = (tonic::Code::PermissionDenied, "NOT_OWNER");

/// Asserts the call failed with this (code, reason) pair.
#[track_caller]
pub fn assert_fails(
    result: Result<impl std::fmt::Debug, tonic::Status>,
    (code, reason_): (tonic::Code, &str),
) {
    assert_status(result, code, reason_);
}

/// A JSON object as a protobuf Struct.
pub fn json_struct(value: serde_json::Value) -> prost_types::Struct {
    fn convert(value: serde_json::Value) -> prost_types::Value {
        use prost_types::value::Kind;
        let kind = match value {
            serde_json::Value::Null => Kind::NullValue(0),
            serde_json::Value::Bool(b) => Kind::BoolValue(b),
            serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap()),
            serde_json::Value::String(s) => Kind::StringValue(s),
            serde_json::Value::Array(items) => Kind::ListValue(prost_types::ListValue {
                values: items.into_iter().map(convert).collect(),
            }),
            serde_json::Value::Object(_) => Kind::StructValue(json_struct(value)),
        };
        prost_types::Value { kind: Some(kind) }
    }
    let serde_json::Value::Object(fields) = value else {
        panic!("a JSON object");
    };
    prost_types::Struct {
        fields: fields.into_iter().map(|(k, v)| (k, convert(v))).collect(),
    }
}

pub fn to_chrono(ts: &prost_types::Timestamp) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(ts.seconds, ts.nanos as u32).expect("a valid timestamp")
}

/// Adds `count` notes, `concurrency` calls at a time; `make(i)` gives the
/// i-th note. Returns them in no particular order.
pub async fn add_many(
    client: &Client,
    count: usize,
    concurrency: usize,
    make: impl Fn(usize) -> pb::Note,
) -> Vec<pb::Note> {
    use futures::StreamExt as _;
    futures::stream::iter((0..count).map(|i| {
        let mut client = client.clone();
        let note = make(i);
        async move { add(&mut client, note).await }
    }))
    .buffer_unordered(concurrency)
    .collect()
    .await
}

// ---------------------------------------------------------------------------
// Identity and access: settings, source addresses, subjects, the CLI.
// ---------------------------------------------------------------------------

/// As `spawn_app`, with the settings adjusted by `configure` first.
pub async fn spawn_app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    let database_name = format!("notesd_test_{}", Uuid::now_v7().simple());
    let database_url = database_url(&database_name);
    spawn_app_at(database_name, database_url, configure).await
}

/// As `spawn_app_with`, on the database `database_name` at `database_url`.
pub async fn spawn_app_at(
    database_name: String,
    database_url: String,
    configure: impl FnOnce(&mut Settings),
) -> TestApp {
    // reqwest's TLS (the HTTPS tests) uses the ring provider, as notesd.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let settings = test_settings(&database_url, configure);
    let app = Application::build(settings).await.expect("notesd builds");
    let addr = app.grpc_addr();
    let http_addr = app.http_addr();
    let pool = PgPool::connect(&database_url)
        .await
        .expect("connects to the test database");
    let (shutdown, stop) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async move {
        let _ = stop.await;
    }));
    TestApp {
        addr,
        http_addr,
        database_name,
        database_url,
        pool,
        shutdown: Some(shutdown),
        server: Some(server),
    }
}

/// Whether notesd builds (reads its files, reaches its database, binds
/// its ports) with the settings adjusted by `configure`; it is not run.
pub async fn try_build_with(configure: impl FnOnce(&mut Settings)) -> anyhow::Result<()> {
    let database_name = format!("notesd_test_{}", Uuid::now_v7().simple());
    Application::build(test_settings(&database_url(&database_name), configure))
        .await
        .map(drop)
}

/// The settings of a test's server on `database_url`, adjusted by
/// `configure`.
fn test_settings(database_url: &str, configure: impl FnOnce(&mut Settings)) -> Settings {
    let mut settings = Settings {
        grpc_addr: "127.0.0.1:0".parse().unwrap(),
        http_addr: "127.0.0.1:0".parse().unwrap(),
        database: DatabaseOptions {
            url: database_url.to_owned(),
            max_connections: 8,
            create_if_missing: true,
            migrate: true,
            role: Some(APP_ROLE.to_owned()),
        },
        replicas: ReplicaSettings::default(),
        shutdown_grace: Duration::from_secs(5),
        trusted_proxies: Vec::new(),
        cors_allowed_origins: Vec::new(),
        tls: None,
        batching: BatchSettings::default(),
        limits: CallLimits::default(),
        watch: WatchSettings::default(),
        retention: RetentionSettings::default(),
        quotas: QuotaSettings::default(),
    };
    configure(&mut settings);
    settings
}

use notesd::proto::notes::v1::subjects_service_client::SubjectsServiceClient;

pub type SubjectsClient = SubjectsServiceClient<InterceptedService<Channel, Metadata>>;

impl TestApp {
    /// A client whose connection comes from `source` (a loopback address
    /// such as 127.0.0.2), sending exactly this metadata.
    pub async fn client_from(&self, source: &str, metadata: Vec<(&'static str, String)>) -> Client {
        let channel = Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .local_address(Some(source.parse().expect("an IP address")))
            .connect()
            .await
            .expect("connects to notesd");
        NotesServiceClient::with_interceptor(channel, Metadata(metadata))
    }

    /// A SubjectsService client calling with `x-api-key: key`.
    pub async fn subjects(&self, key: &str) -> SubjectsClient {
        SubjectsServiceClient::with_interceptor(
            self.channel().await,
            Metadata(vec![("x-api-key", key.to_owned())]),
        )
    }

    /// Runs the built `notesd` with `args` against the test database and
    /// returns its output, whether it succeeded or not.
    pub async fn run_notesd(&self, args: &[&str]) -> std::process::Output {
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        let url = self.database_url.clone();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_notesd"))
                .args(&args)
                .env("DATABASE_URL", url)
                .env("RUST_LOG", "warn")
                .output()
                .expect("notesd runs")
        })
        .await
        .expect("the blocking task")
    }
}

/// A key spec of this kind, allowed from `cidrs` (none: anywhere).
pub fn key_spec(kind: KeyKind, cidrs: &[&str]) -> KeySpec {
    KeySpec {
        kind,
        allowed_cidrs: cidrs.iter().map(|c| c.parse().expect("a CIDR")).collect(),
        label: "test".to_owned(),
        expires_at: None,
    }
}

/// A member kind for `member`.
pub fn member_kind(member: &str) -> KeyKind {
    KeyKind::Member(MemberId::parse("member", member).unwrap())
}

/// An admin kind recorded as `member`.
pub fn admin_kind(member: &str) -> KeyKind {
    KeyKind::Admin(MemberId::parse("member", member).unwrap())
}

/// RegisterSubject, returning the stored registration or the status.
pub async fn register_subject(
    client: &mut SubjectsClient,
    registration: pb::SubjectRegistration,
) -> Result<pb::SubjectRegistration, tonic::Status> {
    client
        .register_subject(pb::RegisterSubjectRequest {
            registration: Some(registration),
        })
        .await
        .map(|r| {
            r.into_inner()
                .registration
                .expect("RegisterSubject returns the registration")
        })
}

/// GetSubject, returning the registration or the status.
pub async fn get_subject(
    client: &mut SubjectsClient,
    kind: &str,
    id: &str,
) -> Result<pb::SubjectRegistration, tonic::Status> {
    client
        .get_subject(pb::GetSubjectRequest {
            subject: subject(kind, id),
        })
        .await
        .map(|r| {
            r.into_inner()
                .registration
                .expect("GetSubject returns the registration")
        })
}

/// A registration of `kind/id` for `owner` (empty: the caller).
pub fn registration(
    kind: &str,
    id: &str,
    owner: &str,
    owner_only_notes: bool,
) -> pb::SubjectRegistration {
    pb::SubjectRegistration {
        subject: subject(kind, id),
        owner_id: owner.to_owned(),
        owner_only_notes,
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------
// A database that goes away: a TCP proxy in front of PostgreSQL.
// ---------------------------------------------------------------------------

/// A TCP proxy between notesd and PostgreSQL that a test can cut: cutting
/// drops every open connection (as a crashed or restarted database does)
/// and refuses new ones until it is restored.
pub struct DbProxy {
    pub addr: SocketAddr,
    state: std::sync::Arc<ProxyState>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct ProxyState {
    cut: std::sync::atomic::AtomicBool,
    /// Bytes PostgreSQL sent to notesd, all connections together.
    from_database: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Bumped by each cut: connections of an older generation end.
    generation: tokio::sync::watch::Sender<u64>,
}

/// Where the proxy forwards to: the test server's TCP address, or its Unix
/// socket (the private server has no TCP port).
#[derive(Clone)]
enum Upstream {
    Tcp(String),
    Unix(std::path::PathBuf),
}

/// A connection to either kind of upstream.
trait Connection: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}

impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Connection for T {}

impl Upstream {
    /// As libpq reads a URL: a `host` parameter naming a directory is the
    /// socket's, `{host}/.s.PGSQL.{port}`.
    fn of(url: &str) -> Self {
        let url = url::Url::parse(url).unwrap();
        let param = |name: &str| {
            url.query_pairs()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.into_owned())
        };
        let port = param("port")
            .and_then(|port| port.parse().ok())
            .or(url.port())
            .unwrap_or(5432u16);
        match param("host") {
            Some(dir) if dir.starts_with('/') => {
                Self::Unix(Path::new(&dir).join(format!(".s.PGSQL.{port}")))
            }
            host => Self::Tcp(format!(
                "{}:{port}",
                host.as_deref().or(url.host_str()).unwrap_or("127.0.0.1")
            )),
        }
    }

    async fn connect(&self) -> std::io::Result<Box<dyn Connection>> {
        Ok(match self {
            Self::Tcp(addr) => Box::new(tokio::net::TcpStream::connect(addr).await?),
            Self::Unix(path) => Box::new(tokio::net::UnixStream::connect(path).await?),
        })
    }
}

impl DbProxy {
    /// Listens on 127.0.0.1:0 and forwards to the test server's Postgres.
    pub async fn start() -> Self {
        let upstream = Upstream::of(&server_url());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = std::sync::Arc::new(ProxyState::default());
        let accepting = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                if accepting.cut.load(std::sync::atomic::Ordering::SeqCst) {
                    // The database is away: the connection ends at once.
                    drop(client);
                    continue;
                }
                let upstream = upstream.clone();
                let mut cuts = accepting.generation.subscribe();
                let received = accepting.from_database.clone();
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
                    let Ok(server) = upstream.connect().await else {
                        return;
                    };
                    let (mut client_reads, mut client_writes) = client.split();
                    let (mut server_reads, mut server_writes) = tokio::io::split(server);
                    let upstream = tokio::io::copy(&mut client_reads, &mut server_writes);
                    let downstream = async {
                        let mut buffer = vec![0u8; 64 * 1024];
                        loop {
                            let n = server_reads.read(&mut buffer).await?;
                            if n == 0 {
                                return Ok::<_, std::io::Error>(());
                            }
                            received.fetch_add(n as u64, std::sync::atomic::Ordering::SeqCst);
                            client_writes.write_all(&buffer[..n]).await?;
                        }
                    };
                    tokio::select! {
                        _ = upstream => {}
                        _ = downstream => {}
                        _ = cuts.changed() => {}
                    }
                });
            }
        });
        Self { addr, state, task }
    }

    /// `url` (a database URL on the test server) with the proxy's address
    /// (and no socket directory, which would take precedence).
    pub fn url_for(&self, url: &str) -> String {
        let mut url = url::Url::parse(url).unwrap();
        url.set_host(Some("127.0.0.1")).unwrap();
        url.set_port(Some(self.addr.port())).unwrap();
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .filter(|(name, _)| !matches!(name.as_ref(), "host" | "port"))
            .map(|(name, value)| (name.into_owned(), value.into_owned()))
            .collect();
        url.set_query(None);
        if !pairs.is_empty() {
            url.query_pairs_mut().extend_pairs(pairs);
        }
        url.to_string()
    }

    /// Drops every proxied connection and refuses new ones.
    pub fn cut(&self) {
        self.state
            .cut
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.state.generation.send_modify(|g| *g += 1);
    }

    /// Bytes PostgreSQL has sent through the proxy so far: what notesd
    /// read from the database.
    pub fn bytes_from_database(&self) -> u64 {
        self.state
            .from_database
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Accepts connections again.
    pub fn restore(&self) {
        self.state
            .cut
            .store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for DbProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A server whose database connections go through a [`DbProxy`].
pub async fn spawn_app_behind_proxy() -> (TestApp, DbProxy) {
    let proxy = DbProxy::start().await;
    let via_proxy = |url: &str| proxy.url_for(url);
    let app = spawn_app_with(|settings| {
        settings.database.url = via_proxy(&settings.database.url);
    })
    .await;
    (app, proxy)
}

// ---------------------------------------------------------------------------
// notesd as a process of its own (for what a process shows: memory, logs,
// signals).
// ---------------------------------------------------------------------------

/// The built `notesd serve`, on ports of its own, over the test database.
pub struct NotesdProcess {
    pub child: tokio::process::Child,
    pub grpc_addr: String,
    pub http_addr: String,
}

/// Sends SIGTERM to `child` and waits for it to exit, for at most `within`.
pub async fn sigterm(
    child: &mut tokio::process::Child,
    within: Duration,
) -> std::process::ExitStatus {
    let pid = child.id().expect("running").to_string();
    let killed = tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(killed.success());
    tokio::time::timeout(within, child.wait())
        .await
        .unwrap_or_else(|_| panic!("notesd exits within {within:?} of SIGTERM"))
        .unwrap()
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl NotesdProcess {
    /// Starts it with `args` after `serve --grpc-addr --http-addr`, logging
    /// at `log_level` to a piped standard error, and waits until it serves
    /// gRPC (bounded: 30 s).
    pub async fn start(app: &TestApp, args: &[&str], log_level: &str) -> (Self, Channel) {
        let grpc_addr = format!("127.0.0.1:{}", free_port());
        let http_addr = format!("127.0.0.1:{}", free_port());
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_notesd"))
            .args([
                "serve",
                "--grpc-addr",
                &grpc_addr,
                "--http-addr",
                &http_addr,
            ])
            .args(args)
            .env("DATABASE_URL", &app.database_url)
            .env("RUST_LOG", log_level)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("notesd starts");
        let mut attempts = 0;
        let channel = loop {
            attempts += 1;
            match Channel::from_shared(format!("http://{grpc_addr}"))
                .unwrap()
                .connect()
                .await
            {
                Ok(channel) => break channel,
                Err(_) if attempts < 300 => tokio::time::sleep(Duration::from_millis(100)).await,
                Err(err) => panic!("notesd never listened on {grpc_addr}: {err}"),
            }
        };
        (
            Self {
                child,
                grpc_addr,
                http_addr,
            },
            channel,
        )
    }

    /// Starts the peak of [`Self::peak_rss_kib`] again from the memory the
    /// process holds now (Linux's `clear_refs`, 5).
    pub fn reset_peak_rss(&self) {
        let pid = self.child.id().expect("running");
        std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
    }

    /// The process's peak resident memory so far (VmHWM), in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let pid = self.child.id().expect("running");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc/<pid>/status")
    }
}

// ---------------------------------------------------------------------------
// The vendor facades over HTTP: one way to present a key, one way to read
// an answer, for every facade's tests.
// ---------------------------------------------------------------------------

/// How a facade call presents its notesd key.
#[derive(Clone, Copy)]
pub enum Auth<'a> {
    None,
    /// HTTP Basic, the key as user name and an empty password.
    Basic(&'a str),
    /// `Authorization: Bearer <key>`.
    Bearer(&'a str),
    /// `X-API-Key: <key>`.
    Header(&'a str),
    /// `X-API-Key` and `X-Actor-Id`.
    HeaderActor(&'a str, &'a str),
    /// `Authorization: Bearer` and `X-Actor-Id`.
    BearerActor(&'a str, &'a str),
}

impl Auth<'_> {
    pub fn apply(self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self {
            Self::None => request,
            Self::Basic(key) => request.basic_auth(key, Some("")),
            Self::Bearer(key) => request.bearer_auth(key),
            Self::Header(key) => request.header("x-api-key", key),
            Self::HeaderActor(key, actor) => {
                request.header("x-api-key", key).header("x-actor-id", actor)
            }
            Self::BearerActor(key, actor) => request.bearer_auth(key).header("x-actor-id", actor),
        }
    }
}

/// Sends a facade request; its status and its body, which must be JSON
/// and say so in its content type.
pub async fn json_answer(request: reqwest::RequestBuilder) -> (u16, serde_json::Value) {
    let response = request.send().await.expect("the facade answers");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap_or_default().to_owned())
        .unwrap_or_default();
    let text = response.text().await.expect("a body");
    assert!(
        content_type.starts_with("application/json"),
        "{status} answered as {content_type:?}: {text:?}"
    );
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|_| panic!("a JSON body, got {status} {text:?}"));
    (status, body)
}

/// Inserts `count` TEAM notes of `alice` about customer/c-1 into `tenant`
/// directly, as the owner (quick, for volume): the body is `body` followed
/// by ` n<i>`, a word of its own for each note; the i-th note occurred i
/// seconds ago.
pub async fn insert_notes(app: &TestApp, tenant: &str, count: i32, body: &str) {
    sqlx::query(
        "insert into notes (
             tenant_id, id, subject_type, subject_id, owner_id, created_by, updated_by,
             visibility, edit_policy, body_text, occurred_at, created_at, updated_at, revision)
         select $1, gen_random_uuid(), 'customer', 'c-1', 'alice', 'alice', 'alice', 2, 1,
                $2 || ' n' || g, t, t, t, 1
         from generate_series(1, $3) as g,
              lateral (select now() - g * interval '1 second' as t) as ts",
    )
    .bind(tenant)
    .bind(body)
    .bind(count)
    .execute(&app.pool)
    .await
    .expect("notes inserted");
}

/// A gRPC call made over a bare HTTP/2 connection, so that no client stands
/// in the way (tonic's would enforce a deadline itself, or refuse an
/// encoding): `path`, these `headers` besides the content type and `te`,
/// and one request `frame`. Returns the answer's headers, body and
/// trailers.
pub async fn raw_grpc(
    app: &TestApp,
    path: &str,
    headers: &[(&str, &str)],
    frame: Vec<u8>,
) -> (http::HeaderMap, Vec<u8>, http::HeaderMap) {
    let tcp = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let (send, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut request = http::Request::post(format!("http://{}{path}", app.addr))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let (response, mut stream) = send
        .ready()
        .await
        .unwrap()
        .send_request(request.body(()).unwrap(), false)
        .unwrap();
    stream.send_data(bytes::Bytes::from(frame), true).unwrap();
    let (parts, mut body) = response.await.unwrap().into_parts();
    let mut data = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
        data.extend(chunk);
    }
    let trailers = body.trailers().await.unwrap().unwrap_or_default();
    (parts.headers, data, trailers)
}

/// A gRPC frame of `message`, flagged compressed or not.
pub fn grpc_frame(compressed: bool, message: &[u8]) -> Vec<u8> {
    let mut frame = vec![u8::from(compressed)];
    frame.extend((message.len() as u32).to_be_bytes());
    frame.extend(message);
    frame
}
