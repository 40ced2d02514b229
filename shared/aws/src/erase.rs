//! Erasure per data subject on a stack (the core's [`Forget`] on the state table and the
//! mail bucket), with the operator's credentials:
//!
//! - the messages naming an address: the `by-sender` index, the recipient items and the
//!   address items (Cc, Reply-To and the like) of the index;
//! - every item under `msg#<id>`, its recipient and address items, then its summary;
//! - the raw mail and its stored and quarantined copies, every version (the bucket is
//!   versioned, and a plain delete would only hide them);
//! - the address's auto-reply slots (`rl#reply#<hash>#<template>`, and
//!   `rl#reply#<address>#<template>` as versions before the hash wrote them);
//! - the effects of digests sent to the address under their old key (`msg#digest-<n>`,
//!   `effect#respond/digest/<address>`), in each digest run the records' retention may
//!   still hold (the key now names the hash);
//! - the per-recipient allow-list entries naming it (`allow#<recipient>` and
//!   `allowed#<sender>`, through the pipeline's port: see `crate::dynamo`);
//! - the erasure record `erasure#<hash>`, kept by the table's TTL for `retention.erasures`,
//!   and the note of an erasure under way, `erasing#<hash>`, that lets a second run finish
//!   an interrupted one.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use mailroom_core::model::RawRef;
use mailroom_core::operate::{ErasureRecord, Forget};
use mailroom_core::ports::{MessageIndex, PortResult};

use crate::dynamo::DynamoState;
use crate::errors::port_error;
use crate::s3::FEEDBACK_PREFIX;

/// Where the receipt rule stores raw mail (template.yaml, infra/resources.json).
pub const RAW_PREFIX: &str = "raw/";

pub struct StackForget {
    pub state: DynamoState,
    pub s3: aws_sdk_s3::Client,
    pub bucket: String,
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn text(item: &HashMap<String, AttributeValue>, k: &str) -> Option<String> {
    match item.get(k) {
        Some(AttributeValue::S(v)) => Some(v.clone()),
        _ => None,
    }
}

impl StackForget {
    /// Erasure on a stack's table and bucket, with the credentials of `sdk`.
    pub fn on(sdk: &aws_config::SdkConfig, names: &crate::operator::StackNames) -> StackForget {
        StackForget {
            state: DynamoState::new(
                aws_sdk_dynamodb::Client::new(sdk),
                names.table.clone(),
                std::time::Duration::from_secs(crate::settings::DEFAULT_RETENTION_DAYS * 86_400),
            ),
            s3: crate::app::s3_client(sdk),
            bucket: names.bucket.clone(),
        }
    }

    /// Every item of partition `pk` (of the index `index`, when given).
    async fn items(
        &self,
        index: Option<&str>,
        key: (&str, String),
    ) -> PortResult<Vec<HashMap<String, AttributeValue>>> {
        let what = format!("listing {}", key.1);
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .state
                .client
                .query()
                .table_name(&self.state.table)
                .set_index_name(index.map(str::to_string))
                .key_condition_expression("#k = :k")
                .expression_attribute_names("#k", key.0)
                .expression_attribute_values(":k", s(key.1.clone()))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| port_error(&what, &e, &[]))?;
            out.extend(page.items.unwrap_or_default());
            start = page.last_evaluated_key;
            if start.is_none() {
                return Ok(out);
            }
        }
    }

    /// Deletes one item; true when there was one.
    async fn delete(&self, pk: String, sk: String) -> PortResult<bool> {
        let what = format!("deleting {pk} {sk}");
        let out = self
            .state
            .client
            .delete_item()
            .table_name(&self.state.table)
            .key("pk", s(pk))
            .key("sk", s(sk))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(|e| port_error(&what, &e, &[]))?;
        Ok(out.attributes.is_some_and(|a| !a.is_empty()))
    }

    async fn get(&self, pk: &str, sk: &str) -> PortResult<Option<HashMap<String, AttributeValue>>> {
        let out = self
            .state
            .client
            .get_item()
            .table_name(&self.state.table)
            .key("pk", s(pk))
            .key("sk", s(sk))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| port_error(&format!("reading {pk}"), &e, &[]))?;
        Ok(out.item)
    }

    async fn put(&self, what: &str, item: HashMap<String, AttributeValue>) -> PortResult<()> {
        self.state
            .client
            .put_item()
            .table_name(&self.state.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| port_error(what, &e, &[]))?;
        Ok(())
    }

    /// Deletes every version and delete marker of `key` in `bucket`.
    async fn purge(&self, bucket: &str, key: &str) -> PortResult<usize> {
        let what = format!("removing every version of s3://{bucket}/{key}");
        let mut gone = 0;
        loop {
            let page = self
                .s3
                .list_object_versions()
                .bucket(bucket)
                .prefix(key)
                .send()
                .await
                .map_err(|e| port_error(&what, &e, &[]))?;
            let versions = page
                .versions()
                .iter()
                .filter(|v| v.key() == Some(key))
                .map(|v| v.version_id().map(str::to_string));
            let markers = page
                .delete_markers()
                .iter()
                .filter(|m| m.key() == Some(key))
                .map(|m| m.version_id().map(str::to_string));
            let all: Vec<Option<String>> = versions.chain(markers).collect();
            if all.is_empty() {
                return Ok(gone);
            }
            for version in all {
                self.s3
                    .delete_object()
                    .bucket(bucket)
                    .key(key)
                    .set_version_id(version)
                    .send()
                    .await
                    .map_err(|e| port_error(&what, &e, &[]))?;
                gone += 1;
            }
        }
    }
}

