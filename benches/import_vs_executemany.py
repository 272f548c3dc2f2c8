#!/usr/bin/env python3
"""The documented run behind `candled import`'s speed: N generated 1m candles, written as data.binance.vision monthly
CSV files (no header, ms times), loaded by `candled import` (indicators rebuilt, with the repo's config.toml
`[indicators]`), beside Python's `sqlite3.executemany` of the same rows into the same schema (copied from the
database candled made: the stream's `streams` row, then the candles into `candle_rows`), timed side by side. Python's
time counts only `executemany` and the commit; candled's counts the whole process: reading and parsing the files,
storing, rebuilding and storing the indicators.

A third timing is Python's `executemany` of every row candled writes with indicators: the candles, then the
`indicator_rows` candled stored (read back first, not timed). That is the same SQLite work as the import, without
the files and the indicator maths.

    cargo build --release --bin candled
    python3 benches/import_vs_executemany.py            # 1,000,000 rows
    python3 benches/import_vs_executemany.py --rows 100000
"""

import argparse
import os
import random
import re
import sqlite3
import subprocess
import tempfile
import time
from datetime import datetime, timezone

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MINUTE = 60_000
START = int(datetime(2020, 1, 1, tzinfo=timezone.utc).timestamp() * 1000)
NO_INDICATORS = """[indicators]
sma = []
ema = []
rsi = []
macd = []
bollinger = []
atr = []
"""


def generate(rows):
    """The candles as tuples in the `candle_rows` column order (stream id 1), and their CSV lines by month."""
    rng = random.Random(11)
    price = 40_000.0
    candles, months = [], {}
    for i in range(rows):
        open_time = START + i * MINUTE
        open_ = round(price, 2)
        close = round(max(1.0, open_ + rng.uniform(-30, 30)), 2)
        high = round(max(open_, close) + rng.uniform(0, 10), 2)
        low = round(max(0.01, min(open_, close) - rng.uniform(0, 10)), 2)
        volume = round(rng.uniform(0.1, 100), 5)
        quote = round(volume * close, 8)
        trades = rng.randint(1, 5000)
        taker_base = round(volume * rng.random(), 5)
        taker_quote = round(taker_base * close, 8)
        close_time = open_time + MINUTE - 1
        price = close
        candles.append((1, open_time, open_, high, low, close, volume, close_time, quote, trades, taker_base,
                        taker_quote, 1))
        month = datetime.fromtimestamp(open_time / 1000, tz=timezone.utc).strftime("%Y-%m")
        months.setdefault(month, []).append(
            f"{open_time},{open_:.8f},{high:.8f},{low:.8f},{close:.8f},{volume:.8f},{close_time},{quote:.8f},"
            f"{trades},{taker_base:.8f},{taker_quote:.8f},0")
    return candles, months


def config(folder, indicators):
    text = (f'[exchange]\nws_url = "ws://127.0.0.1:9"\nrest_url = "http://127.0.0.1:9"\n\n'
            f'[market_data]\nsymbols = ["BTCUSDT"]\ntimeframes = ["1m"]\n\n'
            f'[storage]\npath = "candles.db"\n\n[http]\nbind = "127.0.0.1:0"\n\n{indicators}')
    path = os.path.join(folder, "config.toml")
    with open(path, "w") as f:
        f.write(text)
    return path


def run_import(binary, folder, files, indicators):
    config_path = config(folder, indicators)
    started = time.perf_counter()
    out = subprocess.run([binary, "--config", config_path, "import", *files], cwd=folder, check=True,
                         capture_output=True, text=True, env={**os.environ, "RUST_LOG": "warn"})
    elapsed = time.perf_counter() - started
    return elapsed, out.stdout.strip().splitlines()[-1]


def run_executemany(schema_from, path, candles, indicator_rows=()):
    """Times `executemany` of the candles (then of `indicator_rows`, if any) into a new database at `path` with the
    schema of `schema_from`, and the commit. Returns the time and the candles stored."""
    source = sqlite3.connect(schema_from)
    statements = [sql for (sql,) in source.execute(
        "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%' ORDER BY rowid")]
    source.close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    for sql in statements:
        db.execute(sql)
    db.commit()
    started = time.perf_counter()
    db.execute("INSERT INTO streams (id, symbol, timeframe) VALUES (1, 'BTCUSDT', '1m')")
    db.executemany("INSERT INTO candle_rows VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", candles)
    if indicator_rows:
        marks = ",".join("?" * len(indicator_rows[0]))
        db.executemany(f"INSERT INTO indicator_rows VALUES ({marks})", indicator_rows)
    db.commit()
    elapsed = time.perf_counter() - started
    count = db.execute("SELECT COUNT(*) FROM candles WHERE symbol = 'BTCUSDT'").fetchone()[0]
    db.close()
    return elapsed, count


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--binary", default=os.path.join(ROOT, "target", "release", "candled"))
    args = parser.parse_args()
    args.binary = os.path.abspath(args.binary)
    with open(os.path.join(ROOT, "config.toml")) as f:
        repo_indicators = re.search(r"^\[indicators\].*", f.read(), re.S | re.M).group(0)

    with tempfile.TemporaryDirectory() as folder:
        candles, months = generate(args.rows)
        files = []
        for month, lines in months.items():
            path = os.path.join(folder, f"BTCUSDT-1m-{month}.csv")
            with open(path, "w") as f:
                f.write("\n".join(lines) + "\n")
            files.append(path)
        print(f"{args.rows:,} 1m rows in {len(files)} monthly files; SQLite {sqlite3.sqlite_version}")

        runs = {}
        for name, indicators in [("with indicators", repo_indicators), ("candles only", NO_INDICATORS)]:
            run_folder = os.path.join(folder, name.replace(" ", "_"))
            os.mkdir(run_folder)
            runs[name] = run_import(args.binary, run_folder, files, indicators)
        schema_from = os.path.join(folder, "with_indicators", "candles.db")
        python, count = run_executemany(schema_from, os.path.join(folder, "python.db"), candles)
        assert count == args.rows, count

        db = sqlite3.connect(schema_from)
        stored = db.execute("SELECT COUNT(*) FROM candles").fetchone()[0]
        values = db.execute("SELECT COUNT(*) FROM indicators").fetchone()[0]
        indicator_rows = db.execute("SELECT * FROM indicator_rows ORDER BY stream_id, timestamp").fetchall()
        db.close()
        assert stored == args.rows, stored
        python_all, count = run_executemany(schema_from, os.path.join(folder, "python_all.db"), candles,
                                            indicator_rows)
        assert count == args.rows, count
        print(f"python sqlite3.executemany (candles only):      {python:7.2f} s")
        print(f"python sqlite3.executemany (candles and the {len(indicator_rows):,} indicator rows): {python_all:.2f} s")
        for name, (elapsed, summary) in runs.items():
            print(f"candled import ({name:15}):         {elapsed:7.2f} s  ({python / elapsed:.2f}x)  {summary}")
        with_indicators = runs["with indicators"][0]
        print(f"candled import with indicators against executemany of the same rows: "
              f"{python_all / with_indicators:.2f}x")
        print(f"indicator values stored: {values:,}")


if __name__ == "__main__":
    main()
