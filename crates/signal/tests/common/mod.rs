//! A virtual-clock harness around the hub: connections are numbers, frames are JSON values.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use signal::{CloseCode, ConnId, Frame, Hub, HubConfig, Input, Output};

pub struct Sim {
    pub hub: Hub,
    pub now: Instant,
    pub inbox: HashMap<u64, Vec<Value>>,
    pub closed: HashMap<u64, CloseCode>,
    pub deadline: Option<Instant>,
    /// What the hub handed to the SFU: `(room, peer, Some(offer sdp))`, or `None` for a leave.
    pub sfu: Vec<(String, String, Option<String>)>,
    /// Chat the hub asked to store: `(room, peer, name, text)`.
    pub store: Vec<(String, signal::PeerId, String, String)>,
}

impl Sim {
    pub fn new(config: HubConfig) -> Self {
        Sim {
            hub: Hub::new(config, [7; 32]),
            now: Instant::now(),
            inbox: HashMap::new(),
            closed: HashMap::new(),
            deadline: None,
            sfu: Vec::new(),
            store: Vec::new(),
        }
    }

    pub fn input(&mut self, input: Input) {
        self.hub.handle_input(input);
        loop {
            match self.hub.poll_output() {
                Output::Send(conn, message) => {
                    let value: Value = serde_json::from_str(&message.to_json()).unwrap();
                    self.inbox.entry(conn.0).or_default().push(value);
                }
                Output::Close(conn, code) => {
                    self.closed.insert(conn.0, code);
                }
                Output::ToSfu { room, peer, sdp } => {
                    self.sfu.push((room, peer.to_string(), Some(sdp)));
                }
                Output::SfuLeft { room, peer } => {
                    self.sfu.push((room, peer.to_string(), None));
                }
                Output::StoreChat {
                    room,
                    peer,
                    name,
                    text,
                } => {
                    self.store.push((room, peer, name, text));
                }
                Output::Timeout(deadline) => {
                    self.deadline = deadline;
                    break;
                }
            }
        }
    }

    pub fn connect(&mut self, conn: u64) {
        let now = self.now;
        self.input(Input::Connected {
            conn: ConnId(conn),
            now,
            source: None,
        });
    }

    pub fn text(&mut self, conn: u64, text: &str) {
        let now = self.now;
        self.input(Input::Frame {
            conn: ConnId(conn),
            now,
            frame: Frame::Text(text.to_owned()),
        });
    }

    pub fn send(&mut self, conn: u64, value: Value) {
        self.text(conn, &value.to_string());
    }

    pub fn drop_conn(&mut self, conn: u64) {
        let now = self.now;
        self.input(Input::Disconnected {
            conn: ConnId(conn),
            now,
            graceful: false,
        });
    }

    /// Moves the virtual clock and fires every timer due by then, as the glue would.
    pub fn advance(&mut self, by: Duration) {
        let target = self.now + by;
        while let Some(deadline) = self.deadline.filter(|d| *d <= target) {
            self.now = deadline.max(self.now);
            let now = self.now;
            self.input(Input::Timeout(now));
        }
        self.now = target;
    }

    /// Connects `conn` and joins `room` as `name`; returns the peer id from `welcome`.
    pub fn join(&mut self, conn: u64, room: &str, name: &str) -> String {
        self.connect(conn);
        self.send(
            conn,
            json!({"type": "join", "v": 1, "room": room, "name": name}),
        );
        // In a room that keeps chat, `chat_history` follows the welcome.
        let welcome = self
            .inbox
            .get(&conn)
            .and_then(|frames| frames.iter().rev().find(|f| f["type"] != "chat_history"))
            .cloned()
            .unwrap_or(Value::Null);
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        welcome["peer"].as_str().unwrap().to_owned()
    }

    pub fn take(&mut self, conn: u64) -> Vec<Value> {
        self.inbox.remove(&conn).unwrap_or_default()
    }

    pub fn last(&mut self, conn: u64) -> Value {
        self.inbox
            .get(&conn)
            .and_then(|v| v.last().cloned())
            .unwrap_or(Value::Null)
    }

    pub fn last_error(&mut self, conn: u64) -> String {
        let last = self.last(conn);
        assert_eq!(last["type"], "error", "expected an error, got {last}");
        last["code"].as_str().unwrap().to_owned()
    }
}
