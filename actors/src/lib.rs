//! candled's engine: the Binance kline wire format, candle rules, SQLite storage, and the actors that carry
//! candles from the exchange to storage and indicators.

pub mod actors;
pub mod domain;
pub mod fault_injection;
pub mod hub;
pub mod in_progress;
pub mod indicators;
pub mod local_api;
pub mod lock;
pub mod metrics;
pub mod publish;
pub mod registry;
pub mod rest;
pub mod store;
pub mod streams;
pub mod tasks;
pub mod tls;
pub mod wiring;

/// An error with its causes, outermost first: `connect failed: tcp connect error: Connection refused (os error
/// 111)`. A cause whose text the previous one already shows is left out.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    #[derive(Debug, thiserror::Error)]
    #[error("{0}")]
    struct Layer(&'static str, #[source] Option<Box<Layer>>);

    #[test]
    fn error_chain_shows_every_cause_once() {
        let io = Layer("Connection refused (os error 111)", None);
        let connect = Layer("tcp connect error", Some(Box::new(io)));
        // The outer layer already repeats its cause's text: it is not shown twice.
        let outer = Layer("error sending request: tcp connect error", Some(Box::new(connect)));
        assert_eq!(
            super::error_chain(&outer),
            "error sending request: tcp connect error: Connection refused (os error 111)"
        );
    }
}
