//! Switchboard's persistent state in one embedded SQLite file: rooms created through the admin
//! API with their settings, and the chat history of those rooms.
//!
//! What this crate is not: a server. It owns no socket, spawns no thread, never reads the clock
//! (every time is passed in, as Unix milliseconds) and does no I/O besides the database file.
//! Its calls block on the disk, so the server runs a [`Store`] on a thread of its own.
//!
//! # Durability
//!
//! The file is in WAL mode with `synchronous = NORMAL`. A commit appends the transaction to the
//! write-ahead log with `write(2)` before [`Store::append_chat`] returns, so once a call has
//! returned, the transaction is in the operating system's page cache: a crash or `kill -9` of
//! the process loses nothing that was committed. What `NORMAL` does not do is `fsync` the log at
//! every commit (only at checkpoints): a power loss or kernel crash can lose the transactions
//! committed since the last checkpoint, though never the consistency of the file. `FULL` would
//! close that gap at the price of one `fsync` per chat message; [`Options::fsync_every_commit`]
//! turns it on.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};

/// The schema version this build writes (SQLite's `user_version`).
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;
/// Most chat messages a room may keep.
pub const MAX_CHAT_HISTORY: u32 = 10_000;
/// Most participants a room's setting may allow.
pub const MAX_PARTICIPANTS: u32 = 10_000;
/// How long a statement waits for a lock held by another connection before failing.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Forward migrations: entry `i` takes the schema from version `i` to `i + 1`. Never edit a
/// released entry; append a new one.
const MIGRATIONS: &[&str] = &[
    // 1: rooms and their chat. AUTOINCREMENT so that a message id is never reused after older
    // messages are trimmed: clients deduplicate by id.
    "CREATE TABLE rooms (
        name TEXT PRIMARY KEY NOT NULL,
        created_at INTEGER NOT NULL,
        max_participants INTEGER,
        chat_history INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE chat (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        room TEXT NOT NULL REFERENCES rooms(name) ON DELETE CASCADE,
        at INTEGER NOT NULL,
        peer TEXT NOT NULL,
        sender TEXT NOT NULL,
        text TEXT NOT NULL
    ) STRICT;
    CREATE INDEX chat_by_room ON chat(room, id);",
];

/// How to open a database file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Options {
    /// `synchronous = FULL`: `fsync` the log at every commit, so that a power loss loses no
    /// committed transaction either. Default false (`NORMAL`; see the crate documentation).
    pub fsync_every_commit: bool,
}

/// The settings of a persistent room, as the server enforces them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomSettings {
    /// Most participants at once; `None`: the server's `max_peers_per_room`.
    pub max_participants: Option<u32>,
    /// Chat messages kept (the oldest are trimmed beyond it); 0: the room keeps no chat and its
    /// chat stays peer-to-peer.
    pub chat_history: u32,
}

impl Default for RoomSettings {
    fn default() -> Self {
        RoomSettings {
            max_participants: None,
            chat_history: 500,
        }
    }
}

impl RoomSettings {
    /// Checks the ranges; the error names the field.
    pub fn validate(&self) -> Result<(), StoreError> {
        if let Some(max) = self.max_participants
            && !(2..=MAX_PARTICIPANTS).contains(&max)
        {
            return Err(StoreError::InvalidSettings {
                field: "max_participants",
                problem: format!("{max} is out of range (2 to {MAX_PARTICIPANTS})"),
            });
        }
        if self.chat_history > MAX_CHAT_HISTORY {
            return Err(StoreError::InvalidSettings {
                field: "chat_history",
                problem: format!(
                    "{} is out of range (0 to {MAX_CHAT_HISTORY})",
                    self.chat_history
                ),
            });
        }
        Ok(())
    }
}

/// A stored room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Room {
    /// Its name (validated by the caller).
    pub name: String,
    /// When it was created, Unix milliseconds.
    pub created_at_ms: i64,
    /// Its settings.
    pub settings: RoomSettings,
}

/// A chat message to store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewChat<'a> {
    /// The room it was sent in.
    pub room: &'a str,
    /// When the server received it, Unix milliseconds.
    pub at_ms: i64,
    /// The sender's peer id at the time.
    pub peer: &'a str,
    /// The sender's display name at the time.
    pub sender: &'a str,
    /// The text.
    pub text: &'a str,
}

