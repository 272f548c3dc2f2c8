//! The indicator actor: one per (symbol, timeframe), fed closed candles in order by its subscription.

use std::collections::VecDeque;
use std::sync::Arc;

use actix::prelude::*;

use crate::actors::MAILBOX_CAPACITY;
use crate::actors::subscription::Drain;
use crate::domain::Candle;
use crate::tasks::{TaskState, TaskStats};

/// A candle of this stream: closed ones advance the indicators, in-progress ones only give provisional values.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct IndicatorCandle(pub Candle);

pub struct IndicatorActor {
    period: usize,
    closes: VecDeque<f64>,
    sum: f64,
    stats: Arc<TaskStats>,
}

impl IndicatorActor {
    pub fn new(period: usize, stats: Arc<TaskStats>) -> Self {
        Self { period: period.max(1), closes: VecDeque::new(), sum: 0.0, stats }
    }
}

impl Actor for IndicatorActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
        self.stats.set_state(TaskState::Running);
    }
}

impl Handler<IndicatorCandle> for IndicatorActor {
    type Result = ();

    fn handle(&mut self, IndicatorCandle(candle): IndicatorCandle, _ctx: &mut Context<Self>) {
        self.stats.record_handled();
        if !candle.is_closed {
            return;
        }
        self.closes.push_back(candle.close);
        self.sum += candle.close;
        if self.closes.len() > self.period {
            self.sum -= self.closes.pop_front().unwrap_or_default();
        }
    }
}

impl Handler<Drain> for IndicatorActor {
    type Result = ();

    fn handle(&mut self, _: Drain, _ctx: &mut Context<Self>) {
        self.stats.record_handled();
    }
}
