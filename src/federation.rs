//! Federation's wire format (spec/federation.md §4.1): the body of a token
//! exchange, its checks that need no database, and the lifetime rule of
//! step F8. The issuer (`issuer::federation`) runs the rest of the steps;
//! the client builds the same body ([`crate::client::Scope::through`]).

use serde::{Deserialize, Serialize};

use crate::error::{Code, Result, err};
use crate::names::{Name, ProjectName, check_audience};
use crate::token::MAX_SERVICE_LIFETIME;

/// The path of the exchange, under the target issuer's id.
pub const EXCHANGE_PATH: &str = "/v1/exchange";
/// Most roles an exchange may ask for.
pub const MAX_EXCHANGE_ROLES: usize = 16;

/// The body of `POST /v1/exchange`: one JSON object, unknown members refused.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "issuer", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ExchangeRequest {
    /// the service of the target issuer the token is for
    pub audience: String,
    /// a project of the target issuer
    pub project: String,
    /// the project's domain (one of the target's own)
    pub domain: String,
    /// the roles wanted, a non-empty subset of those granted; default all granted
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<String>>,
    /// seconds, 1 to the service-token lifetime; default the ceiling; clamped
    /// to the peer's limit and the exchanged token's expiry (F8)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifetime: Option<u64>,
    /// restricts the token to this instance of the audience service
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
}

/// An exchange request whose names, roles, lifetime and instance hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExchangeDraft {
    /// The audience.
    pub audience: String,
    /// The project, `name@domain`.
    pub project: ProjectName,
    /// The roles asked for, sorted and distinct; `None`: all granted.
    pub roles: Option<Vec<String>>,
    /// The lifetime asked for.
    pub lifetime: Option<u64>,
    /// The instance asked for.
    pub instance: Option<String>,
}

impl ExchangeRequest {
    /// Decodes a body (`issuer.bad_request` for anything but one object of
    /// these members, each of its type).
    pub fn from_json(body: &[u8]) -> Result<Self> {
        crate::json::decode_object(body)
    }

    /// The checks of step F6 and F8 that need no database, for an issuer
    /// whose service tokens live at most `service_lifetime` seconds.
    pub fn check(&self, service_lifetime: u64) -> Result<ExchangeDraft> {
        check_audience(&self.audience)?;
        let project = ProjectName::new(
            Name::parse("project", &self.project)?,
            Name::parse("domain", &self.domain)?,
        );
        let roles = match &self.roles {
            None => None,
            Some(roles) if roles.is_empty() || roles.len() > MAX_EXCHANGE_ROLES => {
                return err(
                    Code::IssuerBadRequest,
                    format!("ask for 1 to {MAX_EXCHANGE_ROLES} roles, or leave `roles` out for all granted"),
                );
            }
            Some(roles) => {
                let mut checked = roles
                    .iter()
                    .map(|r| Name::parse("role", r).map(|n| n.as_str().to_owned()))
                    .collect::<Result<Vec<_>>>()?;
                checked.sort();
                checked.dedup();
                Some(checked)
            }
        };
        let longest = service_lifetime.min(MAX_SERVICE_LIFETIME);
        if let Some(asked) = self.lifetime
            && (asked == 0 || asked > longest)
        {
            return err(
                Code::IssuerLifetimeExceeded,
                format!("a service token lives 1 to {longest} s, not {asked}"),
            );
        }
        if let Some(instance) = &self.instance
            && let Some(problem) = crate::token::instance_id_problem(instance)
        {
            return err(Code::IssuerBadRequest, format!("`instance`: {problem}"));
        }
        Ok(ExchangeDraft {
            audience: self.audience.clone(),
            project,
            roles,
            lifetime: self.lifetime,
            instance: self.instance.clone(),
        })
    }
}

/// Step F8: the lifetime of the exchanged token, the least of the one
/// asked for (default the ceiling), the peer's `max_lifetime`, the issuer's
/// service-token lifetime and the seconds left to the exchanged token's
/// `exp`; never refused for being long, only clamped. `cwt.expired` when no
/// second is left.
pub fn exchanged_lifetime(
    asked: Option<u64>,
    service_lifetime: u64,
    peer_max: Option<u64>,
    foreign_exp: u64,
    now: u64,
) -> Result<u64> {
    let ceiling = service_lifetime
        .min(MAX_SERVICE_LIFETIME)
        .min(peer_max.unwrap_or(MAX_SERVICE_LIFETIME));
    let lifetime = asked
        .unwrap_or(ceiling)
        .min(ceiling)
        .min(foreign_exp.saturating_sub(now));
    if lifetime == 0 {
        return err(
            Code::CwtExpired,
            "the exchanged token expires now: ask your issuer for a new one",
        );
    }
    Ok(lifetime)
}
