//! Rate limits (GCRA, by the `governor` crate): per API key, and per client address for session
//! tokens. They are held in memory by each replica, so with n replicas behind a balancer a key
//! gets up to n times its rate in all; a limit shared across replicas would cost a database round
//! trip per request, which is what the limit protects.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::service::keys::{Principal, Rate, Role};

/// The limits of callers that have none of their own: per role, and per client address for
/// session tokens. `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RateDefaults {
    pub admin: Option<Rate>,
    pub frontend: Option<Rate>,
    pub scorer: Option<Rate>,
    /// Requests carrying a session token, per client address.
    pub session: Option<Rate>,
    /// Demo sessions started, per client address.
    pub demo: Option<Rate>,
}

/// Addresses remembered at most before the idle ones are forgotten.
const MAX_TRACKED_ADDRESSES: usize = 100_000;

/// This replica's limiters.
pub struct RateLimiters {
    defaults: RateDefaults,
    /// By key id, with the rate each was built for (a key's rate never changes, but the
    /// bootstrap key's default may differ between configurations).
    keys: Mutex<HashMap<String, (Rate, Arc<DefaultDirectRateLimiter>)>>,
    addresses: Option<DefaultKeyedRateLimiter<IpAddr>>,
    demo_starts: Option<DefaultKeyedRateLimiter<IpAddr>>,
}

fn quota(rate: Rate) -> Quota {
    let period = Duration::from_secs_f64(1.0 / rate.per_s).max(Duration::from_nanos(1));
    Quota::with_period(period)
        .expect("a positive period")
        .allow_burst(NonZeroU32::new(rate.burst.max(1)).expect("at least 1"))
}

impl RateLimiters {
    pub fn new(defaults: RateDefaults) -> Self {
        Self {
            defaults,
            keys: Mutex::default(),
            addresses: defaults.session.map(|rate| RateLimiter::keyed(quota(rate))),
            demo_starts: defaults.demo.map(|rate| RateLimiter::keyed(quota(rate))),
        }
    }

    /// Counts one demo session started from `client`: `Ok`, or how long to wait.
    pub fn check_demo_start(&self, client: Option<IpAddr>) -> Result<(), Duration> {
        check_address(self.demo_starts.as_ref(), client)
    }

    /// Counts one request of `principal` from `client`: `Ok`, or how long to wait.
    pub fn check(&self, principal: &Principal, client: Option<IpAddr>) -> Result<(), Duration> {
        let outcome = match principal {
            Principal::Key {
                id, role, limit, ..
            } => {
                let default = match role {
                    Role::Admin => self.defaults.admin,
                    Role::Frontend => self.defaults.frontend,
                    Role::Scorer => self.defaults.scorer,
                };
                let Some(rate) = limit.over(default) else {
                    return Ok(());
                };
                self.key_limiter(id, rate).check()
            }
            Principal::Session(_) => return check_address(self.addresses.as_ref(), client),
        };
        outcome.map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    fn key_limiter(&self, id: &str, rate: Rate) -> Arc<DefaultDirectRateLimiter> {
        let mut keys = self.keys.lock().expect("rate limiter map");
        match keys.get(id) {
            Some((built_for, limiter)) if *built_for == rate => limiter.clone(),
            _ => {
                let limiter = Arc::new(RateLimiter::direct(quota(rate)));
                keys.insert(id.to_string(), (rate, limiter.clone()));
                limiter
            }
        }
    }
}

/// Counts one request from `client` on a per-address limiter (none: unlimited).
fn check_address(
    limiter: Option<&DefaultKeyedRateLimiter<IpAddr>>,
    client: Option<IpAddr>,
) -> Result<(), Duration> {
    let (Some(limiter), Some(client)) = (limiter, client) else {
        return Ok(());
    };
    if limiter.len() > MAX_TRACKED_ADDRESSES {
        limiter.retain_recent();
    }
    limiter
        .check_key(&client)
        .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::keys::KeyLimit;

    fn key(id: &str, rate: Option<Rate>) -> Principal {
        Principal::Key {
            id: id.into(),
            role: Role::Scorer,
            limit: KeyLimit {
                per_s: rate.map(|r| r.per_s),
                burst: rate.map(|r| r.burst),
            },
            scope: Default::default(),
        }
    }

    #[test]
    fn a_burst_passes_then_the_rate_holds_per_key() {
        let limiters = RateLimiters::new(RateDefaults::default());
        let slow = key(
            "slow",
            Some(Rate {
                per_s: 5.0,
                burst: 10,
            }),
        );
        let passed = (0..50)
            .filter(|_| limiters.check(&slow, None).is_ok())
            .count();
        assert_eq!(passed, 10);
        let wait = limiters.check(&slow, None).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(200),
            "{wait:?}"
        );
        // Another key, and a key without a limit under unlimited defaults, are untouched.
        let other = key(
            "other",
            Some(Rate {
                per_s: 5.0,
                burst: 10,
            }),
        );
        assert!(limiters.check(&other, None).is_ok());
        assert!((0..1000).all(|_| limiters.check(&key("free", None), None).is_ok()));
    }

    #[test]
    fn a_key_limit_fills_its_gaps_from_the_role_default() {
        let default = Some(Rate {
            per_s: 100.0,
            burst: 200,
        });
        let only_burst = KeyLimit {
            per_s: None,
            burst: Some(3),
        };
        assert_eq!(
            only_burst.over(default),
            Some(Rate {
                per_s: 100.0,
                burst: 3
            })
        );
        let only_rate = KeyLimit {
            per_s: Some(2.5),
            burst: None,
        };
        assert_eq!(
            only_rate.over(default),
            Some(Rate {
                per_s: 2.5,
                burst: 200
            })
        );
        assert_eq!(
            only_rate.over(None),
            Some(Rate {
                per_s: 2.5,
                burst: 3
            })
        );
        assert_eq!(
            only_burst.over(None),
            None,
            "a burst without any rate is unlimited"
        );
    }

    #[test]
    fn session_tokens_are_limited_per_address() {
        let limiters = RateLimiters::new(RateDefaults {
            session: Some(Rate {
                per_s: 1.0,
                burst: 3,
            }),
            ..Default::default()
        });
        let token = Principal::Session("s".into());
        let (a, b) = ("10.0.0.1".parse().ok(), "10.0.0.2".parse().ok());
        assert_eq!(
            (0..10)
                .filter(|_| limiters.check(&token, a).is_ok())
                .count(),
            3
        );
        assert_eq!(
            (0..10)
                .filter(|_| limiters.check(&token, b).is_ok())
                .count(),
            3
        );
    }
}
