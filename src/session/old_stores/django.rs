//! Django (3.1+) database sessions: `session_data` is `django.core.signing.dumps(session,
//! salt="django.contrib.sessions.SessionStore", compress=True)`. The signature is checked with
//! the app's SECRET_KEY (or an older key still listed) before a byte of the payload is used.

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, URL_SAFE_NO_PAD};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::fmt;
use std::io::Read;

/// `SessionBase.key_salt`: "django.contrib.sessions." + the store class's `__qualname__`; the
/// db and cached_db backends both name their class `SessionStore`.
pub const SESSION_SALT: &str = "django.contrib.sessions.SessionStore";

/// Decompressed payloads larger than this are refused (a session is a few hundred bytes).
const MAX_JSON_BYTES: u64 = 4 << 20;

/// Django's `b64_decode` pads before decoding; accept both forms.
const URL_SAFE_ANY_PAD: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

type HmacSha256 = Hmac<Sha256>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DjangoError {
    /// Signed with none of the configured keys (or tampered with).
    #[error("signature does not match any configured secret key")]
    BadSignature,
    #[error("malformed Django signed value: {0}")]
    Malformed(&'static str),
}

/// Verifies and decodes `django.core.signing` values with a fixed salt and a list of secret
/// keys (the current one first, then older ones still accepted, like `SECRET_KEY_FALLBACKS`).
#[derive(Clone)]
pub struct DjangoSigner {
    /// Derived HMAC keys, SHA256(salt + "signer" + secret), in the configured order.
    keys: Vec<[u8; 32]>,
}

impl fmt::Debug for DjangoSigner {
    // The derived keys sign sessions: never print them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DjangoSigner({} keys)", self.keys.len())
    }
}

impl DjangoSigner {
    /// A signer for Django's session store (salt [`SESSION_SALT`]).
    pub fn for_sessions(secret_keys: &[String]) -> DjangoSigner {
        DjangoSigner::new(secret_keys, SESSION_SALT)
    }

    /// `salted_hmac(salt + "signer", value, secret, algorithm="sha256")` derives its key as
    /// SHA256(key_salt + secret).
    pub fn new(secret_keys: &[String], salt: &str) -> DjangoSigner {
        let keys = secret_keys
            .iter()
            .map(|secret| {
                let mut hasher = Sha256::new();
                hasher.update(salt.as_bytes());
                hasher.update(b"signer");
                hasher.update(secret.as_bytes());
                hasher.finalize().into()
            })
            .collect();
        DjangoSigner { keys }
    }