#[async_trait]
impl Forget for StackForget {
    async fn messages_naming(&self, address: &str) -> PortResult<Vec<String>> {
        let mut ids: Vec<String> = self
            .items(Some("by-sender"), ("s_pk", format!("s#{address}")))
            .await?
            .iter()
            .filter_map(|item| text(item, "pk"))
            .filter_map(|pk| pk.strip_prefix("msg#").map(str::to_string))
            .collect();
        for prefix in ["rcpt", "addr"] {
            for item in self
                .items(None, ("pk", format!("{prefix}#{address}")))
                .await?
            {
                ids.extend(text(&item, "id"));
            }
        }
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    async fn forget_message(&self, id: &str) -> PortResult<usize> {
        let summary = self.state.get(id).await?;
        let mut gone = 0;
        for item in self.items(None, ("pk", format!("msg#{id}"))).await? {
            let Some(sk) = text(&item, "sk") else {
                continue;
            };
            if sk != "summary" && self.delete(format!("msg#{id}"), sk).await? {
                gone += 1;
            }
        }
        if let Some(summary) = summary {
            let ix = format!("{:020}#{}", summary.at, summary.id);
            let mut items = crate::index::side_items(&summary);
            items.extend(summary.addresses.iter().map(|a| format!("addr#{a}")));
            items.sort();
            items.dedup();
            for pk in items {
                if self.delete(pk, ix.clone()).await? {
                    gone += 1;
                }
            }
        }
        // An operator's correction of it, every version.
        gone += self
            .purge(&self.bucket, &format!("{FEEDBACK_PREFIX}{id}.json"))
            .await?;
        // The summary last: until it goes, the indexes find the message.
        if self.delete(format!("msg#{id}"), "summary".into()).await? {
            gone += 1;
        }
        Ok(gone)
    }

    async fn forget_slots(
        &self,
        address: &str,
        hash: &str,
        templates: &[String],
    ) -> PortResult<usize> {
        let mut gone = 0;
        for t in templates {
            for named in [hash, address] {
                if self
                    .delete(format!("rl#reply#{named}#{t}"), "rl".into())
                    .await?
                {
                    gone += 1;
                }
            }
        }
        Ok(gone)
    }

    async fn forget_digests(&self, address: &str, runs: &[String]) -> PortResult<usize> {
        use futures::StreamExt as _;
        // One delete per run (a key that names nothing costs one write unit): no index
        // finds an effect by its name.
        let sk = format!("effect#respond/digest/{address}");
        let pks: Vec<String> = runs.iter().map(|run| format!("msg#{run}")).collect();
        let deleted: Vec<PortResult<bool>> = futures::stream::iter(pks)
            .map(|pk| self.delete(pk, sk.clone()))
            .buffer_unordered(8)
            .collect()
            .await;
        let mut gone = 0;
        for d in deleted {
            gone += usize::from(d?);
        }
        Ok(gone)
    }

    async fn purge_object(&self, key: &str) -> PortResult<usize> {
        self.purge(&self.bucket, key).await
    }

    async fn purge_raw(&self, id: &str, raw: &RawRef) -> PortResult<Option<usize>> {
        // Where SES stored it (the receipt rule's prefix), and where the summary points.
        let stored = format!("{RAW_PREFIX}{id}");
        let mut gone = self.purge(&self.bucket, &stored).await?;
        if raw.key != stored {
            gone += self.purge(&raw.bucket, &raw.key).await?;
        }
        Ok(Some(gone))
    }

    async fn begin_erasure(&self, subject: &str, ids: &[String]) -> PortResult<()> {
        let item = HashMap::from([
            ("pk".to_string(), s(format!("erasing#{subject}"))),
            ("sk".to_string(), s("erasing")),
            (
                "ids".to_string(),
                AttributeValue::L(ids.iter().map(|i| s(i.clone())).collect()),
            ),
            ("expires_at".to_string(), self.state.expires()),
        ]);
        self.put("noting the erasure", item).await
    }

    async fn pending_erasure(&self, subject: &str) -> PortResult<Vec<String>> {
        let item = self.get(&format!("erasing#{subject}"), "erasing").await?;
        Ok(match item.as_ref().and_then(|i| i.get("ids")) {
            Some(AttributeValue::L(ids)) => {
                ids.iter().filter_map(|v| v.as_s().ok().cloned()).collect()
            }
            _ => Vec::new(),
        })
    }

    async fn record_erasure(&self, r: &ErasureRecord, keep_until: u64) -> PortResult<()> {
        let n = |v: usize| AttributeValue::N(v.to_string());
        let item = HashMap::from([
            ("pk".to_string(), s(format!("erasure#{}", r.subject))),
            ("sk".to_string(), s(format!("{:020}", r.at))),
            ("at".to_string(), AttributeValue::N(r.at.to_string())),
            ("by".to_string(), s(r.by.clone())),
            ("messages".to_string(), n(r.messages)),
            ("objects".to_string(), n(r.objects)),
            ("records".to_string(), n(r.records)),
            ("slots".to_string(), n(r.slots)),
            ("allowed".to_string(), n(r.allowed)),
            (
                "expires_at".to_string(),
                AttributeValue::N(keep_until.to_string()),
            ),
        ]);
        self.put("keeping the erasure record", item).await?;
        self.delete(format!("erasing#{}", r.subject), "erasing".into())
            .await
            .map(|_| ())
    }

    /// The table's TTL removes erasure records when their `expires_at` passes.
    async fn forget_erasures_before(&self, _at: u64) -> PortResult<usize> {
        Ok(0)
    }
}
