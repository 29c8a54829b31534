//! TLS and mTLS for both ports (README, "TLS"): the server's certificate
//! and key, optionally a CA whose client certificates are required (or
//! accepted), and the mapping of client certificates to identities. All of
//! it is read from PEM (and JSON) files, and read again when they change:
//! checked every `reload_interval`, and at once on SIGHUP. A reload that
//! fails (a file half written, a key that does not match) keeps what was
//! in force and logs why; connections already open keep the certificates
//! they were made with.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use sha2::{Digest as _, Sha256};
use tokio::sync::watch;

use crate::auth::{ClientIdentities, ClientTrust};
use crate::listener::AbortOnDrop;

/// Whether a client certificate is required when `--tls-client-ca` is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ClientAuth {
    /// A connection without a certificate from the CA is refused in the
    /// handshake.
    Required,
    /// A connection may come without a certificate (its calls then need
    /// a key); one with a certificate not from the CA is refused.
    Optional,
}

/// Where the TLS files are, and how they are watched.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    /// The server's certificate chain (PEM), leaf first.
    pub cert: PathBuf,
    /// The server's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// CAs (PEM) whose client certificates are verified: mTLS.
    pub client_ca: Option<PathBuf>,
    /// With `client_ca`: whether a client certificate is required.
    pub client_auth: ClientAuth,
    /// Client certificate names mapped to identities (JSON; see
    /// [`ClientIdentities::from_json`]).
    pub client_identities: Option<PathBuf>,
    /// How often the files are checked for changes.
    pub reload_interval: Duration,
    /// How long a new connection has to finish its handshake.
    pub handshake_timeout: Duration,
}

impl TlsSettings {
    /// The defaults for the certificate `cert` and key `key`.
    pub fn new(cert: PathBuf, key: PathBuf) -> Self {
        Self {
            cert,
            key,
            client_ca: None,
            client_auth: ClientAuth::Required,
            client_identities: None,
            reload_interval: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
        }
    }

    fn files(&self) -> impl Iterator<Item = &Path> {
        [Some(&self.cert), Some(&self.key), self.client_ca.as_ref()]
            .into_iter()
            .chain([self.client_identities.as_ref()])
            .flatten()
            .map(PathBuf::as_path)
    }
}

/// What the files said when they were last read.
struct Loaded {
    config: Arc<ServerConfig>,
    identities: Arc<ClientIdentities>,
}

/// The TLS configuration in force, for the listeners (the server config)
/// and for authentication (the identity mapping).
#[derive(Clone)]
pub(crate) struct TlsConfigs {
    pub(crate) server: watch::Receiver<Arc<ServerConfig>>,
    pub(crate) identities: watch::Receiver<Arc<ClientIdentities>>,
    pub(crate) handshake_timeout: Duration,
}

/// Reads the files and keeps them read: the configuration, and the task
/// that reloads it (abort it to stop).
pub(crate) fn start(settings: TlsSettings) -> anyhow::Result<(TlsConfigs, AbortOnDrop)> {
    let (contents, fingerprint) = read_files(&settings)?;
    let loaded = load(&settings, &contents)?;
    tracing::info!(
        client_auth = settings
            .client_ca
            .is_some()
            .then_some(format!("{:?}", settings.client_auth)),
        mapped_identities = loaded.identities.len(),
        "TLS files read"
    );
    let (server_tx, server) = watch::channel(loaded.config);
    let (identities_tx, identities) = watch::channel(loaded.identities);
    let configs = TlsConfigs {
        server,
        identities,
        handshake_timeout: settings.handshake_timeout,
    };
    let task = tokio::spawn(async move {
        let mut fingerprint = fingerprint;
        let mut hangups = hangups();
        let mut interval = tokio::time::interval(settings.reload_interval);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        interval.tick().await;
        loop {
            tokio::select! {
                _ = interval.tick() => {}
                Some(()) = hangups.recv() => {
                    tracing::info!("SIGHUP: reading the TLS files again");
                }
            }
            // Files are read and parsed off the runtime's threads.
            let reading = settings.clone();
            let reloaded = tokio::task::spawn_blocking(move || {
                read_files(&reading).and_then(|(contents, new)| {
                    if new == fingerprint {
                        return Ok(None);
                    }
                    Ok(Some((load(&reading, &contents)?, new)))
                })
            })
            .await
            .unwrap_or_else(|err| Err(anyhow::anyhow!("the reload panicked: {err}")));
            match reloaded {
                Ok(None) => {}
                Ok(Some((loaded, new))) => {
                    fingerprint = new;
                    let mapped_identities = loaded.identities.len();
                    server_tx.send_replace(loaded.config);
                    identities_tx.send_replace(loaded.identities);
                    tracing::info!(
                        mapped_identities,
                        "TLS files changed: new connections use them"
                    );
                }
                Err(err) => tracing::warn!(
                    error = format!("{err:#}"),
                    "cannot reload the TLS files; keeping the ones in force"
                ),
            }
        }
    });
    Ok((configs, AbortOnDrop(task)))
}

