//! A small bounded map with expiry, keyed by SHA-256 of a token, so steady traffic does
//! not pay argon2 on every request. The bound on an entry's age is the bound on how long
//! a revoked key keeps working.
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct TtlCache<V: Clone> {
    inner: Mutex<HashMap<[u8; 32], (Instant, V)>>,
    ttl: Duration,
    capacity: usize,
}

impl<V: Clone> TtlCache<V> {
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            inner: Mutex::new(HashMap::new()),
            ttl,
            capacity: capacity.max(1),
        }
    }

    pub fn get(&self, key: &[u8; 32]) -> Option<V> {
        let mut map = self.inner.lock().ok()?;
        match map.get(key) {
            Some((expires, v)) if *expires > Instant::now() => Some(v.clone()),
            Some(_) => {
                map.remove(key);
                None
            }
            None => None,
        }
    }

    /// Inserts with the cache's ttl, or a shorter one (a token that expires sooner).
    pub fn insert(&self, key: [u8; 32], value: V, at_most: Option<Duration>) {
        if self.ttl.is_zero() {
            return;
        }
        let ttl = at_most.map_or(self.ttl, |d| d.min(self.ttl));
        let Ok(mut map) = self.inner.lock() else {
            return;
        };
        if map.len() >= self.capacity {
            let now = Instant::now();
            map.retain(|_, (expires, _)| *expires > now);
            if map.len() >= self.capacity {
                map.clear();
            }
        }
        map.insert(key, (Instant::now() + ttl, value));
    }

    pub fn clear(&self) {
        if let Ok(mut map) = self.inner.lock() {
            map.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_and_the_size_stays_bounded() {
        let c = TtlCache::new(Duration::from_millis(30), 2);
        c.insert([1; 32], 1, None);
        assert_eq!(c.get(&[1; 32]), Some(1));
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(c.get(&[1; 32]), None);
        for i in 0..10u8 {
            c.insert([i; 32], i, None);
        }
        assert!(c.inner.lock().unwrap().len() <= 2);
    }
}
