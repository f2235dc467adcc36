//! The live set of tools, reloadable while Station runs.

use std::any::{Any, TypeId};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::watch;

use crate::def::ToolDef;
use crate::load::{LoadOptions, Notices, ToolLoadError, load_all};

/// Quiet time after the last file event before reloading: editors write a file in several
/// steps (truncate, write, rename), and one reload per save is enough.
const DEBOUNCE: Duration = Duration::from_millis(200);

/// The set of tools every platform shows. Cheap to clone; clones share one set.
#[derive(Clone)]
pub struct ToolRegistry {
    inner: Arc<Inner>,
}

struct Inner {
    dir: Option<PathBuf>,
    options: LoadOptions,
    state: RwLock<State>,
    generation: watch::Sender<u64>,
    derived: Mutex<Derived>,
}

/// Values front ends computed from the tools (see [`ToolRegistry::derived`]),
/// one per type, all from the same generation.
#[derive(Default)]
struct Derived {
    generation: u64,
    values: HashMap<TypeId, Arc<dyn Any + Send + Sync>>,
}

#[derive(Default)]
struct State {
    by_id: BTreeMap<String, Arc<ToolDef>>,
    by_command: HashMap<String, Arc<ToolDef>>,
    errors: Vec<ToolLoadError>,
    notices: Notices,
}

impl State {
    fn new(by_id: BTreeMap<String, Arc<ToolDef>>, errors: Vec<ToolLoadError>, notices: Notices) -> Self {
        let by_command = by_id.values().map(|t| (t.command.clone(), t.clone())).collect();
        State { by_id, by_command, errors, notices }
    }
}

/// Logs what a load found that `before` did not have: each problem and
/// each override once, not again on every reload while it persists.
fn log_news(before: Option<(&[ToolLoadError], &Notices)>, errors: &[ToolLoadError], notices: &Notices) {
    let (old_errors, old_overrides): (&[ToolLoadError], &[(String, PathBuf)]) =
        before.map_or((&[], &[]), |(e, n)| (e, &n.overrides));
    for e in errors.iter().filter(|e| !old_errors.contains(e)) {
        tracing::warn!("tool not loaded: {e}");
    }
    for (id, file) in notices.overrides.iter().filter(|o| !old_overrides.contains(o)) {
        tracing::info!(tool = %id, file = %file.display(), "tool file overrides the built-in tool");
    }
}

impl Derived {
    fn get<T: Any + Send + Sync>(&self, generation: u64) -> Option<Arc<T>> {
        let value = self.values.get(&TypeId::of::<T>()).filter(|_| self.generation == generation)?;
        value.clone().downcast().ok()
    }
}

impl std::fmt::Debug for ToolRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToolRegistry")
            .field("dir", &self.inner.dir)
            .field("tools", &self.read().by_id.keys().collect::<Vec<_>>())
            .field("generation", &self.generation())
            .finish()
    }
}

impl ToolRegistry {
    /// Loads the built-in tools and the tool files in `dir` (a missing folder just means
    /// built-ins only). Bad files are skipped and reported; the rest load.
    pub fn load(dir: Option<&Path>) -> (ToolRegistry, Vec<ToolLoadError>) {
        Self::load_with(dir, LoadOptions::default())
    }

    /// [`ToolRegistry::load`] reading files as `options` say
    /// (`tools.max_file_bytes`), now and on every reload. Each problem and
    /// each built-in a file overrides is logged once, and again on a reload
    /// only if it is new.
    pub fn load_with(dir: Option<&Path>, options: LoadOptions) -> (ToolRegistry, Vec<ToolLoadError>) {
        let (by_id, errors, notices) = load_all(dir, options);
        log_news(None, &errors, &notices);
        let (generation, _) = watch::channel(1);
        let registry = ToolRegistry {
            inner: Arc::new(Inner {
                dir: dir.map(Path::to_path_buf),
                options,
                state: RwLock::new(State::new(by_id, errors.clone(), notices)),
                generation,
                derived: Mutex::default(),
            }),
        };
        (registry, errors)
    }

