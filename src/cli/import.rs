//! `candled import`: bulk-loads data.binance.vision kline files (`.csv` or `.zip`, daily or monthly, with or without
//! a header, times in ms or µs) as closed candles, idempotently, then rebuilds the indicators of the streams they
//! touched. It takes the database lock: it never writes beside a running candled.

use std::collections::HashMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use candled_actors::domain::{Candle, RejectReason, StreamId, StreamKey, Timeframe, parse_decimal, validate};
use candled_actors::indicators::{IndicatorConfig, IndicatorSet, IndicatorValue};
use candled_actors::lock::LockError;
use candled_actors::store::{IndicatorRow, SqliteStore, Store, StoreBackend, StoreError};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};

use super::{CONFIG_ERROR, load_settings};

/// Candles per transaction, with their indicator values.
const CHUNK: usize = 50_000;
/// An open time at or above this is in µs: 1e14 ms is the year 5138, 1e14 µs is 1973.
const MICROS_FROM: i64 = 100_000_000_000_000;
/// The columns of a data.binance.vision kline row; the last (`ignore`) may be missing.
const COLUMNS: usize = 12;

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// data.binance.vision kline files (`BTCUSDT-1m-2024-01-01.zip`, `BTCUSDT-1m-2024-01.csv`, ...), or folders
    /// holding them. A `<file>.CHECKSUM` beside a file is verified.
    #[arg(required = true, value_name = "FILES")]
    pub files: Vec<PathBuf>,
    /// The symbol of every file, instead of the one in its name.
    #[arg(long)]
    pub symbol: Option<String>,
    /// The timeframe of every file, instead of the one in its name.
    #[arg(long)]
    pub timeframe: Option<Timeframe>,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read {}: {source}", .path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{} is not a readable zip file: {source}", .path.display())]
    Zip { path: PathBuf, source: zip::result::ZipError },
    #[error("{} holds no .csv file", .path.display())]
    EmptyZip { path: PathBuf },
    #[error(
        "cannot tell the symbol and timeframe of {} from its name (expected SYMBOL-TIMEFRAME-YYYY-MM[-DD].csv or \
         .zip): give --symbol and --timeframe",
        .path.display()
    )]
    FileName { path: PathBuf },
    #[error("{}: not a kline file (.csv or .zip)", .path.display())]
    Extension { path: PathBuf },
    #[error("{} does not match its checksum file: sha256 {actual}, the .CHECKSUM says {expected}", .path.display())]
    Checksum { path: PathBuf, expected: String, actual: String },
    #[error("{}: line {line}: {problem}", .path.display())]
    Row { path: PathBuf, line: usize, problem: RowProblem },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a row of a kline file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RowProblem {
    #[error("expected {COLUMNS} comma-separated columns, found {0}")]
    Columns(usize),
    #[error("`{0}` is not an integer")]
    Integer(String),
    #[error("{0}")]
    Candle(RejectReason),
}

/// The unit of a file's open and close times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeUnit {
    Millis,
    Micros,
}

impl TimeUnit {
    /// The unit of a data.binance.vision open time, by its magnitude.
    pub fn of(open_time: i64) -> Self {
        if open_time >= MICROS_FROM { Self::Micros } else { Self::Millis }
    }

    pub fn to_ms(self, time: i64) -> i64 {
        match self {
            Self::Millis => time,
            Self::Micros => time.div_euclid(1000),
        }
    }
}

