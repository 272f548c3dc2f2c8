//! Routing a WebSocket frame to the stream it belongs to: the connection's parse-and-route step as a pure
//! function, so that the connection actor and the pipeline bench run exactly the same code.

use std::collections::HashMap;

use crate::domain::{Candle, Frame, KlineEvent, RejectReason, StreamKey, Timeframe, parse_frame};

/// Symbol → per-timeframe index into a connection's stream list: routing without formatting a string per frame.
#[derive(Debug, Clone, Default)]
pub struct Router {
    routes: HashMap<Box<str>, [Option<u32>; Timeframe::ALL.len()]>,
}

impl Router {
    /// A router for `streams`, in order: the n-th key routes to index n.
    pub fn new<'a>(streams: impl IntoIterator<Item = &'a StreamKey>) -> Self {
        let mut routes: HashMap<Box<str>, [Option<u32>; Timeframe::ALL.len()]> = HashMap::new();
        for (index, key) in streams.into_iter().enumerate() {
            let slot = routes.entry(key.symbol.as_str().into()).or_default();
            slot[key.timeframe.index()] = Some(index as u32);
        }
        Self { routes }
    }

    /// The index of the stream of (`symbol`, `timeframe`), if it is routed here.
    pub fn index(&self, symbol: &str, timeframe: Timeframe) -> Option<usize> {
        self.routes.get(symbol).and_then(|slots| slots[timeframe.index()]).map(|index| index as usize)
    }
}

/// A frame, parsed once and routed.
#[derive(Debug, Clone, PartialEq)]
pub enum Routed<'a> {
    /// A kline of the stream at `index` of the router's list.
    Kline { index: usize, event_time: i64, candle: Candle },
    /// A kline of a stream this router does not carry.
    Unrouted(KlineEvent<'a>),
    /// Any frame other than a kline (acks, errors, serverShutdown, other events).
    Other(Frame<'a>),
}

/// Parses one text frame and routes a kline to its stream. A rejected frame must be counted and dropped.
pub fn route_frame<'a>(router: &Router, text: &'a str) -> Result<Routed<'a>, RejectReason> {
    Ok(match parse_frame(text)? {
        Frame::Kline(event) => match router.index(&event.symbol, event.timeframe) {
            Some(index) => Routed::Kline { index, event_time: event.event_time, candle: event.candle },
            None => Routed::Unrouted(event),
        },
        other => Routed::Other(other),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KLINE: &str = r#"{"stream":"ethusdt@kline_5m","data":{"e":"kline","E":1631636735735,"s":"ETHUSDT","k":{"t":1631636700000,"T":1631636999999,"s":"ETHUSDT","i":"5m","f":1,"L":2,"o":"3000.00000000","c":"3001.00000000","h":"3002.00000000","l":"2999.00000000","v":"1.00000000","n":2,"x":false,"q":"3000.00000000","V":"0.50000000","Q":"1500.00000000","B":"0"}}}"#;

    fn router() -> Router {
        let keys = [
            StreamKey::new("BTCUSDT", Timeframe::M1),
            StreamKey::new("ETHUSDT", Timeframe::M1),
            StreamKey::new("ETHUSDT", Timeframe::M5),
        ];
        Router::new(&keys)
    }

    #[test]
    fn router_indexes_streams_in_list_order() {
        let router = router();
        // TC0: first key.
        assert_eq!(router.index("BTCUSDT", Timeframe::M1), Some(0));
        // TC1: two timeframes of one symbol.
        assert_eq!(router.index("ETHUSDT", Timeframe::M1), Some(1));
        assert_eq!(router.index("ETHUSDT", Timeframe::M5), Some(2));
        // TC2: a timeframe or a symbol that is not carried.
        assert_eq!(router.index("BTCUSDT", Timeframe::M5), None);
        assert_eq!(router.index("btcusdt", Timeframe::M1), None);
    }

    #[test]
    fn route_frame_routes_klines_and_passes_other_frames_through() {
        let router = router();
        match route_frame(&router, KLINE) {
            Ok(Routed::Kline { index, event_time, candle }) => {
                assert_eq!(
                    (index, event_time, candle.open_time, candle.close),
                    (2, 1631636735735, 1631636700000, 3001.0)
                );
            }
            other => panic!("expected a routed kline, got {other:?}"),
        }
        let unrouted = KLINE.replace("ETHUSDT", "SOLUSDT");
        assert!(matches!(route_frame(&Router::default(), KLINE), Ok(Routed::Unrouted(_))));
        assert!(matches!(route_frame(&router, &unrouted), Ok(Routed::Unrouted(e)) if e.symbol == "SOLUSDT"));
        assert_eq!(route_frame(&router, r#"{"result":null,"id":7}"#), Ok(Routed::Other(Frame::Ack { id: Some(7) })));
        assert_eq!(route_frame(&router, "{"), Err(RejectReason::InvalidJson));
    }
}
