//! The SQLite schema, version 2: the physical tables candled writes (`streams`, `candle_rows`, `indicator_rows` with
//! one column per indicator output), and the `candles` and `indicators` views users query and edit, with the
//! triggers that map their edits onto the tables. The `indicators` view is generated from the output columns, and
//! generated again whenever one is added.

use rusqlite::Connection;

/// The version `PRAGMA user_version` holds once this schema is in place.
pub const VERSION: i64 = 2;

/// The fixed part of the schema: the tables, the revision trigger, the `candles` view and its triggers. Every
/// statement is idempotent (`IF NOT EXISTS`). The `indicators` view is [`indicators_view`].
///
/// `streams` gives each (symbol, timeframe) a small integer id on its first write; rows are keyed by it.
/// A closed candle that is written again with other values is a revision: the trigger keeps the old values in
/// `candle_revisions`, stamped in ms UTC. It uses only functions SQLite 3.31 has (`unixepoch('subsec')` needs 3.42:
/// older `sqlite3` tools, such as Debian 12's, evaluate it to NULL and then fail any `UPDATE` of a closed candle).
///
/// The views' INSERT triggers add a missing stream with `INSERT … SELECT … WHERE NOT EXISTS` rather than
/// `INSERT OR IGNORE`: an outer `INSERT OR REPLACE INTO candles` imposes its conflict policy on the trigger's
/// statements, and REPLACE on `streams` would give an existing stream a new id.
pub const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS streams (
    id        INTEGER PRIMARY KEY,
    symbol    TEXT    NOT NULL,
    timeframe TEXT    NOT NULL,
    UNIQUE (symbol, timeframe)
);