/// The stream named by a data.binance.vision file name: `SYMBOL[-words]-TIMEFRAME-YYYY-MM[-DD].csv|.zip`, such as
/// `BTCUSDT-1m-2024-01-01.zip` or `BTCUSDT-spot-klines-4h-2026-01-01.csv`.
pub fn stream_from_file_name(name: &str) -> Option<StreamKey> {
    let stem = name.strip_suffix(".zip").or_else(|| name.strip_suffix(".csv"))?;
    let mut tokens = stem.split('-');
    let symbol =
        tokens.next().filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()))?;
    let rest: Vec<&str> = tokens.collect();
    let at = rest.iter().position(|token| token.parse::<Timeframe>().is_ok())?;
    let words_ok = rest[..at].iter().all(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase()));
    let date = &rest[at + 1..];
    let date_ok =
        matches!(date.len(), 2 | 3) && date.iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    let timeframe = rest[at].parse().ok()?;
    (words_ok && date_ok).then(|| StreamKey::new(symbol, timeframe))
}

/// Checks `bytes` against the text of a `.CHECKSUM` file: `<sha256 hex>  <file name>`.
pub fn verify_checksum(path: &Path, bytes: &[u8], checksum: &str) -> Result<(), ImportError> {
    let expected = checksum.split_whitespace().next().unwrap_or_default().to_ascii_lowercase();
    let actual = format!("{:x}", Sha256::digest(bytes));
    if expected == actual { Ok(()) } else { Err(ImportError::Checksum { path: path.to_owned(), expected, actual }) }
}

/// Parses the CSV text of one kline file into closed candles, appended to `out`. A first line that does not start
/// with a number is a header. The time unit is decided once, by the first row.
pub fn parse_klines(text: &str, timeframe: Timeframe, out: &mut Vec<Candle>) -> Result<(), (usize, RowProblem)> {
    let mut unit = None;
    for (index, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.is_empty() || (index == 0 && !line.starts_with(|c: char| c.is_ascii_digit())) {
            continue;
        }
        let candle = parse_row(line, timeframe, &mut unit).map_err(|problem| (index + 1, problem))?;
        out.push(candle);
    }
    Ok(())
}

fn parse_row(line: &str, timeframe: Timeframe, unit: &mut Option<TimeUnit>) -> Result<Candle, RowProblem> {
    let mut fields = [""; COLUMNS];
    let mut count = 0;
    for field in line.split(',') {
        if count == COLUMNS {
            return Err(RowProblem::Columns(line.split(',').count()));
        }
        fields[count] = field;
        count += 1;
    }
    if count < COLUMNS - 1 {
        return Err(RowProblem::Columns(count));
    }
    let integer = |text: &str| text.parse::<i64>().map_err(|_| RowProblem::Integer(text.to_owned()));
    let open_time = integer(fields[0])?;
    let unit = *unit.get_or_insert_with(|| TimeUnit::of(open_time));
    let number = |text: &str| parse_decimal(text).map_err(RowProblem::Candle);
    let trades = integer(fields[8])?;
    let candle = Candle {
        open_time: unit.to_ms(open_time),
        close_time: unit.to_ms(integer(fields[6])?),
        open: number(fields[1])?,
        high: number(fields[2])?,
        low: number(fields[3])?,
        close: number(fields[4])?,
        volume: number(fields[5])?,
        quote_volume: number(fields[7])?,
        trades: u64::try_from(trades).map_err(|_| RowProblem::Integer(fields[8].to_owned()))?,
        taker_buy_base: number(fields[9])?,
        taker_buy_quote: number(fields[10])?,
        is_closed: true,
    };
    validate(timeframe, &candle).map_err(RowProblem::Candle)?;
    Ok(candle)
}

/// The CSV texts of one file: itself, or the `.csv` entries of a zip.
fn csv_texts(path: &Path, bytes: Vec<u8>) -> Result<Vec<String>, ImportError> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let not_text = |path: &Path| ImportError::Read {
        path: path.to_owned(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"),
    };
    if name.ends_with(".csv") {
        return String::from_utf8(bytes).map(|text| vec![text]).map_err(|_| not_text(path));
    }
    if !name.ends_with(".zip") {
        return Err(ImportError::Extension { path: path.to_owned() });
    }
    let zip_error = |source| ImportError::Zip { path: path.to_owned(), source };
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).map_err(zip_error)?;
    let mut texts = Vec::new();
    for index in 0..archive.len() {
        let mut entry = archive.by_index(index).map_err(zip_error)?;
        if !entry.name().ends_with(".csv") {
            continue;
        }
        let mut text = String::with_capacity(entry.size() as usize);
        entry.read_to_string(&mut text).map_err(|source| ImportError::Read { path: path.to_owned(), source })?;
        texts.push(text);
    }
    if texts.is_empty() {
        return Err(ImportError::EmptyZip { path: path.to_owned() });
    }
    Ok(texts)
}

