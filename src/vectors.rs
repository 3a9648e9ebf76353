//! Deterministic test-vector generation (see test-vectors/README.md).