/// A stored chat message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    /// Unique in the database, increasing in the order messages were committed.
    pub id: i64,
    /// The room.
    pub room: String,
    /// When the server received it, Unix milliseconds.
    pub at_ms: i64,
    /// The sender's peer id at the time.
    pub peer: String,
    /// The sender's display name at the time.
    pub sender: String,
    /// The text.
    pub text: String,
}

/// Why a database call failed. Every error about the file names its path.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The file could not be opened or created (missing directory, permissions, a directory
    /// in its place).
    #[error("cannot open the database {path}: {source}")]
    Open {
        /// The file.
        path: String,
        /// SQLite's reason.
        source: rusqlite::Error,
    },
    /// The file is not an SQLite database, or is damaged.
    #[error(
        "the database {path} is corrupt or not an SQLite database ({source}); move it aside \
         to start afresh, or restore a backup"
    )]
    Corrupt {
        /// The file.
        path: String,
        /// SQLite's reason.
        source: rusqlite::Error,
    },
    /// The file was written by a newer Switchboard with a schema this build does not know.
    #[error(
        "the database {path} has schema version {found}, newer than this build's {supported}; \
         run a newer switchboard"
    )]
    TooNew {
        /// The file.
        path: String,
        /// Its `user_version`.
        found: u32,
        /// [`SCHEMA_VERSION`].
        supported: u32,
    },
    /// `PRAGMA integrity_check` found problems.
    #[error("the database {path} failed its integrity check: {report}")]
    Integrity {
        /// The file.
        path: String,
        /// SQLite's report (first lines).
        report: String,
    },
    /// Creating a room whose name is taken.
    #[error("room {0:?} already exists")]
    RoomExists(String),
    /// A room that is not stored.
    #[error("no stored room {0:?}")]
    NoSuchRoom(String),
    /// Appending chat to a room that keeps none.
    #[error("room {0:?} keeps no chat history")]
    HistoryOff(String),
    /// A setting out of range.
    #[error("room setting `{field}`: {problem}")]
    InvalidSettings {
        /// The field.
        field: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// Any other SQLite failure (disk full, I/O error, locked for longer than the busy timeout).
    #[error("database {path}: {source}")]
    Sqlite {
        /// The file.
        path: String,
        /// SQLite's reason.
        source: rusqlite::Error,
    },
}

/// One open database. Not `Sync`: use it from one thread.
pub struct Store {
    conn: Connection,
    path: String,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens (creating if needed) the database file at `path` and brings its schema up to
    /// [`SCHEMA_VERSION`]. The directory must exist.
    pub fn open(path: &Path, options: Options) -> Result<Store, StoreError> {
        let shown = path.display().to_string();
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(|source| StoreError::Open {
            path: shown.clone(),
            source,
        })?;
        Store::setup(conn, shown, options)
    }

    /// A database in memory, gone when dropped: for tests and throwaway servers.
    pub fn open_in_memory() -> Result<Store, StoreError> {
        let path = String::from(":memory:");
        let conn = Connection::open_in_memory().map_err(|source| StoreError::Open {
            path: path.clone(),
            source,
        })?;
        Store::setup(conn, path, Options::default())
    }