/// The kline files named: files as given, folders expanded to their `.csv` and `.zip` files, sorted.
fn expand(paths: &[PathBuf]) -> Result<Vec<PathBuf>, ImportError> {
    let mut files = Vec::new();
    for path in paths {
        if !path.is_dir() {
            files.push(path.clone());
            continue;
        }
        let read_error = |source| ImportError::Read { path: path.clone(), source };
        let mut found = Vec::new();
        for entry in std::fs::read_dir(path).map_err(read_error)? {
            let entry = entry.map_err(read_error)?.path();
            let name = entry.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if name.ends_with(".csv") || name.ends_with(".zip") {
                found.push(entry);
            }
        }
        found.sort();
        files.extend(found);
    }
    Ok(files)
}

/// The candles read from the files, by stream.
#[derive(Default)]
struct Loaded {
    streams: Vec<StreamKey>,
    candles: Vec<Vec<Candle>>,
}

impl Loaded {
    fn stream(&mut self, key: StreamKey) -> usize {
        if let Some(index) = self.streams.iter().position(|k| *k == key) {
            return index;
        }
        self.streams.push(key);
        self.candles.push(Vec::new());
        self.streams.len() - 1
    }
}

/// What one stream's import did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StreamSummary {
    pub rows: u64,
    /// Candles not stored before (or stored in progress).
    pub new: u64,
    pub unchanged: u64,
    /// Stored closed candles that differed: recorded in `candle_revisions`.
    pub revised: u64,
    pub indicator_values: u64,
}

/// Reads, checks and parses every file, on as many threads as there are cores; nothing is written if one fails (the
/// first failure in file order is the one reported). Each stream's candles are in file order.
fn load(args: &ImportArgs, files: &[PathBuf]) -> Result<Loaded, ImportError> {
    let bytes_total: u64 = files.iter().filter_map(|f| std::fs::metadata(f).ok()).map(|m| m.len()).sum();
    let bar = progress(bytes_total, "reading", "{msg:10} [{bar:40}] {bytes}/{total_bytes} ({eta})");
    let mut loaded = Loaded::default();
    let mut streams = Vec::with_capacity(files.len());
    for path in files {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let named = stream_from_file_name(name);
        let symbol = args.symbol.clone().or_else(|| named.as_ref().map(|k| k.symbol.clone()));
        let timeframe = args.timeframe.or(named.as_ref().map(|k| k.timeframe));
        let (Some(symbol), Some(timeframe)) = (symbol, timeframe) else {
            return Err(ImportError::FileName { path: path.clone() });
        };
        streams.push(loaded.stream(StreamKey::new(symbol, timeframe)));
    }
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let workers = std::thread::available_parallelism().map_or(1, usize::from).min(files.len()).max(1);
    let mut parsed: Vec<Option<Result<Vec<Candle>, ImportError>>> = (0..files.len()).map(|_| None).collect();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    while !failed.load(Ordering::Relaxed) {
                        let index = next.fetch_add(1, Ordering::Relaxed);
                        let Some(path) = files.get(index) else { break };
                        let timeframe = loaded.streams[streams[index]].timeframe;
                        let result = read_file(path, timeframe, &bar);
                        failed.fetch_or(result.is_err(), Ordering::Relaxed);
                        done.push((index, result));
                    }
                    done
                })
            })
            .collect();
        for handle in handles {
            for (index, result) in handle.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)) {
                parsed[index] = Some(result);
            }
        }
    });
    // A file not parsed because an earlier one failed is `None`, after that failure.
    for (stream, result) in streams.into_iter().zip(parsed) {
        let Some(result) = result else { continue };
        let candles = result?;
        let stored = &mut loaded.candles[stream];
        if stored.is_empty() {
            *stored = candles;
        } else {
            stored.extend_from_slice(&candles);
        }
    }
    bar.finish_and_clear();
    Ok(loaded)
}

