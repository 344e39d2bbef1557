//! Validated room and display names (`docs/protocol.md`, "join").

use std::fmt;

/// Longest room name, in characters.
pub const MAX_ROOM_NAME_CHARS: usize = 64;
/// Longest display name, in characters, after trimming.
pub const MAX_DISPLAY_NAME_CHARS: usize = 64;

/// Why a name was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum NameError {
    /// Empty (after trimming, for display names).
    Empty,
    /// Longer than the limit.
    TooLong,
    /// A character outside the allowed set (room names) or a control character (display names).
    BadCharacter,
    /// A room name starting with `.`.
    LeadingDot,
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NameError::Empty => "is empty",
            NameError::TooLong => "is longer than 64 characters",
            NameError::BadCharacter => "contains a character that is not allowed",
            NameError::LeadingDot => "starts with '.'",
        })
    }
}

/// A room name: 1–64 characters from `A–Z a–z 0–9 . _ -`, not starting with `.`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomName(String);

impl RoomName {
    /// Validates `name` as a room name.
    pub fn parse(name: &str) -> Result<Self, NameError> {
        if name.is_empty() {
            return Err(NameError::Empty);
        }
        if name.len() > MAX_ROOM_NAME_CHARS {
            return Err(NameError::TooLong);
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return Err(NameError::BadCharacter);
        }
        if name.starts_with('.') {
            return Err(NameError::LeadingDot);
        }
        Ok(RoomName(name.to_owned()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RoomName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A display name: 1–64 characters after trimming white space, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisplayName(String);

impl DisplayName {
    /// Validates and trims `name`.
    pub fn parse(name: &str) -> Result<Self, NameError> {
        let name = name.trim();
        if name.is_empty() {
            return Err(NameError::Empty);
        }
        if name.chars().count() > MAX_DISPLAY_NAME_CHARS {
            return Err(NameError::TooLong);
        }
        // Control characters, and the bidi overrides that let a name rewrite its neighbours.
        if name.chars().any(|c| {
            c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
        }) {
            return Err(NameError::BadCharacter);
        }
        Ok(DisplayName(name.to_owned()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names() {
        assert!(RoomName::parse("standup").is_ok());
        assert!(RoomName::parse("team-1.daily_sync").is_ok());
        assert_eq!(RoomName::parse(""), Err(NameError::Empty));
        assert_eq!(RoomName::parse(".hidden"), Err(NameError::LeadingDot));
        assert_eq!(RoomName::parse("a/b"), Err(NameError::BadCharacter));
        assert_eq!(RoomName::parse("caf\u{e9}"), Err(NameError::BadCharacter));
        assert_eq!(RoomName::parse("a\nb"), Err(NameError::BadCharacter));
        assert!(RoomName::parse(&"a".repeat(64)).is_ok());
        assert_eq!(RoomName::parse(&"a".repeat(65)), Err(NameError::TooLong));
        assert_eq!(
            RoomName::parse(&"a".repeat(10_000)),
            Err(NameError::TooLong)
        );
    }

    #[test]
    fn display_names() {
        assert_eq!(DisplayName::parse("  Ada  ").map(|n| n.0), Ok("Ada".into()));
        assert!(DisplayName::parse("Zoë 🎧").is_ok());
        assert_eq!(DisplayName::parse("   "), Err(NameError::Empty));
        assert_eq!(DisplayName::parse("a\u{7}b"), Err(NameError::BadCharacter));
        assert_eq!(
            DisplayName::parse("a\u{202e}b"),
            Err(NameError::BadCharacter)
        );
        assert!(DisplayName::parse(&"é".repeat(64)).is_ok());
        assert_eq!(DisplayName::parse(&"é".repeat(65)), Err(NameError::TooLong));
        assert_eq!(
            DisplayName::parse(&"x".repeat(10_240)),
            Err(NameError::TooLong)
        );
    }
}
