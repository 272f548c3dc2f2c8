//! The `candled` binary: installs the logger, parses the command line and runs the chosen subcommand.

use std::process::ExitCode;

use candled::cli::Cli;
use clap::Parser;

#[actix_web::main]
async fn main() -> ExitCode {
    // actix-http logs every malformed request at ERROR and has no switch for it: the wrapper rate-limits those.
    let logger = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).build();
    let max_level = logger.filter();
    if let Err(error) = candled::http::client_errors::install(logger, max_level) {
        eprintln!("warning: cannot install the logger: {error}");
    }
    Cli::parse().dispatch().await
}
