//! ranvier-sync
