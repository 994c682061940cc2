//! The statistics of an experiment's results: a proportion with its 95% Wilson score
//! interval, the pooled two-proportion z-test, and a verdict in plain words that says
//! when the sample is still too small for the normal approximation (fewer than 100
//! messages in a group, or fewer than 10 expected successes or failures).
//! The normal distribution is `statrs`'s.
use serde::Serialize;
use statrs::distribution::{ContinuousCDF, Normal};
use utoipa::ToSchema;

/// The 0.975 quantile of the standard normal distribution.
pub const Z95: f64 = 1.959_963_984_540_054;
/// Below this a result is not called significant.
pub const ALPHA: f64 = 0.05;
/// The fewest messages a group needs before anything is concluded.
pub const MIN_EXPOSURES: u64 = 100;
/// The fewest expected successes and failures a group needs (n·p and n·(1−p)).
pub const MIN_EXPECTED: f64 = 10.0;

/// A rate with its 95% Wilson score interval.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, ToSchema)]
pub struct Rate {
    pub rate: f64,
    pub low: f64,
    pub high: f64,
}

/// `x` successes in `n` trials; `None` when `n` is 0.
pub fn wilson(x: u64, n: u64) -> Option<Rate> {
    if n == 0 {
        return None;
    }
    let n = n as f64;
    let p = x as f64 / n;
    let z2 = Z95 * Z95;
    let d = 1.0 + z2 / n;
    let centre = (p + z2 / (2.0 * n)) / d;
    let half = Z95 / d * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    Some(Rate {
        rate: p,
        low: (centre - half).max(0.0),
        high: (centre + half).min(1.0),
    })
}

/// The pooled two-proportion z-test of group 1 against group 2.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, ToSchema)]
pub struct ZTest {
    /// Positive when group 1's rate is the higher.
    pub z: f64,
    /// Two-sided.
    pub p_value: f64,
}

/// `None` when either group is empty or the pooled rate is 0 or 1 (no variance).
pub fn z_test(x1: u64, n1: u64, x2: u64, n2: u64) -> Option<ZTest> {
    if n1 == 0 || n2 == 0 {
        return None;
    }
    let (a, b) = (n1 as f64, n2 as f64);
    let pooled = (x1 + x2) as f64 / (a + b);
    let se = (pooled * (1.0 - pooled) * (1.0 / a + 1.0 / b)).sqrt();
    if se == 0.0 || !se.is_finite() {
        return None;
    }
    let z = (x1 as f64 / a - x2 as f64 / b) / se;
    let normal = Normal::new(0.0, 1.0).ok()?;
    let p_value = (2.0 * (1.0 - normal.cdf(z.abs()))).clamp(0.0, 1.0);
    Some(ZTest { z, p_value })
}

/// The messages each group needs before the test can be trusted, when a group has fewer
/// (`Some(n)`); `None` when both have enough. With no success at all in either group
/// nothing can be estimated, so the answer is the floor of 100 or, past it, `Some(0)`.
pub fn needed(x1: u64, n1: u64, x2: u64, n2: u64) -> Option<u64> {
    let n = n1 + n2;
    let fewest = n1.min(n2);
    let pooled = if n == 0 {
        0.0
    } else {
        (x1 + x2) as f64 / n as f64
    };
    let smaller = pooled.min(1.0 - pooled);
    if smaller <= 0.0 {
        return if fewest < MIN_EXPOSURES {
            Some(MIN_EXPOSURES)
        } else if pooled == 0.0 {
            Some(0)
        } else {
            None
        };
    }
    let need = ((MIN_EXPECTED / smaller).ceil() as u64).max(MIN_EXPOSURES);
    (fewest < need).then_some(need)
}

/// What a metric is called in a verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Metric {
    /// "click-through"
    pub rate: &'static str,
    /// "clicks"
    pub events: &'static str,
}

pub const OPEN_RATE: Metric = Metric {
    rate: "open rate",
    events: "opens",
};
pub const CLICK_THROUGH: Metric = Metric {
    rate: "click-through",
    events: "clicks",
};
pub const CONVERSION_RATE: Metric = Metric {
    rate: "conversion rate",
    events: "conversions",
};

fn p_text(p: f64) -> String {
    if p < 0.001 {
        "p < 0.001".into()
    } else {
        format!("p = {p:.3}")
    }
}

/// The comparison of `name`'s rate (`x1` of `n1`) with `control`'s (`x2` of `n2`).
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct Comparison {
    /// `None` when there is no variance to test (no event, or all, in both groups).
    pub z: Option<f64>,
    pub p_value: Option<f64>,
    /// In plain words: "B's click-through is higher than A's (p = 0.003)", "no
    /// significant difference yet", or "too few messages so far to tell: ...".
    pub verdict: String,
}

