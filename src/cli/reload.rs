//! Live reload of `errmap serve --catalog`: on SIGHUP, and on any change to
//! a catalog file, every file is read again and, when all of them load, the
//! new set replaces the served one whole ([`LiveCatalogs`]). A file that
//! does not load keeps the running set, and the log says why. A reload that
//! breaks clients (`errmap check`'s findings) is applied with a warning
//! that lists them, or refused with `--refuse-breaking-reload`.
//!
//! Changes are seen by watching each file's directory, not the file: an
//! editor's write in place, a `mv` over the file, and the `..data` symlink
//! swap of a Kubernetes ConfigMap volume all show there. Events are
//! gathered for a moment before one reload. The files' bytes are compared
//! before anything is decoded: bytes that are the served ones, or (on a
//! file event) the ones last refused, are not read again, so a busy
//! directory costs a read of the files, and a broken file is reported once.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use errmap::{
    catalog_set,
    spec::{compat, CatalogSpec},
    Catalogs,
};
use errmap_server::{reload::LiveCatalogs, sanitize::escape};

/// How long events are gathered before one reload.
const SETTLE: Duration = Duration::from_millis(200);

/// How often the files are compared when the platform gives no watcher.
const POLL: Duration = Duration::from_secs(2);

/// What was served last: the specs of the files' catalogs, and the files'
/// bytes; and the bytes last refused, if any.
struct Served {
    specs: Vec<CatalogSpec>,
    contents: Vec<Vec<u8>>,
    refused: Option<Vec<Vec<u8>>>,
}

/// Reloads a server's `--catalog` files into its [`LiveCatalogs`].
pub(crate) struct CatalogReloader {
    files: Vec<PathBuf>,
    no_default: bool,
    refuse_breaking: bool,
    live: LiveCatalogs,
    served: Mutex<Served>,
}

/// A set made from the files.
struct Loaded {
    catalogs: Catalogs,
    specs: Vec<CatalogSpec>,
}

/// The bytes of every file, or the first that cannot be read.
fn read_all(files: &[PathBuf]) -> Result<Vec<Vec<u8>>, String> {
    files
        .iter()
        .map(|file| std::fs::read(file).map_err(|e| format!("{}: {e}", file.display())))
        .collect()
}

/// The embedded catalog (unless `no_default`) and the catalogs of `files`,
/// whose bytes are `contents`; or the first problem, naming the file, the
/// enum and the value.
fn load(files: &[PathBuf], contents: &[Vec<u8>], no_default: bool) -> Result<Loaded, String> {
    let mut catalogs = if no_default {
        Catalogs::empty()
    } else {
        Catalogs::default()
    };
    let mut all_specs = Vec::new();
    for (file, bytes) in files.iter().zip(contents) {
        let name = file.display().to_string();
        let specs = catalog_set::read_specs(bytes, &name, false).map_err(|e| e.to_string())?;
        for table in catalog_set::tables_of(&specs, bytes) {
            catalogs = catalogs.with(table, &name).map_err(|e| e.to_string())?;
        }
        all_specs.extend(specs);
    }
    Ok(Loaded {
        catalogs,
        specs: all_specs,
    })
}

/// What asked for a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Trigger {
    /// SIGHUP: the files are read and tried whatever they hold.
    Signal,
    /// An event in a catalog file's directory.
    FileChange,
}

impl Trigger {
    fn name(self) -> &'static str {
        match self {
            Trigger::Signal => "SIGHUP",
            Trigger::FileChange => "file change",
        }
    }
}

/// What one reload did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Reloaded {
    /// The files read the same bytes as those served, or, on a file
    /// event, as those last refused.
    Unchanged,
    /// The new set is served; `breaking` of the findings break clients.
    Applied { findings: usize, breaking: usize },
    /// The files did not load, or broke clients under
    /// `--refuse-breaking-reload`: the running set stays.
    Kept,
}

impl CatalogReloader {
    /// Loads the files for the first time, or says why they do not load.
    pub(crate) fn start(
        files: Vec<PathBuf>,
        no_default: bool,
        refuse_breaking: bool,
    ) -> Result<Self, String> {
        let contents = read_all(&files)?;
        let loaded = load(&files, &contents, no_default)?;
        Ok(Self {
            files,
            no_default,
            refuse_breaking,
            live: LiveCatalogs::new(loaded.catalogs),
            served: Mutex::new(Served {
                specs: loaded.specs,
                contents,
                refused: None,
            }),
        })
    }

    /// The catalogs to serve; the reloads store into them.
    pub(crate) fn catalogs(&self) -> LiveCatalogs {
        self.live.clone()
    }

