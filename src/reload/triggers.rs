//! What asks for a reload besides HTTP: a watcher on the config file's folder (so that editors that save by
//! writing a new file and renaming it over the old one are seen) and `SIGHUP`.

use std::path::Path;
use std::time::Duration;

use actix_web::rt::task::JoinHandle;
use notify::{EventKind, RecursiveMode};
use notify_debouncer_full::{DebounceEventResult, DebouncedEvent, new_debouncer};

use super::{ReloadHandle, Trigger};

/// Events closer together than this make one reload: an editor's save is several events.
const DEBOUNCE: Duration = Duration::from_millis(400);

/// The watch on the config file's folder: it lasts as long as this value.
pub type ConfigWatch =
    notify_debouncer_full::Debouncer<notify::RecommendedWatcher, notify_debouncer_full::RecommendedCache>;

/// Watches the folder of `config` and queues a reload when the file is written, created, renamed or removed (not
/// when it is only opened or read: the reload itself reads it).
pub fn watch_config_file(config: &Path, reload: ReloadHandle) -> notify::Result<ConfigWatch> {
    let name = config.file_name().map(ToOwned::to_owned);
    let folder = config.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let changes_the_file = move |event: &DebouncedEvent| {
        !matches!(event.kind, EventKind::Access(_)) && event.paths.iter().any(|p| p.file_name() == name.as_deref())
    };
    let mut debouncer = new_debouncer(DEBOUNCE, None, move |events: DebounceEventResult| match events {
        Ok(events) if events.iter().any(&changes_the_file) => reload.request(Trigger::File),
        Ok(_) => {}
        Err(errors) => errors.iter().for_each(|error| log::warn!("the config file watcher failed: {error}")),
    })?;
    debouncer.watch(folder, RecursiveMode::NonRecursive)?;
    Ok(debouncer)
}

/// From now on `SIGHUP` queues a reload instead of ending the process.
pub fn reload_on_sighup(reload: ReloadHandle) -> std::io::Result<JoinHandle<()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = signal(SignalKind::hangup())?;
    Ok(actix_web::rt::spawn(async move {
        while hangups.recv().await.is_some() {
            log::info!("SIGHUP received: reloading the config");
            reload.request(Trigger::Signal);
        }
    }))
}
