//! Integration tests: the real server over real gRPC, the real Postgres.

mod helpers;
