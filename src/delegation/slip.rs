//! Routing slips (spec/delegation.md §10).
