//! Client certificates standing in for API keys (docs/access.md, "Client
//! certificates"). With mTLS, a file (`--tls-client-identities`) maps a
//! certificate's name (a URI or DNS subject alternative name, or its
//! subject's common name) to a tenant and a service identity; a call that
//! sends no key, on a connection whose verified certificate is mapped, is
//! that identity's. Without a mapping the key is still required.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use serde::Deserialize;
use x509_parser::extensions::GeneralName;

use crate::domain::{DomainError, MemberId, Principal, Role, TenantId};

/// A verified client certificate, read once per connection: its names,
/// and its chain, to check again against the CA in force (see
/// [`ClientIdentities::trusts`]).
#[derive(Debug, Default)]
pub(crate) struct PeerCertificate {
    uris: Vec<String>,
    dns_names: Vec<String>,
    common_names: Vec<String>,
    /// The leaf first, as the client sent it.
    chain: Vec<CertificateDer<'static>>,
    /// When the leaf expires (Unix seconds).
    not_after: i64,
    /// The trust generation it was last checked under, doubled, plus one
    /// when it passed; 0 before the first check.
    checked: AtomicU64,
}

impl PeerCertificate {
    /// The certificate whose chain (the leaf first) is `chain`, or `None`
    /// when its leaf does not parse (the TLS library verified it, but
    /// notesd cannot read its names: it then identifies nobody).
    pub(crate) fn from_chain(chain: &[CertificateDer<'static>]) -> Option<Self> {
        let (_, cert) = x509_parser::parse_x509_certificate(chain.first()?).ok()?;
        let mut names = Self {
            chain: chain.to_vec(),
            not_after: cert.validity().not_after.timestamp(),
            ..Self::default()
        };
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::URI(uri) => names.uris.push((*uri).to_owned()),
                    GeneralName::DNSName(dns) => names.dns_names.push(dns.to_ascii_lowercase()),
                    _ => {}
                }
            }
        }
        names.common_names = cert
            .subject()
            .iter_common_name()
            .filter_map(|cn| cn.as_str().ok())
            .map(str::to_owned)
            .collect();
        Some(names)
    }

    fn still_valid(&self) -> bool {
        chrono::Utc::now().timestamp() < self.not_after
    }
}

/// Who a mapped certificate is: its tenant, and either the one member it
/// acts as or, like a service key, the member each call names in
/// `x-actor-id`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CertIdentity {
    tenant: TenantId,
    member: Option<MemberId>,
}

impl CertIdentity {
    fn principal(&self, actor: Option<&str>) -> Result<Principal, DomainError> {
        let member = match (&self.member, actor) {
            (Some(member), None) => member.clone(),
            (Some(member), Some(actor)) if actor == member.as_str() => member.clone(),
            (Some(_), Some(_)) => return Err(DomainError::ActorMismatch),
            (None, None) => return Err(DomainError::ActorMissing),
            (None, Some(actor)) => MemberId::parse("x-actor-id", actor)?,
        };
        Ok(Principal {
            tenant: self.tenant.clone(),
            member,
            role: Role::Member,
            key: None,
        })
    }
}

/// The mapping from certificate names to identities. Empty (nobody is
/// identified by a certificate) unless a file gives one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ClientIdentities {
    by_uri: HashMap<String, CertIdentity>,
    by_dns: HashMap<String, CertIdentity>,
    by_common_name: HashMap<String, CertIdentity>,
    trust: ClientTrust,
}

/// The client CA in force, loaded with the mapping: a connection's
/// certificate was verified at its handshake, under the CA of then, and a
/// connection may outlive that CA's removal, or its certificate's expiry.
/// Each call checks the certificate again under this (once per CA
/// loaded: the answer is kept with the connection's certificate).
#[derive(Clone, Default)]
pub(crate) struct ClientTrust {
    verifier: Option<Arc<dyn ClientCertVerifier>>,
    /// Which load this is: 1, 2, ...; 0 without a CA.
    generation: u64,
}

impl ClientTrust {
    pub(crate) fn new(verifier: Arc<dyn ClientCertVerifier>) -> Self {
        static LOADS: AtomicU64 = AtomicU64::new(1);
        Self {
            verifier: Some(verifier),
            generation: LOADS.fetch_add(1, Ordering::Relaxed),
        }
    }
}