    /// Reads the folder again and swaps in the new set; the generation goes up only if some
    /// tool was added, removed or changed.
    pub fn reload(&self) -> Vec<ToolLoadError> {
        let (by_id, errors, notices) = load_all(self.inner.dir.as_deref(), self.inner.options);
        let changed = {
            let mut state = self.inner.state.write().unwrap_or_else(std::sync::PoisonError::into_inner);
            let changed = state.by_id != by_id;
            log_news(Some((&state.errors, &state.notices)), &errors, &notices);
            *state = State::new(by_id, errors.clone(), notices);
            changed
        };
        if changed {
            self.inner.generation.send_modify(|g| *g += 1);
            tracing::info!(generation = self.generation(), "tools reloaded");
        }
        errors
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        // A panic while holding the lock cannot leave State half-written (it is replaced whole).
        self.inner.state.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The tool with this id.
    pub fn get(&self, id: &str) -> Option<Arc<ToolDef>> {
        self.read().by_id.get(id).cloned()
    }

    /// The tool with this chat command.
    pub fn by_command(&self, command: &str) -> Option<Arc<ToolDef>> {
        self.read().by_command.get(command).cloned()
    }

    /// Every loaded tool, sorted by id (visibility is the caller's filter).
    pub fn list(&self) -> Vec<Arc<ToolDef>> {
        self.read().by_id.values().cloned().collect()
    }

    /// The problems found by the latest load or reload.
    pub fn last_errors(&self) -> Vec<ToolLoadError> {
        self.read().errors.clone()
    }

    /// The tools folder, if one was given.
    pub fn dir(&self) -> Option<&Path> {
        self.inner.dir.as_deref()
    }

    /// A counter that goes up every time the set of tools changes.
    pub fn generation(&self) -> u64 {
        *self.inner.generation.borrow()
    }

    /// A value computed from the current tools, such as a front end's
    /// rendered list: `make` runs once per type until the tools change, and
    /// every call in between gets the same value.
    pub fn derived<T: Any + Send + Sync>(&self, make: impl FnOnce() -> T) -> Arc<T> {
        // Read before making: a reload in between only labels the value
        // older than it is, and the next call makes it again.
        let generation = self.generation();
        let lock = || self.inner.derived.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(v) = lock().get(generation) {
            return v;
        }
        let value = Arc::new(make());
        let mut derived = lock();
        if derived.generation < generation {
            *derived = Derived { generation, values: HashMap::new() };
        }
        if derived.generation == generation {
            derived.values.insert(TypeId::of::<T>(), value.clone());
        }
        value
    }

    /// A receiver that sees every generation change, so platforms can re-register commands.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.generation.subscribe()
    }

    /// Watches the tools folder and reloads (debounced) when files in it change. Reloading
    /// stops when the returned handle is dropped. If the folder does not exist yet, its parent
    /// is watched until it appears.
    pub fn watch(&self) -> Result<ToolWatcher, WatchError> {
        let dir = self.inner.dir.clone().ok_or(WatchError::NoFolder)?;
        let (tx, rx) = mpsc::channel::<()>();
        let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
            Ok(ev) if matches!(ev.kind, EventKind::Access(_)) => {}
            Ok(_) => {
                let _ = tx.send(());
            }
            Err(e) => tracing::warn!("tools folder watch error: {e}"),
        })?;
        let watching_dir = if dir.is_dir() {
            watcher.watch(&dir, RecursiveMode::NonRecursive)?;
            true
        } else {
            let parent = dir.parent().filter(|p| p.is_dir()).ok_or_else(|| WatchError::NoParent(dir.clone()))?;
            watcher.watch(parent, RecursiveMode::NonRecursive)?;
            false
        };
        let watcher = Arc::new(Mutex::new(watcher));
        let weak_watcher = Arc::downgrade(&watcher);
        let registry = Arc::downgrade(&self.inner);
        std::thread::Builder::new()
            .name("station-tools-watch".into())
            .spawn(move || debounce_loop(rx, registry, weak_watcher, dir, watching_dir))
            .map_err(WatchError::Thread)?;
        Ok(ToolWatcher { _watcher: watcher })
    }
}

/// Reloads once per burst of file events. Ends when the watcher (and so the event sender) is
/// dropped, or the registry is gone.
fn debounce_loop(
    rx: mpsc::Receiver<()>,
    registry: Weak<Inner>,
    watcher: Weak<Mutex<notify::RecommendedWatcher>>,
    dir: PathBuf,
    mut watching_dir: bool,
) {
    while rx.recv().is_ok() {
        loop {
            match rx.recv_timeout(DEBOUNCE) {
                Ok(()) => continue,
                Err(mpsc::RecvTimeoutError::Timeout) => break,
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
        }
        let Some(inner) = registry.upgrade() else {
            return;
        };
        let registry_now = ToolRegistry { inner };
        registry_now.reload();
        if !watching_dir && dir.is_dir() {
            let Some(w) = watcher.upgrade() else { return };
            let res =
                w.lock().unwrap_or_else(std::sync::PoisonError::into_inner).watch(&dir, RecursiveMode::NonRecursive);
            match res {
                Ok(()) => {
                    watching_dir = true;
                    // The parent (often the data folder, with the database in it) was
                    // watched only to see the folder appear; its changes are no reason
                    // to reload.
                    if let Some(parent) = dir.parent() {
                        let _ = w.lock().unwrap_or_else(std::sync::PoisonError::into_inner).unwatch(parent);
                    }
                    // Files written between the folder appearing and the watch starting sent
                    // no event we could see; read the folder once more to catch them.
                    registry_now.reload();
                }
                Err(e) => tracing::warn!("cannot watch tools folder {}: {e}", dir.display()),
            }
        }
    }
}

/// Keeps the tools folder watched; dropping it stops hot reload.
pub struct ToolWatcher {
    _watcher: Arc<Mutex<notify::RecommendedWatcher>>,
}

impl std::fmt::Debug for ToolWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ToolWatcher")
    }
}

/// Why the tools folder cannot be watched.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The registry was loaded without a tools folder.
    #[error("no tools folder is configured, so there is nothing to watch")]
    NoFolder,
    /// Neither the folder nor its parent exists.
    #[error("tools folder {0} and its parent do not exist")]
    NoParent(PathBuf),
    /// The file watcher failed.
    #[error("cannot watch the tools folder: {0}")]
    Notify(#[from] notify::Error),
    /// The reload thread could not start.
    #[error("cannot start the tools reload thread: {0}")]
    Thread(std::io::Error),
}
