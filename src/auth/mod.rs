//! API keys (and client certificates) and the principal they stand for.

mod cache;
mod callers;
mod certs;
mod keys;

pub(crate) use callers::Callers;
pub(crate) use certs::{ClientIdentities, ClientTrust, PeerCertificate};
pub(crate) use keys::{ApiKeySecret, Credentials, client_address};
pub use keys::{Authenticator, KeyKind, KeySpec};

/// The header (gRPC metadata) carrying an API key, on gRPC and on the
/// facades that take a key header.
pub(crate) const API_KEY_HEADER: &str = "x-api-key";
/// The header naming the acting member of a service key.
pub(crate) const ACTOR_HEADER: &str = "x-actor-id";
