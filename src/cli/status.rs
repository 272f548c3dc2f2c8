//! `candled status`: a plain-text view of a running candled, from its `/health`, `/api/v1/tasks/status` and
//! `/api/v1/streams`: one summary line, then a table of tasks and a table of streams.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use serde_json::Value;

use super::load_settings;

/// How long each request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The running candled's base URL [default: http://<[http] bind of the config>].
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
}

/// Prints the view: exit 0 when the instance is healthy or degraded, 1 when it is unhealthy, starting or cannot be
/// reached, 2 when the config is invalid.
pub async fn run(config: &Path, args: StatusArgs) -> ExitCode {
    let base = match args.url {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => match load_settings(config) {
            Ok(settings) => match url_of(settings.http_bind) {
                Some(url) => url,
                None => {
                    eprintln!("error: `http.bind` of {} has port 0: give --url", config.display());
                    return ExitCode::FAILURE;
                }
            },
            Err(code) => return code,
        },
    };
    match fetch(&base).await {
        Ok(view) => {
            print!("{}", render(&base, &view));
            let status = view.health["status"].as_str().unwrap_or_default();
            if matches!(status, "healthy" | "degraded") { ExitCode::SUCCESS } else { ExitCode::FAILURE }
        }
        Err(error) => {
            eprintln!("error: cannot reach candled at {base}: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The URL a candled bound to `bind` answers on: an unspecified address is asked on loopback.
fn url_of(bind: SocketAddr) -> Option<String> {
    if bind.port() == 0 {
        return None;
    }
    let ip = match bind.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        ip => ip,
    };
    Some(format!("http://{}", SocketAddr::new(ip, bind.port())))
}

/// The three answers the view is made of.
pub struct StatusView {
    pub health: Value,
    pub tasks: Value,
    pub streams: Value,
}

async fn fetch(base: &str) -> anyhow::Result<StatusView> {
    // reqwest is built without a default TLS provider; candled's HTTP is plain, but the client wants one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder().timeout(REQUEST_TIMEOUT).build()?;
    let get = async |path: &str| -> anyhow::Result<Value> {
        let body = client.get(format!("{base}{path}")).send().await?.bytes().await?;
        Ok(serde_json::from_slice(&body)?)
    };
    let health = get("/health").await?;
    if health["status"] == "starting" {
        return Ok(StatusView { health, tasks: Value::Null, streams: Value::Null });
    }
    Ok(StatusView { health, tasks: get("/api/v1/tasks/status").await?, streams: get("/api/v1/streams").await? })
}

/// The text of the view.
pub fn render(base: &str, view: &StatusView) -> String {
    let health = &view.health;
    let status = health["status"].as_str().unwrap_or("unknown");
    if status == "starting" {
        return format!("candled at {base}: starting ({})\n", text(&health["detail"]));
    }
    let counts = &health["tasks"];
    let mut out = format!(
        "candled at {base}: {status}, up {}, {} tasks ({} running, {} restarting, {} failed), mailbox depth {}\n",
        uptime(health["uptime_secs"].as_u64().unwrap_or(0)),
        counts["total"],
        counts["running"],
        counts["restarting"],
        counts["failed"],
        health["mailbox_depth"],
    );
    let cluster = &health["cluster"];
    if cluster["shards"].as_u64().is_some_and(|shards| shards > 1) {
        out.push_str(&format!(
            "shard {} of {}: owns {} of the {} configured streams\n",
            cluster["shard"], cluster["shards"], cluster["streams_owned"], cluster["streams_configured"]
        ));
    }
    let tasks = view.tasks["tasks"].as_array().map(Vec::as_slice).unwrap_or_default();
    let task_rows = tasks
        .iter()
        .map(|t| {
            vec![
                text(&t["name"]),
                text(&t["state"]),
                text(&t["priority"]),
                text(&t["restarts"]),
                format!("{}/{}", t["mailbox_depth"], t["mailbox_capacity"]),
                text(&t["last_error"]),
            ]
        })
        .collect();
    out.push('\n');
    out.push_str(&table(&["TASK", "STATE", "PRIORITY", "RESTARTS", "MAILBOX", "LAST ERROR"], task_rows));
    let streams = view.streams["streams"].as_array().map(Vec::as_slice).unwrap_or_default();
    let stream_rows = streams
        .iter()
        .map(|s| {
            vec![
                format!("{} {}", text(&s["symbol"]), text(&s["timeframe"])),
                utc(&s["last_closed"]),
                format!("{}/{}", s["present"], s["expected"]),
                text(&s["missing"]),
                text(&s["revisions"]),
                text(&s["repairs"]),
                if s["stale"] == true { "yes".into() } else { "no".into() },
            ]
        })
        .collect();
    out.push('\n');
    out.push_str(&table(
        &["STREAM", "LAST CLOSED", "PRESENT", "MISSING", "REVISIONS", "REPAIRS", "STALE"],
        stream_rows,
    ));
    out
}

/// A JSON value as a table cell: strings bare, null as `-`.
fn text(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A time in ms UTC as `2026-01-01 00:00`, or `-`.
fn utc(value: &Value) -> String {
    value
        .as_i64()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map_or_else(|| "-".into(), |t| t.format("%Y-%m-%d %H:%M").to_string())
}

fn uptime(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m {:02}s", secs / 60, secs % 60),
        _ => format!("{}h {:02}m", secs / 3600, secs % 3600 / 60),
    }
}

/// Columns padded to their widest cell, two spaces apart; the last column is not padded.
fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut text = String::new();
        for (index, (cell, width)) in cells.iter().zip(&widths).enumerate() {
            if index + 1 == cells.len() {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:width$}  "));
            }
        }
        text.trim_end().to_owned() + "\n"
    };
    let mut out = line(headers.to_vec());
    for row in &rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_view_is_a_summary_and_two_tables() {
        let view = StatusView {
            health: json!({"status": "healthy", "uptime_secs": 3725, "mailbox_depth": 0,
                           "tasks": {"total": 1, "running": 1, "restarting": 0, "failed": 0}}),
            tasks: json!({"tasks": [{"name": "storage", "state": "running", "priority": "critical", "restarts": 0,
                                     "mailbox_depth": 0, "mailbox_capacity": 1024, "last_error": null}]}),
            streams: json!({"streams": [{"symbol": "BTCUSDT", "timeframe": "1m", "last_closed": 1767225600000_i64,
                                         "present": 10, "expected": 10, "missing": 0, "revisions": 0, "repairs": 1,
                                         "stale": false}]}),
        };
        // TC0: a healthy instance.
        assert_eq!(
            render("http://127.0.0.1:8000", &view),
            "candled at http://127.0.0.1:8000: healthy, up 1h 02m, 1 tasks (1 running, 0 restarting, 0 failed), \
             mailbox depth 0\n\n\
             TASK     STATE    PRIORITY  RESTARTS  MAILBOX  LAST ERROR\n\
             storage  running  critical  0         0/1024   -\n\n\
             STREAM      LAST CLOSED       PRESENT  MISSING  REVISIONS  REPAIRS  STALE\n\
             BTCUSDT 1m  2026-01-01 00:00  10/10    0        0          1        no\n"
        );
        // TC1: one shard of a cluster says which, under the summary.
        let mut sharded = StatusView { health: view.health.clone(), tasks: json!({}), streams: json!({}) };
        sharded.health["cluster"] = json!({"shard": 1, "shards": 3, "streams_owned": 5, "streams_configured": 16});
        let text = render("u", &sharded);
        assert_eq!(text.lines().nth(1), Some("shard 1 of 3: owns 5 of the 16 configured streams"), "{text}");
        // TC2: an instance still starting.
        let starting = StatusView {
            health: json!({"status": "starting", "detail": "checking 1 symbol against the exchange"}),
            tasks: Value::Null,
            streams: Value::Null,
        };
        assert_eq!(render("u", &starting), "candled at u: starting (checking 1 symbol against the exchange)\n");
    }

    #[test]
    fn the_url_comes_from_the_bind_address() {
        let cases = [
            // TC0: a loopback bind as is; TC1: any address asked on loopback; TC2: port 0 cannot be guessed.
            ("127.0.0.1:8000", Some("http://127.0.0.1:8000")),
            ("0.0.0.0:9000", Some("http://127.0.0.1:9000")),
            ("127.0.0.1:0", None),
        ];
        for (bind, want) in cases {
            assert_eq!(url_of(bind.parse().unwrap()).as_deref(), want, "{bind}");
        }
    }
}
