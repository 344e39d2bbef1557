//! Transfer codes: `N-word-word`, generated from OS randomness, parsed forgivingly.

use std::fmt;
use std::str::FromStr;

/// A transfer code such as `7-tiger-orbit`: a number from 1 to 999 and two words from [`WORDS`].
///
/// The number names the signaling room ([`Code::room`]) and is all the server learns; the whole
/// code, printed by [`Display`](fmt::Display), is the SPAKE2 password. `Debug` hides the words.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Code {
    number: u16,
    words: [u8; 2],
}

/// Why a string is not a transfer code. The `Display` text is meant for the person who typed it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodeError {
    /// Nothing but whitespace and dashes.
    #[error("no code given: a code looks like 7-tiger-orbit")]
    Empty,
    /// Not a number followed by two words.
    #[error("a code is a number and two words, like 7-tiger-orbit")]
    Shape,
    /// The number is not 1 to 999 written without leading zeros.
    #[error("the code must start with a number from 1 to 999, like 7-tiger-orbit")]
    Number,
    /// A word that is not in the list; `suggestion` is the listed word with the same first
    /// three letters, when there is one.
    #[error("{}", unknown_word(.word, *.suggestion))]
    UnknownWord {
        /// The word as typed (lowercased).
        word: String,
        /// The one listed word sharing its first three letters.
        suggestion: Option<&'static str>,
    },
}

/// The word list, read at build time from the web app's `web/js/words.js` (the only copy).
pub const WORDS: [&str; 256] = parse_word_list(include_str!("../../../web/js/words.js"));

/// The smallest and largest number of a code.
const NUMBERS: std::ops::RangeInclusive<u16> = 1..=999;

impl Code {
    /// A fresh code from OS randomness: the number uniform in 1..=999, each word uniform over the
    /// 256 words (about 26 bits in all).
    ///
    /// # Panics
    ///
    /// If the operating system's random number generator fails.
    pub fn generate() -> Code {
        loop {
            let mut bytes = [0u8; 4];
            getrandom::fill(&mut bytes).expect("the OS random number generator failed");
            // 10 bits, rejection-sampled into 1..=999.
            let number = u16::from_le_bytes([bytes[0], bytes[1]]) & 0x3ff;
            if NUMBERS.contains(&number) {
                return Code {
                    number,
                    words: [bytes[2], bytes[3]],
                };
            }
        }
    }

    /// Parses a code as a person typed it: surrounding whitespace is ignored, letters may be
    /// upper case, and runs of spaces may stand for the dashes (`" 7 Tiger orbit"`).
    pub fn parse(input: &str) -> Result<Code, CodeError> {
        let lowered = input.trim().to_lowercase();
        let mut parts = lowered
            .split(|c: char| c == '-' || c.is_whitespace())
            .filter(|part| !part.is_empty());
        let (Some(number), Some(first), Some(second), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(if lowered.chars().all(|c| c == '-' || c.is_whitespace()) {
                CodeError::Empty
            } else {
                CodeError::Shape
            });
        };
        Ok(Code {
            number: parse_number(number)?,
            words: [word_index(first)?, word_index(second)?],
        })
    }

    /// `1-` and the first word twice: a fixed code for fuzzing.
    pub(crate) fn first() -> Code {
        Code {
            number: 1,
            words: [0, 0],
        }
    }

    /// The number part, 1 to 999.
    pub fn number(&self) -> u16 {
        self.number
    }

    /// The two words.
    pub fn words(&self) -> [&'static str; 2] {
        self.words.map(|index| WORDS[usize::from(index)])
    }

    /// The signaling room both peers join: `xfer-N`.
    pub fn room(&self) -> String {
        format!("xfer-{}", self.number)
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [first, second] = self.words();
        write!(f, "{}-{first}-{second}", self.number)
    }
}

impl fmt::Debug for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The words are the secret; logs get the room number only.
        write!(f, "Code({}-…)", self.number)
    }
}

impl FromStr for Code {
    type Err = CodeError;

    fn from_str(s: &str) -> Result<Code, CodeError> {
        Code::parse(s)
    }
}

fn parse_number(text: &str) -> Result<u16, CodeError> {
    if text.is_empty() || text.len() > 3 || text.starts_with('0') {
        return Err(CodeError::Number);
    }
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CodeError::Number);
    }
    text.parse().map_err(|_| CodeError::Number)
}

fn word_index(word: &str) -> Result<u8, CodeError> {
    if let Some((_, index)) = WORDS.iter().zip(0..=u8::MAX).find(|(w, _)| **w == word) {
        return Ok(index);
    }
    let suggestion = word
        .get(..3)
        .and_then(|prefix| WORDS.iter().find(|w| w.starts_with(prefix)))
        .copied();
    Err(CodeError::UnknownWord {
        word: word.to_owned(),
        suggestion,
    })
}

fn unknown_word(word: &str, suggestion: Option<&str>) -> String {
    match suggestion {
        Some(s) => format!("unknown word \"{word}\" in the code; did you mean \"{s}\"?"),
        None => format!("unknown word \"{word}\" in the code"),
    }
}

