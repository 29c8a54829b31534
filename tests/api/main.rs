//! Integration tests: the real server over real gRPC, the real Postgres.

mod helpers;

mod access;
mod auth;
mod bodies;
mod cli;
mod idempotency;
mod listing;
mod notes;
mod process;
mod revisions;
mod server;
