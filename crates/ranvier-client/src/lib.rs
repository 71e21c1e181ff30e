//! ranvier-client
