//! Trust requests (spec/delegation.md §3): the JSON body and the checks
//! TC1–TC3, which need no database.
