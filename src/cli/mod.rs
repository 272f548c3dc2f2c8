//! The `candled` command line: the clap types and the dispatch to each subcommand. `candled` with no subcommand is
//! `candled run`, the supervisor.

pub mod backfill;
pub mod check_config;
pub mod export;
pub mod import;
pub mod range;
pub mod status;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use candled_actors::lock::LockError;
use clap::{Parser, Subcommand};

use crate::config::{BackendError, Settings};
use crate::startup::{Application, UnlistedSymbols, shutdown_signal};

/// The exit code for an invalid configuration, a database another candled holds, or an import refused.
pub const CONFIG_ERROR: u8 = 2;

/// Collects Binance kline streams into SQLite, supervised, with a health endpoint.
///
/// With no subcommand, runs the supervisor (`candled run`).
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
pub struct Cli {
    /// The configuration file (every subcommand reads it).
    #[arg(long, global = true, default_value = "config.toml", value_name = "PATH")]
    pub config: PathBuf,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the supervisor: stream the configured klines into SQLite and serve HTTP until SIGTERM or SIGINT
    /// (the default).
    Run,
    /// Validate a config file and print it normalised (every default filled in) as JSON; exit 0 when valid, 2
    /// with the error otherwise.
    CheckConfig(check_config::CheckConfigArgs),
    /// Bulk-load data.binance.vision kline files (.csv or .zip) into the database, then rebuild the indicators of
    /// the streams they touch.
    Import(import::ImportArgs),
    /// Show the health, tasks and streams of a running candled, as plain-text tables.
    Status(status::StatusArgs),
    /// Write one stream's closed candles (and, with --indicators, its indicator values) to CSV or Parquet. Reads
    /// only: it runs beside a running candled.
    Export(export::ExportArgs),
    /// Fetch an old range of any listed symbol over REST into the database, under the weight budget; run it again
    /// to resume.
    Backfill(backfill::BackfillArgs),
}

impl Cli {
    /// Runs the chosen subcommand to its exit code.
    pub async fn dispatch(self) -> ExitCode {
        match self.command.unwrap_or(Command::Run) {
            Command::Run => supervise(&self.config).await,
            Command::CheckConfig(args) => check_config::run(&self.config, args).await,
            Command::Import(args) => import::run(&self.config, args),
            Command::Status(args) => status::run(&self.config, args).await,
            Command::Export(args) => {
                exit_code(export::run(&args, &self.config).map_err(|e| (e.to_string(), e.exit_code())))
            }
            Command::Backfill(args) => {
                exit_code(backfill::run(&args, &self.config).await.map_err(|e| (e.to_string(), e.exit_code())))
            }
        }
    }
}

/// A subcommand's outcome as an exit code, its error printed.
fn exit_code(result: Result<(), (String, u8)>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err((message, code)) => {
            eprintln!("error: {message}");
            ExitCode::from(code)
        }
    }
}

/// Loads the config as start-up does: `Err` holds the exit code, the error already printed.
pub fn load_settings(path: &Path) -> Result<Settings, ExitCode> {
    Settings::load(path).map_err(|error| {
        eprintln!("error: {error}");
        ExitCode::from(CONFIG_ERROR)
    })
}

/// `candled run`: the application until SIGTERM or SIGINT.
async fn supervise(config: &Path) -> ExitCode {
    let settings = match load_settings(config) {
        Ok(settings) => settings,
        Err(code) => return code,
    };
    let run = async {
        let application = Application::build(settings, config.to_owned()).await?;
        application.run_until_stopped(shutdown_signal()).await
    };
    match run.await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if error.is::<UnlistedSymbols>() || error.is::<BackendError>() => {
            eprintln!("error: config file {}: {error}", config.display());
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

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_well_formed_and_run_is_the_default() {
        Cli::command().debug_assert();
        // TC0: no subcommand: the supervisor, with the default config.
        let cli = Cli::try_parse_from(["candled"]).expect("parses");
        assert!(cli.command.is_none() && cli.config == Path::new("config.toml"));
        // TC1: `--config` before or after the subcommand.
        for args in [["candled", "--config", "x.toml", "status"], ["candled", "status", "--config", "x.toml"]] {
            let cli = Cli::try_parse_from(args).expect("parses");
            assert!(matches!(cli.command, Some(Command::Status(_))) && cli.config == Path::new("x.toml"));
        }
        // TC2: import needs at least one file.
        assert!(Cli::try_parse_from(["candled", "import"]).is_err());
    }
}
