//! Canonical JSON and signature checks for keys (pure, no I/O).
//!
//! Signed objects often carry signatures by several users and keys. ruma's `verify_json`
//! checks every signing entity it finds, so [`verify_signature`] first narrows the object's
//! `signatures` down to the one signature being checked.

use std::collections::BTreeMap;

use ranvier_core::{Error, Result};
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue,
    canonical_json::to_canonical_value,
    serde::{Base64, base64::Standard},
    signatures::verify_json,
};
use serde_json::Value;

/// Why a signature check failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SignatureError {
    /// The object carries no signature by that key.
    Missing,
    /// The public key is not valid base64.
    BadKey,
    /// The signature does not verify.
    Invalid,
}

impl std::fmt::Display for SignatureError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Missing => "missing signature",
            Self::BadKey => "invalid public key",
            Self::Invalid => "invalid signature",
        })
    }
}

/// A JSON object in canonical form, or `M_BAD_JSON` (floats, huge integers, not an object).
pub fn canonical_object(value: &Value, what: &str) -> Result<CanonicalJsonObject> {
    match to_canonical_value(value) {
        Ok(CanonicalJsonValue::Object(object)) => Ok(object),
        Ok(_) => Err(Error::bad_json(format!("{what} must be a JSON object"))),
        Err(e) => Err(Error::bad_json(format!("{what} is not canonical JSON: {e}"))),
    }
}

/// The canonical text of an object.
pub fn canonical_text(object: &CanonicalJsonObject) -> String {
    // A `BTreeMap` of canonical values always serialises.
    serde_json::to_string(object).unwrap_or_default()
}

/// The canonical text of the signed part of an object: everything but `signatures` and
/// `unsigned`. Two uploads of the same key compare equal on this.
pub fn signed_part(object: &CanonicalJsonObject) -> String {
    let mut copy = object.clone();
    copy.remove("signatures");
    copy.remove("unsigned");
    canonical_text(&copy)
}

/// The signature `signer` made with `key_id` over `object`, if it carries one.
pub fn signature_of<'a>(object: &'a CanonicalJsonObject, signer: &str, key_id: &str) -> Option<&'a str> {
    match object.get("signatures")? {
        CanonicalJsonValue::Object(by_signer) => match by_signer.get(signer)? {
            CanonicalJsonValue::Object(by_key) => match by_key.get(key_id)? {
                CanonicalJsonValue::String(signature) => Some(signature),
                _ => None,
            },
            _ => None,
        },
        _ => None,
    }
}

/// The key ids `signer` signed `object` with.
pub fn signing_key_ids(object: &CanonicalJsonObject, signer: &str) -> Vec<String> {
    match object.get("signatures").and_then(|s| match s {
        CanonicalJsonValue::Object(by_signer) => by_signer.get(signer),
        _ => None,
    }) {
        Some(CanonicalJsonValue::Object(by_key)) => by_key.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

/// Check that `object` carries a valid signature by `signer`'s key `key_id` (`ed25519:...`),
/// whose public key is the unpadded base64 `public_key`. Other signatures are ignored.
pub fn verify_signature(
    object: &CanonicalJsonObject,
    signer: &str,
    key_id: &str,
    public_key: &str,
) -> Result<(), SignatureError> {
    let signature = signature_of(object, signer, key_id).ok_or(SignatureError::Missing)?;
    let public_key = Base64::<Standard>::parse(public_key).map_err(|_| SignatureError::BadKey)?;
    let mut narrowed = object.clone();
    let only = BTreeMap::from([(key_id.to_owned(), CanonicalJsonValue::String(signature.to_owned()))]);
    narrowed.insert(
        "signatures".to_owned(),
        CanonicalJsonValue::Object(BTreeMap::from([(signer.to_owned(), CanonicalJsonValue::Object(only))])),
    );
    let keys = BTreeMap::from([(signer.to_owned(), BTreeMap::from([(key_id.to_owned(), public_key)]))]);
    verify_json(&keys, &narrowed).map_err(|_| SignatureError::Invalid)
}

/// The string value of `object[field]`.
pub fn str_field<'a>(object: &'a CanonicalJsonObject, field: &str) -> Option<&'a str> {
    match object.get(field)? {
        CanonicalJsonValue::String(text) => Some(text),
        _ => None,
    }
}

/// The object value of `object[field]`.
pub fn object_field<'a>(object: &'a CanonicalJsonObject, field: &str) -> Option<&'a CanonicalJsonObject> {
    match object.get(field)? {
        CanonicalJsonValue::Object(inner) => Some(inner),
        _ => None,
    }
}

