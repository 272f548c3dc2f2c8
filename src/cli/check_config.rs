//! `candled check-config`: validates a config file as start-up does and prints it normalised (the view
//! `GET /api/v1/config` shows), or the error; with `--online`, also checks the symbols against the exchange.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use candled_actors::metrics::Metrics;
use candled_actors::rest::RestClient;
use candled_actors::tls;
use clap::Args;

use super::{CONFIG_ERROR, load_settings};
use crate::config::Settings;
use crate::reload::settings_view;
use crate::startup::check_symbols;

#[derive(Debug, Args)]
pub struct CheckConfigArgs {
    /// The config file to check [default: the `--config` file].
    #[arg(value_name = "PATH")]
    pub path: Option<PathBuf>,
    /// Also ask the exchange (`[exchange] rest_url`) whether every symbol is listed; an unlisted one is an error.
    #[arg(long)]
    pub online: bool,
}

/// Prints the normalised config on stdout and a one-line verdict on stderr: exit 0, or 2 with the error.
pub async fn run(config: &Path, args: CheckConfigArgs) -> ExitCode {
    let path = args.path.as_deref().unwrap_or(config);
    let settings = match load_settings(path) {
        Ok(settings) => settings,
        Err(code) => return code,
    };
    if args.online
        && let Err(code) = check_online(path, &settings).await
    {
        return code;
    }
    let printed = serde_json::to_string_pretty(&settings_view(&settings))
        .map_err(std::io::Error::from)
        .and_then(|text| writeln!(std::io::stdout(), "{text}"));
    match printed {
        Ok(()) => {}
        // A reader that stopped early (`| head`) is no error.
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => return ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: cannot print the config: {error}");
            return ExitCode::FAILURE;
        }
    }
    let symbols = settings.streams.iter().map(|key| &key.symbol).collect::<std::collections::HashSet<_>>().len();
    let cluster = settings.cluster;
    let owned = match cluster.shards() {
        1 => String::new(),
        shards => format!("; shard {} of {shards} owns {}", cluster.shard(), settings.owned_streams().len()),
    };
    eprintln!(
        "config file {} is valid: {} streams of {symbols} symbol(s){owned}",
        path.display(),
        settings.streams.len()
    );
    ExitCode::SUCCESS
}

/// The symbols checked against the exchange, as start-up checks them.
async fn check_online(path: &Path, settings: &Settings) -> Result<(), ExitCode> {
    let client = tls::client_config(settings.exchange.ca_file.as_deref())
        .map_err(anyhow::Error::from)
        .and_then(|tls| Ok(RestClient::new(&settings.exchange.rest_url, tls, Metrics::new())?));
    let rest = client.map_err(|error| {
        eprintln!("error: config file {}: cannot reach the exchange: {error:#}", path.display());
        ExitCode::from(CONFIG_ERROR)
    })?;
    let mut symbols: Vec<String> = settings.streams.iter().map(|key| key.symbol.clone()).collect();
    symbols.dedup();
    check_symbols(&rest, &symbols).await.map_err(|unlisted| {
        eprintln!("error: config file {}: {unlisted}", path.display());
        ExitCode::from(CONFIG_ERROR)
    })
}
