//! Storage of end-to-end encryption data: device keys, one-time and fallback keys,
//! to-device messages, device-list changes, cross-signing keys and signatures, key backups.
