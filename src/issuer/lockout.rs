//! Failed-login counting for names that are not users, so the lockout
//! answers the same way for them as for real users and cannot be used to
//! tell which names exist. In memory and bounded: it only hides the signal,
//! it protects no account.

use std::collections::HashMap;
use std::sync::Mutex;

/// Names tracked at most; when full the table is cleared (an attacker who
/// floods it only resets counters of names that do not exist).
const CAPACITY: usize = 10_000;

#[derive(Debug, Default)]
pub(crate) struct UnknownLogins(Mutex<HashMap<String, (i64, i64)>>);

impl UnknownLogins {
    /// Same rule as `Store::reserve_login_attempt`: `false` while locked;
    /// the attempt that reaches `max_failures` locks until `now + lockout`.
    pub(crate) fn reserve(&self, who: &str, now: i64, max_failures: i64, lockout: i64) -> bool {
        let mut table = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if table.len() >= CAPACITY && !table.contains_key(who) {
            table.clear();
        }
        let (failed, locked_until) = table.entry(who.to_owned()).or_insert((0, 0));
        if *locked_until > now {
            return false;
        }
        *failed = if *locked_until != 0 { 1 } else { *failed + 1 };
        *locked_until = if *failed >= max_failures { now + lockout } else { 0 };
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_like_a_user_and_unlocks_after_the_lockout() {
        let t = UnknownLogins::default();
        for _ in 0..5 {
            assert!(t.reserve("ghost@default", 100, 5, 60));
        }
        assert!(!t.reserve("ghost@default", 100, 5, 60));
        assert!(!t.reserve("ghost@default", 159, 5, 60));
        assert!(t.reserve("ghost@default", 160, 5, 60), "the lock ran out");
        assert!(t.reserve("other@default", 100, 5, 60));
    }
}
