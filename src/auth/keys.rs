//! Key format, issuing, and authentication.
//!
//! A key reads `nk_<id>_<secret>`: `id` is the key's UUID in 32 hex digits,
//! `secret` 32 random bytes in unpadded base64url. Only SHA-256 of the
//! secret is stored; the whole key is shown once, when it is created.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::{DateTime, Utc};
use ipnet::IpNet;
use rand::RngCore as _;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use sqlx::PgPool;

use super::cache::KeyCache;
use crate::domain::{DomainError, MemberId, Principal, Role, TenantId};
use crate::storage::{ApiKeyRecord, ApiKeyStore, NewApiKey};

const PREFIX: &str = "nk_";
const ID_HEX_LEN: usize = 32;

/// A whole API key. Its `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKeySecret(String);

impl ApiKeySecret {
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    /// The key as the caller must send it. Print it once; never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Splits the key into its id and the hash of its secret part.
    fn parse(&self) -> Option<(Uuid, [u8; 32])> {
        let rest = self.0.strip_prefix(PREFIX)?;
        let id = rest.get(..ID_HEX_LEN)?;
        let secret = rest.get(ID_HEX_LEN..)?.strip_prefix('_')?;
        if secret.is_empty() {
            return None;
        }
        let id = Uuid::try_parse(id).ok()?;
        Some((id, hash_secret(secret)))
    }
}

impl std::fmt::Debug for ApiKeySecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKeySecret(***)")
    }
}

fn hash_secret(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// How a key names the member it acts as, and what it may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyKind {
    /// Acts as this member.
    Member(MemberId),
    /// Names the acting member on each call (`x-actor-id`).
    Service,
    /// Reads and changes every note of its tenant; recorded as this member.
    Admin(MemberId),
}

impl KeyKind {
    fn code(&self) -> &'static str {
        match self {
            Self::Member(_) => "member",
            Self::Service => "service",
            Self::Admin(_) => "admin",
        }
    }

    fn member(&self) -> Option<&MemberId> {
        match self {
            Self::Member(member) | Self::Admin(member) => Some(member),
            Self::Service => None,
        }
    }

    fn from_record(record: &ApiKeyRecord) -> anyhow::Result<Self> {
        let member = || -> anyhow::Result<MemberId> {
            let member = record
                .member_id
                .as_deref()
                .ok_or_else(|| anyhow::anyhow!("key {} has no member", record.id))?;
            MemberId::parse("member_id", member)
                .map_err(|e| anyhow::anyhow!("stored member_id: {e}"))
        };
        Ok(match record.kind.as_str() {
            "member" => Self::Member(member()?),
            "admin" => Self::Admin(member()?),
            "service" => Self::Service,
            other => anyhow::bail!("unknown key kind {other} in the database"),
        })
    }
}

/// What a key is allowed: its kind, and the networks it may call from
/// (none: anywhere).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpec {
    pub kind: KeyKind,
    pub allowed_cidrs: Vec<IpNet>,
    pub label: String,
    pub expires_at: Option<DateTime<Utc>>,
}

/// A key just created: its id, and the key itself to show once.
#[derive(Debug)]
pub struct IssuedKey {
    pub id: Uuid,
    pub key: ApiKeySecret,
}

/// What a call presented: a key, the acting member a service key names,
/// and the address the call came from.
#[derive(Debug, Default)]
pub struct Credentials {
    pub key: Option<ApiKeySecret>,
    pub actor: Option<String>,
    pub peer: Option<IpAddr>,
}

/// A key's last use is recorded at most this often.
const TOUCH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

/// The caller's address: the connection's peer, unless the peer is one of
/// `trusted_proxies`; then the walk goes right to left through the
/// `x-forwarded-for` hops (`forwarded_for`: the header's lines in order,
/// `None` for one that is not text), and the caller is the first hop that
/// is not a trusted proxy. Entries further left are the client's to forge.
///
/// The walk is strict: a hop that does not parse as an address (`unknown`,
/// an obfuscated name, garbage, a line that is not text) ends it, and the
/// caller is then the last trusted hop reached, never a hop further left.
/// A hop may carry a port, as some proxies write it (`192.0.2.7:5678`,
/// `[2001:db8::1]:443`); it is dropped.
pub(crate) fn client_address(
    peer: IpAddr,
    forwarded_for: &[Option<&str>],
    trusted_proxies: &[IpNet],
) -> IpAddr {
    let trusted = |ip: &IpAddr| trusted_proxies.iter().any(|net| net.contains(ip));
    let mut caller = peer;
    let mut hops = forwarded_for.iter().rev().flat_map(|line| match line {
        Some(line) => line.rsplit(',').map(parse_hop).collect::<Vec<_>>(),
        None => vec![None],
    });
    while trusted(&caller) {
        match hops.next() {
            Some(Some(hop)) => caller = hop,
            // The trusted proxy named no one we can read, or no one more.
            Some(None) | None => break,
        }
    }
    caller
}

