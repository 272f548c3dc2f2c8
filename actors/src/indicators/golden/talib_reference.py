#!/usr/bin/env python3
"""TA-Lib reference outputs for candled's indicators.

Usage: talib_reference.py KLINES.json
  KLINES.json is a JSON array of Binance REST kline rows
  [openTime, "o", "h", "l", "c", "v", closeTime, "q", n, "V", "Q", "0"].
Prints {"config": CONFIG, "outputs": {name: [value or null per row]}} as JSON, where CONFIG is the
[indicators] section (as JSON) the outputs were computed for.

`compute` is shared with generate.py. Keltner and VWAP have no TA-Lib function: Keltner is composed from
TA-Lib EMA and ATR, VWAP is recomputed directly (UTC-day sessions, typical price weighted by volume).
"""

import json
import math
import sys

import numpy as np
import talib

# Every indicator, with edge parameters (period 1, swapped MACD, signal 1) next to the usual ones.
CONFIG = {
    "sma": [1, 2, 20],
    "ema": [1, 12, 26],
    "rsi": [2, 14],
    "macd": [[12, 26, 9], [26, 12, 9], [3, 10, 1]],
    "bollinger": [[20, 2.0], [5, 2.5]],
    "atr": [1, 14],
    "wma": [2, 10],
    "dema": [2, 10],
    "tema": [2, 10],
    "stoch": [[5, 3, 3], [14, 1, 4]],
    "obv": True,
    "adx": [2, 14],
    "keltner": [[20, 2.0]],
    "vwap": True,
}

DAY_MS = 86_400_000


def fmt_mult(m):
    """2.0 -> '2', 2.5 -> '2.5' (Rust's `{}` for f64)."""
    return str(int(m)) if float(m).is_integer() else repr(float(m))


def vwap(t, h, l, c, v):
    out = [math.nan] * len(t)
    day, pv, vol = None, 0.0, 0.0
    for i in range(len(t)):
        d = int(t[i]) // DAY_MS
        if d != day:
            day, pv, vol = d, 0.0, 0.0
        tp = (h[i] + l[i] + c[i]) / 3.0
        pv += tp * v[i]
        vol += v[i]
        if vol != 0.0:
            out[i] = pv / vol
    return np.array(out)


def compute(config, t, o, h, l, c, v):
    """{output name: numpy array aligned with the input, NaN where nothing is emitted}."""
    h, l, c, v = (np.ascontiguousarray(a, dtype=np.float64) for a in (h, l, c, v))
    out = {}
    for p in config.get("sma", []):
        out[f"sma_{p}"] = talib.SMA(c, p)
    for p in config.get("ema", []):
        out[f"ema_{p}"] = talib.EMA(c, p)
    for p in config.get("wma", []):
        out[f"wma_{p}"] = talib.WMA(c, p)
    for p in config.get("dema", []):
        out[f"dema_{p}"] = talib.DEMA(c, p)
    for p in config.get("tema", []):
        out[f"tema_{p}"] = talib.TEMA(c, p)
    for p in config.get("rsi", []):
        out[f"rsi_{p}"] = talib.RSI(c, p)
    for f, s, g in config.get("macd", []):
        m, sig, hist = talib.MACD(c, fastperiod=f, slowperiod=s, signalperiod=g)
        base = f"macd_{f}_{s}_{g}"
        out[base], out[f"{base}_signal"], out[f"{base}_hist"] = m, sig, hist
    for p, m in config.get("bollinger", []):
        up, mid, low = talib.BBANDS(c, timeperiod=p, nbdevup=m, nbdevdn=m, matype=0)
        base = f"bb_{p}_{fmt_mult(m)}"
        out[f"{base}_upper"], out[f"{base}_middle"], out[f"{base}_lower"] = up, mid, low
    for p in config.get("atr", []):
        out[f"atr_{p}"] = talib.ATR(h, l, c, p)
    for p in config.get("adx", []):
        out[f"adx_{p}"] = talib.ADX(h, l, c, p)
    for a, b, d in config.get("stoch", []):
        k, dd = talib.STOCH(h, l, c, fastk_period=a, slowk_period=b, slowk_matype=0, slowd_period=d, slowd_matype=0)
        out[f"stoch_{a}_{b}_{d}_k"], out[f"stoch_{a}_{b}_{d}_d"] = k, dd
    for p, m in config.get("keltner", []):
        mid = talib.EMA(c, p)
        width = m * talib.ATR(h, l, c, p)
        base = f"keltner_{p}_{fmt_mult(m)}"
        out[f"{base}_upper"], out[f"{base}_middle"], out[f"{base}_lower"] = mid + width, mid + 0.0 * width, mid - width
    if config.get("obv", False):
        out["obv"] = talib.OBV(c, v)
    if config.get("vwap", False):
        out["vwap"] = vwap(t, h, l, c, v)
    return out


def to_json_list(arr, digits=None):
    """NaN -> None; optionally round to `digits` significant digits to keep fixtures small."""
    res = []
    for x in arr:
        x = float(x)
        if math.isnan(x):
            res.append(None)
        elif digits is None:
            res.append(x)
        else:
            res.append(float(f"{x:.{digits}g}"))
    return res


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    with open(sys.argv[1]) as f:
        rows = json.load(f)
    t = [int(r[0]) for r in rows]
    o, h, l, c, v = ([float(r[i]) for r in rows] for i in range(1, 6))
    outputs = compute(CONFIG, t, o, h, l, c, v)
    json.dump({"config": CONFIG, "outputs": {k: to_json_list(a) for k, a in outputs.items()}}, sys.stdout)


if __name__ == "__main__":
    main()
