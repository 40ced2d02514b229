//! The `[assist]` model for local runs: an OpenAI-compatible `/v1/chat/completions`
//! endpoint over plain HTTP (llama.cpp's server, Ollama, vLLM), and `mailroom eval
//! --assist`, which measures it on labelled mail as `eval --model` measures a trained model.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use mailroom_core::assist::{NoAssistant, allowed_categories, classify_request, parse_labels};
use mailroom_core::config::{AssistConfig, AssistProvider};
use mailroom_core::ports::{AssistRequest, Assistant, PortError, PortResult};
use mailroom_core::{Config, Mail};
use serde_json::{Value, json};

/// The most of an answer read back.
const MAX_ANSWER: usize = 1 << 20;

/// An OpenAI-compatible chat completions server.
pub struct OpenAiCompatible {
    url: String,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl OpenAiCompatible {
    pub fn new(endpoint: &str) -> OpenAiCompatible {
        OpenAiCompatible {
            url: format!("{}/v1/chat/completions", endpoint.trim_end_matches('/')),
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }
}

/// The chat completions request for a prompt: the instruction as the system message, the
/// quoted mail as the user's, and the schema as a `json_schema` response format.
pub fn chat_body(r: &AssistRequest) -> Value {
    let mut body = json!({
        "model": r.model,
        "messages": [
            { "role": "system", "content": r.system },
            { "role": "user", "content": r.user },
        ],
        "temperature": 0,
        "max_tokens": r.max_tokens,
    });
    if let Some(schema) = &r.schema {
        body["response_format"] = json!({
            "type": "json_schema",
            "json_schema": { "name": "labels", "strict": true, "schema": schema },
        });
    }
    body
}

#[async_trait]
impl Assistant for OpenAiCompatible {
    async fn complete(&self, r: &AssistRequest) -> PortResult<String> {
        let body = serde_json::to_vec(&chat_body(r)).expect("JSON serialises");
        let request = hyper::Request::post(&self.url)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| PortError::Permanent(format!("{}: {e}", self.url)))?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| PortError::Permanent(format!("{}: {e}", self.url)))?;
        let status = response.status();
        let bytes = Limited::new(response.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| PortError::Permanent(format!("{}: reading the answer: {e}", self.url)))?
            .to_bytes();
        if status.as_u16() == 429 {
            return Err(PortError::Retryable(format!("{}: HTTP 429", self.url)));
        }
        if !status.is_success() {
            let text: String = String::from_utf8_lossy(&bytes).chars().take(200).collect();
            return Err(PortError::Permanent(format!(
                "{}: HTTP {status}: {text}",
                self.url
            )));
        }
        let v: Value = serde_json::from_slice(&bytes)
            .map_err(|e| PortError::Permanent(format!("{}: not JSON: {e}", self.url)))?;
        v["choices"][0]["message"]["content"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| {
                PortError::Permanent(format!("{}: no choices[0].message.content", self.url))
            })
    }
}

/// The assistant a local run talks to for `config`.
pub fn for_config(config: &Config) -> Arc<dyn Assistant> {
    match &config.assist {
        Some(AssistConfig {
            provider: AssistProvider::Openai,
            endpoint: Some(endpoint),
            ..
        }) => Arc::new(OpenAiCompatible::new(endpoint)),
        Some(_) => Arc::new(NoAssistant(
            "provider \"bedrock\" is called by a deployed stack; `mailroom run` speaks to \
             provider \"openai\"",
        )),
        None => Arc::new(NoAssistant("the config has no [assist]")),
    }
}

/// `mailroom eval --assist --config FILE DIR`: the model's category for every message in
/// DIR/<label>/ against its folder, with the same figures `eval --model` gives. An answer
/// outside the schema counts as `(no answer)`.
pub fn eval(config_path: &Path, dir: &Path) -> Result<()> {
    let config = Config::load(config_path)?;
    let Some(assist) = config.assist.clone() else {
        bail!(
            "{}: has no [assist] table to measure",
            config_path.display()
        );
    };
    let assistant = for_config(&config);
    let dirs = crate::learn::label_dirs(dir)?;
    let mut labels: Vec<String> = dirs.iter().map(|(n, _)| n.clone()).collect();
    let allowed = allowed_categories(&config);
    for l in &labels {
        if !allowed.contains(l) {
            eprintln!(
                "warning: folder {l:?} is not a category of the config; the model cannot answer it"
            );
        }
    }
    let none = labels.len();
    labels.push("(no answer)".into());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (mut truth, mut predicted, mut failed) = (Vec::new(), Vec::new(), 0usize);
    let mut skipped: Vec<(String, String)> = Vec::new();
    let started = Instant::now();
    for (y, (_, path)) in dirs.iter().enumerate() {
        for file in crate::input::files(std::slice::from_ref(path)) {
            for msg in crate::input::messages(file) {
                let raw = match msg.raw {
                    Ok(raw) => raw,
                    Err(e) => {
                        skipped.push((msg.source, e));
                        continue;
                    }
                };
                let mail = match Mail::parse(&raw) {
                    Ok(mail) => mail,
                    Err(e) => {
                        skipped.push((msg.source, e.to_string()));
                        continue;
                    }
                };
                let request = classify_request(&mail, &config, &assist);
                let answer = runtime.block_on(async {
                    tokio::time::timeout(assist.timeout.0, assistant.complete(&request)).await
                });
                let p = match answer {
                    Ok(Ok(text)) => parse_labels(&text, &allowed)
                        .ok()
                        .and_then(|(c, _)| labels.iter().position(|l| *l == c))
                        .unwrap_or(none),
                    _ => {
                        failed += 1;
                        none
                    }
                };
                truth.push(y);
                predicted.push(p);
            }
        }
    }
    crate::learn::say_skipped(&skipped);
    if truth.is_empty() {
        bail!("{}: no message to measure", dir.display());
    }
    let evaluation = mailroom_learn::eval::evaluate(&labels, &truth, &predicted, None);
    eprintln!(
        "assist model {:?} ({:?}) on {} messages in {}: {} calls failed, {:.0} ms per message",
        assist.model,
        assist.provider,
        truth.len(),
        dir.display(),
        failed,
        started.elapsed().as_secs_f64() * 1e3 / truth.len() as f64
    );
    eprint!("{}", crate::learn::render(&evaluation));
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({
            "mode": "assist",
            "model": assist.model,
            "dir": dir.display().to_string(),
            "failed_calls": failed,
            "skipped": skipped.len(),
            "evaluation": evaluation,
        }))
        .context("the report serialises")?
    );
    Ok(())
}
