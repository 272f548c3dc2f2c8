//! candled's engine: the Binance kline wire format, candle rules, SQLite storage, and the actors that carry
//! candles from the exchange to storage and indicators.

pub mod actors;
pub mod domain;
pub mod indicators;
pub mod lock;
pub mod metrics;
pub mod rest;
pub mod store;
pub mod streams;
pub mod tasks;
pub mod tls;