/// Takes the words between the first two backticks of `words.js`, one per line, and checks the
/// rules the file states. Evaluated at compile time, so a broken list fails the build.
const fn parse_word_list(source: &'static str) -> [&'static str; 256] {
    let bytes = source.as_bytes();
    let mut i = 0;
    while i < bytes.len() && bytes[i] != b'`' {
        i += 1;
    }
    assert!(i < bytes.len(), "words.js: no backtick-quoted word list");
    i += 1;
    let mut words = [""; 256];
    let mut count = 0;
    loop {
        while i < bytes.len() && (bytes[i] == b'\n' || bytes[i] == b'\r') {
            i += 1;
        }
        assert!(
            i < bytes.len(),
            "words.js: the word list has no closing backtick"
        );
        if bytes[i] == b'`' {
            break;
        }
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_lowercase() {
            i += 1;
        }
        let len = i - start;
        assert!(
            len >= 3 && len <= 7,
            "words.js: a word is 3 to 7 lowercase letters, one per line"
        );
        assert!(
            i < bytes.len() && (bytes[i] == b'\n' || bytes[i] == b'\r'),
            "words.js: a word is 3 to 7 lowercase letters, one per line"
        );
        assert!(count < 256, "words.js: more than 256 words");
        let mut j = 0;
        while j < count {
            let other = words[j].as_bytes();
            assert!(
                !(other[0] == bytes[start]
                    && other[1] == bytes[start + 1]
                    && other[2] == bytes[start + 2]),
                "words.js: two words share their first three letters"
            );
            j += 1;
        }
        words[count] = substring(source, start, len);
        count += 1;
    }
    assert!(count == 256, "words.js: fewer than 256 words");
    words
}

const fn substring(source: &'static str, start: usize, len: usize) -> &'static str {
    let (_, rest) = source.as_bytes().split_at(start);
    let (word, _) = rest.split_at(len);
    match std::str::from_utf8(word) {
        Ok(word) => word,
        Err(_) => panic!("words.js: not UTF-8"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_list_rules() {
        let mut prefixes: Vec<&str> = WORDS.iter().map(|w| &w[..3]).collect();
        prefixes.sort_unstable();
        prefixes.dedup();
        assert_eq!(prefixes.len(), 256);
        assert!(
            WORDS
                .iter()
                .all(|w| (3..=7).contains(&w.len()) && w.bytes().all(|b| b.is_ascii_lowercase()))
        );
        assert!(WORDS.contains(&"tiger") && WORDS.contains(&"orbit"));
    }

    #[test]
    fn parse_normalises() {
        for input in [
            "7-tiger-orbit",
            "  7-tiger-orbit\n",
            "7 Tiger ORBIT",
            "7  tiger - orbit",
            "7--tiger--orbit",
            "\t7\ttiger\torbit ",
        ] {
            let code = Code::parse(input).expect(input);
            assert_eq!(code.to_string(), "7-tiger-orbit", "{input:?}");
            assert_eq!(code.number(), 7);
            assert_eq!(code.words(), ["tiger", "orbit"]);
            assert_eq!(code.room(), "xfer-7");
        }
        assert_eq!(
            "999-able-zoo".parse::<Code>().map(|c| c.to_string()),
            Ok("999-able-zoo".to_owned())
        );
        assert_eq!(
            Code::parse("1-zoo-zoo").map(|c| c.room()),
            Ok("xfer-1".into())
        );
    }

    #[test]
    fn parse_rejects() {
        assert_eq!(Code::parse(""), Err(CodeError::Empty));
        assert_eq!(Code::parse(" - - "), Err(CodeError::Empty));
        assert_eq!(Code::parse("7-tiger"), Err(CodeError::Shape));
        assert_eq!(Code::parse("7-tiger-orbit-zoo"), Err(CodeError::Shape));
        assert_eq!(Code::parse("tiger-orbit"), Err(CodeError::Shape));
        for number in ["0", "07", "1000", "+7", "x", "7x", "٧"] {
            let input = format!("{number}-tiger-orbit");
            assert_eq!(Code::parse(&input), Err(CodeError::Number), "{input}");
        }
        assert_eq!(
            Code::parse("tiger-7-orbit"),
            Err(CodeError::Number),
            "the number comes first"
        );
        let typo = Code::parse("7-tigre-orbit").expect_err("typo");
        assert_eq!(
            typo,
            CodeError::UnknownWord {
                word: "tigre".into(),
                suggestion: Some("tiger")
            }
        );
        let typo = Code::parse("7-tiger-orbitt").expect_err("typo");
        assert_eq!(
            typo,
            CodeError::UnknownWord {
                word: "orbitt".into(),
                suggestion: Some("orbit")
            }
        );
        assert_eq!(
            typo.to_string(),
            "unknown word \"orbitt\" in the code; did you mean \"orbit\"?"
        );
        assert_eq!(
            Code::parse("7-ti-orbit").expect_err("short").to_string(),
            "unknown word \"ti\" in the code"
        );
        // A multi-byte character where the three-letter prefix would be cut.
        assert!(matches!(
            Code::parse("7-tiĳr-orbit"),
            Err(CodeError::UnknownWord {
                suggestion: None,
                ..
            })
        ));
    }

    #[test]
    fn generate_round_trips() {
        let mut numbers = std::collections::HashSet::new();
        for _ in 0..2000 {
            let code = Code::generate();
            assert!(NUMBERS.contains(&code.number()));
            assert_eq!(Code::parse(&code.to_string()), Ok(code));
            numbers.insert(code.number());
        }
        // 2000 draws over 999 numbers leave almost none twice-missing by chance.
        assert!(numbers.len() > 700, "{}", numbers.len());
    }

    #[test]
    fn debug_hides_the_words() {
        let code = Code::parse("7-tiger-orbit").expect("valid");
        assert_eq!(format!("{code:?}"), "Code(7-…)");
    }
}
