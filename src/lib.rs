//! notesd: a gRPC notes microservice over PostgreSQL.
//!
//! Layers, inside out: `domain` (the model and its rules), `storage`
//! (Postgres), `service` (use cases), `api` (the application layer in
//! notes.v1 types), and the edges that call it: `grpc`, `compat` (the
//! vendor facades, served by `http`), with `auth` deciding who calls and
//! `quotas` how much each caller may take.
//! `tls` and `listener` are the network edge (TLS, mTLS, connections).
//! `local_postgres` runs a PostgreSQL server of notesd's own when no other
//! is configured.

#![warn(unreachable_pub)]

mod api;
mod auth;
pub mod cli;
mod compat;
mod domain;
mod grpc;
mod http;
mod listener;
pub mod local_postgres;
mod metrics;
mod quotas;
mod service;
pub mod startup;
mod storage;
mod telemetry;
pub mod tls;

// The crate's surface besides the command line (`cli`), the server
// (`startup`) and the protobuf types: what the integration tests and the
// benchmark set up keys and databases with. Everything else is private to
// the crate, so the compiler reports what nothing uses.
pub use auth::{Authenticator, KeyKind, KeySpec};
pub use domain::{MemberId, TenantId};
pub use quotas::{Override as QuotaOverride, QuotaSettings};
pub use storage::{
    APP_ROLE, ApiKeyStore, BatchSettings, DatabaseOptions, ReplicaSettings, RetentionSettings,
    WatchSettings,
};

/// The generated protobuf types, server and client.
pub mod proto {
    pub mod notes {
        pub mod v1 {
            tonic::include_proto!("notes.v1");
        }
    }

    /// The encoded descriptor set of `proto/`, served by reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("notes_descriptor");
}
