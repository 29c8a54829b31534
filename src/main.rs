use clap::Parser as _;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    notesd::cli::Cli::parse().run().await
}