    fn setup(conn: Connection, path: String, options: Options) -> Result<Store, StoreError> {
        let mut store = Store { conn, path };
        // The first statements are the first reads of the file: a file that is not a database
        // fails here, and `wrap` names it.
        store
            .conn
            .busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| store.wrap(e))?;
        let mode: String = store
            .conn
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .map_err(|e| store.wrap(e))?;
        if mode != "wal" && mode != "memory" {
            return Err(StoreError::Open {
                path: store.path.clone(),
                source: rusqlite::Error::InvalidParameterName(format!(
                    "journal_mode is {mode}, WAL could not be enabled"
                )),
            });
        }
        let sync = if options.fsync_every_commit {
            "FULL"
        } else {
            "NORMAL"
        };
        store
            .conn
            .execute_batch(&format!(
                "PRAGMA synchronous = {sync}; PRAGMA foreign_keys = ON;"
            ))
            .map_err(|e| store.wrap(e))?;
        store.migrate()?;
        Ok(store)
    }

    /// The file's path as shown in errors (`:memory:` for an in-memory database).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The schema version of the open file.
    pub fn schema_version(&self) -> Result<u32, StoreError> {
        self.conn
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .map_err(|e| self.wrap(e))
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let found = self.schema_version()?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::TooNew {
                path: self.path.clone(),
                found,
                supported: SCHEMA_VERSION,
            });
        }
        for (index, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
            let version = index as u32 + 1;
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|e| wrap(&self.path, e))?;
            tx.execute_batch(sql).map_err(|e| wrap(&self.path, e))?;
            tx.pragma_update(None, "user_version", version)
                .map_err(|e| wrap(&self.path, e))?;
            tx.commit().map_err(|e| wrap(&self.path, e))?;
        }
        Ok(())
    }

    /// Runs `PRAGMA integrity_check`.
    pub fn integrity_check(&self) -> Result<(), StoreError> {
        let mut statement = self
            .conn
            .prepare("PRAGMA integrity_check")
            .map_err(|e| self.wrap(e))?;
        let lines: Vec<String> = statement
            .query_map([], |row| row.get(0))
            .and_then(|rows| rows.collect())
            .map_err(|e| self.wrap(e))?;
        if lines.len() == 1 && lines[0] == "ok" {
            return Ok(());
        }
        Err(StoreError::Integrity {
            path: self.path.clone(),
            report: lines.into_iter().take(5).collect::<Vec<_>>().join("; "),
        })
    }

    /// Every stored room, by name.
    pub fn rooms(&self) -> Result<Vec<Room>, StoreError> {
        let mut statement = self
            .conn
            .prepare_cached(
                "SELECT name, created_at, max_participants, chat_history FROM rooms ORDER BY name",
            )
            .map_err(|e| self.wrap(e))?;
        statement
            .query_map([], room_from_row)
            .and_then(|rows| rows.collect())
            .map_err(|e| self.wrap(e))
    }

    /// One stored room.
    pub fn room(&self, name: &str) -> Result<Option<Room>, StoreError> {
        self.conn
            .prepare_cached(
                "SELECT name, created_at, max_participants, chat_history FROM rooms WHERE name = ?1",
            )
            .and_then(|mut statement| statement.query_row([name], room_from_row).optional())
            .map_err(|e| self.wrap(e))
    }

    /// Stores a new room; [`StoreError::RoomExists`] when the name is taken.
    pub fn create_room(
        &mut self,
        name: &str,
        settings: RoomSettings,
        created_at_ms: i64,
    ) -> Result<Room, StoreError> {
        settings.validate()?;
        let inserted = self
            .conn
            .execute(
                "INSERT INTO rooms (name, created_at, max_participants, chat_history)
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT (name) DO NOTHING",
                params![
                    name,
                    created_at_ms,
                    settings.max_participants,
                    settings.chat_history
                ],
            )
            .map_err(|e| self.wrap(e))?;
        if inserted == 0 {
            return Err(StoreError::RoomExists(name.to_owned()));
        }
        Ok(Room {
            name: name.to_owned(),
            created_at_ms,
            settings,
        })
    }

    /// Replaces a room's settings; lowering `chat_history` trims the stored chat at once (to
    /// nothing when it becomes 0).
    pub fn update_room(&mut self, name: &str, settings: RoomSettings) -> Result<Room, StoreError> {
        settings.validate()?;
        let path = self.path.clone();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| wrap(&path, e))?;
        let updated = tx
            .execute(
                "UPDATE rooms SET max_participants = ?2, chat_history = ?3 WHERE name = ?1",
                params![name, settings.max_participants, settings.chat_history],
            )
            .map_err(|e| wrap(&path, e))?;
        if updated == 0 {
            return Err(StoreError::NoSuchRoom(name.to_owned()));
        }
        trim(&tx, name, settings.chat_history).map_err(|e| wrap(&path, e))?;
        let room = tx
            .query_row(
                "SELECT name, created_at, max_participants, chat_history FROM rooms WHERE name = ?1",
                [name],
                room_from_row,
            )
            .map_err(|e| wrap(&path, e))?;
        tx.commit().map_err(|e| wrap(&path, e))?;
        Ok(room)
    }

    /// Deletes a room and its chat; false when there was no such room.
    pub fn delete_room(&mut self, name: &str) -> Result<bool, StoreError> {
        let deleted = self
            .conn
            .execute("DELETE FROM rooms WHERE name = ?1", [name])
            .map_err(|e| self.wrap(e))?;
        Ok(deleted > 0)
    }

    /// Appends a chat message and trims the room's history to its limit, in one transaction.
    /// When this returns `Ok`, the message is committed (see the crate's "Durability").
    pub fn append_chat(&mut self, message: NewChat<'_>) -> Result<ChatMessage, StoreError> {
        let path = self.path.clone();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| wrap(&path, e))?;
        let keep: Option<u32> = tx
            .prepare_cached("SELECT chat_history FROM rooms WHERE name = ?1")
            .and_then(|mut s| s.query_row([message.room], |row| row.get(0)).optional())
            .map_err(|e| wrap(&path, e))?;
        let keep = match keep {
            None => return Err(StoreError::NoSuchRoom(message.room.to_owned())),
            Some(0) => return Err(StoreError::HistoryOff(message.room.to_owned())),
            Some(keep) => keep,
        };
        tx.prepare_cached(
            "INSERT INTO chat (room, at, peer, sender, text) VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .and_then(|mut s| {
            s.execute(params![
                message.room,
                message.at_ms,
                message.peer,
                message.sender,
                message.text
            ])
        })
        .map_err(|e| wrap(&path, e))?;
        let id = tx.last_insert_rowid();
        trim(&tx, message.room, keep).map_err(|e| wrap(&path, e))?;
        tx.commit().map_err(|e| wrap(&path, e))?;
        Ok(ChatMessage {
            id,
            room: message.room.to_owned(),
            at_ms: message.at_ms,
            peer: message.peer.to_owned(),
            sender: message.sender.to_owned(),
            text: message.text.to_owned(),
        })
    }

    /// The newest `limit` messages of a room, oldest first.
    pub fn recent_chat(&self, room: &str, limit: u32) -> Result<Vec<ChatMessage>, StoreError> {
        let mut statement = self
            .conn
            .prepare_cached(
                "SELECT id, room, at, peer, sender, text FROM chat WHERE room = ?1
                 ORDER BY id DESC LIMIT ?2",
            )
            .map_err(|e| self.wrap(e))?;
        let mut messages: Vec<ChatMessage> = statement
            .query_map(params![room, limit], |row| {
                Ok(ChatMessage {
                    id: row.get(0)?,
                    room: row.get(1)?,
                    at_ms: row.get(2)?,
                    peer: row.get(3)?,
                    sender: row.get(4)?,
                    text: row.get(5)?,
                })
            })
            .and_then(|rows| rows.collect())
            .map_err(|e| self.wrap(e))?;
        messages.reverse();
        Ok(messages)
    }

    /// Deletes all but the newest `keep` messages of a room; returns how many went.
    pub fn trim_chat(&mut self, room: &str, keep: u32) -> Result<usize, StoreError> {
        trim(&self.conn, room, keep).map_err(|e| self.wrap(e))
    }

    fn wrap(&self, source: rusqlite::Error) -> StoreError {
        wrap(&self.path, source)
    }
}

