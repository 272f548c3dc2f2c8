//! The hub's fan-out: one upstream kline frame handed to N local subscribers of its stream (the event sliced from
//! the frame once, then one bounded-buffer `try_send` per subscriber, under the hub's lock), beside a floor of N plain
//! `try_send`s of one shared event into channels of the same size. Subscribers are drained between iterations, as
//! reading clients would be.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use candled_actors::domain::{StreamKey, Timeframe, parse_frame};
use candled_actors::hub::{Feed, Hub, HubMessage, HubMetrics, HubSubscription, UpstreamEvent};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tokio::sync::mpsc;

const FRAME: &str = r#"{"stream":"btcusdt@kline_5m","data":{"e":"kline","E":1631636735735,"s":"BTCUSDT","k":{"t":1631636700000,"T":1631636999999,"s":"BTCUSDT","i":"5m","f":1054217725,"L":1054218306,"o":"46686.15000000","c":"46673.53000000","h":"46686.15000000","l":"46668.45000000","v":"12.26168000","n":582,"x":false,"q":"572337.21655380","V":"3.29093000","Q":"153606.31592330","B":"0"}}}"#;
const BUFFER: usize = 1024;

fn fan_out(c: &mut Criterion) {
    let key = StreamKey::new("BTCUSDT", Timeframe::M5);
    let candle = match parse_frame(FRAME) {
        Ok(candled_actors::domain::Frame::Kline(event)) => event.candle,
        _ => unreachable!("the bench frame is a valid kline"),
    };
    let frame = bytes::Bytes::from_static(FRAME.as_bytes());
    let mut group = c.benchmark_group("hub_fan_out");
    for subscribers in [1usize, 4, 200] {
        group.throughput(Throughput::Elements(subscribers as u64));
        let hub = Hub::new(BUFFER, HubMetrics::unregistered());
        let mut subscriptions: Vec<HubSubscription> = (0..subscribers).map(|_| hub.subscribe(Feed::EVENTS)).collect();
        for subscription in &subscriptions {
            subscription.subscribe(std::slice::from_ref(&key));
        }
        group.bench_with_input(BenchmarkId::new("hub", subscribers), &subscribers, |b, _| {
            b.iter(|| {
                hub.publish_event(&key, || {
                    UpstreamEvent::from_frame(key.clone(), frame.clone(), 1, candle, Instant::now())
                });
                for subscription in &mut subscriptions {
                    black_box(subscription.try_recv());
                }
            })
        });
        let channels: Vec<(mpsc::Sender<HubMessage>, mpsc::Receiver<HubMessage>)> =
            (0..subscribers).map(|_| mpsc::channel(BUFFER)).collect();
        let mut channels = channels;
        group.bench_with_input(BenchmarkId::new("floor_try_send", subscribers), &subscribers, |b, _| {
            b.iter(|| {
                let event = UpstreamEvent::from_frame(key.clone(), frame.clone(), 1, candle, Instant::now());
                let message = HubMessage::Event(Arc::new(event.expect("a valid frame")));
                for (sender, _) in &channels {
                    let _ = sender.try_send(message.clone());
                }
                for (_, receiver) in &mut channels {
                    black_box(receiver.try_recv().ok());
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, fan_out);
criterion_main!(benches);
