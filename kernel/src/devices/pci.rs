//! See `super` (being written).