/// One `x-forwarded-for` hop: an address, with or without a port.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    if let Ok(ip) = hop.parse() {
        return Some(ip);
    }
    if let Ok(socket) = hop.parse::<std::net::SocketAddr>() {
        return Some(socket.ip());
    }
    // `[v6]` without a port.
    hop.strip_prefix('[')?.strip_suffix(']')?.parse().ok()
}

/// Issues keys and turns credentials into a principal.
#[derive(Debug, Clone)]
pub struct Authenticator {
    keys: ApiKeyStore,
    /// When this process last recorded each key's use, so that a busy key
    /// costs one write a minute, not one per call.
    touched: Arc<Mutex<HashMap<Uuid, Instant>>>,
    /// Keys in use; empty and unused until `watch_key_changes` runs.
    cache: Arc<KeyCache>,
    /// Turns to read a key that is not cached (see `find`).
    key_reads: Arc<tokio::sync::Semaphore>,
}

/// How many keys not in the cache are read from the database at once: a
/// quarter of the default pool, so that keyless work (every key is
/// unknown until read) leaves the rest to the callers already known.
/// A read takes about a third of a millisecond: two at once check over
/// 5,000 new keys a second.
const KEY_READS: usize = 2;
/// How long a key read waits for its turn before it is refused.
const KEY_READ_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

impl Authenticator {
    pub fn new(keys: ApiKeyStore) -> Self {
        Self {
            keys,
            touched: Arc::default(),
            cache: Arc::default(),
            key_reads: Arc::new(tokio::sync::Semaphore::new(KEY_READS)),
        }
    }

