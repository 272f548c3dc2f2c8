#!/usr/bin/env python3
"""Writes the golden fixtures next to this script: deterministic OHLCV series and TA-Lib's outputs on them.

Each <series>.json is {"series", "config", "candles": [[open_time, o, h, l, c, v], ...],
"outputs": {name: [value or null (NaN) per candle]}}. Values keep 12 significant digits (the tests compare
to 1e-9 relative). Rerun after changing talib_reference.CONFIG:  python3 generate.py
"""

import json
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from talib_reference import CONFIG, compute, to_json_list  # noqa: E402

N = 200
STEP_MS = 900_000  # 15m
# 2026-01-01 21:00 UTC: three UTC-day boundaries fall inside 200 candles.
START_MS = 1_767_301_200_000


def candle(o, c, rng, spread, decimals):
    hi = max(o, c) * (1 + rng.random() * spread)
    lo = min(o, c) * (1 - rng.random() * spread)
    r = lambda x: round(x, decimals)  # noqa: E731
    o, c, hi, lo = r(o), r(c), r(hi), r(lo)
    return o, max(hi, o, c), min(lo, o, c), c


def walk(seed, start, vol, decimals, spread=0.002, shocks=(), flat=(), zero_volume=()):
    """Random walk; `shocks` = {index: relative move}; `flat` = index ranges of constant OHLC;
    `zero_volume` = index ranges with volume 0."""
    rng = random.Random(seed)
    shocks = dict(shocks)
    rows, price = [], start
    for i in range(N):
        t = START_MS + i * STEP_MS
        if any(a <= i < b for a, b in flat):
            p = round(price, decimals)
            o = h = l = c = p
        else:
            move = shocks.get(i, rng.gauss(0, vol))
            new = max(price * (1 + move), 10 ** -decimals)
            o, h, l, c = candle(price, new, rng, spread, decimals)
            price = c
        volume = 0.0 if any(a <= i < b for a, b in zero_volume) else round(rng.uniform(0.5, 500), 3)
        rows.append([t, o, h, l, c, volume])
    return rows


SERIES = {
    "random_walk": walk(1, 100.0, 0.01, 2),
    # constant OHLC runs longer than every window, plus a run of equal closes with moving highs/lows
    "flat_runs": walk(2, 25.0, 0.01, 3, flat=[(0, 30), (80, 130), (170, 200)]),
    # volume 0 runs, one covering a UTC midnight so the VWAP session starts without volume
    "zero_volume": walk(3, 7.5, 0.01, 4, zero_volume=[(10, 40), (81, 100), (150, 155)]),
    "extreme_moves": walk(4, 50.0, 0.02, 4, spread=0.05, shocks={40: 0.3, 41: -0.3, 90: -0.3, 91: 0.3, 92: 0.3,
                                                                  140: -0.3, 160: 0.3}),
    "large_prices": walk(5, 98_765.43, 0.0005, 2, spread=0.0002, flat=[(60, 90)]),
    "tiny_prices": walk(6, 0.00001234, 0.01, 8, flat=[(100, 125)]),
}


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    for name, rows in SERIES.items():
        cols = list(zip(*rows))
        outputs = compute(CONFIG, *cols)
        doc = {
            "series": name,
            "config": CONFIG,
            "candles": rows,
            "outputs": {k: to_json_list(a, 12) for k, a in outputs.items()},
        }
        with open(os.path.join(here, f"{name}.json"), "w") as f:
            json.dump(doc, f, separators=(",", ":"))
            f.write("\n")


if __name__ == "__main__":
    main()
