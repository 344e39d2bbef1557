//! The native WebRTC peer: str0m driven over tokio sockets.
