#!/usr/bin/env python3
"""Writes the seed corpus of the `parse_differential` fuzz target: kline events in Binance's own WebSocket layout,
raw and combined, in progress and closed, plus control frames.

The values come from real Binance klines (the REST fixtures in ../shared/fixtures/klines, read in place) when they
are there, and from the example event of Binance's documentation otherwise. Usage: seed_corpus.py OUT_DIR"""

import glob
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "..", "shared", "fixtures", "klines", "binance-rest-15m")
DOC_ROW = [1631636700000, "46686.15000000", "46686.15000000", "46668.45000000", "46673.53000000", "12.26168000",
           1631636999999, "572337.21655380", 582, "3.29093000", "153606.31592330", "0"]
CONTROL = ['{"result":null,"id":1}', '{"result":["btcusdt@kline_1m"],"id":2}',
           '{"error":{"code":2,"msg":"Invalid request"},"id":3}', '{"e":"serverShutdown","E":1631636735735}',
           '{"stream":"btcusdt@trade","data":{"e":"trade","E":1,"s":"BTCUSDT"}}']


def event(symbol, interval, row, closed, trade_id):
    t, o, h, l, c, v, close_time, q, n, taker_base, taker_quote, _ = row
    k = ('{"t":%d,"T":%d,"s":"%s","i":"%s","f":%d,"L":%d,"o":"%s","c":"%s","h":"%s","l":"%s","v":"%s","n":%d,'
         '"x":%s,"q":"%s","V":"%s","Q":"%s","B":"0"}') % (
        t, close_time, symbol, interval, trade_id, trade_id + n, o, c, h, l, v, n, "true" if closed else "false", q,
        taker_base, taker_quote)
    return '{"e":"kline","E":%d,"s":"%s","k":%s}' % (close_time + 1 if closed else t + 1000, symbol, k)


def main(out):
    os.makedirs(out, exist_ok=True)
    sources = [("BTCUSDT", "5m", [DOC_ROW])]
    for path in sorted(glob.glob(os.path.join(FIXTURES, "*.json")))[:10]:
        symbol, interval = os.path.basename(path).split("-")[:2]
        with open(path) as file:
            sources.append((symbol, interval, json.load(file)[:20]))
    frames = list(CONTROL)
    for symbol, interval, rows in sources:
        for index, row in enumerate(rows):
            raw = event(symbol, interval, row, index % 2 == 0, 1_000_000 + index * 1000)
            frames.append(raw)
            frames.append('{"stream":"%s@kline_%s","data":%s}' % (symbol.lower(), interval, raw))
    for index, frame in enumerate(frames):
        with open(os.path.join(out, "seed-%04d.json" % index), "w") as file:
            file.write(frame)
    print("%d seed frames (%d sources) in %s" % (len(frames), len(sources), out))


if __name__ == "__main__":
    main(sys.argv[1])
