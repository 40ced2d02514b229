//! The console's overview: message counts by day, and by verdict, category and route.

use std::collections::BTreeMap;

use serde::Serialize;

use super::MessageSummary;

const DAY: u64 = 86_400;

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct OverviewDay {
    /// The day's start (seconds since the epoch, UTC midnight).
    pub day: u64,
    pub accept: usize,
    pub quarantine: usize,
    pub reject: usize,
}

impl OverviewDay {
    pub fn total(&self) -> usize {
        self.accept + self.quarantine + self.reject
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Overview {
    /// One entry per day, oldest first, days without mail included.
    pub days: Vec<OverviewDay>,
    pub by_verdict: BTreeMap<String, usize>,
    pub by_category: BTreeMap<String, usize>,
    pub by_route: BTreeMap<String, usize>,
    pub counted: usize,
    /// The count stopped at its cap: older messages of the period are not counted.
    pub truncated: bool,
}

impl Overview {
    /// An empty overview of the `days` days up to the one holding `now`.
    pub fn new(now: u64, days: u64) -> Overview {
        let today = now - now % DAY;
        let days = days.max(1);
        Overview {
            days: (0..days)
                .map(|i| OverviewDay {
                    day: today - (days - 1 - i) * DAY,
                    ..OverviewDay::default()
                })
                .collect(),
            ..Overview::default()
        }
    }

    /// The first second the overview counts.
    pub fn since(&self) -> u64 {
        self.days.first().map_or(0, |d| d.day)
    }

    pub fn add(&mut self, row: &MessageSummary) {
        let Some(day) = self
            .days
            .iter_mut()
            .find(|d| row.at >= d.day && row.at < d.day + DAY)
        else {
            return;
        };
        let verdict = row.verdict.as_str();
        match verdict {
            "accept" => day.accept += 1,
            "reject" => day.reject += 1,
            _ => day.quarantine += 1,
        }
        self.counted += 1;
        *self.by_verdict.entry(verdict.to_string()).or_default() += 1;
        let category = row.category.as_deref().unwrap_or("(none)");
        *self.by_category.entry(category.to_string()).or_default() += 1;
        if row.routes.is_empty() {
            *self.by_route.entry("(none)".into()).or_default() += 1;
        }
        for route in &row.routes {
            *self.by_route.entry(route.clone()).or_default() += 1;
        }
    }

    /// The largest day's total, for scaling a chart (at least 1).
    pub fn peak(&self) -> usize {
        self.days
            .iter()
            .map(OverviewDay::total)
            .max()
            .unwrap_or(0)
            .max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{RawRef, Verdict};

    #[test]
    fn counts_fall_on_their_day() {
        let now = 10 * DAY + 3600;
        let mut o = Overview::new(now, 3);
        assert_eq!(o.since(), 8 * DAY);
        let row = |at, verdict, routes: &[&str]| MessageSummary {
            id: format!("m{at}"),
            at,
            date: None,
            sender: None,
            recipients: vec![],
            subject: String::new(),
            message_id: None,
            verdict,
            score: 0.0,
            reasons: vec![],
            category: Some("billing".into()),
            routes: routes.iter().map(|r| r.to_string()).collect(),
            addresses: vec![],
            stored: vec![],
            quarantined: None,
            raw: RawRef::default(),
            reference: None,
            conversation: None,
            follows: None,
            priority: None,
            category_rule: None,
            priority_rule: None,
            route_rules: vec![],
            draft: None,
        };
        o.add(&row(8 * DAY + 5, Verdict::Accept, &["forward", "store"]));
        o.add(&row(10 * DAY, Verdict::Quarantine, &["quarantine"]));
        o.add(&row(10 * DAY + 7, Verdict::Accept, &[]));
        o.add(&row(2 * DAY, Verdict::Accept, &[]));
        assert_eq!(o.counted, 3, "the day outside the period is not counted");
        assert_eq!(o.days[0].accept, 1);
        assert_eq!(o.days[1].total(), 0);
        assert_eq!((o.days[2].accept, o.days[2].quarantine), (1, 1));
        assert_eq!(o.by_route["forward"], 1);
        assert_eq!(o.by_route["(none)"], 1);
        assert_eq!(o.by_category["billing"], 3);
        assert_eq!(o.peak(), 2);
    }
}
