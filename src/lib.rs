//! candled: collects Binance kline streams into SQLite through supervised actors, with a health endpoint.
//! This crate is the application (config, CLI, HTTP, start-up); the engine lives in `candled-actors`.

pub mod admin_token;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod http;
pub mod reload;
pub mod startup;
