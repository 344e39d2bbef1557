//! The SQLite store on a thread of its own, so that no disk write ever blocks the async runtime.
//!
//! Jobs run one at a time in the order they were queued: chat messages of one room are
//! committed, and reported back to the hub, in the order the hub asked for them.

use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use std::time::{SystemTime, UNIX_EPOCH};

use signal::{ChatMessage, PeerId, RoomSettings};
use store::{NewChat, Options, Store, StoreError};
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use crate::ServeError;
use crate::hub_task::HubCommand;

/// Jobs queued for the store thread before new chat is refused as "busy".
const QUEUE: usize = 1024;

type Job = Box<dyn FnOnce(&mut Store) + Send>;

/// Where the database lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// `DIR/switchboard.db`, the directory created (mode 0700) when missing.
    Dir(PathBuf),
    /// In memory: persistent rooms last until the process exits.
    Memory,
}

/// A persistent room as loaded at start: its stored record and newest chat.
pub(crate) struct Loaded {
    pub(crate) room: store::Room,
    pub(crate) history: Vec<ChatMessage>,
}

/// Sends jobs to the store thread. Cheap to clone.
#[derive(Clone)]
pub(crate) struct StoreHandle {
    jobs: std_mpsc::SyncSender<Job>,
}

impl StoreHandle {
    /// Opens the database (on a blocking thread), loads every persistent room with its newest
    /// `history_on_join` messages, and starts the store thread.
    pub(crate) async fn start(
        location: Location,
        fsync_every_commit: bool,
        history_on_join: usize,
    ) -> Result<(StoreHandle, Vec<Loaded>), ServeError> {
        let opened = tokio::task::spawn_blocking(move || {
            let mut store = match &location {
                Location::Dir(dir) => {
                    create_private_dir(dir)?;
                    let path = store::file_in(dir);
                    Store::open(&path, Options { fsync_every_commit })?
                }
                Location::Memory => Store::open_in_memory()?,
            };
            let loaded = load(&mut store, history_on_join)?;
            Ok::<_, ServeError>((store, loaded))
        })
        .await
        .map_err(|join| ServeError::Io(std::io::Error::other(join.to_string())))?;
        let (mut store, loaded) = opened?;
        info!(path = store.path(), rooms = loaded.len(), "database open");
        let (jobs, queue) = std_mpsc::sync_channel::<Job>(QUEUE);
        std::thread::Builder::new()
            .name("store".into())
            .spawn(move || {
                while let Ok(job) = queue.recv() {
                    job(&mut store);
                }
            })?;
        Ok((StoreHandle { jobs }, loaded))
    }

    /// Runs `f` on the store thread and waits for its result; `None` when the thread is gone.
    pub(crate) async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Store) -> T + Send + 'static,
    ) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |store| {
            let _ = tx.send(f(store));
        });
        // A full queue waits here (on a blocking thread) rather than stalling the runtime.
        let jobs = self.jobs.clone();
        tokio::task::spawn_blocking(move || jobs.send(job).ok())
            .await
            .ok()
            .flatten()?;
        rx.await.ok()
    }

    /// Queues a chat message; once committed (or refused), reports to the hub. `false` when the
    /// queue is full or the thread is gone: the caller tells the sender.
    pub(crate) fn append_chat(
        &self,
        hub: mpsc::WeakSender<HubCommand>,
        room: String,
        peer: PeerId,
        name: String,
        text: String,
    ) -> bool {
        let job: Job = Box::new(move |store| {
            let peer_text = peer.to_string();
            let result = store.append_chat(NewChat {
                room: &room,
                at_ms: now_ms(),
                peer: &peer_text,
                sender: &name,
                text: &text,
            });
            let command = match result {
                Ok(stored) => HubCommand::ChatStored {
                    room,
                    message: chat_message(stored),
                },
                Err(err @ (StoreError::NoSuchRoom(_) | StoreError::HistoryOff(_))) => {
                    HubCommand::ChatFailed {
                        peer,
                        reason: err.to_string(),
                    }
                }
                Err(err) => {
                    warn!(%err, "a chat message could not be stored");
                    HubCommand::ChatFailed {
                        peer,
                        reason: "the server could not store it".into(),
                    }
                }
            };
            if let Some(hub) = hub.upgrade() {
                let _ = hub.blocking_send(command);
            }
        });
        self.jobs.try_send(job).is_ok()
    }
}

/// The stored message as the protocol shows it.
pub(crate) fn chat_message(stored: store::ChatMessage) -> ChatMessage {
    ChatMessage {
        id: stored.id,
        at: stored.at_ms,
        from: stored.peer,
        name: stored.sender,
        text: stored.text,
    }
}

/// The stored settings as the hub enforces them; `default_max` when the room sets none.
pub(crate) fn hub_settings(settings: store::RoomSettings, default_max: usize) -> RoomSettings {
    RoomSettings {
        max_participants: settings
            .max_participants
            .map_or(default_max, |max| max as usize),
        chat_history: settings.chat_history as usize,
    }
}

fn load(store: &mut Store, history_on_join: usize) -> Result<Vec<Loaded>, StoreError> {
    let limit = u32::try_from(history_on_join).unwrap_or(u32::MAX);
    store
        .rooms()?
        .into_iter()
        .map(|room| {
            let keep = limit.min(room.settings.chat_history);
            let history = if keep == 0 {
                Vec::new()
            } else {
                store
                    .recent_chat(&room.name, keep)?
                    .into_iter()
                    .map(chat_message)
                    .collect()
            };
            Ok(Loaded { room, history })
        })
        .collect()
}

/// Creates `dir` (and its parents) readable by this user only; an existing one is left as it is.
fn create_private_dir(dir: &Path) -> Result<(), ServeError> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| ServeError::DataDir {
            path: dir.to_path_buf(),
            source,
        })
}

/// Now, in Unix milliseconds.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