    /// `signing.loads` without `max_age` (as sessions call it; their expiry is `expire_date`):
    /// `<payload>:<base62 timestamp>:<signature>`, payload b64url(JSON) or "." + b64url(zlib(JSON)).
    pub fn decode(&self, signed: &str) -> Result<Value, DjangoError> {
        let (value, signature) = signed
            .rsplit_once(':')
            .ok_or(DjangoError::Malformed("no signature"))?;
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| DjangoError::BadSignature)?;
        let verified = self.keys.iter().any(|key| {
            // HMAC accepts keys of any length: this cannot fail.
            let Ok(mut mac) = HmacSha256::new_from_slice(key) else {
                return false;
            };
            mac.update(value.as_bytes());
            // Constant-time comparison.
            mac.verify_slice(&signature).is_ok()
        });
        if !verified {
            return Err(DjangoError::BadSignature);
        }
        let (payload, timestamp) = value
            .rsplit_once(':')
            .ok_or(DjangoError::Malformed("no timestamp"))?;
        let timestamp = timestamp.strip_prefix('-').unwrap_or(timestamp);
        if timestamp.is_empty() || !timestamp.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(DjangoError::Malformed("timestamp is not base62"));
        }
        let (compressed, payload) = match payload.strip_prefix('.') {
            Some(rest) => (true, rest),
            None => (false, payload),
        };
        let data = URL_SAFE_ANY_PAD
            .decode(payload)
            .map_err(|_| DjangoError::Malformed("payload is not base64url"))?;
        let json = if compressed {
            let mut json = Vec::new();
            flate2::read::ZlibDecoder::new(data.as_slice())
                .take(MAX_JSON_BYTES + 1)
                .read_to_end(&mut json)
                .map_err(|_| DjangoError::Malformed("payload is not zlib"))?;
            json
        } else {
            data
        };
        if json.len() as u64 > MAX_JSON_BYTES {
            return Err(DjangoError::Malformed("payload too large"));
        }
        // Django's JSONSerializer decodes latin-1 (its `json.dumps` output is ASCII anyway).
        let text: String = json.iter().map(|&b| char::from(b)).collect();
        serde_json::from_str(&text).map_err(|_| DjangoError::Malformed("payload is not JSON"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Signs like Django would (for shapes the committed fixtures do not cover).
    fn sign(secret: &str, payload: &str) -> String {
        let key: [u8; 32] = Sha256::digest(format!("{SESSION_SALT}signer{secret}")).into();
        let value = format!("{payload}:1tQ3Xb");
        let mut mac = HmacSha256::new_from_slice(&key).unwrap();
        mac.update(value.as_bytes());
        let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{value}:{signature}")
    }

    fn keys(list: &[&str]) -> Vec<String> {
        list.iter().map(|k| k.to_string()).collect()
    }

    #[test]
    fn plain_and_compressed_payloads() {
        let signer = DjangoSigner::for_sessions(&keys(&["k"]));
        let plain = sign("k", &URL_SAFE_NO_PAD.encode(br#"{"_auth_user_id":"7"}"#));
        assert_eq!(signer.decode(&plain).unwrap()["_auth_user_id"], "7");

        let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), Default::default());
        zlib.write_all(br#"{"_auth_user_id":"8"}"#).unwrap();
        let compressed = format!(".{}", URL_SAFE_NO_PAD.encode(zlib.finish().unwrap()));
        let signed = sign("k", &compressed);
        assert_eq!(signer.decode(&signed).unwrap()["_auth_user_id"], "8");
    }

    #[test]
    fn wrong_key_or_tampering_is_a_bad_signature() {
        let signed = sign(
            "other",
            &URL_SAFE_NO_PAD.encode(br#"{"_auth_user_id":"1"}"#),
        );
        let signer = DjangoSigner::for_sessions(&keys(&["k"]));
        assert_eq!(signer.decode(&signed), Err(DjangoError::BadSignature));

        let good = sign("k", &URL_SAFE_NO_PAD.encode(br#"{"_auth_user_id":"1"}"#));
        let forged = good.replacen(
            &URL_SAFE_NO_PAD.encode(br#"{"_auth_user_id":"1"}"#),
            &URL_SAFE_NO_PAD.encode(br#"{"_auth_user_id":"2"}"#),
            1,
        );
        assert_eq!(signer.decode(&forged), Err(DjangoError::BadSignature));
        let mut truncated = good.clone();
        truncated.pop();
        assert_eq!(signer.decode(&truncated), Err(DjangoError::BadSignature));
        assert_eq!(
            signer.decode("no-colons"),
            Err(DjangoError::Malformed("no signature"))
        );
        assert_eq!(
            signer.decode(""),
            Err(DjangoError::Malformed("no signature"))
        );
        assert_eq!(signer.decode("a:b:!!"), Err(DjangoError::BadSignature));
    }

    #[test]
    fn no_keys_verifies_nothing() {
        let signed = sign("", &URL_SAFE_NO_PAD.encode(b"{}"));
        assert_eq!(
            DjangoSigner::for_sessions(&[]).decode(&signed),
            Err(DjangoError::BadSignature)
        );
    }

    #[test]
    fn zip_bombs_are_refused() {
        let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), Default::default());
        zlib.write_all(b"[").unwrap();
        zlib.write_all(&vec![b' '; 8 << 20]).unwrap();
        zlib.write_all(b"]").unwrap();
        let signed = sign(
            "k",
            &format!(".{}", URL_SAFE_NO_PAD.encode(zlib.finish().unwrap())),
        );
        let signer = DjangoSigner::for_sessions(&keys(&["k"]));
        assert_eq!(
            signer.decode(&signed),
            Err(DjangoError::Malformed("payload too large"))
        );
    }

    #[test]
    fn signed_garbage_is_malformed_not_a_panic() {
        let signer = DjangoSigner::for_sessions(&keys(&["k"]));
        for payload in [
            "",
            ".",
            ".AAAA",
            "!!!!",
            &URL_SAFE_NO_PAD.encode(b"{not json"),
        ] {
            let signed = sign("k", payload);
            assert!(
                matches!(signer.decode(&signed), Err(DjangoError::Malformed(_))),
                "{payload}"
            );
        }
    }

    #[test]
    fn debug_hides_keys() {
        let signer = DjangoSigner::for_sessions(&keys(&["very-secret"]));
        assert_eq!(format!("{signer:?}"), "DjangoSigner(1 keys)");
    }
}
