use clap::Parser as _;

/// mimalloc rather than the system allocator: a gRPC call allocates and
/// frees many small buffers across threads, which glibc's malloc serves
/// slowly (see docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    notesd::cli::Cli::parse().run().await
}
