//! DynamoDB: stage records, once-only effects, rate-limit slots and the audit trail, in one
//! table keyed `pk`/`sk`. Every write that guards an effect is a conditional write, so
//! duplicate deliveries and concurrent invocations cannot double it.
//!
//! | item | pk | sk |
//! |---|---|---|
//! | stage record | `msg#<id>` | `stage#<stage>` |
//! | audit record | `msg#<id>` | `audit#<stage>` |
//! | effect | `msg#<id>` | `effect#<name>` |
//! | rate-limit slot | `rl#<key>` | `rl` |

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use mailroom_core::model::{AuditRecord, Stage};
use mailroom_core::ports::{AuditLog, Claim, PortResult, StateStore};

use crate::errors::{code, port_error};

const CONDITION_FAILED: &str = "ConditionalCheckFailedException";

pub struct DynamoState {
    pub client: Client,
    pub table: String,
    /// Items expire (DynamoDB TTL) this long after they are written.
    pub retention: Duration,
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}
fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}
fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
fn msg_pk(id: &str) -> AttributeValue {
    s(format!("msg#{id}"))
}

impl DynamoState {
    fn expires(&self) -> AttributeValue {
        n(secs(SystemTime::now() + self.retention))
    }

    /// Puts an item unless one with its key exists. Returns false when one did.
    async fn put_new(&self, what: &str, item: HashMap<String, AttributeValue>) -> PortResult<bool> {
        match self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if code(&e) == Some(CONDITION_FAILED) => Ok(false),
            Err(e) => Err(port_error(what, &e, &[])),
        }
    }
}

#[async_trait]
impl StateStore for DynamoState {
    async fn record_stage(&self, id: &str, stage: Stage, summary: &str) -> PortResult<bool> {
        let item = HashMap::from([
            ("pk".to_string(), msg_pk(id)),
            ("sk".to_string(), s(format!("stage#{stage}"))),
            ("summary".to_string(), s(summary)),
            ("at".to_string(), n(secs(SystemTime::now()))),
            ("expires_at".to_string(), self.expires()),
        ]);
        self.put_new(&format!("recording stage {stage} of {id}"), item)
            .await
    }

    async fn claim_effect(
        &self,
        id: &str,
        effect: &str,
        lease: Duration,
        now: SystemTime,
    ) -> PortResult<Claim> {
        let what = format!("claiming effect {effect} of {id}");
        let sk = s(format!("effect#{effect}"));
        let item = HashMap::from([
            ("pk".to_string(), msg_pk(id)),
            ("sk".to_string(), sk.clone()),
            ("done".to_string(), AttributeValue::Bool(false)),
            ("lease_until".to_string(), n(secs(now + lease))),
            ("expires_at".to_string(), self.expires()),
        ]);
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk) OR (#done = :false AND #lease < :now)")
            .expression_attribute_names("#done", "done")
            .expression_attribute_names("#lease", "lease_until")
            .expression_attribute_values(":false", AttributeValue::Bool(false))
            .expression_attribute_values(":now", n(secs(now)))
            .send()
            .await;
        match put {
            Ok(_) => Ok(Claim::Acquired),
            Err(e) if code(&e) == Some(CONDITION_FAILED) => {
                let got = self
                    .client
                    .get_item()
                    .table_name(&self.table)
                    .key("pk", msg_pk(id))
                    .key("sk", sk)
                    .consistent_read(true)
                    .send()
                    .await
                    .map_err(|e| port_error(&what, &e, &[]))?;
                let item = got.item.unwrap_or_default();
                if matches!(item.get("done"), Some(AttributeValue::Bool(true))) {
                    let note = match item.get("note") {
                        Some(AttributeValue::S(note)) => note.clone(),
                        _ => String::new(),
                    };
                    Ok(Claim::Done(note))
                } else {
                    Ok(Claim::Busy)
                }
            }
            Err(e) => Err(port_error(&what, &e, &[])),
        }
    }

    async fn complete_effect(&self, id: &str, effect: &str, note: &str) -> PortResult<()> {
        let item = HashMap::from([
            ("pk".to_string(), msg_pk(id)),
            ("sk".to_string(), s(format!("effect#{effect}"))),
            ("done".to_string(), AttributeValue::Bool(true)),
            ("note".to_string(), s(note)),
            ("expires_at".to_string(), self.expires()),
        ]);
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| port_error(&format!("completing effect {effect} of {id}"), &e, &[]))?;
        Ok(())
    }

    async fn release_effect(&self, id: &str, effect: &str) -> PortResult<()> {
        // Expire the lease rather than delete, so a done effect is never lost to a race.
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", msg_pk(id))
            .key("sk", s(format!("effect#{effect}")))
            .update_expression("SET #lease = :zero")
            .condition_expression("#done = :false")
            .expression_attribute_names("#lease", "lease_until")
            .expression_attribute_names("#done", "done")
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":false", AttributeValue::Bool(false))
            .send()
            .await;
        match out {
            Ok(_) => Ok(()),
            Err(e) if code(&e) == Some(CONDITION_FAILED) => Ok(()),
            Err(e) => Err(port_error(
                &format!("releasing effect {effect} of {id}"),
                &e,
                &[],
            )),
        }
    }

    async fn acquire_rate_limit(
        &self,
        key: &str,
        owner: &str,
        until: SystemTime,
        now: SystemTime,
    ) -> PortResult<bool> {
        let item = HashMap::from([
            ("pk".to_string(), s(format!("rl#{key}"))),
            ("sk".to_string(), s("rl")),
            ("owner".to_string(), s(owner)),
            ("until".to_string(), n(secs(until))),
            ("expires_at".to_string(), n(secs(until))),
        ]);
        let out = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk) OR #until < :now OR #owner = :owner")
            .expression_attribute_names("#until", "until")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":now", n(secs(now)))
            .expression_attribute_values(":owner", s(owner))
            .send()
            .await;
        match out {
            Ok(_) => Ok(true),
            Err(e) if code(&e) == Some(CONDITION_FAILED) => Ok(false),
            Err(e) => Err(port_error(
                &format!("taking rate-limit slot {key}"),
                &e,
                &[],
            )),
        }
    }
}

#[async_trait]
impl AuditLog for DynamoState {
    async fn append(&self, r: &AuditRecord) -> PortResult<()> {
        let list = |v: &[String]| AttributeValue::L(v.iter().map(|x| s(x.clone())).collect());
        let mut item = HashMap::from([
            ("pk".to_string(), msg_pk(&r.id)),
            ("sk".to_string(), s(format!("audit#{}", r.stage))),
            ("stage".to_string(), s(r.stage.as_str())),
            ("decision".to_string(), s(r.decision.clone())),
            ("reasons".to_string(), list(&r.reasons)),
            ("decided_by".to_string(), list(&r.decided_by)),
            ("at".to_string(), n(r.at)),
            ("expires_at".to_string(), self.expires()),
        ]);
        if let Some(sender) = &r.sender {
            item.insert("sender".to_string(), s(sender.clone()));
        }
        self.put_new(
            &format!("appending audit record {} of {}", r.stage, r.id),
            item,
        )
        .await
        .map(|_| ())
    }
}
