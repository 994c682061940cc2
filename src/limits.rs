//! Abuse limits on the expensive routes: a per-key rate limit for each kind of expensive
//! work (GCRA, from `governor`), and a bound on streamed responses (audience exports and
//! campaign messages) in flight, on the node and per key.
//!
//! Guarantees: a key over its rate is refused before any work is done, with the time
//! until its next request would be allowed; a stream holds its permit exactly as long as
//! its response body lives, so a permit comes back when the stream ends *or* when the
//! client goes away mid-stream (the server drops the body). Everything here is in memory
//! per node: with several nodes each enforces its own limits.
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::Settings;

/// The kinds of expensive work, each limited per key on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expensive {
    /// `GET /v1/segments/{id}/export`, `GET /v1/campaigns/{id}/messages`.
    Export,
    /// `POST /v1/templates/{id}/render`.
    Render,
    /// `POST /oauth/token`.
    Token,
    /// `POST /v1/dsar`.
    Dsar,
}

impl Expensive {
    pub const ALL: [Expensive; 4] = [
        Expensive::Export,
        Expensive::Render,
        Expensive::Token,
        Expensive::Dsar,
    ];

    /// How a refusal names it: "this key may start 30 exports a minute".
    pub fn noun(self) -> &'static str {
        match self {
            Expensive::Export => "exports or campaign message streams",
            Expensive::Render => "template renders",
            Expensive::Token => "access tokens",
            Expensive::Dsar => "data-subject requests",
        }
    }

    fn index(self) -> usize {
        match self {
            Expensive::Export => 0,
            Expensive::Render => 1,
            Expensive::Token => 2,
            Expensive::Dsar => 3,
        }
    }

    fn per_minute(self, settings: &Settings) -> u32 {
        match self {
            Expensive::Export => settings.rate_limit_exports_per_minute,
            Expensive::Render => settings.rate_limit_renders_per_minute,
            Expensive::Token => settings.rate_limit_tokens_per_minute,
            Expensive::Dsar => settings.rate_limit_dsar_per_minute,
        }
    }
}

/// A key over its rate for one kind of work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimited {
    pub kind: Expensive,
    pub per_minute: u32,
    /// Whole seconds until a request would be allowed again (at least 1).
    pub retry_after_secs: u64,
}

/// A stream refused because too many are in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamRefused {
    /// This key already has `limit` streams open.
    Key { limit: usize },
    /// The node already has `limit` streams open.
    Node { limit: usize },
}

struct Rate {
    per_minute: u32,
    limiter: DefaultKeyedRateLimiter<String>,
}

pub struct Limits {
    /// By `Expensive::index`; `None`: unlimited.
    rates: [Option<Rate>; 4],
    node: Arc<Semaphore>,
    node_limit: usize,
    key_limit: usize,
    per_key: Arc<Mutex<HashMap<String, usize>>>,
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits")
            .field("node_limit", &self.node_limit)
            .field("key_limit", &self.key_limit)
            .field("streams_in_flight", &self.streams_in_flight())
            .finish_non_exhaustive()
    }
}

impl Limits {
    pub fn new(settings: &Settings) -> Self {
        let rates = Expensive::ALL.map(|kind| {
            let per_minute = kind.per_minute(settings);
            NonZeroU32::new(per_minute).map(|n| Rate {
                per_minute,
                // `n` a minute, and up to `n` at once after a quiet minute.
                limiter: RateLimiter::keyed(Quota::per_minute(n)),
            })
        });
        let node_limit = settings.max_concurrent_streams.max(1);
        Self {
            rates,
            node: Arc::new(Semaphore::new(node_limit)),
            node_limit,
            key_limit: settings.max_concurrent_streams_per_key.max(1),
            per_key: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Counts one request of `kind` against `key_id`, or refuses it.
    pub fn check(&self, kind: Expensive, key_id: &str) -> Result<(), RateLimited> {
        let Some(rate) = &self.rates[kind.index()] else {
            return Ok(());
        };
        // The limiter's keys are owned strings: one short allocation a check (measured in
        // BENCHMARKS.md, "Abuse limits").
        let key = key_id.to_owned();
        rate.limiter.check_key(&key).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            RateLimited {
                kind,
                per_minute: rate.per_minute,
                retry_after_secs: (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1),
            }
        })
    }

