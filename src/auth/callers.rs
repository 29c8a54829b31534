//! Who is calling, the same way on every edge: a key (each edge says where
//! its clients put it) or, on gRPC without a key, a mapped client
//! certificate; the acting member of a service key or identity; and the
//! caller's address, which is the connection's peer or, behind a trusted
//! proxy, the last untrusted `x-forwarded-for` hop.

use std::net::IpAddr;
use std::sync::Arc;

use http::HeaderMap;
use ipnet::IpNet;

use super::{
    ApiKeySecret, Authenticator, ClientIdentities, Credentials, PeerCertificate, client_address,
};
use crate::domain::{DomainError, Principal};

/// The certificate mapping in force: replaced when the TLS files are
/// reloaded.
pub(crate) type IdentitySource = tokio::sync::watch::Receiver<Arc<ClientIdentities>>;

const FORWARDED_FOR_HEADER: &str = "x-forwarded-for";

/// A value trimmed, unless it is absent or blank.
fn present(value: Option<&str>) -> Option<&str> {
    value.map(str::trim).filter(|v| !v.is_empty())
}

/// Authenticates the callers of requests.
#[derive(Debug, Clone)]
pub(crate) struct Callers {
    auth: Authenticator,
    trusted_proxies: Vec<IpNet>,
    identities: IdentitySource,
}

impl Callers {
    pub(crate) fn new(
        auth: Authenticator,
        trusted_proxies: Vec<IpNet>,
        identities: IdentitySource,
    ) -> Self {
        Self {
            auth,
            trusted_proxies,
            identities,
        }
    }

    /// The keys themselves, for what authentication does not cover (a
    /// Zyntro key id checked on its own).
    pub(crate) fn keys(&self) -> &Authenticator {
        &self.auth
    }

    /// The principal of the request with these `headers` from `peer` that
    /// presents `key` and names `actor` (both trimmed; blank counts as not
    /// sent), on a connection with the client `certificate` (gRPC with
    /// mTLS). A key decides when one is sent; without one, a certificate
    /// the mapping names does.
    pub(crate) async fn authenticate(
        &self,
        key: Option<&str>,
        actor: Option<&str>,
        headers: &HeaderMap,
        peer: Option<IpAddr>,
        certificate: Option<&PeerCertificate>,
    ) -> Result<Principal, DomainError> {
        // One look at what is in force: the CA the certificate is checked
        // under and the mapping that names it are of the same load.
        let by_certificate = match certificate {
            Some(certificate) => {
                let identities = self.identities.borrow();
                if !identities.trusts(certificate) {
                    return Err(DomainError::CertificateNotTrusted);
                }
                present(key)
                    .is_none()
                    .then(|| identities.authenticate(certificate, present(actor)))
                    .flatten()
            }
            None => None,
        };
        if let Some(principal) = by_certificate {
            return principal;
        }
        let credentials = Credentials {
            key: present(key).map(ApiKeySecret::new),
            actor: present(actor).map(str::to_owned),
            peer: peer.map(|peer| self.client_address(peer, headers)),
        };
        self.auth.authenticate(credentials).await
    }

    fn client_address(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let forwarded: Vec<Option<&str>> = headers
            .get_all(FORWARDED_FOR_HEADER)
            .iter()
            .map(|line| line.to_str().ok())
            .collect();
        client_address(peer, &forwarded, &self.trusted_proxies)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::ApiKeyStore;

    fn callers(trusted: &[&str]) -> Callers {
        let pool = sqlx::PgPool::connect_lazy("postgres://localhost/unused").unwrap();
        Callers::new(
            Authenticator::new(ApiKeyStore::new(pool)),
            trusted.iter().map(|n| n.parse().unwrap()).collect(),
            tokio::sync::watch::channel(Arc::default()).1,
        )
    }

    fn forwarded(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(FORWARDED_FOR_HEADER, value.parse().unwrap());
        headers
    }

    #[tokio::test]
    async fn forwarded_for_is_ignored_unless_the_peer_is_trusted() {
        let callers = callers(&["10.0.0.0/8"]);
        let peer: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(
            callers.client_address(peer, &forwarded("198.51.100.7")),
            peer
        );
    }

    #[tokio::test]
    async fn the_last_untrusted_hop_is_the_client() {
        let callers = callers(&["10.0.0.0/8"]);
        let peer: IpAddr = "10.0.0.5".parse().unwrap();
        let headers = forwarded("203.0.113.9, 198.51.100.7, 10.1.1.1");
        assert_eq!(
            callers.client_address(peer, &headers),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(callers.client_address(peer, &HeaderMap::new()), peer);
    }
}