/// Reads one file, checks it against its `.CHECKSUM` when there is one, and parses its klines.
fn read_file(path: &Path, timeframe: Timeframe, bar: &ProgressBar) -> Result<Vec<Candle>, ImportError> {
    let bytes = std::fs::read(path).map_err(|source| ImportError::Read { path: path.to_owned(), source })?;
    let mut checksum_path = path.as_os_str().to_owned();
    checksum_path.push(".CHECKSUM");
    match std::fs::read_to_string(&checksum_path) {
        Ok(checksum) => verify_checksum(path, &bytes, &checksum)?,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(ImportError::Read { path: checksum_path.into(), source }),
    }
    let size = bytes.len() as u64;
    let mut candles = Vec::new();
    for text in csv_texts(path, bytes)? {
        parse_klines(&text, timeframe, &mut candles).map_err(|(line, problem)| ImportError::Row {
            path: path.to_owned(),
            line,
            problem,
        })?;
    }
    bar.inc(size);
    Ok(candles)
}

/// What importing `imported` over the `stored` closed candles of a stream does, worked out before anything is
/// written: the closed series the store will then hold (`merged`, oldest first, one candle per open time, the last
/// imported winning) and the summary. A candle is new when no closed candle had its open time, unchanged when one
/// had its values, and revised otherwise (the store records those in `candle_revisions`). `imported` is sorted by
/// open time; duplicates in it count in that order, as the store sees them.
fn plan(stored: &[Candle], imported: &[Candle]) -> (Vec<Candle>, StreamSummary) {
    let mut merged: Vec<Candle> = Vec::with_capacity(stored.len() + imported.len());
    let mut summary = StreamSummary { rows: imported.len() as u64, ..StreamSummary::default() };
    let mut stored = stored.iter().peekable();
    for candle in imported {
        while let Some(earlier) = stored.next_if(|c| c.open_time < candle.open_time) {
            merged.push(*earlier);
        }
        let previous = match merged.last() {
            Some(last) if last.open_time == candle.open_time => merged.pop(),
            _ => stored.next_if(|c| c.open_time == candle.open_time).copied(),
        };
        match previous {
            None => summary.new += 1,
            Some(previous) if previous == *candle => summary.unchanged += 1,
            Some(_) => summary.revised += 1,
        }
        merged.push(*candle);
    }
    merged.extend(stored);
    (merged, summary)
}

/// One transaction of an import: candles (the imported ones of a chunk, or none) and the indicator values to write
/// with them.
struct Batch {
    candles: Vec<(StreamId, Candle)>,
    indicators: Vec<IndicatorRow>,
}

/// Writes one stream's imported candles and, when any is new or revised, the indicator values of every closed candle
/// from the first imported one on, computed over the series the store will hold. Each chunk of candles is committed
/// with its values in one transaction. The batches are made on another thread while the store writes the one before.
fn store_stream(
    store: &mut SqliteStore,
    key: &StreamKey,
    config: &IndicatorConfig,
    imported: &[Candle],
    bar: &ProgressBar,
) -> Result<StreamSummary, StoreError> {
    let streams = std::slice::from_ref(key);
    let stored = store.closed_candles(&key.symbol, key.timeframe)?;
    let (merged, mut summary) = plan(&stored, imported);
    drop(stored);
    let names = IndicatorSet::new(config).names().to_vec();
    let rebuild = summary.new + summary.revised > 0 && !names.is_empty();
    let (sender, batches) = std::sync::mpsc::sync_channel::<Batch>(1);
    std::thread::scope(|scope| {
        scope.spawn(|| make_batches(config, imported, &merged, rebuild, sender));
        for batch in batches {
            store.write_batch(streams, &names, &batch.candles, &batch.indicators)?;
            summary.indicator_values += batch.indicators.len() as u64;
            bar.inc(batch.candles.len() as u64);
        }
        Ok(summary)
    })
}

