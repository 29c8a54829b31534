//! Code generation for the gRPC contract in `proto/`.
//!
//! 1. protox (a pure-Rust protobuf compiler, so no system `protoc` is needed)
//!    parses `proto/` into a file descriptor set;
//! 2. the descriptor set is written to `$OUT_DIR/notes_descriptor.bin`, which
//!    the server embeds for gRPC reflection;
//! 3. tonic-prost-build turns it into Rust messages, a server and a client.

use std::{env, fs, path::PathBuf};

use prost::Message as _;

const PROTO_ROOT: &str = "proto";
const PROTO_FILES: &[&str] = &[
    "proto/notes/v1/notes.proto",
    "proto/notes/v1/subjects.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed={PROTO_ROOT}");
    // sqlx::migrate! embeds migrations/; a new file there must rebuild.
    println!("cargo:rerun-if-changed=migrations");

    let descriptors = protox::compile(PROTO_FILES, [PROTO_ROOT])?;

    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(
        out_dir.join("notes_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;

    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(descriptors)?;
    Ok(())
}
