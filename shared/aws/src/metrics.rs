//! The functions' metrics, as CloudWatch Embedded Metric Format lines in their logs
//! (the convention of Powertools for AWS Lambda): CloudWatch Logs turns each line into
//! metrics, so there is no API call per message and no `cloudwatch:PutMetricData` (which
//! has no resource-level permissions) in the roles. The template's dashboard and the
//! ConfigRejected alarm read them.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mailroom_core::model::{Envelope, RespondResult, Stage};
use serde_json::{Map, Value, json};

pub const NAMESPACE: &str = "mailroom";
/// Counted (without dimensions, as the alarm expects) when a new config fails validation.
pub const CONFIG_REJECTED: &str = "ConfigRejected";

/// Where the lines go: standard output in Lambda (its log), or memory (tests).
#[derive(Clone)]
pub struct Metrics {
    memory: Option<Arc<Mutex<Vec<String>>>>,
}

/// One EMF document: its dimension values and its metrics (name, value, unit).
struct Doc<'a> {
    dimensions: Vec<(&'static str, String)>,
    metrics: Vec<(&'static str, f64, &'a str)>,
}

impl Metrics {
    /// Lines to standard output, which Lambda sends to the function's log group.
    pub fn stdout() -> Metrics {
        Metrics { memory: None }
    }

    /// Lines kept in memory, for tests: the second value reads them.
    pub fn memory() -> (Metrics, Arc<Mutex<Vec<String>>>) {
        let lines = Arc::new(Mutex::new(Vec::new()));
        (
            Metrics {
                memory: Some(lines.clone()),
            },
            lines,
        )
    }

    /// The [assist] model's calls by task and outcome (decided, agreed, drafted, invalid,
    /// timeout, throttled, error, budget), each counted by the stage that made it.
    fn emit_assist(&self, env: &Envelope, made_here: impl Fn(&str) -> bool) {
        let outcomes = env.assist.iter().flat_map(|a| &a.outcomes);
        for (task, outcome) in outcomes.filter(|(task, _)| made_here(task)) {
            self.emit(Doc {
                dimensions: vec![("Task", task.clone()), ("Outcome", outcome.clone())],
                metrics: vec![("Assist", 1.0, "Count")],
            });
        }
    }

    fn emit(&self, doc: Doc<'_>) {
        let mut root = Map::new();
        let names: Vec<&str> = doc.dimensions.iter().map(|(k, _)| *k).collect();
        root.insert(
            "_aws".into(),
            json!({
                "Timestamp": SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0),
                "CloudWatchMetrics": [{
                    "Namespace": NAMESPACE,
                    "Dimensions": [names],
                    "Metrics": doc.metrics.iter()
                        .map(|(name, _, unit)| json!({ "Name": name, "Unit": unit }))
                        .collect::<Vec<_>>(),
                }],
            }),
        );
        for (k, v) in doc.dimensions {
            root.insert(k.into(), Value::String(v));
        }
        for (name, value, _) in doc.metrics {
            root.insert(name.into(), json!(value));
        }
        let line = Value::Object(root).to_string();
        match &self.memory {
            Some(lines) => lines.lock().expect("metrics lock").push(line),
            None => println!("{line}"),
        }
    }

    /// Counts one event, without dimensions.
    pub fn count(&self, name: &'static str) {
        self.emit(Doc {
            dimensions: Vec::new(),
            metrics: vec![(name, 1.0, "Count")],
        });
    }

    /// Counts one event with one dimension (`LinkRequests` by `Outcome`, ...).
    pub fn count_by(&self, name: &'static str, dimension: &'static str, value: &str) {
        self.emit(Doc {
            dimensions: vec![(dimension, value.to_string())],
            metrics: vec![(name, 1.0, "Count")],
        });
    }

    /// What a stage did with one message, and how long it took.
    pub fn stage(&self, stage: Stage, env: &Envelope, took: Duration) {
        let s = || ("Stage", stage.as_str().to_string());
        self.emit(Doc {
            dimensions: vec![s()],
            metrics: vec![
                ("Messages", 1.0, "Count"),
                ("Duration", took.as_secs_f64() * 1000.0, "Milliseconds"),
            ],
        });
        let r = &env.results;
        let one = |dimension: &'static str, value: String, name: &'static str| Doc {
            dimensions: vec![(dimension, value)],
            metrics: vec![(name, 1.0, "Count")],
        };
        match stage {
            Stage::Filter => {
                if let Some(f) = &r.filter {
                    self.emit(one("Verdict", f.verdict.as_str().into(), "Verdicts"));
                }
                self.emit_assist(env, |task| task == "spam");
            }
            Stage::Classify => {
                if let Some(c) = &r.classify {
                    self.emit(one("Category", c.category.clone(), "Categories"));
                }
                self.emit_assist(env, |task| task != "spam");
            }
            Stage::Route => {
                for a in r.route.iter().flat_map(|x| &x.actions) {
                    self.emit(one("Action", a.kind().into(), "Actions"));
                }
            }
            Stage::Respond => match &r.respond {
                Some(RespondResult::Sent { .. }) => {
                    self.emit(one("Reply", "sent".into(), "Replies"))
                }
                Some(RespondResult::Unconfirmed { .. }) => {
                    self.emit(one("Reply", "unconfirmed".into(), "Replies"))
                }
                Some(RespondResult::Suppressed { reason }) => self.emit(Doc {
                    dimensions: vec![
                        ("Reply", "suppressed".into()),
                        ("Reason", reason_class(reason)),
                    ],
                    metrics: vec![("Replies", 1.0, "Count")],
                }),
                None => {}
            },
        }
    }

    /// A record the stage could not finish: `kind` is retryable (the queue retries it),
    /// permanent (quarantined), poison, panic or deadline.
    pub fn fault(&self, stage: Stage, kind: &str) {
        self.emit(Doc {
            dimensions: vec![("Stage", stage.as_str().into()), ("Fault", kind.into())],
            metrics: vec![("Faults", 1.0, "Count")],
        });
    }
}