/// Deletes all but the newest `keep` messages of `room`.
fn trim(conn: &Connection, room: &str, keep: u32) -> rusqlite::Result<usize> {
    if keep == 0 {
        return conn.execute("DELETE FROM chat WHERE room = ?1", [room]);
    }
    // The id of the keep-th newest message; NULL (nothing deleted) when there are fewer.
    conn.prepare_cached(
        "DELETE FROM chat WHERE room = ?1 AND id < (
            SELECT id FROM chat WHERE room = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2 - 1)",
    )?
    .execute(params![room, keep])
}

fn room_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Room> {
    Ok(Room {
        name: row.get(0)?,
        created_at_ms: row.get(1)?,
        settings: RoomSettings {
            max_participants: row.get(2)?,
            chat_history: row.get(3)?,
        },
    })
}

/// Sorts SQLite's error into ours, naming the file.
fn wrap(path: &str, source: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode;
    let path = path.to_owned();
    match source.sqlite_error_code() {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => {
            StoreError::Corrupt { path, source }
        }
        Some(ErrorCode::CannotOpen | ErrorCode::PermissionDenied) => {
            StoreError::Open { path, source }
        }
        _ => StoreError::Sqlite { path, source },
    }
}

/// The database file's name inside a data directory.
pub const FILE_NAME: &str = "switchboard.db";

