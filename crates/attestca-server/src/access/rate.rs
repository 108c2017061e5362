//! Per-requester request budgets: a token bucket per rig and per device certificate, so that
//! one misbehaving client cannot take the CA's capacity from the others.
//!
//! Buckets live in memory per instance (a budget is a local fairness guard, not a global
//! quota) and are forgotten once full again, so memory follows the active clients, not the
//! fleet.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use super::{AuthMethod, Requester};
use crate::config::LimitsConfig;

/// A request over its requester's budget, and when to come back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OverBudget {
    /// `rig_rate` or `device_rate` (the metrics label and reason-code suffix).
    pub limit: &'static str,
    pub retry_after: Duration,
}

/// The budgets of rigs and of devices.
pub struct RequestBudgets {
    rigs: Option<DefaultKeyedRateLimiter<String>>,
    devices: Option<DefaultKeyedRateLimiter<String>>,
    clock: DefaultClock,
}

fn limiter(per_minute: u32, burst: u32) -> Option<DefaultKeyedRateLimiter<String>> {
    let rate = NonZeroU32::new(per_minute)?;
    let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
    Some(DefaultKeyedRateLimiter::keyed(
        Quota::per_minute(rate).allow_burst(burst),
    ))
}

impl RequestBudgets {
    pub fn from_config(config: &LimitsConfig) -> Self {
        Self {
            rigs: limiter(config.rig_requests_per_minute, config.rig_burst),
            devices: limiter(config.device_requests_per_minute, config.device_burst),
            clock: DefaultClock::default(),
        }
    }

    /// No budgets at all.
    pub fn unlimited() -> Self {
        Self {
            rigs: None,
            devices: None,
            clock: DefaultClock::default(),
        }
    }

    /// Spends one request of `requester`'s budget.
    pub fn spend(&self, requester: &Requester) -> Result<(), OverBudget> {
        let (limiter, limit) = match requester.method {
            AuthMethod::Device => (&self.devices, "device_rate"),
            AuthMethod::ClientCertificate | AuthMethod::Basic => (&self.rigs, "rig_rate"),
        };
        let Some(limiter) = limiter else {
            return Ok(());
        };
        limiter.check_key(&requester.id()).map_err(|not_until| {
            crate::metrics::METRICS
                .overload_refusals
                .with_label_values(&[limit])
                .inc();
            OverBudget {
                limit,
                retry_after: not_until.wait_time_from(self.clock.now()),
            }
        })
    }

    /// Forgets buckets that are full again (housekeeping).
    pub fn purge(&self) {
        for limiter in [&self.rigs, &self.devices].into_iter().flatten() {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rig(name: &str) -> Requester {
        Requester {
            name: name.into(),
            method: AuthMethod::ClientCertificate,
        }
    }

    #[test]
    fn a_rig_over_its_burst_waits_and_others_do_not() {
        let budgets = RequestBudgets::from_config(&LimitsConfig {
            rig_requests_per_minute: 60,
            rig_burst: 3,
            device_requests_per_minute: 0,
            device_burst: 0,
        });
        for _ in 0..3 {
            assert_eq!(budgets.spend(&rig("rig-a")), Ok(()));
        }
        let over = budgets.spend(&rig("rig-a")).expect_err("over budget");
        assert_eq!(over.limit, "rig_rate");
        assert!(over.retry_after > Duration::ZERO && over.retry_after <= Duration::from_secs(1));
        assert_eq!(budgets.spend(&rig("rig-b")), Ok(()), "budgets are per rig");
        let device = Requester {
            name: "0a".into(),
            method: AuthMethod::Device,
        };
        for _ in 0..100 {
            assert_eq!(budgets.spend(&device), Ok(()), "device budget is off");
        }
    }
}
