//! What `mailroom run` prints: one JSON object or table row per message, and a summary.

use std::collections::BTreeMap;
use std::time::Duration;

use mailroom_core::model::RespondResult;
use serde_json::Value;

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

pub fn table_row(v: &Value) -> String {
    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("-").to_string();
    if v.get("verdict").is_none_or(Value::is_null) {
        return format!("{:<41} ERROR       {}", cut(&s("source"), 41), s("error"));
    }
    let routes = v["routes"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();
    let reply = match serde_json::from_value::<RespondResult>(v["auto_reply"].clone()) {
        Ok(RespondResult::Sent { to, .. }) => format!("sent to {to}"),
        Ok(RespondResult::Unconfirmed { to, .. }) => format!("unconfirmed to {to}"),
        Ok(RespondResult::Suppressed { reason }) => format!("no: {reason}"),
        Err(_) => "-".into(),
    };
    format!(
        "{:<41} {:<11} {:>5.1}  {:<13} {:<9} {:<31} {}",
        cut(&s("source"), 41),
        s("verdict"),
        v["spam_score"].as_f64().unwrap_or(0.0),
        cut(&s("category"), 13),
        s("priority"),
        cut(&routes, 31),
        reply
    )
}

/// Counts by verdict, category and route action, plus throughput.
#[derive(Default)]
pub struct Summary {
    pub messages: usize,
    pub failed: usize,
    pub bytes: u64,
    verdicts: BTreeMap<String, usize>,
    categories: BTreeMap<String, usize>,
    routes: BTreeMap<String, usize>,
    replies: BTreeMap<String, usize>,
}

impl Summary {
    pub fn add(&mut self, v: &Value) {
        self.messages += 1;
        let Some(verdict) = v.get("verdict").and_then(Value::as_str) else {
            return;
        };
        *self.verdicts.entry(verdict.into()).or_default() += 1;
        if let Some(c) = v.get("category").and_then(Value::as_str) {
            *self.categories.entry(c.into()).or_default() += 1;
        }
        for r in v["routes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            let kind = r.split(':').next().unwrap_or(r);
            *self.routes.entry(kind.into()).or_default() += 1;
        }
        let reply = v["auto_reply"]["status"].as_str().unwrap_or("none");
        *self.replies.entry(reply.into()).or_default() += 1;
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
