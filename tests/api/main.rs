//! Integration tests: the real `candled` binary against the project's fake Binance exchange on loopback, checking
//! what reaches SQLite and HTTP.

mod audit;
mod cli;
mod cli_export_backfill;
mod cluster;
mod config_errors;
mod dashboard;
mod end_to_end;
mod fake_exchange;
mod helpers;
mod http_conventions;
mod indicators;
mod live_config;
mod live_streams;
mod local_binance_rest;
mod local_binance_ws;
mod metrics;
mod nats;
mod reliability;
mod scale;
mod scale_whole_exchange;
mod shutdown;
mod startup;
mod storage_faults;
mod supervision;
mod tls;