impl std::fmt::Debug for ClientTrust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTrust")
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

impl PartialEq for ClientTrust {
    fn eq(&self, other: &Self) -> bool {
        self.generation == other.generation
    }
}

impl Eq for ClientTrust {}

/// The file's shape: `{"identities": [{"uri": …, "tenant": …, "member": …}]}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IdentitiesFile {
    identities: Vec<IdentityEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IdentityEntry {
    uri: Option<String>,
    dns: Option<String>,
    common_name: Option<String>,
    tenant: String,
    member: Option<String>,
}

impl ClientIdentities {
    /// Parses the JSON of a `--tls-client-identities` file. Each entry names
    /// exactly one of `uri`, `dns` or `common_name`, and each name is mapped
    /// at most once.
    pub(crate) fn from_json(json: &[u8]) -> anyhow::Result<Self> {
        let file: IdentitiesFile = serde_json::from_slice(json)?;
        let mut identities = Self::default();
        for (i, entry) in file.identities.into_iter().enumerate() {
            let identity = CertIdentity {
                tenant: TenantId::parse("tenant", &entry.tenant)
                    .map_err(|e| anyhow::anyhow!("identities[{i}].tenant: {e}"))?,
                member: entry
                    .member
                    .as_deref()
                    .map(|member| MemberId::parse("member", member))
                    .transpose()
                    .map_err(|e| anyhow::anyhow!("identities[{i}].member: {e}"))?,
            };
            let (map, name, field) = match (entry.uri, entry.dns, entry.common_name) {
                (Some(uri), None, None) => (&mut identities.by_uri, uri, "uri"),
                (None, Some(dns), None) => {
                    (&mut identities.by_dns, dns.to_ascii_lowercase(), "dns")
                }
                (None, None, Some(cn)) => (&mut identities.by_common_name, cn, "common_name"),
                _ => anyhow::bail!(
                    "identities[{i}] must name exactly one of uri, dns and common_name"
                ),
            };
            if map.insert(name.clone(), identity).is_some() {
                anyhow::bail!("identities[{i}].{field}: {name:?} is mapped twice");
            }
        }
        Ok(identities)
    }

    /// With `trust`, the CA in force, against which each call checks its
    /// connection's certificate again.
    pub(crate) fn with_trust(self, trust: ClientTrust) -> Self {
        Self { trust, ..self }
    }

    /// Whether the CA in force (still) accepts `certificate`, and it has
    /// not expired: a connection made under a CA since removed, or whose
    /// certificate has expired since, is refused from its next call on.
    pub(crate) fn trusts(&self, certificate: &PeerCertificate) -> bool {
        let Some(verifier) = &self.trust.verifier else {
            return true;
        };
        let passed = self.trust.generation * 2 + 1;
        let checked = certificate.checked.load(Ordering::Acquire);
        if checked == passed {
            // Expiry is checked on every call; the chain once per CA.
            return certificate.still_valid();
        }
        if checked == passed - 1 {
            return false;
        }
        let Some((leaf, intermediates)) = certificate.chain.split_first() else {
            return false;
        };
        let ok = verifier
            .verify_client_cert(leaf, intermediates, UnixTime::now())
            .is_ok();
        certificate
            .checked
            .store(if ok { passed } else { passed - 1 }, Ordering::Release);
        ok
    }

    /// How many names are mapped.
    pub(crate) fn len(&self) -> usize {
        self.by_uri.len() + self.by_dns.len() + self.by_common_name.len()
    }

