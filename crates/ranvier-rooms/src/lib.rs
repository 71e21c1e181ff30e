//! ranvier-rooms
