//! The live config: `config.toml` reloads on a file change (also when saved by rename), on `SIGHUP` and on
//! `POST /api/v1/reload`; an invalid edit changes nothing; a restart-only key is refused; `/api/v1/config` shows the
//! config in force and the last reload; the admin endpoints answer 401, 403 and 404 as they should, and the admin
//! token never shows. Tests that need the engine to apply streams are ignored until `Reconfigure` lands.

use std::process::Command;
use std::time::Duration;

use reqwest::Method;
use reqwest::header::{ALLOW, AUTHORIZATION, WWW_AUTHENTICATE};
use serde_json::{Value, json};

use crate::fake_exchange::{FakeConfig, FakeExchange};
use crate::helpers::{AppOptions, TestApp, spawn_in_with_env, task_row, wait_until, write_config};

/// The token the tests configure; none of its text may appear in a log line or an endpoint.
const TOKEN: &str = "t0ken-for-tests-4f9c";
const WITH_TOKEN: &str = "admin_token = \"t0ken-for-tests-4f9c\"";
/// A file token that `CANDLED_ADMIN_TOKEN` overrides.
const FILE_TOKEN: &str = "file-t0ken-81ad";
const WITH_FILE_TOKEN: &str = "admin_token = \"file-t0ken-81ad\"";
const ADMIN_PATHS: [&str; 2] = ["/api/v1/reload", "/api/v1/tasks/no-such-task/restart"];
/// How long a reload (debounce, exchange check, engine) may take to show.
const RELOADED_WITHIN: Duration = Duration::from_secs(10);
const STORAGE_LINE: &str = "path = \"data/candles.db\"";
const STORAGE_MOVED: &str = "path = \"data/elsewhere.db\"";

/// One HTTP answer: status, JSON body (or text) and the headers the admin endpoints set.
struct Answer {
    status: u16,
    body: Value,
    allow: Option<String>,
    www_authenticate: Option<String>,
}

/// Starts candled on BTCUSDT 1m with `http_extra` in `[http]` and `env` set; waits until the engine runs.
fn start(fake: &FakeExchange, http_extra: &'static str, env: &[(&str, &str)]) -> TestApp {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let options =
        AppOptions { symbols: vec!["BTCUSDT"], timeframes: vec!["1m"], history: 5, http_extra, ..Default::default() };
    write_config(dir.path(), fake, &options);
    let app = spawn_in_with_env(dir, env);
    let started = wait_until(Duration::from_secs(30), || (app.get("/health").1["status"] != "starting").then_some(()));
    assert!(started.is_some(), "the engine did not start; log:\n{}", app.log_text());
    app
}

fn request(app: &TestApp, method: Method, path: &str, token: Option<&str>) -> Answer {
    let mut request = reqwest::blocking::Client::new().request(method, format!("http://127.0.0.1:{}{path}", app.port));
    if let Some(token) = token {
        request = request.header(AUTHORIZATION, format!("Bearer {token}"));
    }
    let response = request.send().expect("the app answers");
    let header = |name| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let (allow, www_authenticate) = (header(ALLOW), header(WWW_AUTHENTICATE));
    let status = response.status().as_u16();
    let text = response.text().expect("a body");
    Answer { status, body: serde_json::from_str(&text).unwrap_or(Value::String(text)), allow, www_authenticate }
}

fn post(app: &TestApp, path: &str, token: Option<&str>) -> Answer {
    request(app, Method::POST, path, token)
}

/// The config's text with `from` replaced by `to`, written in place.
fn edit(app: &TestApp, from: &str, to: &str) {
    let text = std::fs::read_to_string(app.config_path()).expect("read the config");
    assert!(text.contains(from), "the config lacks {from:?}:\n{text}");
    std::fs::write(app.config_path(), text.replacen(from, to, 1)).expect("write the config");
}

fn config_view(app: &TestApp) -> Value {
    let (status, body) = app.get("/api/v1/config");
    assert_eq!(status, 200, "{body}");
    body
}

/// Waits until `/api/v1/config`'s last reload satisfies `check`; returns it.
fn wait_for_last_reload(app: &TestApp, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let last = wait_until(RELOADED_WITHIN, || Some(config_view(app)["last_reload"].clone()).filter(|last| check(last)));
    last.unwrap_or_else(|| panic!("no reload {what}: {}\nlog:\n{}", config_view(app)["last_reload"], app.log_text()))
}

fn reloads(app: &TestApp, result: &str) -> f64 {
    app.metric(&format!("candled_config_reloads_total{{result=\"{result}\"}}"))
}

