//! An experiment's results from its counts: rates with 95% Wilson intervals, every
//! variant tested against the control, the control against the holdout on conversions.
use serde::Serialize;
use utoipa::ToSchema;

use super::stats::{
    CLICK_THROUGH, CONVERSION_RATE, Comparison, Metric, OPEN_RATE, Rate, compare, wilson,
};

/// The counts of one group: subjects exposed, and of them those who opened, clicked and
/// converted (each subject at most once per metric).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    pub exposures: u64,
    pub opens: u64,
    pub clicks: u64,
    pub conversions: u64,
}

/// A variant against the control, metric by metric.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct AgainstControl {
    pub open_rate: Comparison,
    pub click_rate: Comparison,
    pub conversion_rate: Comparison,
}

#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct VariantResult {
    pub variant: String,
    pub control: bool,
    pub exposures: u64,
    pub opens: u64,
    pub clicks: u64,
    pub conversions: u64,
    /// opens / exposures, with its 95% Wilson score interval (`null` before any exposure).
    pub open_rate: Option<Rate>,
    /// Click-through: clicks / exposures.
    pub click_rate: Option<Rate>,
    /// conversions / exposures.
    pub conversion_rate: Option<Rate>,
    /// The pooled two-proportion z-test against the control (absent for the control).
    pub against_control: Option<AgainstControl>,
}

/// The holdout received nothing: only its conversions (any order after exposure) count.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct HoldoutResult {
    pub exposures: u64,
    pub conversions: u64,
    pub conversion_rate: Option<Rate>,
    /// The control's conversion rate against the holdout's: what sending at all changes.
    pub control_against_holdout: Comparison,
}

#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct ExperimentResults {
    pub experiment: String,
    pub control: String,
    /// The campaigns that ran the experiment; outcomes count when they name one of them.
    pub campaigns: Vec<String>,
    pub variants: Vec<VariantResult>,
    pub holdout: Option<HoldoutResult>,
}

fn versus(metric: Metric, g: &Group, c: &Group, pick: fn(&Group) -> u64) -> Comparison {
    compare(
        metric,
        &g.name,
        &c.name,
        (pick(g), g.exposures),
        (pick(c), c.exposures),
    )
}

/// The results of `groups` (the variants, in order; `control` names one) and the holdout.
pub fn summarise(
    experiment: &str,
    control: &str,
    campaigns: Vec<String>,
    groups: &[Group],
    holdout: Option<&Group>,
) -> ExperimentResults {
    let empty = Group {
        name: control.to_owned(),
        exposures: 0,
        opens: 0,
        clicks: 0,
        conversions: 0,
    };
    let c = groups.iter().find(|g| g.name == control).unwrap_or(&empty);
    let variants = groups
        .iter()
        .map(|g| {
            let is_control = g.name == control;
            VariantResult {
                variant: g.name.clone(),
                control: is_control,
                exposures: g.exposures,
                opens: g.opens,
                clicks: g.clicks,
                conversions: g.conversions,
                open_rate: wilson(g.opens, g.exposures),
                click_rate: wilson(g.clicks, g.exposures),
                conversion_rate: wilson(g.conversions, g.exposures),
                against_control: (!is_control).then(|| AgainstControl {
                    open_rate: versus(OPEN_RATE, g, c, |g| g.opens),
                    click_rate: versus(CLICK_THROUGH, g, c, |g| g.clicks),
                    conversion_rate: versus(CONVERSION_RATE, g, c, |g| g.conversions),
                }),
            }
        })
        .collect();
    let holdout = holdout.map(|h| {
        let named = Group {
            name: "the holdout".into(),
            ..h.clone()
        };
        HoldoutResult {
            exposures: h.exposures,
            conversions: h.conversions,
            conversion_rate: wilson(h.conversions, h.exposures),
            control_against_holdout: versus(CONVERSION_RATE, c, &named, |g| g.conversions),
        }
    });
    ExperimentResults {
        experiment: experiment.to_owned(),
        control: control.to_owned(),
        campaigns,
        variants,
        holdout,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(name: &str, exposures: u64, opens: u64, clicks: u64, conversions: u64) -> Group {
        Group {
            name: name.into(),
            exposures,
            opens,
            clicks,
            conversions,
        }
    }

    #[test]
    fn each_variant_is_tested_against_the_control_and_the_control_against_the_holdout() {
        let groups = [g("A", 1000, 200, 30, 30), g("B", 1000, 250, 52, 31)];
        let h = g("holdout", 1000, 0, 0, 5);
        let r = summarise("e1", "A", vec!["c1".into()], &groups, Some(&h));
        assert!(r.variants[0].control && r.variants[0].against_control.is_none());
        let b = r.variants[1].against_control.as_ref().unwrap();
        // Values as in stats' tests (Python, math.erfc).
        assert_eq!(
            b.open_rate.verdict,
            "B's open rate is higher than A's (p = 0.007)"
        );
        assert_eq!(
            b.click_rate.verdict,
            "B's click-through is higher than A's (p = 0.013)"
        );
        assert_eq!(b.conversion_rate.verdict, "no significant difference yet");
        let rate = r.variants[1].click_rate.unwrap();
        assert!((rate.low - 0.03987303628377742).abs() < 1e-9);
        let holdout = r.holdout.unwrap();
        assert_eq!(holdout.conversions, 5);
        // 30 of 1,000 against 5 of 1,000: z = 4.2632, p = 2.0e-5 (Python, math.erfc).
        assert_eq!(
            holdout.control_against_holdout.verdict,
            "A's conversion rate is higher than the holdout's (p < 0.001)"
        );
        assert!((holdout.control_against_holdout.z.unwrap() - 4.263239263154681).abs() < 1e-9);
        // A holdout of 50 is too small to tell: 31 conversions in 1,050 is a pooled rate
        // of 0.0295, and 10 expected conversions take 339 messages a group.
        let small = g("holdout", 50, 0, 0, 1);
        let r = summarise("e1", "A", vec![], &groups, Some(&small));
        assert_eq!(
            r.holdout.unwrap().control_against_holdout.verdict,
            "too few messages so far to tell: need at least 339 per variant"
        );
    }
}
