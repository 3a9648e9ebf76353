//! Steps F (federation): where the checks of tokens first issued elsewhere
//! will go, run with T. A federated token names its origin issuer
//! (`origin_issuer`); these steps will check that the issuer which signed it
//! may speak for that origin. Nothing is checked here yet: until the F steps
//! are specified in spec/verification.md, tokens are verified by T and P
//! alone.