    /// The principal of a call that sent no key, on a connection whose
    /// client certificate is `certificate`: `None` when no name of the
    /// certificate is mapped. A URI name is looked up first, then a DNS
    /// name, then the common name; the first one mapped decides.
    pub(crate) fn authenticate(
        &self,
        certificate: &PeerCertificate,
        actor: Option<&str>,
    ) -> Option<Result<Principal, DomainError>> {
        let identity = certificate
            .uris
            .iter()
            .find_map(|uri| self.by_uri.get(uri))
            .or_else(|| {
                certificate
                    .dns_names
                    .iter()
                    .find_map(|dns| self.by_dns.get(dns))
            })
            .or_else(|| {
                certificate
                    .common_names
                    .iter()
                    .find_map(|cn| self.by_common_name.get(cn))
            })?;
        Some(identity.principal(actor))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certificate(uris: &[&str], dns: &[&str], cns: &[&str]) -> PeerCertificate {
        let owned = |names: &[&str]| names.iter().map(|n| (*n).to_owned()).collect();
        PeerCertificate {
            uris: owned(uris),
            dns_names: owned(dns),
            common_names: owned(cns),
            ..PeerCertificate::default()
        }
    }

    #[test]
    fn a_uri_name_decides_before_a_dns_name_and_the_common_name() {
        let identities = ClientIdentities::from_json(
            br#"{"identities": [
                {"uri": "spiffe://acme/sync", "tenant": "acme", "member": "sync"},
                {"dns": "Sync.Acme.Internal", "tenant": "other", "member": "dns"},
                {"common_name": "sync", "tenant": "other", "member": "cn"}
            ]}"#,
        )
        .unwrap();
        assert_eq!(identities.len(), 3);
        let both = certificate(&["spiffe://acme/sync"], &["sync.acme.internal"], &["sync"]);
        let principal = identities.authenticate(&both, None).unwrap().unwrap();
        assert_eq!(
            (principal.tenant.as_str(), principal.member.as_str()),
            ("acme", "sync")
        );
        let dns_only = certificate(&[], &["sync.acme.internal"], &["sync"]);
        let principal = identities.authenticate(&dns_only, None).unwrap().unwrap();
        assert_eq!(principal.member.as_str(), "dns");
        let cn_only = certificate(&[], &[], &["sync"]);
        let principal = identities.authenticate(&cn_only, None).unwrap().unwrap();
        assert_eq!(principal.member.as_str(), "cn");
        assert!(
            identities
                .authenticate(&certificate(&["spiffe://acme/other"], &[], &[]), None)
                .is_none()
        );
    }

    #[test]
    fn a_service_identity_takes_the_actor_and_a_member_one_refuses_another() {
        let identities = ClientIdentities::from_json(
            br#"{"identities": [
                {"uri": "spiffe://acme/crm", "tenant": "acme"},
                {"uri": "spiffe://acme/bot", "tenant": "acme", "member": "bot"}
            ]}"#,
        )
        .unwrap();
        let crm = certificate(&["spiffe://acme/crm"], &[], &[]);
        assert!(matches!(
            identities.authenticate(&crm, None),
            Some(Err(DomainError::ActorMissing))
        ));
        let principal = identities
            .authenticate(&crm, Some("alice"))
            .unwrap()
            .unwrap();
        assert_eq!(principal.member.as_str(), "alice");
        assert_eq!(principal.role, Role::Member);
        let bot = certificate(&["spiffe://acme/bot"], &[], &[]);
        assert!(matches!(
            identities.authenticate(&bot, Some("alice")),
            Some(Err(DomainError::ActorMismatch))
        ));
    }

    #[test]
    fn a_bad_file_is_refused_naming_the_entry() {
        for (json, expected) in [
            (
                r#"{"identities": [{"tenant": "acme"}]}"#,
                "identities[0] must name exactly one",
            ),
            (
                r#"{"identities": [{"uri": "a", "dns": "b", "tenant": "acme"}]}"#,
                "identities[0] must name exactly one",
            ),
            (
                r#"{"identities": [{"uri": "a", "tenant": "acme"}, {"uri": "a", "tenant": "b"}]}"#,
                "identities[1].uri",
            ),
            (
                r#"{"identities": [{"uri": "a", "tenant": ""}]}"#,
                "identities[0].tenant",
            ),
            (
                r#"{"identities": [{"uri": "a", "tenant": "acme", "role": "admin"}]}"#,
                "unknown field",
            ),
        ] {
            let err = ClientIdentities::from_json(json.as_bytes()).unwrap_err();
            assert!(
                format!("{err:#}").contains(expected),
                "{json}: {err:#} should contain {expected}"
            );
        }
    }
}