CREATE TABLE IF NOT EXISTS candle_rows (
    stream_id       INTEGER NOT NULL,
    timestamp       INTEGER NOT NULL,
    open            REAL    NOT NULL,
    high            REAL    NOT NULL,
    low             REAL    NOT NULL,
    close           REAL    NOT NULL,
    volume          REAL    NOT NULL,
    close_time      INTEGER NOT NULL,
    quote_volume    REAL    NOT NULL,
    trades          INTEGER NOT NULL,
    taker_buy_base  REAL    NOT NULL,
    taker_buy_quote REAL    NOT NULL,
    is_closed       INTEGER NOT NULL CHECK (is_closed IN (0, 1)),
    PRIMARY KEY (stream_id, timestamp)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS indicator_rows (
    stream_id INTEGER NOT NULL,
    timestamp INTEGER NOT NULL,
    PRIMARY KEY (stream_id, timestamp)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS candle_revisions (
    symbol          TEXT    NOT NULL,
    timeframe       TEXT    NOT NULL,
    timestamp       INTEGER NOT NULL,
    revised_at      INTEGER NOT NULL,
    open            REAL    NOT NULL,
    high            REAL    NOT NULL,
    low             REAL    NOT NULL,
    close           REAL    NOT NULL,
    volume          REAL    NOT NULL,
    quote_volume    REAL    NOT NULL,
    trades          INTEGER NOT NULL,
    taker_buy_base  REAL    NOT NULL,
    taker_buy_quote REAL    NOT NULL
);

CREATE TABLE IF NOT EXISTS exchange_gaps (
    symbol    TEXT    NOT NULL,
    timeframe TEXT    NOT NULL,
    from_open INTEGER NOT NULL,
    to_open   INTEGER NOT NULL,
    PRIMARY KEY (symbol, timeframe, from_open)
) WITHOUT ROWID;

CREATE TRIGGER IF NOT EXISTS candle_revision AFTER UPDATE ON candle_rows WHEN old.is_closed = 1
BEGIN
    INSERT INTO candle_revisions
    SELECT s.symbol, s.timeframe, old.timestamp,
           CAST(ROUND((julianday('now') - 2440587.5) * 86400000) AS INTEGER),
           old.open, old.high, old.low, old.close, old.volume, old.quote_volume, old.trades,
           old.taker_buy_base, old.taker_buy_quote
    FROM streams s WHERE s.id = old.stream_id;
END;

CREATE VIEW IF NOT EXISTS candles AS
SELECT s.symbol AS symbol, s.timeframe AS timeframe, c.timestamp AS timestamp, c.open AS open, c.high AS high,
       c.low AS low, c.close AS close, c.volume AS volume, c.close_time AS close_time,
       c.quote_volume AS quote_volume, c.trades AS trades, c.taker_buy_base AS taker_buy_base,
       c.taker_buy_quote AS taker_buy_quote, c.is_closed AS is_closed
FROM candle_rows c JOIN streams s ON s.id = c.stream_id;

CREATE TRIGGER IF NOT EXISTS candles_insert INSTEAD OF INSERT ON candles
BEGIN
    INSERT INTO streams (symbol, timeframe) SELECT new.symbol, new.timeframe
    WHERE NOT EXISTS (SELECT 1 FROM streams WHERE symbol = new.symbol AND timeframe = new.timeframe);
    INSERT INTO candle_rows (stream_id, timestamp, open, high, low, close, volume, close_time, quote_volume, trades,
                             taker_buy_base, taker_buy_quote, is_closed)
    VALUES ((SELECT id FROM streams WHERE symbol = new.symbol AND timeframe = new.timeframe), new.timestamp,
            new.open, new.high, new.low, new.close, new.volume, new.close_time, new.quote_volume, new.trades,
            new.taker_buy_base, new.taker_buy_quote, new.is_closed);
END;

CREATE TRIGGER IF NOT EXISTS candles_update INSTEAD OF UPDATE ON candles
BEGIN
    INSERT INTO streams (symbol, timeframe) SELECT new.symbol, new.timeframe
    WHERE NOT EXISTS (SELECT 1 FROM streams WHERE symbol = new.symbol AND timeframe = new.timeframe);
    UPDATE candle_rows SET
        stream_id = (SELECT id FROM streams WHERE symbol = new.symbol AND timeframe = new.timeframe),
        timestamp = new.timestamp, open = new.open, high = new.high, low = new.low, close = new.close,
        volume = new.volume, close_time = new.close_time, quote_volume = new.quote_volume, trades = new.trades,
        taker_buy_base = new.taker_buy_base, taker_buy_quote = new.taker_buy_quote, is_closed = new.is_closed
    WHERE stream_id = (SELECT id FROM streams WHERE symbol = old.symbol AND timeframe = old.timeframe)
      AND timestamp = old.timestamp;
END;

CREATE TRIGGER IF NOT EXISTS candles_delete INSTEAD OF DELETE ON candles
BEGIN
    DELETE FROM candle_rows
    WHERE stream_id = (SELECT id FROM streams WHERE symbol = old.symbol AND timeframe = old.timeframe)
      AND timestamp = old.timestamp;
END;
"#;

/// `name` as an SQL identifier: in double quotes, inner ones doubled.
pub fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `text` as an SQL string literal: in single quotes, inner ones doubled.
pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The output columns of `indicator_rows`, in table order (every column but the key).
pub fn indicator_columns(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare("SELECT name FROM pragma_table_info('indicator_rows') ORDER BY cid")?;
    let names = stmt.query_map([], |row| row.get::<_, String>(0))?;
    let mut columns = names.collect::<Result<Vec<_>, _>>()?;
    columns.retain(|name| name != "stream_id" && name != "timestamp");
    Ok(columns)
}

/// Adds a nullable REAL column to `indicator_rows` for each of `names` (none already there).
pub fn add_indicator_columns(conn: &Connection, names: &[String]) -> rusqlite::Result<()> {
    for name in names {
        conn.execute_batch(&format!("ALTER TABLE indicator_rows ADD COLUMN {} REAL", quote_identifier(name)))?;
    }
    Ok(())
}

/// The `indicators` view over the output `columns`, and its triggers, replacing any earlier ones: one row per stored
/// (non-NULL) value, `(symbol, timeframe, timestamp, name, value)`, a `UNION ALL` with one arm per column. Deleting a
/// row sets its column to NULL (and drops a row left with no value); updating its value sets the column; inserting
/// one sets the column of an existing output (a name with no column is refused).
pub fn indicators_view(columns: &[String]) -> String {
    let mut sql = String::from("DROP VIEW IF EXISTS indicators;\n");
    if columns.is_empty() {
        sql.push_str(
            "CREATE VIEW indicators AS
SELECT s.symbol AS symbol, s.timeframe AS timeframe, r.timestamp AS timestamp, NULL AS name, NULL AS value
FROM indicator_rows r JOIN streams s ON s.id = r.stream_id WHERE 0;
CREATE TRIGGER indicators_insert INSTEAD OF INSERT ON indicators
BEGIN
    SELECT RAISE(ABORT, 'indicators: no indicator output is stored yet, so none can be inserted');
END;
CREATE TRIGGER indicators_update INSTEAD OF UPDATE ON indicators BEGIN SELECT 1; END;
CREATE TRIGGER indicators_delete INSTEAD OF DELETE ON indicators BEGIN SELECT 1; END;
",
        );
        return sql;
    }
    let arms: Vec<String> = columns
        .iter()
        .map(|name| {
            let (column, literal) = (quote_identifier(name), quote_literal(name));
            format!(
                "SELECT s.symbol AS symbol, s.timeframe AS timeframe, r.timestamp AS timestamp, {literal} AS name, \
                 r.{column} AS value FROM indicator_rows r JOIN streams s ON s.id = r.stream_id \
                 WHERE r.{column} IS NOT NULL"
            )
        })
        .collect();
    sql.push_str(&format!("CREATE VIEW indicators AS\n{};\n", arms.join("\nUNION ALL\n")));

    let names = columns.iter().map(|n| quote_literal(n)).collect::<Vec<_>>().join(", ");
    let row_of = |which: &str| {
        format!(
            "stream_id = (SELECT id FROM streams WHERE symbol = {which}.symbol AND timeframe = {which}.timeframe) \
             AND timestamp = {which}.timestamp"
        )
    };
    let all_null = columns.iter().map(|n| format!("{} IS NULL", quote_identifier(n))).collect::<Vec<_>>().join(" AND ");
    let set_to = |value_for: &dyn Fn(&str, &str) -> String| {
        columns
            .iter()
            .map(|n| {
                let column = quote_identifier(n);
                format!("{column} = {}", value_for(&column, &quote_literal(n)))
            })
            .collect::<Vec<_>>()
            .join(",\n        ")
    };
    let cleared = set_to(&|column, literal| format!("CASE WHEN old.name = {literal} THEN NULL ELSE {column} END"));
    let updated = set_to(&|column, literal| {
        format!("CASE WHEN new.name = {literal} THEN new.value WHEN old.name = {literal} THEN NULL ELSE {column} END")
    });
    let inserted =
        set_to(&|column, literal| format!("CASE WHEN new.name = {literal} THEN new.value ELSE {column} END"));
    let (old_row, new_row) = (row_of("old"), row_of("new"));
    sql.push_str(&format!(
        "CREATE TRIGGER indicators_delete INSTEAD OF DELETE ON indicators
BEGIN
    UPDATE indicator_rows SET
        {cleared}
    WHERE {old_row};
    DELETE FROM indicator_rows WHERE {old_row} AND {all_null};
END;
CREATE TRIGGER indicators_update INSTEAD OF UPDATE ON indicators
BEGIN
    SELECT RAISE(ABORT, 'indicators: only name and value can be updated')
    WHERE new.symbol IS NOT old.symbol OR new.timeframe IS NOT old.timeframe OR new.timestamp IS NOT old.timestamp;
    SELECT RAISE(ABORT, 'indicators: no indicator output column has that name') WHERE new.name NOT IN ({names});
    UPDATE indicator_rows SET
        {updated}
    WHERE {old_row};
    DELETE FROM indicator_rows WHERE {old_row} AND {all_null};
END;
CREATE TRIGGER indicators_insert INSTEAD OF INSERT ON indicators
BEGIN
    SELECT RAISE(ABORT, 'indicators: no indicator output column has that name') WHERE new.name NOT IN ({names});
    INSERT INTO streams (symbol, timeframe) SELECT new.symbol, new.timeframe
    WHERE NOT EXISTS (SELECT 1 FROM streams WHERE symbol = new.symbol AND timeframe = new.timeframe);
    INSERT INTO indicator_rows (stream_id, timestamp)
    SELECT id, new.timestamp FROM streams WHERE symbol = new.symbol AND timeframe = new.timeframe
      AND NOT EXISTS (SELECT 1 FROM indicator_rows WHERE {new_row});
    UPDATE indicator_rows SET
        {inserted}
    WHERE {new_row};
END;
"
    ));
    sql
}

/// Creates the whole schema at [`VERSION`] on a database without one (in the caller's transaction).
pub fn create(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(SCHEMA)?;
    conn.execute_batch(&indicators_view(&indicator_columns(conn)?))?;
    conn.pragma_update(None, "user_version", VERSION)
}
