//! API keys and the principal they stand for.

mod cache;
mod keys;

pub use keys::{
    ApiKeySecret, Authenticator, Credentials, IssuedKey, KeyKind, KeySpec, client_address,
};