    /// Reads the files again and serves them if they load (see the module
    /// docs); `why` names the trigger in the log.
    pub(crate) fn reload(&self, trigger: Trigger) -> Reloaded {
        let why = trigger.name();
        let mut served = self.served.lock().unwrap_or_else(PoisonError::into_inner);
        let contents = match read_all(&self.files) {
            Ok(contents) => contents,
            Err(error) => {
                tracing::warn!(
                    trigger = why,
                    error = %escape(&error),
                    "catalogs not reloaded: a file cannot be read; the running catalogs stay"
                );
                return Reloaded::Kept;
            }
        };
        if contents == served.contents
            || (trigger == Trigger::FileChange && served.refused.as_ref() == Some(&contents))
        {
            tracing::debug!(trigger = why, "catalog files unchanged; nothing to reload");
            return Reloaded::Unchanged;
        }
        let loaded = match load(&self.files, &contents, self.no_default) {
            Ok(loaded) => loaded,
            Err(error) => {
                tracing::warn!(
                    trigger = why,
                    error = %escape(&error),
                    "catalogs not reloaded: a file does not load; the running catalogs stay"
                );
                served.refused = Some(contents);
                return Reloaded::Kept;
            }
        };
        let findings = compat::compare(&served.specs, &loaded.specs);
        let breaking: Vec<String> = findings
            .iter()
            .filter(|f| f.breaking)
            .map(|f| escape(&f.to_string()).into_owned())
            .collect();
        if !breaking.is_empty() && self.refuse_breaking {
            tracing::warn!(
                trigger = why,
                breaking = ?breaking,
                "catalogs not reloaded: the change breaks clients (--refuse-breaking-reload); the running catalogs stay"
            );
            served.refused = Some(contents);
            return Reloaded::Kept;
        }
        let codes: usize = loaded.catalogs.tables().map(|t| t.entries().len()).sum();
        let hashes: Vec<String> = loaded
            .catalogs
            .tables()
            .map(|t| format!("{}={:016x}", t.domain(), t.content_hash()))
            .collect();
        self.live.store(loaded.catalogs);
        served.specs = loaded.specs;
        served.contents = contents;
        served.refused = None;
        if breaking.is_empty() {
            tracing::info!(
                trigger = why,
                codes,
                catalogs = ?hashes,
                changes = findings.len(),
                "catalogs reloaded"
            );
        } else {
            tracing::warn!(
                trigger = why,
                codes,
                catalogs = ?hashes,
                breaking = ?breaking,
                "catalogs reloaded, but the change breaks clients (errmap check); pass --refuse-breaking-reload to refuse such reloads"
            );
        }
        Reloaded::Applied {
            findings: findings.len(),
            breaking: breaking.len(),
        }
    }

    /// Reloads on every change to the files, until the process ends: a
    /// watcher on each file's directory, or, where there is none, a look
    /// at the files every two seconds.
    pub(crate) fn watch(self: Arc<Self>) {
        // One stored wake-up however many events come: a burst is one
        // reload, and nothing queues while a reload runs.
        let changed = Arc::new(tokio::sync::Notify::new());
        let dirs = directories(&self.files);
        let watcher = watch_dirs(&dirs, changed.clone());
        if watcher.is_none() {
            tracing::warn!(
                "no file watcher: catalog files are compared every {} s instead",
                POLL.as_secs()
            );
            let tick = changed.clone();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(POLL);
                loop {
                    every.tick().await;
                    tick.notify_one();
                }
            });
        }
        tokio::spawn(async move {
            // The watcher lives as long as this task.
            let _watcher = watcher;
            loop {
                changed.notified().await;
                tokio::time::sleep(SETTLE).await;
                let reloader = self.clone();
                let _ =
                    tokio::task::spawn_blocking(move || reloader.reload(Trigger::FileChange)).await;
            }
        });
    }
}

/// The directories of `files`, each once.
fn directories(files: &[PathBuf]) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    for file in files {
        let dir = match file.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => Path::new(".").to_path_buf(),
        };
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    dirs
}

/// A watcher that wakes `changed` at every event in `dirs`, or `None` when
/// the platform's watcher cannot be set up.
fn watch_dirs(
    dirs: &[PathBuf],
    changed: Arc<tokio::sync::Notify>,
) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher as _;
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| !e.kind.is_access()) {
            changed.notify_one();
        }
    })
    .map_err(|e| tracing::warn!(error = %e, "cannot start a file watcher"))
    .ok()?;
    for dir in dirs {
        if let Err(e) = watcher.watch(dir, notify::RecursiveMode::NonRecursive) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot watch a catalog directory");
            return None;
        }
    }
    Some(watcher)
}
