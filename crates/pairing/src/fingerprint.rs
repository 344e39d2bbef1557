//! DTLS certificate fingerprints (RFC 8122 section 5) in one normal form.

/// Hash functions accepted, with their digest lengths. SHA-1 and MD5 are left out on purpose:
/// the fingerprint is what the PAKE authenticates, so it must be collision resistant.
const ALGORITHMS: [(&str, usize); 3] = [("sha-256", 32), ("sha-384", 48), ("sha-512", 64)];

/// Normalises a fingerprint such as `SHA-256 ab:cd:…` to `sha-256 AB:CD:…`: hash function name
/// in lower case, one space, the digest as upper-case hex byte pairs joined by colons.
///
/// Returns `None` for an unknown or weak hash function (only SHA-256/384/512 are accepted), a
/// digest of the wrong length for it, or anything else that is not a fingerprint.
pub fn normalize_fingerprint(fingerprint: &str) -> Option<String> {
    let mut parts = fingerprint.split_whitespace();
    let (Some(algorithm), Some(digest), None) = (parts.next(), parts.next(), parts.next()) else {
        return None;
    };
    let algorithm = algorithm.to_ascii_lowercase();
    let &(name, len) = ALGORITHMS.iter().find(|(name, _)| *name == algorithm)?;
    let mut out = String::with_capacity(name.len() + 1 + len * 3);
    out.push_str(name);
    out.push(' ');
    let mut count = 0;
    for byte in digest.split(':') {
        if byte.len() != 2 || !byte.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        if count > 0 {
            out.push(':');
        }
        out.push_str(&byte.to_ascii_uppercase());
        count += 1;
    }
    (count == len).then_some(out)
}

/// The certificate fingerprint an SDP announces, normalised: the value of its `a=fingerprint:`
/// lines, session-level or media-level.
///
/// Returns `None` when there is no such line, when one is malformed, or when the lines disagree
/// (the DTLS handshake could then match a fingerprint other than the authenticated one).
pub fn sdp_fingerprint(sdp: &str) -> Option<String> {
    let mut found: Option<String> = None;
    for line in sdp.lines() {
        let Some(value) = line.trim_end().strip_prefix("a=fingerprint:") else {
            continue;
        };
        let fingerprint = normalize_fingerprint(value)?;
        match &found {
            Some(previous) if *previous != fingerprint => return None,
            Some(_) => {}
            None => found = Some(fingerprint),
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    const FP: &str = "sha-256 0A:1B:2C:3D:4E:5F:60:71:82:93:A4:B5:C6:D7:E8:F9:0A:1B:2C:3D:4E:5F:60:71:82:93:A4:B5:C6:D7:E8:F9";

    #[test]
    fn normalises() {
        assert_eq!(normalize_fingerprint(FP).as_deref(), Some(FP));
        let messy = format!("  SHA-256\t{}  ", FP[8..].to_lowercase());
        assert_eq!(normalize_fingerprint(&messy).as_deref(), Some(FP));
        let sha512 = format!("SHA-512 {}", ["ab"; 64].join(":"));
        assert_eq!(
            normalize_fingerprint(&sha512),
            Some(format!("sha-512 {}", ["AB"; 64].join(":")))
        );
    }

    #[test]
    fn rejects() {
        let sha1 = format!("sha-1 {}", ["AB"; 20].join(":"));
        let short = format!("sha-256 {}", ["AB"; 31].join(":"));
        let long = format!("sha-256 {}", ["AB"; 33].join(":"));
        let no_colons = format!("sha-256 {}", ["AB"; 32].join(""));
        let trailing = format!("sha-256 {}:", ["AB"; 32].join(":"));
        let bad_hex = format!("sha-256 {}:GG", ["AB"; 31].join(":"));
        let one_digit = format!("sha-256 {}:A", ["AB"; 31].join(":"));
        let extra = format!("{FP} x");
        for bad in [
            "", "sha-256", &sha1, &short, &long, &no_colons, &trailing, &bad_hex, &one_digit,
            &extra,
        ] {
            assert_eq!(normalize_fingerprint(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn from_sdp() {
        let lower = FP.to_lowercase();
        let session = format!(
            "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\na=fingerprint:{lower}\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=setup:actpass\r\n"
        );
        assert_eq!(sdp_fingerprint(&session).as_deref(), Some(FP));
        let media = format!(
            "v=0\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\na=fingerprint:{FP}\nm=audio 9 UDP/TLS/RTP/SAVPF 111\na=fingerprint:{lower}\n"
        );
        assert_eq!(sdp_fingerprint(&media).as_deref(), Some(FP));
        let other = format!("sha-256 {}", ["AB"; 32].join(":"));
        let disagree = format!("v=0\r\na=fingerprint:{FP}\r\nm=x\r\na=fingerprint:{other}\r\n");
        assert_eq!(sdp_fingerprint(&disagree), None);
        assert_eq!(sdp_fingerprint("v=0\r\nm=application 9\r\n"), None);
        assert_eq!(sdp_fingerprint("a=fingerprint:sha-256 AB\r\n"), None);
    }
}