/// The batches of [`store_stream`], in order, until the store stops taking them: each chunk of `imported` with the
/// indicator values of the merged series up to its last candle (when `rebuild`), then the values of the stored
/// candles after the last imported one, which follow from the imported ones.
fn make_batches(
    config: &IndicatorConfig,
    imported: &[Candle],
    merged: &[Candle],
    rebuild: bool,
    batches: std::sync::mpsc::SyncSender<Batch>,
) {
    let mut set = IndicatorSet::new(config);
    let from = imported.first().map_or(i64::MAX, |c| c.open_time);
    // `merged[..fed]` has been fed to the indicators.
    let mut fed = 0;
    for chunk in imported.chunks(CHUNK) {
        let mut indicators = Vec::new();
        if rebuild {
            let until = chunk[chunk.len() - 1].open_time;
            let end = fed + merged[fed..].partition_point(|c| c.open_time <= until);
            feed_indicators(&mut set, &merged[fed..end], from, &mut indicators);
            fed = end;
        }
        let candles = chunk.iter().map(|c| (StreamId(0), *c)).collect();
        if batches.send(Batch { candles, indicators }).is_err() {
            return;
        }
    }
    if rebuild {
        for later in merged[fed..].chunks(CHUNK) {
            let mut indicators = Vec::new();
            feed_indicators(&mut set, later, from, &mut indicators);
            if batches.send(Batch { candles: Vec::new(), indicators }).is_err() {
                return;
            }
        }
    }
}

/// Feeds `series` to the indicators in order, adding to `rows` the values of the candles opened at or after `from`.
fn feed_indicators(set: &mut IndicatorSet, series: &[Candle], from: i64, rows: &mut Vec<IndicatorRow>) {
    let mut values: Vec<IndicatorValue> = Vec::new();
    for candle in series {
        values.clear();
        set.update(candle, &mut values);
        if candle.open_time >= from {
            let open_time = candle.open_time;
            rows.extend(values.iter().map(|v| IndicatorRow {
                stream: StreamId(0),
                open_time,
                output: v.output,
                value: v.value,
            }));
        }
    }
}