pub fn compare(
    metric: Metric,
    name: &str,
    control: &str,
    (x1, n1): (u64, u64),
    (x2, n2): (u64, u64),
) -> Comparison {
    let test = z_test(x1, n1, x2, n2);
    let verdict = match (needed(x1, n1, x2, n2), test) {
        (Some(0), _) => format!(
            "too few messages so far to tell: no {} in either group yet",
            metric.events
        ),
        (Some(n), _) => {
            format!("too few messages so far to tell: need at least {n} per variant")
        }
        (None, Some(t)) if t.p_value < ALPHA => format!(
            "{name}'s {} is {} than {control}'s ({})",
            metric.rate,
            if t.z > 0.0 { "higher" } else { "lower" },
            p_text(t.p_value)
        ),
        (None, _) => "no significant difference yet".into(),
    };
    Comparison {
        z: test.map(|t| t.z),
        p_value: test.map(|t| t.p_value),
        verdict,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-9, "{a} != {b}");
    }

    // Expected values computed independently in Python 3.11 with the standard library
    // only (no SciPy here): Wilson as (p + z²/2n)/(1 + z²/n) ± z/(1 + z²/n)·√(p(1−p)/n +
    // z²/4n²) with z = 1.959963984540054, the two-sided p-value as math.erfc(|z|/√2).
    // 0 of 50 → [0, 0.0713] agrees with published tables of the Wilson interval.
    #[test]
    fn wilson_intervals_match_independently_computed_values() {
        for (x, n, p, low, high) in [
            (200, 1000, 0.2, 0.1763770904431985, 0.22591896464813466),
            (250, 1000, 0.25, 0.2241530989836914, 0.27776028025908617),
            (30, 1000, 0.03, 0.0210937388288347, 0.042503414147587126),
            (52, 1000, 0.052, 0.03987303628377742, 0.06755573931927998),
            (0, 50, 0.0, 0.0, 0.07134759913335872),
            (50, 50, 1.0, 0.9286524008666414, 1.0),
            (
                7,
                120,
                0.058333333333333334,
                0.028541010000220295,
                0.11552592033630113,
            ),
        ] {
            let r = wilson(x, n).unwrap();
            close(r.rate, p);
            close(r.low, low);
            close(r.high, high);
        }
        assert_eq!(wilson(0, 0), None);
    }

    #[test]
    fn z_tests_match_independently_computed_values() {
        for ((x1, n1, x2, n2), z, p) in [
            (
                (250, 1000, 200, 1000),
                2.677397763008329,
                0.007419649261025693,
            ),
            (
                (52, 1000, 30, 1000),
                2.4808839590642435,
                0.013105703045644698,
            ),
            (
                (210, 1000, 200, 1000),
                0.5538912535736553,
                0.5796532713054185,
            ),
            ((110, 500, 100, 500), 0.7763844116618315, 0.4375220459061691),
        ] {
            let t = z_test(x1, n1, x2, n2).unwrap();
            close(t.z, z);
            assert!((t.p_value - p).abs() < 1e-7, "{} != {p}", t.p_value);
            let back = z_test(x2, n2, x1, n1).unwrap();
            close(back.z, -z);
        }
        assert_eq!(z_test(0, 100, 0, 100), None);
        assert_eq!(z_test(1, 0, 0, 100), None);
    }

    #[test]
    fn verdicts_say_which_is_higher_or_that_it_is_too_soon() {
        let v = |x1, n1, x2, n2| compare(CLICK_THROUGH, "B", "A", (x1, n1), (x2, n2)).verdict;
        assert_eq!(
            v(250, 1000, 200, 1000),
            "B's click-through is higher than A's (p = 0.007)"
        );
        assert_eq!(
            compare(OPEN_RATE, "A", "B", (200, 1000), (250, 1000)).verdict,
            "A's open rate is lower than B's (p = 0.007)"
        );
        assert_eq!(
            v(600, 1000, 200, 1000),
            "B's click-through is higher than A's (p < 0.001)"
        );
        assert_eq!(v(210, 1000, 200, 1000), "no significant difference yet");
        // Fewer than 100 messages in a group.
        assert_eq!(
            v(30, 60, 10, 60),
            "too few messages so far to tell: need at least 100 per variant"
        );
        // 82 clicks in 2,000: pooled 0.041, so 10 / 0.041 = 244 messages a group.
        assert_eq!(
            v(52, 200, 30, 1800),
            "too few messages so far to tell: need at least 244 per variant"
        );
        assert_eq!(
            v(0, 500, 0, 500),
            "too few messages so far to tell: no clicks in either group yet"
        );
        assert_eq!(
            v(0, 50, 0, 50),
            "too few messages so far to tell: need at least 100 per variant"
        );
        let c = compare(CONVERSION_RATE, "B", "A", (52, 1000), (30, 1000));
        assert_eq!(
            c.verdict,
            "B's conversion rate is higher than A's (p = 0.013)"
        );
        close(c.z.unwrap(), 2.4808839590642435);
    }
}
