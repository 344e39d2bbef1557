//! Transfer codes and the PAKE that authenticates both peers' DTLS fingerprints.
