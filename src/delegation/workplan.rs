//! Workplans (spec/delegation.md §9).
