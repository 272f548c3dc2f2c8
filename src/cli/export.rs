//! `candled export`: writes one stream's closed candles (and, asked, its stored indicator values) from the
//! database to a CSV or Parquet file that pandas and polars read as is. It only reads, so it runs beside candled.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arrow_array::{ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, TimestampMillisecondArray};
use arrow_schema::{ArrowError, DataType, Field, Schema, TimeUnit};
use candled_actors::domain::{Candle, StreamKey};
use candled_actors::store::{Store, StoreBackend, StoreError, Window};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::errors::ParquetError;
use parquet::file::properties::WriterProperties;

use super::range::{RangeError, StreamArgs, TimeRange, parse_time};
use crate::config::{BackendError, ConfigError, Settings};

/// Candles read from the database, and written, at a time.
const BATCH: usize = 65_536;

/// Rows per Parquet row group: what the writer buffers.
const ROW_GROUP: usize = 4 * BATCH;

/// The candle columns, named and ordered as in the `candles` table.
const CANDLE_COLUMNS: [&str; 12] = [
    "timestamp",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "close_time",
    "quote_volume",
    "trades",
    "taker_buy_base",
    "taker_buy_quote",
    "is_closed",
];

/// Write a stream's closed candles to a CSV or Parquet file.
///
/// Columns, in the order of the `candles` table: timestamp (open time), open, high, low, close, volume,
/// close_time, quote_volume, trades, taker_buy_base, taker_buy_quote, is_closed; with `--indicators`, one column
/// per stored indicator output after them, empty (CSV) or null (Parquet) where no value is stored. CSV times are
/// ms UTC; Parquet times are timestamps (ms, UTC).
#[derive(Debug, Clone, clap::Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub stream: StreamArgs,
    /// The first open time exported: ms UTC, a date (2024-01-01) or an RFC 3339 time. Default: the first stored.
    #[arg(long, value_parser = parse_time)]
    pub from: Option<i64>,
    /// The open time the export stops before (excluded), in the same forms. Default: up to the last stored.
    #[arg(long, value_parser = parse_time)]
    pub to: Option<i64>,
    /// The file format. Default: from the extension of the output file (`.csv`, `.parquet`).
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Add one column per stored indicator output (sma_20, rsi_14, macd_12_26_9_signal, ...).
    #[arg(long)]
    pub indicators: bool,
    /// The file to write (replaced if it exists; written beside it first and renamed when complete).
    #[arg(short, long)]
    pub output: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// RFC 4180, with a header row.
    Csv,
    /// Typed columns, Snappy-compressed.
    Parquet,
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Range(#[from] RangeError),
    #[error("cannot tell the format from {}: give --format csv or --format parquet", .0.display())]
    UnknownFormat(PathBuf),
    #[error("cannot read {store}: {source}")]
    Store { store: String, source: StoreError },
    #[error("cannot write {}: {source}", .path.display())]
    Write { path: PathBuf, source: std::io::Error },
    #[error("cannot write Parquet: {0}")]
    Parquet(#[from] ParquetError),
    #[error("cannot build a Parquet batch: {0}")]
    Arrow(#[from] ArrowError),
}

impl ExportError {
    /// 2 for what the user asked wrong (config, arguments), 1 for a failure on the way.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Config(_) | Self::Backend(_) | Self::Range(_) | Self::UnknownFormat(_) => 2,
            _ => 1,
        }
    }
}

/// What an export wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct Exported {
    pub candles: u64,
    pub indicator_columns: usize,
}

/// Runs `candled export` with the store of the config at `config_path`; prints a summary line.
pub fn run(args: &ExportArgs, config_path: &Path) -> Result<(), ExportError> {
    let settings = Settings::load(config_path)?;
    let backend = settings.storage.backend()?;
    let started = Instant::now();
    let exported = export(args, &backend)?;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "exported {} closed candles of {} {} with {} indicator columns to {} in {seconds:.2} s ({:.0} candles/s)",
        exported.candles,
        args.stream.symbol,
        args.stream.timeframe,
        exported.indicator_columns,
        args.output.display(),
        exported.candles as f64 / seconds.max(1e-9),
    );
    Ok(())
}

/// Writes the export of `args` from the store of `backend`.
pub fn export(args: &ExportArgs, backend: &StoreBackend) -> Result<Exported, ExportError> {
    let range = TimeRange::new(args.from, args.to)?;
    let format = match args.format {
        Some(format) => format,
        None => format_of(&args.output).ok_or_else(|| ExportError::UnknownFormat(args.output.clone()))?,
    };
    let described = backend.describe();
    let store_error = |source| ExportError::Store { store: described.clone(), source };
    let store = backend.open_reader().map_err(store_error)?;
    let store = store.as_ref();
    let key = args.stream.key();
    let names =
        if args.indicators { store.indicator_names(&key, range.from, range.to).map_err(store_error)? } else { vec![] };
    let partial = partial_path(&args.output);
    let file = File::create(&partial).map_err(|source| ExportError::Write { path: partial.clone(), source })?;
    let source = Source { store, described: &described, key: &key, range, names: &names };
    let written = source.write(format, file, &partial);
    let renamed = written.and_then(|candles| {
        std::fs::rename(&partial, &args.output)
            .map_err(|source| ExportError::Write { path: args.output.clone(), source })?;
        Ok(candles)
    });
    match renamed {
        Ok(candles) => Ok(Exported { candles, indicator_columns: names.len() }),
        Err(error) => {
            // An incomplete file is no export: nothing is left behind.
            let _ = std::fs::remove_file(&partial);
            Err(error)
        }
    }
}