/// The database file inside `dir`.
pub fn file_in(dir: &Path) -> PathBuf {
    dir.join(FILE_NAME)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory under the system's temporary directory, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            use std::sync::atomic::{AtomicU32, Ordering};
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let dir = std::env::temp_dir().join(format!(
                "switchboard-store-{tag}-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("temp dir");
            TempDir(dir)
        }
        fn db(&self) -> PathBuf {
            file_in(&self.0)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn chat<'a>(room: &'a str, text: &'a str) -> NewChat<'a> {
        NewChat {
            room,
            at_ms: 1_767_225_600_000,
            peer: "00000000000000ab",
            sender: "Ada",
            text,
        }
    }

    fn settings(history: u32) -> RoomSettings {
        RoomSettings {
            max_participants: Some(8),
            chat_history: history,
        }
    }

    #[test]
    fn rooms_are_created_listed_updated_and_deleted() {
        let mut store = Store::open_in_memory().unwrap();
        let room = store.create_room("standup", settings(50), 1000).unwrap();
        assert_eq!(room.settings, settings(50));
        store
            .create_room("all-hands", RoomSettings::default(), 2000)
            .unwrap();
        assert!(matches!(
            store.create_room("standup", settings(1), 3000),
            Err(StoreError::RoomExists(name)) if name == "standup"
        ));
        let names: Vec<String> = store.rooms().unwrap().into_iter().map(|r| r.name).collect();
        assert_eq!(names, ["all-hands", "standup"]);
        let changed = RoomSettings {
            max_participants: None,
            chat_history: 10,
        };
        let updated = store.update_room("standup", changed).unwrap();
        assert_eq!((updated.settings, updated.created_at_ms), (changed, 1000));
        assert_eq!(store.room("standup").unwrap(), Some(updated));
        assert!(matches!(
            store.update_room("nope", changed),
            Err(StoreError::NoSuchRoom(_))
        ));
        assert!(store.delete_room("standup").unwrap());
        assert!(!store.delete_room("standup").unwrap());
        assert_eq!(store.room("standup").unwrap(), None);
    }

    #[test]
    fn settings_out_of_range_name_the_field() {
        let mut store = Store::open_in_memory().unwrap();
        let field = |result: Result<Room, StoreError>| match result {
            Err(StoreError::InvalidSettings { field, .. }) => field,
            other => panic!("expected invalid settings, got {other:?}"),
        };
        let too_small = RoomSettings {
            max_participants: Some(1),
            chat_history: 0,
        };
        assert_eq!(
            field(store.create_room("a", too_small, 0)),
            "max_participants"
        );
        let too_long = RoomSettings {
            max_participants: None,
            chat_history: MAX_CHAT_HISTORY + 1,
        };
        assert_eq!(field(store.create_room("a", too_long, 0)), "chat_history");
        assert_eq!(store.rooms().unwrap(), []);
    }

    #[test]
    fn chat_appends_with_increasing_ids_and_trims_to_the_limit() {
        let mut store = Store::open_in_memory().unwrap();
        store.create_room("r", settings(3), 0).unwrap();
        store.create_room("other", settings(3), 0).unwrap();
        let ids: Vec<i64> = (0..5)
            .map(|i| store.append_chat(chat("r", &format!("m{i}"))).unwrap().id)
            .collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
        store.append_chat(chat("other", "elsewhere")).unwrap();
        let recent = store.recent_chat("r", 100).unwrap();
        let texts: Vec<&str> = recent.iter().map(|m| m.text.as_str()).collect();
        assert_eq!(texts, ["m2", "m3", "m4"], "oldest first, trimmed to 3");
        assert_eq!(recent[2].id, ids[4]);
        assert_eq!(
            store
                .recent_chat("r", 2)
                .unwrap()
                .iter()
                .map(|m| m.text.as_str())
                .collect::<Vec<_>>(),
            ["m3", "m4"]
        );
        assert_eq!(store.recent_chat("other", 10).unwrap().len(), 1);
        // Ids are never reused, even after trimming and deleting.
        store.delete_room("other").unwrap();
        let next = store.append_chat(chat("r", "m5")).unwrap();
        assert!(next.id > ids[4] + 1);
        assert_eq!(store.trim_chat("r", 1).unwrap(), 2);
        assert_eq!(store.recent_chat("r", 10).unwrap(), [next]);
    }

    #[test]
    fn chat_needs_a_room_that_keeps_history() {
        let mut store = Store::open_in_memory().unwrap();
        assert!(matches!(
            store.append_chat(chat("ghost", "hi")),
            Err(StoreError::NoSuchRoom(_))
        ));
        store.create_room("quiet", settings(0), 0).unwrap();
        assert!(matches!(
            store.append_chat(chat("quiet", "hi")),
            Err(StoreError::HistoryOff(_))
        ));
        store.create_room("r", settings(10), 0).unwrap();
        store.append_chat(chat("r", "a")).unwrap();
        store.append_chat(chat("r", "b")).unwrap();
        // Lowering the limit trims at once; turning history off deletes it.
        store.update_room("r", settings(1)).unwrap();
        assert_eq!(store.recent_chat("r", 10).unwrap().len(), 1);
        store.update_room("r", settings(0)).unwrap();
        assert_eq!(store.recent_chat("r", 10).unwrap(), []);
        // Deleting a room deletes its chat.
        store.update_room("r", settings(10)).unwrap();
        store.append_chat(chat("r", "c")).unwrap();
        store.delete_room("r").unwrap();
        store.create_room("r", settings(10), 0).unwrap();
        assert_eq!(store.recent_chat("r", 10).unwrap(), []);
    }

    #[test]
    fn a_file_survives_reopening_in_wal_mode() {
        let dir = TempDir::new("reopen");
        {
            let mut store = Store::open(&dir.db(), Options::default()).unwrap();
            store.create_room("r", settings(100), 42).unwrap();
            store.append_chat(chat("r", "kept")).unwrap();
            // Dropped without any shutdown step, as a crash would.
        }
        let store = Store::open(&dir.db(), Options::default()).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        let mode: String = store
            .conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let sync: i64 = store
            .conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 1, "NORMAL");
        assert_eq!(store.room("r").unwrap().unwrap().created_at_ms, 42);
        assert_eq!(store.recent_chat("r", 10).unwrap()[0].text, "kept");
        store.integrity_check().unwrap();
        let full = Store::open(
            &dir.db(),
            Options {
                fsync_every_commit: true,
            },
        )
        .unwrap();
        let sync: i64 = full
            .conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 2, "FULL");
    }

    #[test]
    fn a_file_that_is_not_a_database_is_a_clear_error() {
        let dir = TempDir::new("garbage");
        let path = dir.db();
        std::fs::write(&path, vec![0x5a; 8192]).unwrap();
        let err = Store::open(&path, Options::default()).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
        let text = err.to_string();
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(text.contains("corrupt"), "{text}");
    }

    #[test]
    fn a_file_that_cannot_be_opened_names_its_path() {
        let dir = TempDir::new("unopenable");
        let path = dir.0.join("missing-dir").join(FILE_NAME);
        let err = Store::open(&path, Options::default()).unwrap_err();
        assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
        assert!(err.to_string().contains("missing-dir"), "{err}");
        // A directory where the file should be.
        let err = Store::open(&dir.0, Options::default()).unwrap_err();
        assert!(
            err.to_string().contains(&dir.0.display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn a_newer_schema_is_refused_and_older_ones_migrate() {
        let dir = TempDir::new("schema");
        {
            let conn = Connection::open(dir.db()).unwrap();
            conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
                .unwrap();
        }
        let err = Store::open(&dir.db(), Options::default()).unwrap_err();
        assert!(
            matches!(err, StoreError::TooNew { found, .. } if found == SCHEMA_VERSION + 1),
            "{err:?}"
        );
        // Version 0 (an empty file) migrates to the current schema, and again is a no-op.
        let fresh = TempDir::new("schema0");
        drop(Store::open(&fresh.db(), Options::default()).unwrap());
        let store = Store::open(&fresh.db(), Options::default()).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    }

    #[test]
    fn a_damaged_page_fails_the_integrity_check() {
        let dir = TempDir::new("damaged");
        {
            let mut store = Store::open(&dir.db(), Options::default()).unwrap();
            store.create_room("r", settings(10_000), 0).unwrap();
            let text = "x".repeat(500);
            for _ in 0..200 {
                store.append_chat(chat("r", &text)).unwrap();
            }
            store
                .conn
                .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
                .unwrap();
        }
        // Overwrite a page in the middle of the file (not the header).
        let mut bytes = std::fs::read(dir.db()).unwrap();
        assert!(bytes.len() > 16 * 4096, "{}", bytes.len());
        for b in &mut bytes[8 * 4096..8 * 4096 + 4096] {
            *b = 0xff;
        }
        std::fs::write(dir.db(), bytes).unwrap();
        let result = Store::open(&dir.db(), Options::default()).and_then(|s| s.integrity_check());
        let err = result.unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::Integrity { .. } | StoreError::Corrupt { .. }
            ),
            "{err:?}"
        );
        assert!(
            err.to_string().contains(&dir.db().display().to_string()),
            "{err}"
        );
    }
}
