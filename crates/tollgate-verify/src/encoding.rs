//! Decoding received signatures and comparing them in constant time. Signatures are compared as
//! decoded bytes, so hex case and base64 padding variants cannot cause false rejections, and the
//! comparison never short-circuits on the first differing byte.

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use base64::Engine;
use subtle::ConstantTimeEq;

use crate::reject::Reject;

/// Longest signature text decoded; anything longer is malformed without being decoded.
pub const MAX_SIGNATURE_LEN: usize = 1024;

/// Constant-time equality of two byte strings (lengths are not secret).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// Decodes standard base64, padded or not, into at most 128 bytes.
pub fn b64_signature(s: &str, header: &'static str) -> Result<Vec<u8>, Reject> {
    if s.len() > MAX_SIGNATURE_LEN {
        return Err(Reject::SignatureMalformed {
            header,
            why: "too long",
        });
    }
    let s = s.trim();
    // `decode_vec` into a buffer from `malloc`: `decode` zeroes a new one with `calloc`, which
    // glibc serves outside its per-thread cache, on every request.
    let mut out = Vec::with_capacity(s.len() / 4 * 3 + 3);
    if STANDARD.decode_vec(s, &mut out).is_err() {
        out.clear();
        STANDARD_NO_PAD
            .decode_vec(s, &mut out)
            .map_err(|_| Reject::SignatureMalformed {
                header,
                why: "not base64",
            })?;
    }
    Ok(out)
}

/// Decodes hex of either case.
pub fn hex_signature(s: &str, header: &'static str) -> Result<Vec<u8>, Reject> {
    if s.len() > MAX_SIGNATURE_LEN {
        return Err(Reject::SignatureMalformed {
            header,
            why: "too long",
        });
    }
    hex::decode(s.trim()).map_err(|_| Reject::SignatureMalformed {
        header,
        why: "not hex",
    })
}

/// Standard base64 with padding (what the providers send).
pub fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// Decodes base64 key material leniently: standard or URL-safe alphabet, padded or not.
pub fn b64_key(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    STANDARD
        .decode(s)
        .or_else(|_| STANDARD_NO_PAD.decode(s))
        .or_else(|_| URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')))
        .ok()
}

/// Standard base64 with or without padding, decoded into `out` (no allocation); `None` unless it
/// decodes to exactly `out.len()` bytes.
pub fn b64_exact(s: &str, out: &mut [u8]) -> Option<()> {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    // Room for the decoder's worst-case estimate, so a long input is an error, not a panic.
    let mut buf = [0u8; 96];
    if s.len() > 128 || out.len() > buf.len() {
        return None;
    }
    let n = LENIENT.decode_slice(s.trim(), &mut buf).ok()?;
    (n == out.len()).then(|| out.copy_from_slice(&buf[..n]))
}

/// Base64url without padding (JWT segments).
pub fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes a base64url JWT segment.
pub fn b64url_decode(s: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(s).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ct_eq_requires_same_length_and_bytes() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
        assert!(ct_eq(b"", b""));
    }

    #[test]
    fn b64_exact_needs_the_exact_length_and_never_panics() {
        let mut out = [0u8; 3];
        assert_eq!(b64_exact("AAEC", &mut out), Some(()));
        assert_eq!(out, [0, 1, 2]);
        let mut two = [0u8; 2];
        assert_eq!(b64_exact("AAE", &mut two), Some(()));
        assert_eq!(b64_exact("AAE=", &mut two), Some(()));
        assert_eq!(b64_exact("AAEC", &mut two), None);
        assert_eq!(b64_exact("!!!!", &mut out), None);
        assert_eq!(b64_exact(&"A".repeat(200), &mut out), None);
        assert_eq!(b64_exact("", &mut [0u8; 0]), Some(()));
    }

    #[test]
    fn signatures_decode_or_reject_malformed() {
        assert_eq!(b64_signature("AAEC", "h").unwrap(), vec![0, 1, 2]);
        assert_eq!(b64_signature("AAE", "h").unwrap(), vec![0, 1]);
        assert_eq!(
            b64_signature("!!!!", "h"),
            Err(Reject::SignatureMalformed {
                header: "h",
                why: "not base64"
            })
        );
        assert_eq!(hex_signature("0aFF", "h").unwrap(), vec![10, 255]);
        assert_eq!(
            hex_signature("0g", "h"),
            Err(Reject::SignatureMalformed {
                header: "h",
                why: "not hex"
            })
        );
        let long = "A".repeat(MAX_SIGNATURE_LEN + 1);
        assert_eq!(
            b64_signature(&long, "h"),
            Err(Reject::SignatureMalformed {
                header: "h",
                why: "too long"
            })
        );
    }
}
