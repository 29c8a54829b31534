//! TLS and mTLS on both ports (README, "TLS"; docs/access.md, "Client
//! certificates"), with certificates made here by rcgen.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use notesd::proto::notes::v1 as pb;
use notesd::proto::notes::v1::notes_service_client::NotesServiceClient;
use notesd::tls::{ClientAuth, TlsSettings};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, SanType,
};
use tokio::io::AsyncReadExt as _;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use uuid::Uuid;

use crate::helpers::*;

/// A certificate authority of the test's own.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, in PEM.
#[derive(Clone)]
pub struct Leaf {
    pub cert: String,
    pub key: String,
}

impl Ca {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        Self {
            issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// The server's certificate: localhost and 127.0.0.1.
    pub fn server(&self) -> Leaf {
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params
            .subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params)
    }

    /// A client certificate with this URI name and common name.
    pub fn client(&self, uri: &str, common_name: &str) -> Leaf {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .subject_alt_names
            .push(SanType::URI(uri.try_into().unwrap()));
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params)
    }

    fn sign(&self, params: CertificateParams) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }
}

/// A directory of TLS files, removed at the end of the test.
pub struct TlsDir(PathBuf);

impl TlsDir {
    pub fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("notesd-tls-{}", Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    /// Writes `contents` to `name` whole (a rename, as a deployment tool
    /// would), so a reload never reads half a file.
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.0.join(name);
        let partial = self.0.join(format!(".{name}.partial"));
        std::fs::write(&partial, contents).unwrap();
        std::fs::rename(&partial, &path).unwrap();
        path
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// Settings for the server certificate `server`, reloaded every 50 ms.
    pub fn settings(&self, server: &Leaf) -> TlsSettings {
        let cert = self.write("server.crt", &server.cert);
        let key = self.write("server.key", &server.key);
        TlsSettings {
            reload_interval: Duration::from_millis(50),
            ..TlsSettings::new(cert, key)
        }
    }

    /// As `settings`, requiring client certificates from `client_ca` and
    /// mapping them with `identities` (JSON).
    pub fn mtls_settings(&self, server: &Leaf, client_ca: &Ca, identities: &str) -> TlsSettings {
        TlsSettings {
            client_ca: Some(self.write("clients.crt", &client_ca.pem())),
            client_identities: Some(self.write("identities.json", identities)),
            ..self.settings(server)
        }
    }
}

impl Drop for TlsDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A gRPC channel over TLS trusting `ca`, presenting `identity` if given.
async fn tls_channel(
    app: &TestApp,
    ca: &str,
    identity: Option<&Leaf>,
) -> Result<Channel, tonic::transport::Error> {
    let mut config = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost");
    if let Some(leaf) = identity {
        config = config.identity(Identity::from_pem(&leaf.cert, &leaf.key));
    }
    Channel::from_shared(format!("https://{}", app.addr))
        .unwrap()
        .tls_config(config)?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
}

/// Adds a note over TLS (trusting `ca`, presenting `identity`, sending
/// `metadata`), or says why it could not.
async fn add_over_tls(
    app: &TestApp,
    ca: &str,
    identity: Option<&Leaf>,
    metadata: Vec<(&'static str, String)>,
) -> Result<pb::Note, String> {
    let channel = tls_channel(app, ca, identity)
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    let mut client = NotesServiceClient::with_interceptor(channel, Metadata(metadata));
    client
        .add_note(pb::AddNoteRequest {
            note: Some(text_note("customer", "42", "over TLS")),
            ..Default::default()
        })
        .await
        .map(|response| response.into_inner().note.expect("a note"))
        .map_err(|status| format!("call: {status:?}"))
}

/// The same, expecting a status from notesd itself (not a failed
/// handshake).
async fn add_status(
    app: &TestApp,
    ca: &str,
    identity: &Leaf,
    metadata: Vec<(&'static str, String)>,
) -> tonic::Status {
    let channel = tls_channel(app, ca, Some(identity)).await.unwrap();
    let mut client = NotesServiceClient::with_interceptor(channel, Metadata(metadata));
    client
        .add_note(pb::AddNoteRequest {
            note: Some(text_note("customer", "42", "over TLS")),
            ..Default::default()
        })
        .await
        .expect_err("the call is refused")
}

/// Polls `check` until it holds, for at most five seconds.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An HTTPS client for the HTTP port, trusting `ca`.
fn https_client(app: &TestApp, ca: &str) -> reqwest::Client {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        .resolve("localhost", app.http_addr)
        .build()
        .unwrap()
}

#[tokio::test]
async fn both_ports_speak_tls_to_a_client_trusting_the_ca() {
    let ca = Ca::new("notesd test CA");
    let dir = TlsDir::new();
    let settings = dir.settings(&ca.server());
    let app = spawn_app_with(|s| s.tls = Some(settings)).await;
    let key = app.member_key("acme", "alice").await;

    let note = add_over_tls(&app, &ca.pem(), None, vec![("x-api-key", key.clone())])
        .await
        .unwrap();
    assert_eq!(note.creator_id, "alice");

    let url = format!("https://localhost:{}/healthz", app.http_addr.port());
    let response = https_client(&app, &ca.pem())
        .get(&url)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // The facades too: a Close call with the same key.
    let response = https_client(&app, &ca.pem())
        .get(format!(
            "https://localhost:{}/api/v1/activity/note/",
            app.http_addr.port()
        ))
        .basic_auth(&key, Some(""))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn a_plaintext_client_or_one_trusting_another_ca_gets_nowhere() {
    let ca = Ca::new("notesd test CA");
    let dir = TlsDir::new();
    let settings = dir.settings(&ca.server());
    let app = spawn_app_with(|s| s.tls = Some(settings)).await;
    let key = app.member_key("acme", "alice").await;

    // Plaintext HTTP/2 to the TLS port: the handshake fails, no call runs.
    let plaintext = match Channel::from_shared(format!("http://{}", app.addr))
        .unwrap()
        .connect()
        .await
    {
        Err(err) => Err(format!("{err:?}")),
        Ok(channel) => NotesServiceClient::with_interceptor(
            channel,
            Metadata(vec![("x-api-key", key.clone())]),
        )
        .add_note(pb::AddNoteRequest {
            note: Some(text_note("customer", "42", "plaintext")),
            ..Default::default()
        })
        .await
        .map(|_| ())
        .map_err(|status| format!("{status:?}")),
    };
    assert!(plaintext.is_err(), "a plaintext call went through");
    let plain_http = reqwest::get(format!("http://{}/healthz", app.http_addr)).await;
    assert!(
        plain_http.is_err(),
        "plaintext HTTP answered: {plain_http:?}"
    );

    let other = Ca::new("another CA");
    let refused = add_over_tls(&app, &other.pem(), None, vec![("x-api-key", key)]).await;
    let err = refused.expect_err("a client trusting another CA connected");
    assert!(err.contains("connect"), "{err}");
    let notes: i64 = sqlx::query_scalar("select count(*) from notes")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(notes, 0);
    app.stop().await;
}

const IDENTITIES: &str = r#"{"identities": [
    {"uri": "spiffe://acme/crm-sync", "tenant": "acme"},
    {"uri": "spiffe://acme/reports", "tenant": "acme", "member": "reports-bot"}
]}"#;

#[tokio::test]
async fn with_mtls_a_client_needs_a_certificate_from_the_ca() {
    let server_ca = Ca::new("server CA");
    let client_ca = Ca::new("client CA");
    let dir = TlsDir::new();
    let settings = dir.mtls_settings(&server_ca.server(), &client_ca, IDENTITIES);
    let app = spawn_app_with(|s| s.tls = Some(settings)).await;
    let key = app.member_key("acme", "alice").await;
    let metadata = || vec![("x-api-key", key.clone())];

    let none = add_over_tls(&app, &server_ca.pem(), None, metadata()).await;
    assert!(none.is_err(), "no client certificate, yet: {none:?}");
    let stranger = Ca::new("stranger CA").client("spiffe://acme/crm-sync", "crm-sync");
    let foreign = add_over_tls(&app, &server_ca.pem(), Some(&stranger), metadata()).await;
    assert!(
        foreign.is_err(),
        "a certificate of another CA, yet: {foreign:?}"
    );

    // A certificate from the CA, unmapped: the key still decides.
    let unmapped = client_ca.client("spiffe://acme/unknown", "unknown");
    let note = add_over_tls(&app, &server_ca.pem(), Some(&unmapped), metadata())
        .await
        .unwrap();
    assert_eq!(note.creator_id, "alice");
    let status = add_status(&app, &server_ca.pem(), &unmapped, vec![]).await;
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    assert_eq!(reason(&status), "MISSING_API_KEY");
    app.stop().await;
}

#[tokio::test]
async fn a_mapped_client_certificate_stands_in_for_a_key() {
    let server_ca = Ca::new("server CA");
    let client_ca = Ca::new("client CA");
    let dir = TlsDir::new();
    let settings = dir.mtls_settings(&server_ca.server(), &client_ca, IDENTITIES);
    let app = spawn_app_with(|s| s.tls = Some(settings)).await;

    // A service identity: the acting member comes from x-actor-id.
    let crm = client_ca.client("spiffe://acme/crm-sync", "crm-sync");
    let note = add_over_tls(
        &app,
        &server_ca.pem(),
        Some(&crm),
        vec![("x-actor-id", "bob".to_owned())],
    )
    .await
    .unwrap();
    assert_eq!(note.creator_id, "bob");
    let status = add_status(&app, &server_ca.pem(), &crm, vec![]).await;
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    assert_eq!(reason(&status), "MISSING_ACTOR");

    // A member identity acts as its member; the note is acme's.
    let reports = client_ca.client("spiffe://acme/reports", "reports");
    let note = add_over_tls(&app, &server_ca.pem(), Some(&reports), vec![])
        .await
        .unwrap();
    assert_eq!(note.creator_id, "reports-bot");
    let tenants: Vec<String> = sqlx::query_scalar("select distinct tenant_id from notes")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(tenants, ["acme"]);
    let status = add_status(
        &app,
        &server_ca.pem(),
        &reports,
        vec![("x-actor-id", "alice".to_owned())],
    )
    .await;
    assert_eq!(status.code(), tonic::Code::PermissionDenied);

    // A key, when one is sent, decides over the certificate.
    let other_key = app.member_key("globex", "carol").await;
    let note = add_over_tls(
        &app,
        &server_ca.pem(),
        Some(&reports),
        vec![("x-api-key", other_key)],
    )
    .await
    .unwrap();
    assert_eq!(note.creator_id, "carol");
    app.stop().await;
}

#[tokio::test]
async fn optional_client_auth_lets_a_client_without_a_certificate_use_a_key() {
    let server_ca = Ca::new("server CA");
    let client_ca = Ca::new("client CA");
    let dir = TlsDir::new();
    let settings = TlsSettings {
        client_auth: ClientAuth::Optional,
        ..dir.mtls_settings(&server_ca.server(), &client_ca, IDENTITIES)
    };
    let app = spawn_app_with(|s| s.tls = Some(settings)).await;
    let key = app.member_key("acme", "alice").await;

    let note = add_over_tls(&app, &server_ca.pem(), None, vec![("x-api-key", key)])
        .await
        .unwrap();
    assert_eq!(note.creator_id, "alice");
    let reports = client_ca.client("spiffe://acme/reports", "reports");
    let note = add_over_tls(&app, &server_ca.pem(), Some(&reports), vec![])
        .await
        .unwrap();
    assert_eq!(note.creator_id, "reports-bot");
    let stranger = Ca::new("stranger CA").client("spiffe://acme/reports", "reports");
    let foreign = add_over_tls(&app, &server_ca.pem(), Some(&stranger), vec![]).await;
    assert!(
        foreign.is_err(),
        "a certificate of another CA, yet: {foreign:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn changed_files_are_picked_up_without_a_restart() {
    let first = Ca::new("first CA");
    let client_ca = Ca::new("client CA");
    let dir = TlsDir::new();
    let settings = dir.mtls_settings(&first.server(), &client_ca, IDENTITIES);
    let app = spawn_app_with(|s| s.tls = Some(settings)).await;
    let reports = client_ca.client("spiffe://acme/reports", "reports");
    add_over_tls(&app, &first.pem(), Some(&reports), vec![])
        .await
        .unwrap();

    // A new server certificate, from another CA.
    let second = Ca::new("second CA");
    let leaf = second.server();
    dir.write("server.key", &leaf.key);
    dir.write("server.crt", &leaf.cert);
    eventually("the new certificate is served", || async {
        add_over_tls(&app, &second.pem(), Some(&reports), vec![])
            .await
            .is_ok()
    })
    .await;
    assert!(
        add_over_tls(&app, &first.pem(), Some(&reports), vec![])
            .await
            .is_err()
    );

    // A mapping changed: the certificate names another member.
    dir.write(
        "identities.json",
        r#"{"identities": [{"uri": "spiffe://acme/reports", "tenant": "acme", "member": "reports-v2"}]}"#,
    );
    eventually("the new mapping is in force", || async {
        add_over_tls(&app, &second.pem(), Some(&reports), vec![])
            .await
            .is_ok_and(|note| note.creator_id == "reports-v2")
    })
    .await;

    // Files that do not load keep what is in force.
    dir.write("server.crt", "not a certificate");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let note = add_over_tls(&app, &second.pem(), Some(&reports), vec![])
        .await
        .unwrap();
    assert_eq!(note.creator_id, "reports-v2");
    // ...and reloading goes on: good files after bad ones are served.
    let third = Ca::new("third CA");
    let leaf = third.server();
    dir.write("server.key", &leaf.key);
    dir.write("server.crt", &leaf.cert);
    eventually("good files after bad ones are served", || async {
        add_over_tls(&app, &third.pem(), Some(&reports), vec![])
            .await
            .is_ok()
    })
    .await;
    app.stop().await;
}

/// A server that requires client certificates of its own client CA
/// (mapped by [`IDENTITIES`]), and a client connected to it with the
/// `reports` certificate, sending no key.
struct MtlsSession {
    app: TestApp,
    dir: TlsDir,
    server_ca: Ca,
    reports: Leaf,
    client: Client,
}

impl MtlsSession {
    async fn start() -> Self {
        let server_ca = Ca::new("server CA");
        let client_ca = Ca::new("client CA");
        let dir = TlsDir::new();
        let settings = dir.mtls_settings(&server_ca.server(), &client_ca, IDENTITIES);
        let app = spawn_app_with(|s| s.tls = Some(settings)).await;
        let reports = client_ca.client("spiffe://acme/reports", "reports");
        let channel = tls_channel(&app, &server_ca.pem(), Some(&reports))
            .await
            .unwrap();
        let client = NotesServiceClient::with_interceptor(channel, Metadata(vec![]));
        Self {
            app,
            dir,
            server_ca,
            reports,
            client,
        }
    }
}

#[tokio::test]
async fn a_watch_ends_when_its_certificate_is_mapped_to_someone_else() {
    use futures::StreamExt as _;
    let MtlsSession {
        app,
        dir,
        mut client,
        ..
    } = MtlsSession::start().await;
    let mut watch = client
        .watch_notes(pb::WatchNotesRequest {
            subject: subject("customer", "42"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();

    dir.write(
        "identities.json",
        r#"{"identities": [{"uri": "spiffe://acme/reports", "tenant": "acme", "member": "someone-else"}]}"#,
    );
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match watch.next().await {
                Some(Ok(_)) => continue,
                Some(Err(status)) => return Some(status),
                None => return None,
            }
        }
    })
    .await
    .expect("the watch ends");
    let status = ended.expect("with an error");
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    app.stop().await;
}

#[tokio::test]
async fn a_connection_that_never_finishes_its_handshake_is_closed() {
    let ca = Ca::new("notesd test CA");
    let dir = TlsDir::new();
    let settings = TlsSettings {
        handshake_timeout: Duration::from_millis(200),
        ..dir.settings(&ca.server())
    };
    let app = spawn_app_with(|s| s.tls = Some(settings)).await;
    let mut silent = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(3), silent.read(&mut buf))
        .await
        .expect("the server closes a silent connection");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    // The server still serves.
    let key = app.member_key("acme", "alice").await;
    add_over_tls(&app, &ca.pem(), None, vec![("x-api-key", key)])
        .await
        .unwrap();
    app.stop().await;
}

#[tokio::test]
async fn files_that_do_not_load_stop_the_start() {
    let ca = Ca::new("notesd test CA");
    let dir = TlsDir::new();
    let leaf = ca.server();
    let other = ca.server();
    let cases: Vec<(TlsSettings, &str)> = vec![
        (
            TlsSettings::new(dir.path("missing.crt"), dir.write("a.key", &leaf.key)),
            "cannot read",
        ),
        (
            TlsSettings::new(
                dir.write("b.crt", &leaf.cert),
                dir.write("b.key", &other.key),
            ),
            "do not go together",
        ),
        (
            TlsSettings {
                client_identities: Some(dir.write("c.json", IDENTITIES)),
                ..TlsSettings::new(
                    dir.write("c.crt", &leaf.cert),
                    dir.write("c.key", &leaf.key),
                )
            },
            "needs --tls-client-ca",
        ),
        (
            TlsSettings {
                client_ca: Some(dir.write("d-ca.crt", &ca.pem())),
                client_identities: Some(
                    dir.write("d.json", r#"{"identities": [{"tenant": "acme"}]}"#),
                ),
                ..TlsSettings::new(
                    dir.write("d.crt", &leaf.cert),
                    dir.write("d.key", &leaf.key),
                )
            },
            "must name exactly one",
        ),
    ];
    for (settings, expected) in cases {
        let Err(err) = try_build_with(|s| s.tls = Some(settings)).await else {
            panic!("notesd started with bad TLS files ({expected})");
        };
        assert!(format!("{err:#}").contains(expected), "{err:#}");
    }
}

/// A connection made under a client CA that is then removed is refused
/// from its next call on (CERTIFICATE_NOT_TRUSTED): the certificate is
/// checked again, under the CA in force, not only at the handshake. (The
/// connection kept working for as long as it stayed open.)
#[tokio::test]
async fn a_connection_does_not_outlive_the_removal_of_its_ca() {
    let status = certificate_no_longer_trusted().await;
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    assert_eq!(reason(&status), "CERTIFICATE_NOT_TRUSTED");
}

/// What a call on an mTLS connection gets once the client CA it was made
/// under has been replaced: the status of a keyed call on it (a key does
/// not carry a call past its connection's certificate), after checking
/// that the same connection's calls were served before and are refused
/// without a key too.
pub async fn certificate_no_longer_trusted() -> tonic::Status {
    let MtlsSession {
        app,
        dir,
        server_ca,
        reports,
        mut client,
    } = MtlsSession::start().await;
    let add = |client: &mut Client| {
        let mut client = client.clone();
        async move {
            client
                .add_note(pb::AddNoteRequest {
                    note: Some(text_note("customer", "42", "over mTLS")),
                    ..Default::default()
                })
                .await
        }
    };
    add(&mut client).await.expect("the CA in force accepts it");

    // The client CA is replaced by another.
    let other = Ca::new("another client CA");
    dir.write("clients.crt", &other.pem());
    eventually("the new client CA is in force", || async {
        add_over_tls(&app, &server_ca.pem(), Some(&reports), vec![])
            .await
            .is_err()
    })
    .await;
    let status = add(&mut client).await.unwrap_err();
    assert_eq!(reason(&status), "CERTIFICATE_NOT_TRUSTED", "{status:?}");
    let key = app.member_key("acme", "alice").await;
    let mut request = tonic::Request::new(pb::ListNotesRequest::default());
    request
        .metadata_mut()
        .insert("x-api-key", key.parse().unwrap());
    let status = client.list_notes(request).await.unwrap_err();
    app.stop().await;
    status
}
