//! Latency of one message that arrives alone, from SES's receipt notification to the
//! auto-reply handed to SES: the S3 PUT and SNS publish SES makes, then the four stages'
//! handlers against the emulator (MAILROOM_TEST_ENDPOINT), each queue read as soon as the
//! stage before it published: a batching window of 0, and no polling delay (each stage's
//! messages are deleted from its queue before the next stage is read, which Lambda's event
//! source mapping does off the path, so the figure is on the high side). Prints one JSON
//! line with the runs' median, p90 and per-run milliseconds. `infra/bench/run.sh --only
//! latency` runs it; docs/cost-model.md models the same path in AWS.

use std::time::{Duration, Instant};

use mailroom_core::model::Stage;
use mailroom_tests::aws::{Stack, fixture, source_queue};

const RUNS: usize = 30;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let Some(stack) = Stack::create("latency").await else {
            println!("{{\"skipped\": \"no emulator: set MAILROOM_TEST_ENDPOINT\"}}");
            return;
        };
        let pipeline = stack.pipeline().await;
        let support = String::from_utf8(fixture("support.eml")).expect("UTF-8");
        let mut ms = Vec::new();
        for run in 0..RUNS {
            // A sender of its own each run: the reply limit per sender would suppress it.
            let raw = support.replace("nora@client.example", &format!("nora{run}@client.example"));
            let sent_before = stack.sent_mail().await.len();
            let started = Instant::now();
            stack
                .put_raw(&mailroom_tests::aws::ses_message_id(), raw.into_bytes())
                .await;
            for stage in Stage::ALL {
                let app = pipeline.app(stage);
                while stack
                    .pump(source_queue(stage), &app)
                    .await
                    .received
                    .is_empty()
                {
                    assert!(
                        started.elapsed() < Duration::from_secs(30),
                        "{stage} got nothing"
                    );
                }
            }
            let took = started.elapsed();
            assert_eq!(
                stack.sent_mail().await.len(),
                sent_before + 1,
                "run {run}: one auto-reply"
            );
            ms.push(took.as_secs_f64() * 1000.0);
        }
        let mut sorted = ms.clone();
        sorted.sort_by(f64::total_cmp);
        let at = |p: f64| sorted[((sorted.len() - 1) as f64 * p).round() as usize];
        println!(
            "{}",
            serde_json::json!({
                "runs": RUNS,
                "median_ms": (at(0.5) * 10.0).round() / 10.0,
                "p90_ms": (at(0.9) * 10.0).round() / 10.0,
                "ms": ms.iter().map(|m| (m * 10.0).round() / 10.0).collect::<Vec<_>>(),
            })
        );
    });
}