/// A suppression reason's class, for a dimension of few values: the text before its first
/// colon ("sender is a list: List-Id ..." is "sender is a list").
fn reason_class(reason: &str) -> String {
    let class = reason.split(':').next().unwrap_or(reason).trim();
    class.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_embedded_metric_format() {
        let (m, lines) = Metrics::memory();
        m.count(CONFIG_REJECTED);
        m.fault(Stage::Route, "retryable");
        let lines = lines.lock().unwrap();
        let doc: Value = serde_json::from_str(&lines[0]).unwrap();
        let cw = &doc["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(cw["Namespace"], NAMESPACE);
        assert_eq!(cw["Dimensions"], json!([[]]));
        assert_eq!(
            cw["Metrics"][0],
            json!({ "Name": "ConfigRejected", "Unit": "Count" })
        );
        assert_eq!(doc["ConfigRejected"], 1.0);
        assert!(doc["_aws"]["Timestamp"].as_u64().unwrap() > 1_700_000_000_000);
        let fault: Value = serde_json::from_str(&lines[1]).unwrap();
        assert_eq!(
            fault["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([["Stage", "Fault"]])
        );
        assert_eq!(
            (fault["Stage"].as_str(), fault["Fault"].as_str()),
            (Some("route"), Some("retryable"))
        );
        assert_eq!(
            reason_class("sender is a list: List-Id <x>"),
            "sender is a list"
        );
    }

    #[test]
    fn the_assist_models_outcomes_are_counted_by_task() {
        let (m, lines) = Metrics::memory();
        let mut env = Envelope::new("m1", Default::default());
        env.assist = Some(mailroom_core::model::Assisted {
            model: "nova".into(),
            outcomes: [
                ("classify", "timeout"),
                ("draft", "budget"),
                ("spam", "agreed"),
            ]
            .map(|(t, o)| (t.to_string(), o.to_string()))
            .into(),
            draft: None,
        });
        m.stage(Stage::Classify, &env, Duration::from_millis(3));
        m.stage(Stage::Filter, &env, Duration::from_millis(3));
        let docs: Vec<Value> = lines
            .lock()
            .unwrap()
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .filter(|d: &Value| d.get("Assist").is_some())
            .collect();
        let counted: Vec<_> = docs
            .iter()
            .map(|d| (d["Task"].as_str().unwrap(), d["Outcome"].as_str().unwrap()))
            .collect();
        assert_eq!(
            counted,
            [
                ("classify", "timeout"),
                ("draft", "budget"),
                ("spam", "agreed")
            ],
            "each once, by the stage that asked"
        );
        assert_eq!(
            docs[1]["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([["Task", "Outcome"]])
        );
    }
}
