use std::process::ExitCode;

use clap::Parser as _;

/// mimalloc rather than the system allocator: a gRPC call allocates and
/// frees many small buffers across threads, which glibc's malloc serves
/// slowly (see docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    match notesd::cli::Cli::parse().run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // The error and its causes on one line; the backtrace only when
            // asked for with RUST_BACKTRACE.
            if std::env::var_os("RUST_BACKTRACE").is_some_and(|value| value != "0") {
                eprintln!("error: {err:?}");
            } else {
                eprintln!("error: {err:#}");
            }
            ExitCode::FAILURE
        }
    }
}
