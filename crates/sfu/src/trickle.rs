//! The body of a WHIP/WHEP PATCH (RFC 9725 §4.3.1): an `application/trickle-ice-sdpfrag`
//! (RFC 8840) with ICE credentials, `a=mid` lines and trickled candidates.
//!
//! The SFU is ICE-lite: it learns a client's addresses from its connectivity checks, so the
//! candidates are checked and counted but not used. What matters to the server is whether the
//! fragment restarts ICE (new `a=ice-ufrag`), which it answers with 422.

/// Longest fragment accepted, in bytes.
pub const MAX_FRAGMENT_BYTES: usize = 64 * 1024;

/// A parsed trickle fragment, borrowing from the text.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Fragment<'a> {
    /// `a=ice-ufrag`: present means an ICE restart (or a repeat of the current one).
    pub ice_ufrag: Option<&'a str>,
    /// `a=ice-pwd`.
    pub ice_pwd: Option<&'a str>,
    /// `a=mid` values, in order.
    pub mids: Vec<&'a str>,
    /// Trickled candidates.
    pub candidates: Vec<CandidateLine<'a>>,
    /// `a=end-of-candidates` was present.
    pub end_of_candidates: bool,
}

/// One `a=candidate:` line (RFC 8839 §5.1), the fields the server could act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CandidateLine<'a> {
    /// Foundation.
    pub foundation: &'a str,
    /// Component id (1 = RTP).
    pub component: u16,
    /// `udp` or `tcp` (any case).
    pub transport: &'a str,
    /// Priority.
    pub priority: u32,
    /// Connection address (an IP address or, for mDNS, a `.local` name).
    pub address: &'a str,
    /// Port.
    pub port: u16,
    /// `host`, `srflx`, `prflx` or `relay`.
    pub kind: &'a str,
}

/// Why a fragment was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TrickleError {
    /// Larger than [`MAX_FRAGMENT_BYTES`].
    #[error("the fragment is larger than {MAX_FRAGMENT_BYTES} bytes")]
    TooLarge,
    /// Not UTF-8.
    #[error("the fragment is not UTF-8 text")]
    NotText,
    /// A malformed `a=candidate` line (1-based line number).
    #[error("line {line}: bad candidate: {problem}")]
    BadCandidate {
        /// Line number.
        line: usize,
        /// What is wrong.
        problem: &'static str,
    },
}

/// Parses a trickle fragment; lines other than the ones [`Fragment`] keeps are ignored.
pub fn parse(body: &[u8]) -> Result<Fragment<'_>, TrickleError> {
    if body.len() > MAX_FRAGMENT_BYTES {
        return Err(TrickleError::TooLarge);
    }
    let text = std::str::from_utf8(body).map_err(|_| TrickleError::NotText)?;
    let mut fragment = Fragment::default();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if let Some(value) = line.strip_prefix("a=ice-ufrag:") {
            fragment.ice_ufrag = Some(value);
        } else if let Some(value) = line.strip_prefix("a=ice-pwd:") {
            fragment.ice_pwd = Some(value);
        } else if let Some(value) = line.strip_prefix("a=mid:") {
            fragment.mids.push(value);
        } else if line == "a=end-of-candidates" {
            fragment.end_of_candidates = true;
        } else if let Some(value) = line.strip_prefix("a=candidate:") {
            let candidate = candidate(value).map_err(|problem| TrickleError::BadCandidate {
                line: index + 1,
                problem,
            })?;
            fragment.candidates.push(candidate);
        }
    }
    Ok(fragment)
}

/// `foundation component transport priority address port typ kind [extensions]`.
fn candidate(value: &str) -> Result<CandidateLine<'_>, &'static str> {
    let mut fields = value.split(' ');
    let mut next = |what: &'static str| fields.next().filter(|f| !f.is_empty()).ok_or(what);
    let foundation = next("no foundation")?;
    if foundation.len() > 32 {
        return Err("foundation longer than 32 characters");
    }
    let component = next("no component")?
        .parse::<u16>()
        .ok()
        .filter(|c| (1..=256).contains(c))
        .ok_or("component is not 1 to 256")?;
    let transport = next("no transport")?;
    if !transport.eq_ignore_ascii_case("udp") && !transport.eq_ignore_ascii_case("tcp") {
        return Err("transport is not udp or tcp");
    }
    let priority = next("no priority")?
        .parse::<u32>()
        .map_err(|_| "priority is not a number")?;
    let address = next("no address")?;
    if address.parse::<std::net::IpAddr>().is_err() && !address.ends_with(".local") {
        return Err("address is neither an IP address nor an mDNS name");
    }
    let port = next("no port")?
        .parse::<u16>()
        .map_err(|_| "port is not a number")?;
    if next("no typ")? != "typ" {
        return Err("expected `typ`");
    }
    let kind = next("no candidate type")?;
    if !matches!(kind, "host" | "srflx" | "prflx" | "relay") {
        return Err("unknown candidate type");
    }
    Ok(CandidateLine {
        foundation,
        component,
        transport,
        priority,
        address,
        port,
        kind,
    })
}

/// The body of the trickle fuzz target: any bytes parse or fail with an error, never a panic,
/// and every candidate kept satisfies the checks.
pub fn fuzz(data: &[u8]) {
    if let Ok(fragment) = parse(data) {
        for c in &fragment.candidates {
            assert!((1..=256).contains(&c.component));
            assert!(matches!(c.kind, "host" | "srflx" | "prflx" | "relay"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_browser_fragment() {
        let body =
            b"a=ice-ufrag:EsAw\r\na=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\na=group:BUNDLE 0\r\n\
            m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n\
            a=candidate:1387637174 1 udp 2122260223 192.0.2.1 61764 typ host generation 0\r\n\
            a=candidate:3471623853 1 tcp 1518280447 192.0.2.1 9 typ host tcptype active\r\n\
            a=end-of-candidates\r\n";
        let f = parse(body).expect("parses");
        assert_eq!(f.ice_ufrag, Some("EsAw"));
        assert_eq!(f.mids, ["0"]);
        assert_eq!(f.candidates.len(), 2);
        assert_eq!(f.candidates[0].port, 61764);
        assert!(f.end_of_candidates);
    }

    #[test]
    fn bad_candidates_name_the_line() {
        let err = parse(b"a=mid:0\r\na=candidate:1 1 udp 1 192.0.2.1 x typ host\r\n").unwrap_err();
        assert_eq!(
            err,
            TrickleError::BadCandidate {
                line: 2,
                problem: "port is not a number"
            }
        );
        assert!(parse(b"a=candidate:1 1 sctp 1 192.0.2.1 1 typ host").is_err());
        assert!(parse(b"a=candidate:").is_err());
        assert_eq!(parse(&[0xff]), Err(TrickleError::NotText));
        fuzz(b"a=candidate:1 0 udp 1 ::1 1 typ host");
    }
}