    /// A permit for one streamed response, held for as long as the response body lives.
    pub fn start_stream(&self, key_id: &str) -> Result<StreamPermit, StreamRefused> {
        let node = Arc::clone(&self.node)
            .try_acquire_owned()
            .map_err(|_| StreamRefused::Node {
                limit: self.node_limit,
            })?;
        let mut per_key = self.per_key.lock().unwrap_or_else(|p| p.into_inner());
        let open = per_key.entry(key_id.to_owned()).or_insert(0);
        if *open >= self.key_limit {
            return Err(StreamRefused::Key {
                limit: self.key_limit,
            });
        }
        *open += 1;
        metrics::gauge!("consentry_streams_in_flight").increment(1.0);
        Ok(StreamPermit {
            _node: node,
            key_id: key_id.to_owned(),
            per_key: Arc::clone(&self.per_key),
        })
    }

    /// Streams in flight on this node now.
    pub fn streams_in_flight(&self) -> usize {
        self.node_limit - self.node.available_permits()
    }

    /// Forgets keys whose rate state is back to fresh (bounds memory; run periodically).
    pub fn forget_idle_keys(&self) {
        for rate in self.rates.iter().flatten() {
            rate.limiter.retain_recent();
            rate.limiter.shrink_to_fit();
        }
    }
}

/// One stream's place; dropping it gives the place back.
pub struct StreamPermit {
    _node: OwnedSemaphorePermit,
    key_id: String,
    per_key: Arc<Mutex<HashMap<String, usize>>>,
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        let mut per_key = self.per_key.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(open) = per_key.get_mut(&self.key_id) {
            *open = open.saturating_sub(1);
            if *open == 0 {
                per_key.remove(&self.key_id);
            }
        }
        metrics::gauge!("consentry_streams_in_flight").decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_minute: u32, node: usize, key: usize) -> Limits {
        Limits::new(&Settings {
            rate_limit_exports_per_minute: per_minute,
            rate_limit_renders_per_minute: 0,
            max_concurrent_streams: node,
            max_concurrent_streams_per_key: key,
            ..Settings::default()
        })
    }

    #[test]
    fn a_key_over_its_rate_is_refused_with_a_wait_and_other_keys_and_kinds_are_not() {
        let l = limits(3, 4, 2);
        for _ in 0..3 {
            assert!(l.check(Expensive::Export, "k1").is_ok());
        }
        let refused = l.check(Expensive::Export, "k1").unwrap_err();
        assert_eq!(refused.per_minute, 3);
        // One request comes back every 20 s.
        assert!((1..=20).contains(&refused.retry_after_secs), "{refused:?}");
        assert!(l.check(Expensive::Export, "k2").is_ok());
        assert!(l.check(Expensive::Token, "k1").is_ok());
        for _ in 0..1000 {
            assert!(l.check(Expensive::Render, "k1").is_ok(), "0 is unlimited");
        }
    }

    #[test]
    fn streams_are_bounded_per_key_and_per_node_and_a_dropped_permit_comes_back() {
        let l = limits(0, 3, 2);
        let a1 = l.start_stream("a").unwrap();
        let _a2 = l.start_stream("a").unwrap();
        assert_eq!(
            l.start_stream("a").err(),
            Some(StreamRefused::Key { limit: 2 })
        );
        let _b1 = l.start_stream("b").unwrap();
        assert_eq!(
            l.start_stream("b").err(),
            Some(StreamRefused::Node { limit: 3 })
        );
        assert_eq!(l.streams_in_flight(), 3);
        drop(a1);
        assert_eq!(l.streams_in_flight(), 2);
        let _b2 = l.start_stream("b").unwrap();
        assert_eq!(
            l.start_stream("a").err(),
            Some(StreamRefused::Node { limit: 3 })
        );
    }
}
