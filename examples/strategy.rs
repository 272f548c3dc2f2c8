//! A small strategy on candled's in-process hub: an SMA crossover over closed candles. It runs the candled engine
//! from a config, subscribes its actor to one stream's closed candles (after commit, with their indicator values),
//! and prints a BUY when the fast SMA crosses above the slow one and a SELL when it crosses below.
//!
//! ```text
//! cargo run --example strategy -- --config config.toml --symbol BTCUSDT --interval 1m \
//!     --fast sma_20 --slow sma_50 [--signals N] [--seconds S]
//! ```
//! The config must compute both SMAs (`[indicators] sma = [20, 50]`). It stops after `N` signals or `S` seconds
//! (default: on Ctrl-C). Every closed candle is printed as `candle <open time> fast=<value> slow=<value>`, every
//! signal as `signal BUY|SELL <open time> fast=<value> slow=<value>`.

use std::path::PathBuf;
use std::time::Duration;

use actix::prelude::*;
use candled::config::Settings;
use candled::startup::Application;
use candled_actors::domain::{StreamKey, Timeframe};
use candled_actors::hub::{Feed, HubMessage};
use clap::Parser;
use tokio::sync::watch;

#[derive(Parser)]
struct Args {
    /// candled's config file.
    #[arg(long)]
    config: PathBuf,
    #[arg(long, default_value = "BTCUSDT")]
    symbol: String,
    #[arg(long, default_value = "1m")]
    interval: String,
    /// The fast average's output name, as in `/api/v1/indicators`.
    #[arg(long, default_value = "sma_20")]
    fast: String,
    #[arg(long, default_value = "sma_50")]
    slow: String,
    /// Stop after this many signals.
    #[arg(long)]
    signals: Option<usize>,
    /// Stop after this many seconds.
    #[arg(long)]
    seconds: Option<u64>,
}

/// A trading signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signal {
    Buy,
    Sell,
}

/// The crossover rule, as plain data: the sign of `fast - slow` changing from one closed candle to the next.
#[derive(Debug, Default)]
struct Crossover {
    /// `fast - slow` on the previous candle that had both.
    previous: Option<f64>,
}

impl Crossover {
    fn update(&mut self, fast: f64, slow: f64) -> Option<Signal> {
        let spread = fast - slow;
        let signal = match self.previous {
            Some(before) if before <= 0.0 && spread > 0.0 => Some(Signal::Buy),
            Some(before) if before >= 0.0 && spread < 0.0 => Some(Signal::Sell),
            _ => None,
        };
        self.previous = Some(spread);
        signal
    }
}

/// The strategy: receives the hub's messages for its stream.
struct Strategy {
    fast: String,
    slow: String,
    crossover: Crossover,
    signals: usize,
    /// Told the number of signals so far.
    progress: watch::Sender<usize>,
}

impl Actor for Strategy {
    type Context = Context<Self>;
}

impl Handler<HubMessage> for Strategy {
    type Result = ();

    fn handle(&mut self, message: HubMessage, _ctx: &mut Context<Self>) {
        let closed = match message {
            HubMessage::Closed(closed) => closed,
            HubMessage::Event(_) => return,
            HubMessage::Disconnected(reason) => {
                eprintln!("strategy: the hub let go: {reason}");
                return;
            }
        };
        let open_time = closed.candle.open_time;
        let (Some(fast), Some(slow)) = (closed.indicator(&self.fast), closed.indicator(&self.slow)) else {
            println!("candle {open_time} warming-up");
            return;
        };
        println!("candle {open_time} fast={fast} slow={slow}");
        if let Some(signal) = self.crossover.update(fast, slow) {
            let side = if signal == Signal::Buy { "BUY" } else { "SELL" };
            println!("signal {side} {open_time} fast={fast} slow={slow}");
            self.signals += 1;
            self.progress.send_replace(self.signals);
        }
    }
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let args = Args::parse();
    let timeframe: Timeframe = args.interval.parse().map_err(|e| anyhow::anyhow!("--interval: {e}"))?;
    let key = StreamKey::new(args.symbol.to_ascii_uppercase(), timeframe);
    let settings = Settings::load(&args.config)?;
    let application = Application::build(settings, args.config.clone()).await?;

    let (progress, mut signals) = watch::channel(0);
    let strategy =
        Strategy { fast: args.fast, slow: args.slow, crossover: Crossover::default(), signals: 0, progress }.start();
    let _subscription = application.hub().subscribe_actor(strategy.recipient(), Feed::CLOSED, &[key]);

    let wanted = args.signals.unwrap_or(usize::MAX);
    let enough = async move {
        let _ = signals.wait_for(|count| *count >= wanted).await;
    };
    let timeout = async move {
        match args.seconds {
            Some(seconds) => tokio::time::sleep(Duration::from_secs(seconds)).await,
            None => std::future::pending().await,
        }
    };
    let stop = async move {
        tokio::select! {
            () = enough => {}
            () = timeout => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    application.run_until_stopped(stop).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signal_is_given_when_the_spread_changes_sign() {
        let mut crossover = Crossover::default();
        // TC0: the first candle has nothing to compare with.
        assert_eq!(crossover.update(1.0, 2.0), None);
        // TC1: fast crosses above, then stays above.
        assert_eq!(crossover.update(3.0, 2.0), Some(Signal::Buy));
        assert_eq!(crossover.update(4.0, 2.0), None);
        // TC2: touching is not crossing; going below from equal is.
        assert_eq!(crossover.update(2.0, 2.0), None);
        assert_eq!(crossover.update(1.0, 2.0), Some(Signal::Sell));
    }
}
