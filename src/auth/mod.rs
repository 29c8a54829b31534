//! API keys and the principal they stand for.

mod cache;
mod keys;

pub use keys::{
    ApiKeySecret, Authenticator, Credentials, KeyKind, KeySpec, client_address,
};

/// The header (gRPC metadata) carrying an API key, on gRPC and on the
/// facades that take a key header.
pub const API_KEY_HEADER: &str = "x-api-key";
/// The header naming the acting member of a service key.
pub const ACTOR_HEADER: &str = "x-actor-id";
