//! Steps D (delegation): where the checks of delegated tokens will go, run
//! after T and before P. A delegated token names a trust (`trust_id`) and an
//! actor chain; these steps will check that the trust is current and that
//! each actor may act for the one before it. Nothing is checked here yet:
//! until the D steps are specified in spec/verification.md, tokens are
//! verified by T and P alone.
