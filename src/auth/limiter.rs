//! Slows down clients that keep failing to authenticate: past N failures from one address
//! in a minute, further attempts get 429 until the minute is over.
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(60);
const MAX_TRACKED: usize = 100_000;

#[derive(Debug)]
pub struct FailureLimiter {
    per_window: u32,
    windows: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl FailureLimiter {
    pub fn new(per_window: u32) -> Self {
        Self {
            per_window,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// `Err(seconds to wait)` if this address is over its budget.
    pub fn check(&self, ip: IpAddr) -> Result<(), u64> {
        let Ok(map) = self.windows.lock() else {
            return Ok(());
        };
        match map.get(&ip) {
            Some((start, count)) if start.elapsed() < WINDOW && *count >= self.per_window => {
                Err(WINDOW.saturating_sub(start.elapsed()).as_secs().max(1))
            }
            _ => Ok(()),
        }
    }

    pub fn record_failure(&self, ip: IpAddr) {
        let Ok(mut map) = self.windows.lock() else {
            return;
        };
        if map.len() >= MAX_TRACKED {
            map.retain(|_, (start, _)| start.elapsed() < WINDOW);
            if map.len() >= MAX_TRACKED {
                map.clear();
            }
        }
        let entry = map.entry(ip).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= WINDOW {
            *entry = (Instant::now(), 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_over_budget_is_refused_and_others_are_not() {
        let l = FailureLimiter::new(2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(l.check(a).is_ok());
        l.record_failure(a);
        l.record_failure(a);
        assert!(l.check(a).is_err());
        assert!(l.check(b).is_ok());
    }
}