/// What an export reads: a stream's closed candles in a range, with the `names` indicator columns.
struct Source<'a> {
    store: &'a dyn Store,
    /// The store, for errors.
    described: &'a str,
    key: &'a StreamKey,
    range: TimeRange,
    names: &'a [String],
}

impl Source<'_> {
    /// Writes the candles to `file` (at `path`) as `format`; returns the number written.
    fn write(&self, format: Format, file: File, path: &Path) -> Result<u64, ExportError> {
        let Self { store, key, names, .. } = *self;
        let store_error = |source| ExportError::Store { store: self.described.to_owned(), source };
        let mut sink: Box<dyn Sink> = match format {
            Format::Csv => Box::new(CsvSink::new(file, names, path)?),
            Format::Parquet => Box::new(ParquetSink::new(file, names, path)?),
        };
        let mut candles_written = 0;
        let mut start = self.range.from;
        loop {
            let batch = store
                .candles_window(&key.symbol, key.timeframe, start, self.range.to, BATCH, Window::Oldest)
                .map_err(store_error)?;
            let Some(last) = batch.last() else { break };
            start = last.open_time + 1;
            let full = batch.len() == BATCH;
            let closed: Vec<Candle> = batch.into_iter().filter(|candle| candle.is_closed).collect();
            let columns = indicator_columns(store, key, names, &closed).map_err(store_error)?;
            sink.write(&closed, &columns)?;
            candles_written += closed.len() as u64;
            if !full {
                break;
            }
        }
        sink.finish()?;
        Ok(candles_written)
    }
}

/// The format an output file's extension names.
fn format_of(path: &Path) -> Option<Format> {
    match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
        "csv" => Some(Format::Csv),
        "parquet" | "pq" => Some(Format::Parquet),
        _ => None,
    }
}

/// Where the file is written until it is complete: `<output>.partial`.
fn partial_path(output: &Path) -> PathBuf {
    let mut path = output.as_os_str().to_owned();
    path.push(".partial");
    PathBuf::from(path)
}

/// The stored values of each of `names` (sorted) for `candles` (ascending): one column per name, one entry per
/// candle, `None` where no value is stored.
fn indicator_columns(
    store: &dyn Store,
    key: &StreamKey,
    names: &[String],
    candles: &[Candle],
) -> Result<Vec<Vec<Option<f64>>>, StoreError> {
    let mut columns = vec![vec![None; candles.len()]; names.len()];
    let (Some(first), Some(last)) = (candles.first(), candles.last()) else { return Ok(columns) };
    if names.is_empty() {
        return Ok(columns);
    }
    store.for_each_indicator_value(key, first.open_time, last.open_time, &mut |timestamp, name, value| {
        let candle = candles.binary_search_by_key(&timestamp, |candle| candle.open_time);
        let column = names.binary_search_by(|known| known.as_str().cmp(name));
        if let (Ok(candle), Ok(column)) = (candle, column) {
            columns[column][candle] = Some(value);
        }
    })?;
    Ok(columns)
}

/// A file format being written, batch by batch.
trait Sink {
    /// Appends `candles` with their indicator `columns` (one per name, one entry per candle).
    fn write(&mut self, candles: &[Candle], columns: &[Vec<Option<f64>>]) -> Result<(), ExportError>;
    /// Flushes and completes the file.
    fn finish(self: Box<Self>) -> Result<(), ExportError>;
}

/// RFC 4180 CSV: a header row, CRLF line ends, a field quoted when it holds a comma, a quote or a line break.
struct CsvSink {
    out: BufWriter<File>,
    path: PathBuf,
    line: String,
}

impl CsvSink {
    fn new(file: File, names: &[String], path: &Path) -> Result<Self, ExportError> {
        let mut sink =
            Self { out: BufWriter::with_capacity(1 << 20, file), path: path.to_owned(), line: String::new() };
        let header: Vec<String> =
            CANDLE_COLUMNS.iter().map(|name| csv_field(name)).chain(names.iter().map(|name| csv_field(name))).collect();
        sink.line = header.join(",");
        sink.line.push_str("\r\n");
        sink.flush_line()?;
        Ok(sink)
    }

    fn flush_line(&mut self) -> Result<(), ExportError> {
        let written = self.out.write_all(self.line.as_bytes());
        self.line.clear();
        written.map_err(|source| ExportError::Write { path: self.path.clone(), source })
    }
}

