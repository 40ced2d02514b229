//! What `mailroom run` prints: one JSON object or table row per message, and a summary.

use std::collections::BTreeMap;
use std::time::Duration;

use mailroom_core::model::RespondResult;
use mailroom_core::report::Report;

fn cut(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!(
            "…{}",
            s.chars()
                .rev()
                .take(n - 1)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<String>()
        )
    }
}

pub const TABLE_HEADER: &str = "SOURCE                                    VERDICT     SCORE  CATEGORY      PRIORITY  ROUTES                          AUTO-REPLY";

pub fn table_row(r: &Report) -> String {
    // A message the filter decided is a row even when its parse failed (it was quarantined).
    let Some(d) = r.decided.as_ref().filter(|d| d.verdict.is_some()) else {
        return format!(
            "{:<41} ERROR       {}",
            cut(&r.source, 41),
            r.error.as_deref().unwrap_or("-")
        );
    };
    let routes = d
        .routes
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" ");
    let reply = match &d.auto_reply {
        Some(RespondResult::Sent { to, .. }) => format!("sent to {to}"),
        Some(RespondResult::Unconfirmed { to, .. }) => format!("unconfirmed to {to}"),
        Some(RespondResult::Suppressed { reason }) => format!("no: {reason}"),
        None => "-".into(),
    };
    format!(
        "{:<41} {:<11} {:>5.1}  {:<13} {:<9} {:<31} {}",
        cut(&r.source, 41),
        d.verdict.map_or("-", |v| v.as_str()),
        d.spam_score.unwrap_or(0.0),
        cut(d.category.as_deref().unwrap_or("-"), 13),
        d.priority.map_or("-", |p| p.as_str()),
        cut(&routes, 31),
        reply
    )
}

/// Counts by verdict, category, route action and auto-reply outcome (the figures the
/// functions log as metrics), plus throughput.
#[derive(Default, serde::Serialize)]
pub struct Summary {
    pub messages: usize,
    pub failed: usize,
    pub bytes: u64,
    verdicts: BTreeMap<String, usize>,
    categories: BTreeMap<String, usize>,
    #[serde(rename = "actions")]
    routes: BTreeMap<String, usize>,
    replies: BTreeMap<String, usize>,
    /// Suppressed auto-replies by reason (the text before its first colon).
    suppressed: BTreeMap<String, usize>,
}

impl Summary {
    pub fn add(&mut self, r: &Report) {
        self.messages += 1;
        let Some(d) = &r.decided else { return };
        let Some(verdict) = d.verdict else { return };
        *self.verdicts.entry(verdict.as_str().into()).or_default() += 1;
        if let Some(c) = &d.category {
            *self.categories.entry(c.clone()).or_default() += 1;
        }
        for a in &d.routes {
            *self.routes.entry(a.kind().into()).or_default() += 1;
        }
        let reply = match &d.auto_reply {
            Some(RespondResult::Sent { .. }) => "sent",
            Some(RespondResult::Unconfirmed { .. }) => "unconfirmed",
            Some(RespondResult::Suppressed { reason }) => {
                let class = reason.split(':').next().unwrap_or(reason).trim();
                *self.suppressed.entry(class.into()).or_default() += 1;
                "suppressed"
            }
            None => "none",
        };
        *self.replies.entry(reply.into()).or_default() += 1;
    }

    /// The figures as JSON, for `--metrics FILE`.
    pub fn json(&self, elapsed: Duration) -> serde_json::Value {
        let secs = elapsed.as_secs_f64().max(1e-9);
        let mut v = serde_json::to_value(self).expect("counts serialise");
        v["seconds"] = serde_json::json!(secs);
        v["messages_per_second"] = serde_json::json!(self.messages as f64 / secs);
        v
    }

    pub fn render(&self, elapsed: Duration) -> String {
        let fmt = |m: &BTreeMap<String, usize>| {
            m.iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let secs = elapsed.as_secs_f64().max(1e-9);
        format!(
            "{} messages ({} failed) in {:.2}s: {:.0} messages/s, {:.1} MB/s\n  verdicts:   {}\n  categories: {}\n  routes:     {}\n  auto-reply: {}",
            self.messages,
            self.failed,
            secs,
            self.messages as f64 / secs,
            self.bytes as f64 / 1e6 / secs,
            fmt(&self.verdicts),
            fmt(&self.categories),
            fmt(&self.routes),
            fmt(&self.replies),
        )
    }
}
