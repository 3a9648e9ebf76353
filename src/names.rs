//! Names of keybound's objects (spec/issuer.md §3): users, domains, projects
//! and roles, checked once when they enter (the issuer, a trust request, a
//! workplan, a routing slip) and typed from then on: a user's name and domain
//! cannot be swapped, and `name@domain` is written in one place.

use std::fmt;

use crate::error::{Code, Result, err};

/// A simple name: 1 to 64 of `A–Z a–z 0–9 . _ -`, the first a letter or a
/// digit. Domains, roles, and each half of a qualified name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Name(String);

impl Name {
    /// Checks `name`; `kind` (`domain`, `role`, …) names it in the error.
    pub fn parse(kind: &str, name: &str) -> Result<Self> {
        let ok = !name.is_empty()
            && name.len() <= 64
            && name.as_bytes()[0].is_ascii_alphanumeric()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !ok {
            let shown: String = name.chars().take(40).collect();
            return err(
                Code::IssuerInvalidName,
                format!("{kind} name {shown:?} is not 1–64 of A–Z a–z 0–9 . _ - starting with a letter or digit"),
            );
        }
        Ok(Name(name.to_owned()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Splits `name@domain` at the first `@` and checks both halves.
fn split(kind: &str, qualified: &str) -> Result<(Name, Name)> {
    let Some((name, domain)) = qualified.split_once('@') else {
        let shown: String = qualified.chars().take(40).collect();
        return err(Code::IssuerInvalidName, format!("{kind} {shown:?} must be name@domain"));
    };
    Ok((Name::parse(kind, name)?, Name::parse("domain", domain)?))
}

macro_rules! qualified_name {
    ($(#[$doc:meta])* $type:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $type {
            /// The name within the domain.
            pub name: Name,
            /// The domain.
            pub domain: Name,
        }

        impl $type {
            /// Parses and checks `name@domain`.
            pub fn parse(qualified: &str) -> Result<Self> {
                let (name, domain) = split($kind, qualified)?;
                Ok($type { name, domain })
            }

            /// From names already checked.
            pub fn new(name: Name, domain: Name) -> Self {
                $type { name, domain }
            }
        }

        impl fmt::Display for $type {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}@{}", self.name, self.domain)
            }
        }

        // serde is there with the `policy` feature (and all that needs JSON).
        #[cfg(feature = "policy")]
        impl serde::Serialize for $type {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }
    };
}

qualified_name!(
    /// A user: `name@domain`, shown as such.
    UserName,
    "user"
);

qualified_name!(
    /// A project: `name@domain`, shown as such.
    ProjectName,
    "project"
);

/// Validates an audience: 1–256 printable ASCII characters, no spaces.
pub fn check_audience(audience: &str) -> Result<()> {
    if audience.is_empty() || audience.len() > 256 || !audience.bytes().all(|b| b.is_ascii_graphic()) {
        return err(
            Code::IssuerInvalidName,
            "an audience is 1 to 256 printable ASCII characters without spaces",
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qualified_names_split_at_the_first_at_and_print_back() {
        let user = UserName::parse("ayoung@stoughton").unwrap();
        assert_eq!((user.name.as_str(), user.domain.as_str()), ("ayoung", "stoughton"));
        assert_eq!(user.to_string(), "ayoung@stoughton");
        for bad in ["ayoung", "@stoughton", "ayoung@", "a@b@c", "-a@b", "a b@c"] {
            assert_eq!(
                UserName::parse(bad).unwrap_err().code(),
                Code::IssuerInvalidName,
                "{bad}"
            );
        }
        assert_eq!(
            Name::parse("role", &"r".repeat(65)).unwrap_err().code(),
            Code::IssuerInvalidName
        );
        assert_eq!(
            serde_json::to_string(&ProjectName::parse("turing@stoughton").unwrap()).unwrap(),
            "\"turing@stoughton\""
        );
    }
}
