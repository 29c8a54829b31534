//! Who is calling: the key and actor from the metadata, the address from
//! the connection (or, behind a trusted proxy, from `x-forwarded-for`).

use std::net::IpAddr;

use ipnet::IpNet;
use tonic::metadata::MetadataMap;
use tonic::{Request, Status};

use crate::auth::{ApiKeySecret, Authenticator, Credentials, client_address};
use crate::domain::Principal;

/// Metadata naming the acting member of a service key.
pub const ACTOR_HEADER: &str = "x-actor-id";
pub const API_KEY_HEADER: &str = "x-api-key";
const FORWARDED_FOR_HEADER: &str = "x-forwarded-for";

/// Authenticates calls.
#[derive(Debug, Clone)]
pub struct Callers {
    auth: Authenticator,
    trusted_proxies: Vec<IpNet>,
}

impl Callers {
    pub fn new(auth: Authenticator, trusted_proxies: Vec<IpNet>) -> Self {
        Self {
            auth,
            trusted_proxies,
        }
    }

    pub async fn principal<T>(&self, request: &Request<T>) -> Result<Principal, Status> {
        let metadata = request.metadata();
        let peer = request.remote_addr().map(|addr| addr.ip());
        let credentials = Credentials {
            key: api_key(metadata).map(ApiKeySecret::new),
            actor: text(metadata, ACTOR_HEADER).map(str::to_owned),
            peer: peer.map(|peer| self.client_address(peer, metadata)),
        };
        Ok(self.auth.authenticate(credentials).await?)
    }

    fn client_address(&self, peer: IpAddr, metadata: &MetadataMap) -> IpAddr {
        let forwarded = metadata
            .get_all(FORWARDED_FOR_HEADER)
            .iter()
            .filter_map(|v| v.to_str().ok());
        client_address(peer, forwarded, &self.trusted_proxies)
    }
}

fn text<'m>(metadata: &'m MetadataMap, name: &str) -> Option<&'m str> {
    metadata
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// The key from `x-api-key`, or else from `authorization: Bearer <key>`.
fn api_key(metadata: &MetadataMap) -> Option<&str> {
    text(metadata, API_KEY_HEADER).or_else(|| {
        let (scheme, token) = text(metadata, "authorization")?.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
    })
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
        )
    }

    fn forwarded(value: &str) -> MetadataMap {
        let mut metadata = MetadataMap::new();
        metadata.insert(FORWARDED_FOR_HEADER, value.parse().unwrap());
        metadata
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
        let metadata = forwarded("203.0.113.9, 198.51.100.7, 10.1.1.1");
        assert_eq!(
            callers.client_address(peer, &metadata),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(callers.client_address(peer, &MetadataMap::new()), peer);
    }
}