impl Sink for CsvSink {
    fn write(&mut self, candles: &[Candle], columns: &[Vec<Option<f64>>]) -> Result<(), ExportError> {
        use std::fmt::Write as _;
        for (index, c) in candles.iter().enumerate() {
            // Rust prints an f64 in the fewest digits that read back as the same number, never with an exponent.
            let _ = write!(
                self.line,
                "{},{},{},{},{},{},{},{},{},{},{},{}",
                c.open_time,
                c.open,
                c.high,
                c.low,
                c.close,
                c.volume,
                c.close_time,
                c.quote_volume,
                c.trades,
                c.taker_buy_base,
                c.taker_buy_quote,
                c.is_closed
            );
            for column in columns {
                self.line.push(',');
                if let Some(value) = column[index] {
                    let _ = write!(self.line, "{value}");
                }
            }
            self.line.push_str("\r\n");
            self.flush_line()?;
        }
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<(), ExportError> {
        let path = self.path.clone();
        let file = self
            .out
            .into_inner()
            .map_err(|error| ExportError::Write { path: path.clone(), source: error.into_error() })?;
        file.sync_all().map_err(|source| ExportError::Write { path, source })
    }
}

/// A field as RFC 4180 writes it: quoted, with quotes doubled, when it holds a comma, a quote or a line break.
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\r', '\n']) { format!("\"{}\"", text.replace('"', "\"\"")) } else { text.to_owned() }
}

/// Parquet through arrow: one record batch per database batch.
struct ParquetSink {
    writer: ArrowWriter<File>,
    schema: Arc<Schema>,
    path: PathBuf,
}

impl ParquetSink {
    fn new(file: File, names: &[String], path: &Path) -> Result<Self, ExportError> {
        let time = || DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
        let mut fields = Vec::with_capacity(CANDLE_COLUMNS.len() + names.len());
        for name in CANDLE_COLUMNS {
            let data_type = match name {
                "timestamp" | "close_time" => time(),
                "trades" => DataType::Int64,
                "is_closed" => DataType::Boolean,
                _ => DataType::Float64,
            };
            fields.push(Field::new(name, data_type, false));
        }
        fields.extend(names.iter().map(|name| Field::new(name, DataType::Float64, true)));
        let schema = Arc::new(Schema::new(fields));
        let properties = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_max_row_group_row_count(Some(ROW_GROUP))
            .build();
        let writer = ArrowWriter::try_new(file, schema.clone(), Some(properties))?;
        Ok(Self { writer, schema, path: path.to_owned() })
    }
}

impl Sink for ParquetSink {
    fn write(&mut self, candles: &[Candle], columns: &[Vec<Option<f64>>]) -> Result<(), ExportError> {
        if candles.is_empty() {
            return Ok(());
        }
        let times = |get: fn(&Candle) -> i64| -> ArrayRef {
            Arc::new(TimestampMillisecondArray::from_iter_values(candles.iter().map(get)).with_timezone("UTC"))
        };
        let floats =
            |get: fn(&Candle) -> f64| -> ArrayRef { Arc::new(Float64Array::from_iter_values(candles.iter().map(get))) };
        let mut arrays: Vec<ArrayRef> = vec![
            times(|c| c.open_time),
            floats(|c| c.open),
            floats(|c| c.high),
            floats(|c| c.low),
            floats(|c| c.close),
            floats(|c| c.volume),
            times(|c| c.close_time),
            floats(|c| c.quote_volume),
            Arc::new(Int64Array::from_iter_values(candles.iter().map(|c| c.trades as i64))),
            floats(|c| c.taker_buy_base),
            floats(|c| c.taker_buy_quote),
            Arc::new(BooleanArray::from(candles.iter().map(|c| c.is_closed).collect::<Vec<_>>())),
        ];
        arrays.extend(columns.iter().map(|column| Arc::new(Float64Array::from(column.clone())) as ArrayRef));
        self.writer.write(&RecordBatch::try_new(self.schema.clone(), arrays)?)?;
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<(), ExportError> {
        let Self { writer, path, .. } = *self;
        writer.into_inner()?.sync_all().map_err(|source| ExportError::Write { path, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_only_when_rfc_4180_needs_it() {
        // TC0: plain; TC1: a comma; TC2: a quote is doubled; TC3: a line break.
        assert_eq!(csv_field("sma_20"), "sma_20");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("a\nb"), "\"a\nb\"");
    }

    #[test]
    fn the_format_follows_the_extension() {
        // TC0..TC3: csv, parquet (any case), and unknown or missing extensions.
        assert_eq!(format_of(Path::new("out.csv")), Some(Format::Csv));
        assert_eq!(format_of(Path::new("out.PARQUET")), Some(Format::Parquet));
        assert_eq!(format_of(Path::new("out.txt")), None);
        assert_eq!(format_of(Path::new("out")), None);
    }
}