/// Add stored signatures to an object's `signatures`: `(signer user, key id, signature)`.
pub fn add_signatures<'a>(
    object: &mut CanonicalJsonObject,
    signatures: impl IntoIterator<Item = (&'a str, &'a str, &'a str)>,
) {
    for (signer, key_id, signature) in signatures {
        let by_signer =
            object.entry("signatures".to_owned()).or_insert_with(|| CanonicalJsonValue::Object(BTreeMap::new()));
        if !matches!(by_signer, CanonicalJsonValue::Object(_)) {
            *by_signer = CanonicalJsonValue::Object(BTreeMap::new());
        }
        if let CanonicalJsonValue::Object(by_signer) = by_signer {
            let by_key =
                by_signer.entry(signer.to_owned()).or_insert_with(|| CanonicalJsonValue::Object(BTreeMap::new()));
            if !matches!(by_key, CanonicalJsonValue::Object(_)) {
                *by_key = CanonicalJsonValue::Object(BTreeMap::new());
            }
            if let CanonicalJsonValue::Object(by_key) = by_key {
                by_key.insert(key_id.to_owned(), CanonicalJsonValue::String(signature.to_owned()));
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod test_keys {
    //! Real ed25519 keys for tests: sign JSON the way clients do.

    use ruma::{
        CanonicalJsonObject,
        serde::{Base64, base64::Standard},
        signatures::{Ed25519KeyPair, KeyPair, sign_json},
    };

    /// A key pair whose key id is `ed25519:{name}`.
    pub struct TestKey {
        pair: Ed25519KeyPair,
    }

    impl TestKey {
        pub fn new(name: &str) -> Self {
            let der = Ed25519KeyPair::generate();
            Self { pair: Ed25519KeyPair::from_der(&der, name.to_owned()).unwrap() }
        }

        /// The unpadded base64 public key.
        pub fn public(&self) -> String {
            Base64::<Standard>::new(self.pair.public_key().to_vec()).encode()
        }

        pub fn key_id(&self) -> String {
            format!("ed25519:{}", self.pair.version())
        }

        /// Sign `object` as `signer`, adding to its signatures.
        pub fn sign(&self, signer: &str, object: &mut CanonicalJsonObject) {
            sign_json(signer, &self.pair, object).unwrap();
        }

        /// The raw signature of a message, for tampering tests.
        pub fn sign_bytes(&self, message: &[u8]) -> String {
            Base64::<Standard>::new(self.pair.sign(message).as_bytes().to_vec()).encode()
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{test_keys::TestKey, *};

    fn object(value: Value) -> CanonicalJsonObject {
        canonical_object(&value, "test").unwrap()
    }

    #[test]
    fn a_valid_signature_verifies_among_others() {
        let key = TestKey::new("DEV");
        let other = TestKey::new("OTHER");
        let mut keys = object(json!({"user_id": "@a:x", "device_id": "DEV", "keys": {"ed25519:DEV": key.public()}}));
        key.sign("@a:x", &mut keys);
        // A signature by someone we cannot check does not get in the way.
        other.sign("@b:x", &mut keys);
        assert_eq!(verify_signature(&keys, "@a:x", &key.key_id(), &key.public()), Ok(()));
        assert_eq!(signing_key_ids(&keys, "@a:x"), vec![key.key_id()]);
        assert_eq!(verify_signature(&keys, "@b:x", &other.key_id(), &other.public()), Ok(()));
    }

    #[test]
    fn tampering_wrong_keys_and_missing_signatures_fail() {
        let key = TestKey::new("DEV");
        let mut keys = object(json!({"user_id": "@a:x", "keys": {"ed25519:DEV": key.public()}}));
        key.sign("@a:x", &mut keys);
        let mut tampered = keys.clone();
        tampered.insert("device_id".into(), CanonicalJsonValue::String("EVIL".into()));
        assert_eq!(verify_signature(&tampered, "@a:x", &key.key_id(), &key.public()), Err(SignatureError::Invalid));
        let impostor = TestKey::new("DEV");
        assert_eq!(verify_signature(&keys, "@a:x", &key.key_id(), &impostor.public()), Err(SignatureError::Invalid));
        assert_eq!(verify_signature(&keys, "@b:x", &key.key_id(), &key.public()), Err(SignatureError::Missing));
        assert_eq!(verify_signature(&keys, "@a:x", "ed25519:NOPE", &key.public()), Err(SignatureError::Missing));
        assert_eq!(verify_signature(&keys, "@a:x", &key.key_id(), "!!not base64"), Err(SignatureError::BadKey));
        // `unsigned` is not covered by signatures.
        let mut with_unsigned = keys.clone();
        with_unsigned.insert("unsigned".into(), CanonicalJsonValue::Object(Default::default()));
        assert_eq!(verify_signature(&with_unsigned, "@a:x", &key.key_id(), &key.public()), Ok(()));
        // A signature of other bytes does not verify either.
        let mut forged = keys.clone();
        add_signatures(&mut forged, [("@a:x", key.key_id().as_str(), key.sign_bytes(b"other").as_str())]);
        assert_eq!(verify_signature(&forged, "@a:x", &key.key_id(), &key.public()), Err(SignatureError::Invalid));
    }

    #[test]
    fn signed_part_ignores_signatures_and_unsigned() {
        let a = object(json!({"k": 1, "signatures": {"@a:x": {"ed25519:A": "s"}}, "unsigned": {"x": 1}}));
        let b = object(json!({"k": 1}));
        assert_eq!(signed_part(&a), signed_part(&b));
        assert_ne!(signed_part(&a), signed_part(&object(json!({"k": 2}))));
        assert!(canonical_object(&json!([1]), "x").is_err());
        assert!(canonical_object(&json!({"f": 1.5}), "x").is_err());
    }

    #[test]
    fn stored_signatures_merge_into_objects() {
        let mut keys = object(json!({"signatures": {"@a:x": {"ed25519:A": "one"}}}));
        add_signatures(&mut keys, [("@a:x", "ed25519:B", "two"), ("@b:x", "ed25519:C", "three")]);
        assert_eq!(
            serde_json::to_value(&keys).unwrap(),
            json!({"signatures": {"@a:x": {"ed25519:A": "one", "ed25519:B": "two"}, "@b:x": {"ed25519:C": "three"}}})
        );
        let mut bare = object(json!({"signatures": "junk"}));
        add_signatures(&mut bare, [("@a:x", "ed25519:A", "s")]);
        assert_eq!(signature_of(&bare, "@a:x", "ed25519:A"), Some("s"));
    }
}
