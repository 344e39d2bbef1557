//! The body of the token fuzz target, kept here so ordinary builds compile it.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::{ApiKey, Verifier};

const KEY: &str = "APIfuzz";
const SECRET: &[u8] = b"fuzz-secret-fuzz-secret-fuzz-secret!";
const NOW: u64 = 1_800_000_000;

/// The first byte picks how the rest is used: as a whole token, or as the header and claims
/// JSON of a token the body signs with the verifier's key (so that the claims checks run, past
/// the signature). Verification gives claims or an error, never a panic; accepted claims are
/// current, and re-minting them gives a token that verifies to the same claims.
pub fn verify(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let Ok(key) = ApiKey::new(KEY, SECRET) else {
        return;
    };
    let verifier = Verifier::new(vec![key]);
    let token = if selector & 1 == 0 {
        String::from_utf8_lossy(rest).into_owned()
    } else {
        // Header and claims split at the first NUL; a missing header is the usual one.
        let (header, claims) = match rest.iter().position(|b| *b == 0) {
            Some(at) => (&rest[..at], &rest[at + 1..]),
            None => (&br#"{"alg":"HS256","typ":"JWT"}"#[..], rest),
        };
        let mut token = URL_SAFE_NO_PAD.encode(header);
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(claims));
        let signature = crate::sign(SECRET, token.as_bytes());
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(signature));
        token
    };
    let Ok(claims) = verifier.verify(&token, NOW) else {
        return;
    };
    assert_eq!(claims.iss, KEY, "only the known key verifies");
    let again = crate::mint(SECRET, &claims);
    assert_eq!(
        verifier.verify(&again, NOW).ok().as_ref(),
        Some(&claims),
        "re-minted claims verify to themselves"
    );
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_body_runs_on_sample_inputs() {
        super::verify(b"");
        super::verify(b"\x00a.b.c");
        super::verify(
            b"\x01{\"iss\":\"APIfuzz\",\"sub\":\"me\",\"exp\":1900000000,\"room\":\"r\"}",
        );
    }
}
