//! Sealed vault (being written).