/// No part of a token shows in the log, `/api/v1/config` or `/metrics`.
fn assert_tokens_hidden(app: &TestApp, tokens: &[&str]) {
    let shown = [app.log_text(), config_view(app).to_string(), app.get("/metrics").1.to_string()];
    for token in tokens {
        for text in &shown {
            assert!(!text.contains(token), "{token} shows in:\n{text}");
        }
    }
}

#[test]
fn without_a_token_the_admin_endpoints_do_not_exist() {
    let fake = FakeExchange::start(FakeConfig::default());
    let app = start(&fake, "", &[]);
    for path in ADMIN_PATHS {
        for (method, token) in [(Method::POST, None), (Method::POST, Some(TOKEN)), (Method::GET, None)] {
            let answer = request(&app, method.clone(), path, token);
            assert_eq!(answer.status, 404, "{method} {path} with {token:?}: {}", answer.body);
            assert!(answer.body["error"].as_str().is_some_and(|e| e.contains("no endpoint")), "{}", answer.body);
        }
    }
    assert_eq!(config_view(&app)["config"]["http"]["admin_token_set"], false);
}

#[test]
fn the_admin_endpoints_need_the_token_which_never_shows() {
    let fake = FakeExchange::start(FakeConfig::default());
    // The environment's token wins over the file's.
    let app = start(&fake, WITH_FILE_TOKEN, &[("CANDLED_ADMIN_TOKEN", TOKEN)]);
    for path in ADMIN_PATHS {
        let missing = post(&app, path, None);
        assert_eq!(missing.status, 401, "{path}: {}", missing.body);
        assert_eq!(missing.www_authenticate.as_deref(), Some("Bearer"), "{path}");
        assert!(
            missing.body["error"].as_str().is_some_and(|e| e.contains("Authorization: Bearer")),
            "{}",
            missing.body
        );
        let wrong = post(&app, path, Some(FILE_TOKEN));
        assert_eq!(wrong.status, 403, "{path}: {}", wrong.body);
        let other_method = request(&app, Method::GET, path, Some(TOKEN));
        assert_eq!((other_method.status, other_method.allow.as_deref()), (405, Some("POST")), "{path}");
    }
    // With the token: an unknown task is 404; a reload of the file in force changes nothing.
    let unknown = post(&app, "/api/v1/tasks/no-such-task/restart", Some(TOKEN));
    assert_eq!(unknown.status, 404, "{}", unknown.body);
    assert!(unknown.body["error"].as_str().is_some_and(|e| e.contains("no-such-task")), "{}", unknown.body);
    let reloaded = post(&app, "/api/v1/reload", Some(TOKEN));
    assert_eq!((reloaded.status, &reloaded.body["result"]), (200, &json!("unchanged")), "{}", reloaded.body);
    assert_eq!(reloads(&app, "unchanged"), 1.0);
    assert_eq!(reloads(&app, "invalid"), 0.0);

    let view = config_view(&app);
    assert_eq!(view["path"], "config.toml");
    assert_eq!(view["config"]["http"]["admin_token_set"], true);
    assert_eq!(view["config"]["market_data"]["streams"], json!(["BTCUSDT:1m"]));
    assert!(view["loaded_at_ms"].as_i64().is_some_and(|ms| ms > 0) && view["loaded_at"].as_str().is_some(), "{view}");
    assert_eq!(view["last_reload"], Value::Null, "an unchanged reload is not kept as the last one");
    assert_tokens_hidden(&app, &[TOKEN, FILE_TOKEN]);
}

