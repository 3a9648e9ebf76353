//! FL-14 (placeholder, filled below).
