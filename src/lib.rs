//! notesd: a gRPC notes microservice over PostgreSQL.
//!
//! Layers, inside out: `domain` (the model and its rules), `storage`
//! (Postgres), `service` (use cases), `api` (the application layer in
//! notes.v1 types), and the edges that call it: `grpc`, `compat` (the
//! vendor facades, served by `http`), with `auth` deciding who calls.

pub mod api;
pub mod auth;
pub mod cli;
pub mod compat;
pub mod domain;
pub mod grpc;
pub mod http;
pub mod metrics;
pub mod service;
pub mod startup;
pub mod storage;
pub mod telemetry;

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