    /// Caches keys for as long as the returned task listens for key
    /// changes on `pool`'s database (abort it to stop). Without it every
    /// call reads its key.
    pub fn watch_key_changes(&self, pool: PgPool) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.cache.clone().watch(pool))
    }

    /// Returns once keys are cached (the key-change listener is up), or
    /// after `within`.
    pub async fn wait_until_caching(&self, within: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + within;
        while !self.cache.is_listening() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    /// The key with this id, from the cache when it may be trusted.
    ///
    /// A key not cached, whose id has never named a key in this process,
    /// is read on the budget of [`KEY_READS`] reads at once: whoever
    /// presents it is not known yet, and a flood of made-up keys would
    /// otherwise take every connection of the pool from the callers whose
    /// keys are known. A read that waits for its turn longer than
    /// [`KEY_READ_WAIT`] is refused as OVERLOADED.
    async fn find(&self, id: Uuid) -> Result<Option<Arc<ApiKeyRecord>>, DomainError> {
        if let Some(record) = self.cache.get(id) {
            return Ok(record);
        }
        // An id that has named a key here before (its key lapsed from the
        // cache, or the cache is not listening) is read at once.
        let mut _turn = None;
        if !self.cache.is_known(id) {
            _turn = Some(
                tokio::time::timeout(KEY_READ_WAIT, self.key_reads.acquire())
                    .await
                    .map_err(|_| DomainError::Overloaded)?
                    .expect("the semaphore is never closed"),
            );
            // The calls that waited with the same new key find it read by
            // the first: a burst of them costs one read, not one each.
            if let Some(record) = self.cache.get(id) {
                return Ok(record);
            }
            if self.cache.is_known(id) {
                _turn = None;
            }
        }
        let generation = self.cache.generation();
        let record = self.keys.find(id).await?.map(Arc::new);
        self.cache.put(id, record.clone(), generation);
        Ok(record)
    }

    /// Records the key's use in the background, at most once a minute.
    fn touch(&self, id: Uuid) {
        let now = Instant::now();
        {
            let mut touched = self.touched.lock().unwrap_or_else(|e| e.into_inner());
            if touched
                .get(&id)
                .is_some_and(|last| now.duration_since(*last) < TOUCH_INTERVAL)
            {
                return;
            }
            touched.insert(id, now);
        }
        let keys = self.keys.clone();
        tokio::spawn(async move {
            if let Err(err) = keys.touch(id).await {
                tracing::warn!(key_id = %id, error = %err, "cannot record the key's last use");
            }
        });
    }

    pub async fn issue(&self, tenant: &TenantId, spec: KeySpec) -> Result<IssuedKey, DomainError> {
        let id = Uuid::now_v7();
        let mut secret_bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut secret_bytes);
        let secret = URL_SAFE_NO_PAD.encode(secret_bytes);
        self.keys
            .insert(&NewApiKey {
                id,
                tenant_id: tenant.as_str().to_owned(),
                kind: spec.kind.code(),
                member_id: spec.kind.member().map(|m| m.as_str().to_owned()),
                allowed_cidrs: spec.allowed_cidrs,
                secret_hash: hash_secret(&secret),
                label: spec.label,
                expires_at: spec.expires_at,
            })
            .await?;
        Ok(IssuedKey {
            id,
            key: ApiKeySecret(format!("{PREFIX}{}_{secret}", id.simple())),
        })
    }

    /// Replaces a key by a new one with the same tenant, kind, member,
    /// networks, label and expiry; the old key keeps working for `grace`
    /// (zero: it stops at once). Returns `None` when no live key has `id`.
    pub async fn rotate(
        &self,
        id: Uuid,
        grace: chrono::Duration,
    ) -> Result<Option<IssuedKey>, DomainError> {
        let Some(old) = self.keys.find(id).await? else {
            return Ok(None);
        };
        let now = Utc::now();
        if old.revoked_at.is_some() || old.expires_at.is_some_and(|at| at <= now) {
            return Ok(None);
        }
        let tenant = TenantId::parse("tenant_id", &old.tenant_id)?;
        let spec = KeySpec {
            kind: KeyKind::from_record(&old)?,
            allowed_cidrs: old.allowed_cidrs.clone(),
            label: old.label.clone(),
            expires_at: old.expires_at,
        };
        let issued = self.issue(&tenant, spec).await?;
        self.keys.expire(id, now + grace).await?;
        Ok(Some(issued))
    }

    /// Whether `key_id` (the `nk_<id>` part of a key, before the secret)
    /// names a key that is neither revoked nor expired. For the Zyntro
    /// facade, whose `api_key` and `developer_secret` fail separately.
    pub async fn key_is_live(&self, key_id: &str) -> Result<bool, DomainError> {
        let Some(id) = key_id
            .strip_prefix(PREFIX)
            .filter(|hex| hex.len() == ID_HEX_LEN)
            .and_then(|hex| Uuid::try_parse(hex).ok())
        else {
            return Ok(false);
        };
        let now = Utc::now();
        Ok(self.find(id).await?.is_some_and(|record| {
            record.revoked_at.is_none() && record.expires_at.is_none_or(|at| at > now)
        }))
    }

    /// The principal of a call, or why it is refused.
    pub async fn authenticate(&self, credentials: Credentials) -> Result<Principal, DomainError> {
        let key = credentials.key.ok_or(DomainError::ApiKeyMissing)?;
        let (id, hash) = key.parse().ok_or(DomainError::ApiKeyInvalid)?;
        let record = self.find(id).await?.ok_or(DomainError::ApiKeyInvalid)?;
        if !is_usable(&record, &hash, Utc::now()) {
            return Err(DomainError::ApiKeyInvalid);
        }
        if !record.allowed_cidrs.is_empty()
            && !credentials
                .peer
                .is_some_and(|peer| record.allowed_cidrs.iter().any(|net| net.contains(&peer)))
        {
            return Err(DomainError::IpNotAllowed);
        }
        let tenant = TenantId::parse("tenant_id", &record.tenant_id)?;
        let kind = KeyKind::from_record(&record)?;
        let role = match kind {
            KeyKind::Admin(_) => Role::Admin,
            KeyKind::Member(_) | KeyKind::Service => Role::Member,
        };
        let member = match (kind, credentials.actor) {
            (KeyKind::Member(member) | KeyKind::Admin(member), None) => member,
            (KeyKind::Member(member) | KeyKind::Admin(member), Some(actor))
                if actor == member.as_str() =>
            {
                member
            }
            (KeyKind::Member(_) | KeyKind::Admin(_), Some(_)) => {
                return Err(DomainError::ActorMismatch);
            }
            (KeyKind::Service, None) => return Err(DomainError::ActorMissing),
            (KeyKind::Service, Some(actor)) => MemberId::parse("x-actor-id", &actor)?,
        };
        self.touch(id);
        Ok(Principal {
            tenant,
            member,
            role,
            key: Some(id),
        })
    }
}