/// A progress bar on stderr (hidden when stderr is not a terminal).
fn progress(length: u64, message: &'static str, template: &str) -> ProgressBar {
    let bar = ProgressBar::new(length).with_message(message);
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// Why import refuses a config whose store is not SQLite.
fn not_sqlite(backend: &str) -> String {
    format!(
        "candled import works on the SQLite backend only; this config's `storage.backend` is \"{backend}\": import \
         into a SQLite database (a config with `[storage] path`), or fill the {backend} store with `candled backfill`"
    )
}

/// What to tell the operator when a candled holds the database.
fn refused(error: &LockError) -> String {
    let holder = match error {
        LockError::InUse { holder: Some(pid), .. } => format!("pid {pid}"),
        _ => "the running candled".to_owned(),
    };
    format!(
        "error: {error}\n\
         import writes the database itself and a running candled cannot take the rows from it: stop {holder} \
         (kill -TERM), run the import again, then start candled; it picks up the imported candles and indicators"
    )
}

/// `candled import`: exit 0 with a summary, 1 when a file is unreadable or wrong (nothing is written), 2 when the
/// config is invalid or a running candled holds the database.
pub fn run(config: &Path, args: ImportArgs) -> ExitCode {
    let settings = match load_settings(config) {
        Ok(settings) => settings,
        Err(code) => return code,
    };
    let Some(database) = settings.storage.sqlite_path() else {
        eprintln!("error: {}", not_sqlite(settings.storage.kind()));
        return ExitCode::from(CONFIG_ERROR);
    };
    let backend = StoreBackend::sqlite(database);
    let _lock = match backend.lock() {
        Ok(lock) => lock,
        Err(error @ LockError::InUse { .. }) => {
            eprintln!("{}", refused(&error));
            return ExitCode::from(CONFIG_ERROR);
        }
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    match import(&args, database, &settings.indicators) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

fn import(args: &ImportArgs, database: &Path, indicators: &IndicatorConfig) -> Result<(), ImportError> {
    let started = Instant::now();
    let files = expand(&args.files)?;
    let mut loaded = load(args, &files)?;
    let mut store = SqliteStore::open(database)?;
    // Room for one chunk's pages (about 11 MB for 50,000 candles and their values), so that a transaction never
    // spills to the file before its commit; a larger cache only costs fresh memory.
    store.connection().pragma_update(None, "cache_size", -32_768).map_err(StoreError::from)?;
    let bulk = store.begin_bulk_load()?;
    let rows: u64 = loaded.candles.iter().map(|c| c.len() as u64).sum();
    let bar = progress(rows, "storing", "{msg:10} [{bar:40}] {pos}/{len} rows ({per_sec}, {eta})");
    let mut summaries = HashMap::new();
    for (key, candles) in loaded.streams.iter().zip(&mut loaded.candles) {
        candles.sort_by_key(|c| c.open_time);
        summaries.insert(key.clone(), store_stream(&mut store, key, indicators, candles, &bar)?);
    }
    bar.finish_and_clear();
    if bulk {
        store.end_bulk_load()?;
    }
    let mut total = StreamSummary::default();
    for key in &loaded.streams {
        let s = summaries[key];
        println!(
            "{key}: {} rows: {} new, {} unchanged, {} revised; {} indicator values rebuilt",
            s.rows, s.new, s.unchanged, s.revised, s.indicator_values
        );
        total.rows += s.rows;
        total.new += s.new;
        total.unchanged += s.unchanged;
        total.revised += s.revised;
        total.indicator_values += s.indicator_values;
    }
    println!(
        "imported {} file(s), {} stream(s) in {:.2}s: {} rows: {} new, {} unchanged, {} revised; {} indicator values \
         rebuilt",
        files.len(),
        loaded.streams.len(),
        started.elapsed().as_secs_f64(),
        total.rows,
        total.new,
        total.unchanged,
        total.revised,
        total.indicator_values
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use candled_actors::indicators::recompute;

    use super::*;

    #[test]
    fn the_stream_comes_from_the_file_name() {
        let key = |symbol: &str, timeframe| Some(StreamKey::new(symbol, timeframe));
        let cases = [
            // TC0: a daily zip.
            ("BTCUSDT-1m-2024-01-01.zip", key("BTCUSDT", Timeframe::M1)),
            // TC1: a monthly csv.
            ("ETHBTC-15m-2024-01.csv", key("ETHBTC", Timeframe::M15)),
            // TC2: the month timeframe is `1M`, not `1m`.
            ("BTCUSDT-1M-2024-01.zip", key("BTCUSDT", Timeframe::Mo1)),
            // TC3: words between the symbol and the timeframe.
            ("BTCUSDT-spot-klines-4h-2026-01-01.csv", key("BTCUSDT", Timeframe::H4)),
            // TC4: no date, an unknown timeframe, a lower-case symbol, another extension.
            ("BTCUSDT-1m.zip", None),
            ("BTCUSDT-7m-2024-01-01.zip", None),
            ("btcusdt-1m-2024-01-01.zip", None),
            ("BTCUSDT-1m-2024-01-01.zip.CHECKSUM", None),
            ("BTCUSDT-1m-2024-01-01-extra.csv", None),
        ];
        for (name, want) in cases {
            assert_eq!(stream_from_file_name(name), want, "{name}");
        }
    }

    #[test]
    fn the_time_unit_is_told_by_magnitude() {
        let cases = [
            // TC0: ms in 2017 and 2026.
            (1_502_942_400_000, TimeUnit::Millis, 1_502_942_400_000),
            (1_767_225_600_000, TimeUnit::Millis, 1_767_225_600_000),
            // TC1: µs in 2025 and 2026, close times round down to the ms.
            (1_735_689_600_000_000, TimeUnit::Micros, 1_735_689_600_000),
            (1_767_239_999_999_999, TimeUnit::Micros, 1_767_239_999_999),
        ];
        for (time, unit, ms) in cases {
            assert_eq!(TimeUnit::of(time), unit, "{time}");
            assert_eq!(unit.to_ms(time), ms, "{time}");
        }
    }

    const ROW_MS: &str = "1704067200000,42283.58,42298.62,42283.58,42298.61,35.92724,1704067259999,1519451.5859,1327,\
                          24.07446,1018167.2536,0";

    #[test]
    fn rows_parse_with_or_without_a_header_in_ms_or_us() {
        let want = Candle {
            open_time: 1_704_067_200_000,
            close_time: 1_704_067_259_999,
            open: 42283.58,
            high: 42298.62,
            low: 42283.58,
            close: 42298.61,
            volume: 35.92724,
            quote_volume: 1519451.5859,
            trades: 1327,
            taker_buy_base: 24.07446,
            taker_buy_quote: 1018167.2536,
            is_closed: true,
        };
        let row_us =
            ROW_MS.replacen("1704067200000", "1704067200000000", 1).replacen("1704067259999", "1704067259999999", 1);
        let header = "open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,\
                      taker_buy_quote_volume,ignore\n";
        // TC0..TC3: ms and µs, with and without a header, CRLF line ends.
        for text in [ROW_MS.to_owned(), format!("{header}{ROW_MS}"), row_us.clone(), format!("{header}{row_us}\r\n")] {
            let mut out = Vec::new();
            parse_klines(&text, Timeframe::M1, &mut out).expect("parses");
            assert_eq!(out, [want], "{text}");
        }
        // TC4: broken rows name their line and problem.
        let bad = [
            (format!("{ROW_MS}\n1,2,3"), (2, RowProblem::Columns(3))),
            (ROW_MS.replace("42298.61", "4e4"), (1, RowProblem::Candle(RejectReason::NonNumeric))),
            (ROW_MS.replace("1704067259999", "1704067299999"), (1, RowProblem::Candle(RejectReason::BadTimes))),
            (
                format!("{header}{ROW_MS}\n{}", ROW_MS.replacen("1704067200000", "x", 1)),
                (3, RowProblem::Integer("x".into())),
            ),
        ];
        for (text, want) in bad {
            assert_eq!(parse_klines(&text, Timeframe::M1, &mut Vec::new()), Err(want), "{text}");
        }
        // TC5: a 5m file read as 1m has the wrong close times.
        assert!(parse_klines(ROW_MS, Timeframe::M5, &mut Vec::new()).is_err());
    }

    fn closed(open_minute: i64, close: f64) -> Candle {
        let open_time = open_minute * 60_000;
        Candle {
            open_time,
            close_time: open_time + 59_999,
            open: 1.0,
            high: close.max(1.0),
            low: close.min(1.0),
            close,
            volume: 1.0,
            quote_volume: close,
            trades: 1,
            taker_buy_base: 0.5,
            taker_buy_quote: close / 2.0,
            is_closed: true,
        }
    }

    #[test]
    fn the_plan_merges_the_import_into_the_stored_series_and_counts_what_changes() {
        let stored = [closed(0, 1.0), closed(1, 1.0), closed(3, 1.0), closed(5, 1.0)];
        // TC0: new around the stored candles, one unchanged, one revised, a duplicate that revises the new one.
        let imported = [closed(1, 1.0), closed(2, 2.0), closed(3, 3.0), closed(4, 4.0), closed(4, 4.5), closed(6, 6.0)];
        let (merged, summary) = plan(&stored, &imported);
        let want = [
            closed(0, 1.0),
            closed(1, 1.0),
            closed(2, 2.0),
            closed(3, 3.0),
            closed(4, 4.5),
            closed(5, 1.0),
            closed(6, 6.0),
        ];
        assert_eq!(merged, want);
        assert_eq!(summary, StreamSummary { rows: 6, new: 3, unchanged: 1, revised: 2, indicator_values: 0 });
        // TC1: nothing stored; TC2: nothing imported.
        assert_eq!(plan(&[], &imported[..2]).0, imported[..2]);
        let (merged, summary) = plan(&stored, &[]);
        assert_eq!((merged.as_slice(), summary), (&stored[..], StreamSummary::default()));
    }

    fn sorted(mut values: Vec<(i64, String, f64)>) -> Vec<(i64, String, f64)> {
        values.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        values
    }

    /// Whether the indicator values stored for a stream equal a recomputation over `series`.
    fn stored_values_equal_a_recomputation(store: &SqliteStore, key: &StreamKey, series: &[Candle]) -> bool {
        let mut values = Vec::new();
        let mut each = |time: i64, name: &str, value: f64| values.push((time, name.to_owned(), value));
        store.for_each_indicator_value(key, i64::MIN, i64::MAX, &mut each).unwrap();
        sorted(values) == sorted(recompute(&IndicatorConfig::default(), series))
    }

    /// Importing the newer half, then the older half, then a revision of one candle in the middle leaves the stored
    /// values equal to a recomputation over the whole series: the later stored candles' values are rewritten.
    #[test]
    fn indicators_equal_a_recomputation_whatever_order_the_files_come_in() {
        let mut store = SqliteStore::open_in_memory().unwrap();
        let key = StreamKey::new("BTCUSDT", Timeframe::M1);
        let config = IndicatorConfig::default();
        let series: Vec<Candle> = (0..200).map(|i| closed(i, 100.0 + (i % 17) as f64 - (i % 5) as f64 * 1.5)).collect();
        let bar = ProgressBar::hidden();
        let newer = store_stream(&mut store, &key, &config, &series[100..], &bar).unwrap();
        assert_eq!((newer.new, newer.unchanged, newer.revised), (100, 0, 0));
        let older = store_stream(&mut store, &key, &config, &series[..100], &bar).unwrap();
        assert_eq!((older.new, older.unchanged, older.revised), (100, 0, 0));
        assert!(stored_values_equal_a_recomputation(&store, &key, &series));

        let mut revised = series.clone();
        revised[150].close += 3.0;
        revised[150].high += 3.0;
        let again = store_stream(&mut store, &key, &config, &revised[140..160], &bar).unwrap();
        assert_eq!((again.new, again.unchanged, again.revised), (0, 19, 1));
        assert_eq!(store.closed_candles("BTCUSDT", Timeframe::M1).unwrap(), revised);
        assert!(stored_values_equal_a_recomputation(&store, &key, &revised));
        // Nothing new: nothing rewritten.
        let same = store_stream(&mut store, &key, &config, &revised, &bar).unwrap();
        assert_eq!((same.unchanged, same.indicator_values), (200, 0));
    }

    #[test]
    fn a_checksum_file_is_checked() {
        let path = Path::new("x.zip");
        let good = "ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb  x.zip\n";
        // TC0: the sha256 of "a".
        assert!(verify_checksum(path, b"a", good).is_ok());
        // TC1: other bytes.
        assert!(matches!(verify_checksum(path, b"b", good), Err(ImportError::Checksum { .. })));
    }
}
