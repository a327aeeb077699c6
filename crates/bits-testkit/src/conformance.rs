//! The backend conformance matrix (being written).
