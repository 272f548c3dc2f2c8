//! The `candled` binary: reads the config, runs the application until SIGTERM or SIGINT, or runs a subcommand.

use std::path::PathBuf;
use std::process::ExitCode;

use candled::cli::{Command, backfill, export};
use candled::config::Settings;
use candled::startup::{Application, UnlistedSymbols, shutdown_signal};
use candled_actors::lock::LockError;
use clap::Parser;

/// Collects Binance kline streams into SQLite, supervised, with a health endpoint.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// The configuration file.
    #[arg(long, default_value = "config.toml", global = true)]
    config: PathBuf,
    /// Without one, candled runs the supervisor.
    #[command(subcommand)]
    command: Option<Command>,
}

/// The exit code for an invalid configuration, or a database another candled holds.
const CONFIG_ERROR: u8 = 2;

#[actix_web::main]
async fn main() -> ExitCode {
    // actix-http logs every malformed request at ERROR and has no switch for it: the wrapper rate-limits those.
    let logger = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).build();
    let max_level = logger.filter();
    if let Err(error) = candled::http::client_errors::install(logger, max_level) {
        eprintln!("warning: cannot install the logger: {error}");
    }
    let cli = Cli::parse();
    let failed = |message: String, code: u8| {
        eprintln!("error: {message}");
        ExitCode::from(code)
    };
    match &cli.command {
        None => {}
        Some(Command::Export(args)) => {
            return export::run(args, &cli.config)
                .map_or_else(|e| failed(e.to_string(), e.exit_code()), |()| ExitCode::SUCCESS);
        }
        Some(Command::Backfill(args)) => {
            return backfill::run(args, &cli.config)
                .await
                .map_or_else(|e| failed(e.to_string(), e.exit_code()), |()| ExitCode::SUCCESS);
        }
    }
    let settings = match Settings::load(&cli.config) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(CONFIG_ERROR);
        }
    };
    let run = async {
        let application = Application::build(settings, cli.config.clone()).await?;
        application.run_until_stopped(shutdown_signal()).await
    };
    let result = run.await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if error.is::<UnlistedSymbols>() => {
            eprintln!("error: config file {}: {error}", cli.config.display());
            ExitCode::from(CONFIG_ERROR)
        }
        Err(error) if matches!(error.downcast_ref(), Some(LockError::InUse { .. })) => {
            eprintln!("error: {error}");
            ExitCode::from(CONFIG_ERROR)
        }
        Err(error) => {
            log::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}
