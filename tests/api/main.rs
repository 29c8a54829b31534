//! Integration tests: the real server over real gRPC, the real Postgres.

mod helpers;

mod access;
mod admin;
mod auth;
mod batch;
mod batching;
mod bodies;
mod cli;
mod compat_capillary;
mod compat_close;
mod compat_edges;
mod compat_fernand;
mod compat_zyntro;
mod compression;
mod edges;
mod grpc_web;
mod idempotency;
mod isolation;
mod keys;
mod listing;
mod local_postgres;
mod network;
mod notes;
mod ops;
mod otlp;
mod process;
mod purge;
mod reasons;
mod revisions;
mod rls;
mod search;
mod server;
mod subjects;
mod watch;
