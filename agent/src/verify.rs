//! Assertion verification (being written).
