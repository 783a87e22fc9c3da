//! Google REST upstream (being written).