#[test]
fn an_invalid_edit_changes_nothing_and_is_logged_with_the_key() {
    let fake = FakeExchange::start(FakeConfig::default());
    let app = start(&fake, WITH_TOKEN, &[]);
    let original = std::fs::read_to_string(app.config_path()).expect("read the config");
    let in_force = config_view(&app)["config"].clone();
    let cases = [
        ("bad TOML", "history = 5", "history = = 5", "history = = 5"),
        ("unknown key", "history = 5", "history = 5\nsymbol = \"X\"", "unknown field `symbol`"),
        ("unknown timeframe", "[\"1m\"]", "[\"1m\", \"7m\"]", "`market_data.timeframes[1]`: unknown timeframe"),
        ("unlisted symbol", "[\"BTCUSDT\"]", "[\"BTCUSDT\", \"NOSUCHUSDT\"]", "not listed on the exchange: NOSUCHUSDT"),
    ];
    for (index, (name, from, to, needle)) in cases.into_iter().enumerate() {
        std::fs::write(app.config_path(), original.replacen(from, to, 1)).expect("write the config");
        // The watcher reloads it, then the endpoint: each is refused, logged once and counted.
        let last = wait_for_last_reload(&app, needle, |last| {
            last["trigger"] == "file" && last["error"].as_str().is_some_and(|e| e.contains(needle))
        });
        assert_eq!(last["result"], "invalid", "{name}: {last}");
        let answer = post(&app, "/api/v1/reload", Some(TOKEN));
        assert_eq!(answer.status, 422, "{name}: {}", answer.body);
        assert!(answer.body["error"].as_str().is_some_and(|e| e.contains(needle)), "{name}: {}", answer.body);
        assert_eq!(config_view(&app)["config"], in_force, "{name}: the config in force changed");
        assert_eq!(reloads(&app, "invalid"), 2.0 * (index + 1) as f64, "{name}");
        let warned = |line: &String| line.contains(needle) && line.contains("WARN");
        // The log is read from the process's stderr: the endpoint's line may still be on its way.
        wait_until(Duration::from_secs(5), || {
            (app.log_lines().iter().filter(|l| warned(l)).count() >= 2).then_some(())
        });
        let warnings: Vec<String> = app.log_lines().into_iter().filter(warned).collect();
        assert_eq!(warnings.len(), 2, "{name}: one line per reload: {warnings:#?}");
        assert!(warnings.iter().all(|line| line.contains("nothing changed")), "{name}: {warnings:#?}");
    }
    assert_eq!(reloads(&app, "applied") + reloads(&app, "failed"), 0.0);
    // Each write was seen once, and a reload's own read of the file is no change to react to.
    assert_eq!(reloads(&app, "unchanged"), 0.0);
    assert_tokens_hidden(&app, &[TOKEN]);
}

#[test]
fn an_edit_of_storage_path_is_refused_with_the_restart_message() {
    let fake = FakeExchange::start(FakeConfig::default());
    let app = start(&fake, WITH_TOKEN, &[]);
    edit(&app, STORAGE_LINE, STORAGE_MOVED);
    // The watcher may have reloaded it first: either way the key is refused.
    let answer = post(&app, "/api/v1/reload", Some(TOKEN));
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["result"], "restart_needed", "{}", answer.body);
    assert_eq!(answer.body["restart_needed"], json!(["storage.path"]));
    let view = config_view(&app);
    assert_eq!(view["config"]["storage"]["path"], "data/candles.db", "{view}");
    assert_eq!(view["last_reload"]["result"], "restart_needed", "{view}");
    let refusal = "storage.path: cannot change while candled runs, restart candled to apply";
    assert!(app.count_log_lines(refusal) >= 1, "log:\n{}", app.log_text());
    assert!(reloads(&app, "restart_needed") >= 1.0);
}

#[test]
fn a_refused_key_does_not_hold_back_the_rest_of_the_edit() {
    let fake = FakeExchange::start(FakeConfig::default());
    let app = start(&fake, WITH_TOKEN, &[]);
    edit(&app, STORAGE_LINE, STORAGE_MOVED);
    edit(&app, "[\"1m\"]", "[\"1m\", \"5m\"]");
    let answer = post(&app, "/api/v1/reload", Some(TOKEN));
    assert_eq!((answer.status, &answer.body["result"]), (200, &json!("restart_needed")), "{}", answer.body);
    let config = &config_view(&app)["config"];
    assert_eq!(config["market_data"]["streams"], json!(["BTCUSDT:1m", "BTCUSDT:5m"]), "{config}");
    assert_eq!(config["storage"]["path"], "data/candles.db", "{config}");
    // The log is read from the process's stderr: wait for the line, then make sure it is there once.
    app.wait_for_log_count("streams added: 1 (BTCUSDT:5m)", 1, Duration::from_secs(5));
    assert_eq!(app.count_log_lines("streams added: 1 (BTCUSDT:5m)"), 1, "log:\n{}", app.log_text());
}

#[test]
fn the_reload_endpoint_applies_an_edit_and_the_config_shows_it() {
    let fake = FakeExchange::start(FakeConfig::default());
    let app = start(&fake, WITH_TOKEN, &[]);
    let loaded_at = config_view(&app)["loaded_at_ms"].as_i64().expect("loaded_at_ms");
    edit(&app, "[\"BTCUSDT\"]", "[\"BTCUSDT\", \"ETHUSDT\"]");
    // The watcher may have applied it first; then the endpoint finds nothing left to do.
    let answer = post(&app, "/api/v1/reload", Some(TOKEN));
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(["applied", "unchanged"].contains(&answer.body["result"].as_str().unwrap_or_default()), "{}", answer.body);
    let view = config_view(&app);
    assert_eq!(view["last_reload"]["result"], "applied", "{view}");
    assert_eq!(view["last_reload"]["added"], json!(["ETHUSDT:1m"]), "{view}");
    assert_eq!(view["config"]["market_data"]["streams"], json!(["BTCUSDT:1m", "ETHUSDT:1m"]), "{view}");
    assert!(view["loaded_at_ms"].as_i64() > Some(loaded_at), "{view}");
    assert_eq!(reloads(&app, "applied"), 1.0);
}