fn is_usable(record: &ApiKeyRecord, presented_hash: &[u8; 32], now: DateTime<Utc>) -> bool {
    record.secret_hash == presented_hash
        && record.revoked_at.is_none()
        && record.expires_at.is_none_or(|expiry| expiry > now)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address(peer: &str, lines: &[Option<&str>]) -> IpAddr {
        let trusted: Vec<IpNet> = vec![
            "127.0.0.1/32".parse().unwrap(),
            "10.0.0.0/8".parse().unwrap(),
        ];
        client_address(peer.parse().unwrap(), lines, &trusted)
    }

    fn ip(value: &str) -> IpAddr {
        value.parse().unwrap()
    }

    #[test]
    fn forwarded_for_is_walked_strictly() {
        // An untrusted peer: the header is the client's own.
        assert_eq!(address("192.0.2.1", &[Some("10.9.9.9")]), ip("192.0.2.1"));
        // Through trusted hops to the first untrusted one.
        assert_eq!(
            address("127.0.0.1", &[Some("203.0.113.9, 198.51.100.7, 10.1.1.1")]),
            ip("198.51.100.7")
        );
        // Ports are dropped, in either family.
        assert_eq!(
            address("127.0.0.1", &[Some("10.9.9.9, 203.0.113.7:5678")]),
            ip("203.0.113.7")
        );
        assert_eq!(
            address("127.0.0.1", &[Some("10.9.9.9, [2001:db8::1]:443")]),
            ip("2001:db8::1")
        );
        assert_eq!(
            address("127.0.0.1", &[Some("[2001:db8::2]")]),
            ip("2001:db8::2")
        );
        // An unreadable hop ends the walk at the last trusted hop: the
        // forged entry to its left is never reached.
        for unreadable in ["unknown", "_hidden", "10.9.9.9:x", "", "10.9.9.9 10.1.1.1"] {
            assert_eq!(
                address("127.0.0.1", &[Some(&format!("10.9.9.9, {unreadable}"))]),
                ip("127.0.0.1"),
                "{unreadable:?}"
            );
        }
        assert_eq!(
            address("127.0.0.1", &[Some("10.9.9.9"), None]),
            ip("127.0.0.1"),
            "a line that is not text"
        );
        assert_eq!(
            address("127.0.0.1", &[Some("10.1.1.1, unknown"), Some("10.2.2.2")]),
            ip("10.2.2.2"),
            "a trusted hop, then an unreadable one: the trusted hop"
        );
        // Lines are one list, in order: two lines read as one.
        assert_eq!(
            address("127.0.0.1", &[Some("10.9.9.9"), Some("203.0.113.7:5678")]),
            ip("203.0.113.7")
        );
        // All trusted: the leftmost.
        assert_eq!(
            address("127.0.0.1", &[Some("10.2.2.2, 10.1.1.1")]),
            ip("10.2.2.2")
        );
        assert_eq!(address("127.0.0.1", &[]), ip("127.0.0.1"));
    }

    #[test]
    fn debug_hides_the_secret() {
        let key = ApiKeySecret::new("nk_0123_secret");
        assert!(!format!("{key:?}").contains("secret"));
    }

    #[test]
    fn parse_splits_id_and_hashes_secret() {
        let id = Uuid::now_v7();
        let key = ApiKeySecret::new(format!("nk_{}_abc_def", id.simple()));
        let (parsed, hash) = key.parse().unwrap();
        assert_eq!(parsed, id);
        assert_eq!(hash, hash_secret("abc_def"));
        assert!(ApiKeySecret::new("nk_short_x").parse().is_none());
        assert!(
            ApiKeySecret::new(format!("nk_{}_", id.simple()))
                .parse()
                .is_none()
        );
        assert!(ApiKeySecret::new("garbage").parse().is_none());
    }
}
