//! Persistent rooms and their server-side chat.
//!
//! The glue tells the hub which rooms are persistent ([`Input::RoomSettings`]), with their newest
//! stored chat. A `chat` from a client in such a room goes out as [`Output::StoreChat`]; only
//! when the glue reports it committed ([`Input::ChatStored`]) is it broadcast to the room, the
//! sender included, so the echo is the sender's acknowledgement.

use std::collections::VecDeque;
use std::time::Instant;

use tracing::debug;

use super::{ConnId, Hub, Output};
use crate::names::RoomName;
use crate::protocol::{ChatMessage, ErrorCode, PeerId, RoomSettings, ServerMessage};

/// What the hub keeps about a persistent room, whether or not anyone is in it.
pub(super) struct Persistent {
    settings: RoomSettings,
    /// The newest messages, oldest first, at most `chat_history_on_join` (and the room's limit).
    recent: VecDeque<ChatMessage>,
}

impl Hub {
    /// Most peers in `room`: its own setting when it is persistent, else the server's.
    pub(super) fn room_capacity(&self, room: &RoomName) -> usize {
        self.persistent
            .get(room)
            .map_or(self.config.max_peers_per_room, |p| {
                p.settings.max_participants
            })
    }

    /// The settings of a persistent room.
    pub(super) fn room_settings(&self, room: &RoomName) -> Option<RoomSettings> {
        self.persistent.get(room).map(|p| p.settings)
    }

    /// After `welcome`: the stored chat of a room that keeps it.
    pub(super) fn send_history(&mut self, conn: ConnId, room: &RoomName) {
        let Some(persistent) = self.persistent.get(room) else {
            return;
        };
        if persistent.settings.chat_history == 0 {
            return;
        }
        let messages = persistent.recent.iter().cloned().collect();
        self.outputs
            .push_back(Output::Send(conn, ServerMessage::ChatHistory { messages }));
    }

    pub(super) fn on_room_settings(
        &mut self,
        room: &str,
        settings: Option<RoomSettings>,
        history: Option<Vec<ChatMessage>>,
    ) {
        let Ok(room) = RoomName::parse(room) else {
            debug!(room, "settings for an invalid room name ignored");
            return;
        };
        let Some(settings) = settings else {
            self.persistent.remove(&room);
            return;
        };
        let keep = self.history_kept(settings);
        let entry = self.persistent.entry(room).or_insert_with(|| Persistent {
            settings,
            recent: VecDeque::new(),
        });
        entry.settings = settings;
        if let Some(history) = history {
            entry.recent = history.into();
        }
        while entry.recent.len() > keep {
            entry.recent.pop_front();
        }
    }

    pub(super) fn on_chat(&mut self, conn_id: ConnId, text: String, now: Instant) {
        let max_chars = self.config.max_chat_chars;
        let per_second = self.config.chat_per_second;
        let Some(conn) = self.conns.get_mut(&conn_id) else {
            return;
        };
        let Some((peer_id, peer)) = conn.peer.and_then(|id| Some((id, self.peers.get(&id)?)))
        else {
            return self.send_error(conn_id, ErrorCode::NotJoined, "join a room first");
        };
        let keeps_chat = self
            .persistent
            .get(&peer.room)
            .is_some_and(|p| p.settings.chat_history > 0);
        if !keeps_chat {
            return self.send_error(
                conn_id,
                ErrorCode::ChatUnavailable,
                "this room keeps no chat on the server; send chat to the peers directly",
            );
        }
        if text.trim().is_empty() || text.chars().count() > max_chars {
            return self.send_error(
                conn_id,
                ErrorCode::BadChat,
                format!("chat text must be 1 to {max_chars} characters"),
            );
        }
        if !conn.chat.try_take(now) {
            self.stats.rate_limited += 1;
            return self.send_error(
                conn_id,
                ErrorCode::RateLimited,
                format!("chat message dropped: over the chat rate ({per_second} per second)"),
            );
        }
        self.outputs.push_back(Output::StoreChat {
            room: peer.room.as_str().to_owned(),
            peer: peer_id,
            name: peer.name.as_str().to_owned(),
            text,
        });
    }

    pub(super) fn on_chat_stored(&mut self, room: &str, message: ChatMessage) {
        let Ok(room) = RoomName::parse(room) else {
            return;
        };
        self.stats.chats_stored += 1;
        if let Some(persistent) = self.persistent.get(&room) {
            let keep = self.history_kept(persistent.settings);
            if let Some(persistent) = self.persistent.get_mut(&room) {
                persistent.recent.push_back(message.clone());
                while persistent.recent.len() > keep {
                    persistent.recent.pop_front();
                }
            }
        }
        let members = self
            .rooms
            .get(&room)
            .map(|r| r.peers.clone())
            .unwrap_or_default();
        for member in members {
            // Peers inside their resume grace get it with `chat_history` when they resume.
            self.deliver_presence(member, ServerMessage::Chat(message.clone()));
        }
    }

    pub(super) fn on_chat_failed(&mut self, peer: PeerId, reason: String) {
        if let Some(conn) = self.peers.get(&peer).and_then(|p| p.conn) {
            self.send_error(
                conn,
                ErrorCode::ChatFailed,
                format!("the message was not sent: {reason}"),
            );
        }
    }

    fn history_kept(&self, settings: RoomSettings) -> usize {
        settings.chat_history.min(self.config.chat_history_on_join)
    }
}
