//! ranvier-test