/// SIGHUPs, one message each (none where there are no signals).
fn hangups() -> tokio::sync::mpsc::Receiver<()> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    #[cfg(unix)]
    if let Ok(mut signal) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        tokio::spawn(async move {
            while signal.recv().await.is_some() {
                if tx.send(()).await.is_err() {
                    return;
                }
            }
        });
    }
    #[cfg(not(unix))]
    drop(tx);
    rx
}

/// The contents of the files, in the order of `TlsSettings::files`, and
/// their fingerprint.
fn read_files(settings: &TlsSettings) -> anyhow::Result<(Vec<Vec<u8>>, [u8; 32])> {
    let mut hash = Sha256::new();
    let contents = settings
        .files()
        .map(|path| {
            let bytes =
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            hash.update((bytes.len() as u64).to_le_bytes());
            hash.update(&bytes);
            Ok(bytes)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok((contents, hash.finalize().into()))
}

fn load(settings: &TlsSettings, contents: &[Vec<u8>]) -> anyhow::Result<Loaded> {
    let mut contents = contents.iter();
    let mut next = || contents.next().map(Vec::as_slice).unwrap_or_default();
    let (cert_pem, key_pem) = (next(), next());
    let ca_pem = settings.client_ca.as_ref().map(|_| next());
    let identities_json = settings.client_identities.as_ref().map(|_| next());

    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{}: not PEM certificates", settings.cert.display()))?;
    anyhow::ensure!(
        !chain.is_empty(),
        "{}: holds no certificate",
        settings.cert.display()
    );
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .with_context(|| format!("{}: not a PEM private key", settings.key.display()))?;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut trust = ClientTrust::default();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match ca_pem {
        None => builder.with_no_client_auth(),
        Some(ca_pem) => {
            let ca_path = settings.client_ca.as_deref().unwrap_or(Path::new(""));
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(ca_pem) {
                let cert =
                    cert.with_context(|| format!("{}: not PEM certificates", ca_path.display()))?;
                roots
                    .add(cert)
                    .with_context(|| format!("{}: not a CA certificate", ca_path.display()))?;
            }
            anyhow::ensure!(
                !roots.is_empty(),
                "{}: holds no certificate",
                ca_path.display()
            );
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = match settings.client_auth {
                ClientAuth::Required => verifier,
                ClientAuth::Optional => verifier.allow_unauthenticated(),
            };
            let verifier = verifier.build()?;
            trust = ClientTrust::new(verifier.clone());
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .context("the TLS certificate and key do not go together")?;
    // gRPC needs HTTP/2; gRPC-Web and the facades also speak HTTP/1.1.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];

    let identities = match identities_json {
        None => ClientIdentities::default(),
        Some(json) => ClientIdentities::from_json(json).with_context(|| {
            format!(
                "{}: not a client identity mapping",
                settings
                    .client_identities
                    .as_deref()
                    .unwrap_or(Path::new(""))
                    .display()
            )
        })?,
    };
    anyhow::ensure!(
        settings.client_identities.is_none() || settings.client_ca.is_some(),
        "--tls-client-identities needs --tls-client-ca: without it no client certificate is verified"
    );
    Ok(Loaded {
        config: Arc::new(config),
        identities: Arc::new(identities.with_trust(trust)),
    })
}