#[test]
fn a_task_restarts_on_request() {
    let fake = FakeExchange::start(FakeConfig::default());
    let app = start(&fake, WITH_TOKEN, &[]);
    let task = "indicator:BTCUSDT:1m";
    let answer = post(&app, &format!("/api/v1/tasks/{task}/restart"), Some(TOKEN));
    assert_eq!(answer.status, 200, "{}", answer.body);
    let restarted = wait_until(RELOADED_WITHIN, || {
        task_row(&app, task).filter(|row| row["restarts"].as_u64() >= Some(1) && row["state"] == "running")
    });
    assert!(restarted.is_some(), "{:?}", task_row(&app, task));
}

#[test]
fn sighup_reloads_and_the_process_lives_on() {
    let fake = FakeExchange::start(FakeConfig::default());
    let app = start(&fake, "", &[]);
    edit(&app, STORAGE_LINE, STORAGE_MOVED);
    let sent = Command::new("kill").args(["-HUP", &app.pid().to_string()]).status().expect("run kill");
    assert!(sent.success());
    let last = wait_for_last_reload(&app, "on SIGHUP", |last| last["trigger"] == "signal");
    assert_eq!(last["result"], "restart_needed", "{last}");
    assert_eq!(app.count_log_lines("SIGHUP received: reloading the config"), 1);
    assert_eq!(app.get("/health").0, 200, "alive and healthy after SIGHUP");
    let (status, _dir, log) = app.terminate();
    assert_eq!(status.code(), Some(0), "log:\n{}", log.join("\n"));
}

#[test]
fn a_reload_asked_during_start_up_waits_for_the_engine_and_the_endpoint_answers_503() {
    let fake = FakeExchange::start(FakeConfig::default());
    // A REST port that accepts and never answers holds start-up in its symbol check for its 5 s deadline.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a silent REST port");
    let dir = tempfile::tempdir().expect("a temporary folder");
    let options =
        AppOptions { symbols: vec!["BTCUSDT"], timeframes: vec!["1m"], http_extra: WITH_TOKEN, ..Default::default() };
    let config = write_config(dir.path(), &fake, &options);
    let text = std::fs::read_to_string(&config).expect("read the config");
    let silent_url = format!("http://{}", silent.local_addr().expect("an address"));
    std::fs::write(&config, text.replace(&fake.rest_url(), &silent_url)).expect("write the config");
    let app = spawn_in_with_env(dir, &[]);
    assert_eq!(app.get("/health").1["status"], "starting");

    edit(&app, STORAGE_LINE, STORAGE_MOVED);
    let sent = Command::new("kill").args(["-HUP", &app.pid().to_string()]).status().expect("run kill");
    assert!(sent.success());
    let answer = post(&app, "/api/v1/reload", Some(TOKEN));
    assert_eq!(answer.status, 503, "{}", answer.body);
    assert!(answer.body["error"].as_str().is_some_and(|e| e.contains("not started")), "{}", answer.body);
    assert_eq!(app.get("/health").1["status"], "starting", "the reload was answered during start-up");
    // Once the engine runs, the queued SIGHUP reload is applied; the process lived through it.
    let last = wait_for_last_reload(&app, "on the SIGHUP sent during start-up", |last| last["trigger"] == "signal");
    assert_eq!(last["result"], "restart_needed", "{last}");
    let (status, _dir, log) = app.terminate();
    assert_eq!(status.code(), Some(0), "log:\n{}", log.join("\n"));
}

#[test]
fn an_edit_saved_by_rename_is_picked_up_by_the_watcher() {
    let fake = FakeExchange::start(FakeConfig::default());
    let app = start(&fake, "", &[]);
    // As vim or `sed -i` save: a new file renamed over the old one.
    let text = std::fs::read_to_string(app.config_path()).expect("read the config");
    let saved = app.config_path().with_extension("toml.swp");
    std::fs::write(&saved, text.replacen(STORAGE_LINE, STORAGE_MOVED, 1)).expect("write the new file");
    std::fs::rename(&saved, app.config_path()).expect("rename it over the config");
    let last = wait_for_last_reload(&app, "after the rename", |last| last["trigger"] == "file");
    assert_eq!(last["result"], "restart_needed", "{last}");
    assert_eq!(last["restart_needed"], json!(["storage.path"]), "{last}");
}
