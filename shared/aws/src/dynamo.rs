//! DynamoDB: the audit trail (which is also each stage's record of having finished),
//! once-only effects and rate-limit slots, in one table keyed `pk`/`sk`. Every write that guards an effect is a conditional write, so
//! duplicate deliveries and concurrent invocations cannot double it.
//!
//! | item | pk | sk |
//! |---|---|---|
//! | audit record, one per stage | `msg#<id>` | `audit#<stage>` |
//! | effect | `msg#<id>` | `effect#<name>` |
//! | rate-limit slot | `rl#<key>` | `rl` |
//! | a recipient's allowed sender (a digest's "always allow") | `allow#<recipient>` | `<sender>` |
//! | the same, found by its sender (for an erasure) | `allowed#<sender>` | `<recipient>` |
//! | the key of address hashes | `meta` | `subject-key` |
//!
//! The two allow-list items are written in one transaction and kept until an erasure of
//! either address removes them (no TTL: they are the recipient's standing choice). The
//! filter function reads `allow#` items only (its role's `dynamodb:LeadingKeys`
//! condition), in one `BatchGetItem` per message it would otherwise hold.
//!
//! No other key names an address: effects and rate-limit slots that concern one name its
//! keyed hash (see the core's `operate::subject_hash`).

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeValue, KeysAndAttributes, Put, ReturnValue, TransactWriteItem,
};
use mailroom_core::model::{AuditRecord, Stage};
use mailroom_core::ports::{
    AllowedSender, AuditLog, Claim, PortError, PortResult, RecipientAllowList, StateStore,
};

use crate::errors::{code, port_error};

const CONDITION_FAILED: &str = "ConditionalCheckFailedException";

/// A conditional write whose condition did not hold is fine (another attempt already
/// did what it would have); other errors are the port's.
fn unless_condition_failed<T, E>(
    out: Result<
        T,
        aws_sdk_dynamodb::error::SdkError<E, aws_sdk_dynamodb::config::http::HttpResponse>,
    >,
    what: &str,
) -> PortResult<()>
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error + 'static,
{
    match out {
        Ok(_) => Ok(()),
        Err(e) if code(&e) == Some(CONDITION_FAILED) => Ok(()),
        Err(e) => Err(port_error(what, &e, &[])),
    }
}

pub struct DynamoState {
    pub client: Client,
    pub table: String,
    /// Items expire (DynamoDB TTL) this long after they are written.
    pub retention: Duration,
    /// The subject key once read (see [`StateStore::subject_key`]).
    subject_key: tokio::sync::OnceCell<Vec<u8>>,
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
fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
fn msg_pk(id: &str) -> AttributeValue {
    s(format!("msg#{id}"))
}

impl DynamoState {
    pub fn new(client: Client, table: impl Into<String>, retention: Duration) -> DynamoState {
        DynamoState {
            client,
            table: table.into(),
            retention,
            subject_key: tokio::sync::OnceCell::new(),
        }
    }

    /// Reads the subject key, making it when there is none (a conditional write: two
    /// makers at once end with the same key).
    async fn read_subject_key(&self) -> PortResult<Vec<u8>> {
        let read = || async {
            let out = self
                .client
                .get_item()
                .table_name(&self.table)
                .key("pk", s("meta"))
                .key("sk", s("subject-key"))
                .consistent_read(true)
                .send()
                .await
                .map_err(|e| port_error("reading the subject key", &e, &[]))?;
            Ok::<_, PortError>(match out.item.as_ref().and_then(|i| i.get("key")) {
                Some(AttributeValue::S(k)) => Some(mailroom_core::secret::unhex(k)),
                _ => None,
            })
        };
        if let Some(key) = read().await? {
            return Ok(key);
        }
        let bytes =
            mailroom_core::secret::random_key("subject key").map_err(PortError::Permanent)?;
        let made = self
            .put_new(
                "making the subject key",
                HashMap::from([
                    ("pk".to_string(), s("meta")),
                    ("sk".to_string(), s("subject-key")),
                    ("key".to_string(), s(mailroom_core::secret::hex(&bytes))),
                ]),
            )
            .await?;
        if made {
            return Ok(bytes.to_vec());
        }
        // Another process made it first: use that one.
        read()
            .await?
            .ok_or_else(|| PortError::Retryable("the subject key is not readable yet".into()))
    }

    pub(crate) fn expires(&self) -> AttributeValue {
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
    async fn claim_effect(
        &self,
        id: &str,
        effect: &str,
        owner: &str,
        lease: Duration,
        now: SystemTime,
    ) -> PortResult<Claim> {
        let what = format!("claiming effect {effect} of {id}");
        let sk = s(format!("effect#{effect}"));
        let item = HashMap::from([
            ("pk".to_string(), msg_pk(id)),
            ("sk".to_string(), sk.clone()),
            ("done".to_string(), AttributeValue::Bool(false)),
            ("lease_until_ms".to_string(), n(millis(now + lease))),
            ("owner".to_string(), s(owner)),
            ("released".to_string(), AttributeValue::Bool(false)),
            ("expires_at".to_string(), self.expires()),
        ]);
        // Free, given back, or held by a lease that ran out; the old item tells which.
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk) OR (#done = :false AND #lease < :now)")
            .expression_attribute_names("#done", "done")
            .expression_attribute_names("#lease", "lease_until_ms")
            .expression_attribute_values(":false", AttributeValue::Bool(false))
            .expression_attribute_values(":now", n(millis(now)))
            .return_values(ReturnValue::AllOld)
            .send()
            .await;
        match put {
            Ok(out) => Ok(match out.attributes {
                Some(old) if !matches!(old.get("released"), Some(AttributeValue::Bool(true))) => {
                    Claim::Orphaned
                }
                _ => Claim::Acquired,
            }),
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
                let text = |k: &str| match item.get(k) {
                    Some(AttributeValue::S(v)) => v.clone(),
                    _ => String::new(),
                };
                if matches!(item.get("done"), Some(AttributeValue::Bool(true))) {
                    Ok(Claim::Done(text("note")))
                } else if text("owner") == owner {
                    // Our own write, whose answer was lost and whose retry found it.
                    Ok(Claim::Acquired)
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

    async fn release_effect(&self, id: &str, effect: &str, owner: &str) -> PortResult<()> {
        // Mark it given back rather than delete it, so a done effect is never lost to a race.
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", msg_pk(id))
            .key("sk", s(format!("effect#{effect}")))
            .update_expression("SET #lease = :zero, #released = :true")
            .condition_expression("#done = :false AND #owner = :owner")
            .expression_attribute_names("#lease", "lease_until_ms")
            .expression_attribute_names("#released", "released")
            .expression_attribute_names("#done", "done")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":true", AttributeValue::Bool(true))
            .expression_attribute_values(":false", AttributeValue::Bool(false))
            .expression_attribute_values(":owner", s(owner))
            .send()
            .await;
        unless_condition_failed(out, &format!("releasing effect {effect} of {id}"))
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

    async fn release_rate_limit(&self, key: &str, owner: &str) -> PortResult<()> {
        // Expired rather than deleted: the role needs no DeleteItem.
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(format!("rl#{key}")))
            .key("sk", s("rl"))
            .update_expression("SET #until = :zero")
            .condition_expression("#owner = :owner")
            .expression_attribute_names("#until", "until")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":owner", s(owner))
            .send()
            .await;
        unless_condition_failed(out, &format!("freeing rate-limit slot {key}"))
    }

    async fn count_request(&self, key: &str, until: SystemTime) -> PortResult<u64> {
        // The key names its window (`link-ip/IP/HOUR`), so a counter TTL has not yet
        // removed is never read again.
        let what = format!("counting request {key}");
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(format!("rc#{key}")))
            .key("sk", s("rc"))
            .update_expression("ADD hits :one SET expires_at = :until")
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":until", n(secs(until)))
            .return_values(ReturnValue::UpdatedNew)
            .send()
            .await
            .map_err(|e| port_error(&what, &e, &[]))?;
        out.attributes()
            .and_then(|a| a.get("hits"))
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| PortError::Permanent(format!("{what}: no count in the answer")))
    }

    async fn subject_key(&self) -> PortResult<Vec<u8>> {
        self.subject_key
            .get_or_try_init(|| self.read_subject_key())
            .await
            .cloned()
    }
}

#[async_trait]
impl AuditLog for DynamoState {
    async fn append(&self, r: &AuditRecord) -> PortResult<()> {
        let list = |v: &[String]| AttributeValue::L(v.iter().map(|x| s(x.clone())).collect());
        let mut item = HashMap::from([
            ("pk".to_string(), msg_pk(&r.id)),
            ("sk".to_string(), s(format!("audit#{}", r.key()))),
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
        if let Some(event) = &r.event {
            item.insert("event".to_string(), s(event.clone()));
        }
        self.put_new(
            &format!("appending audit record {} of {}", r.stage, r.id),
            item,
        )
        .await
        .map(|_| ())
    }

    async fn records(&self, id: &str) -> PortResult<Vec<AuditRecord>> {
        let what = format!("reading the audit records of {id}");
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :audit)")
            .expression_attribute_values(":pk", msg_pk(id))
            .expression_attribute_values(":audit", s("audit#"))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| port_error(&what, &e, &[]))?;
        let text = |item: &HashMap<String, AttributeValue>, k: &str| match item.get(k) {
            Some(AttributeValue::S(v)) => Some(v.clone()),
            _ => None,
        };
        let list = |item: &HashMap<String, AttributeValue>, k: &str| match item.get(k) {
            Some(AttributeValue::L(l)) => l
                .iter()
                .filter_map(|v| match v {
                    AttributeValue::S(x) => Some(x.clone()),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        let mut records: Vec<AuditRecord> = out
            .items
            .unwrap_or_default()
            .iter()
            .filter_map(|item| {
                let stage = Stage::ALL
                    .into_iter()
                    .find(|s| Some(s.as_str()) == text(item, "stage").as_deref())?;
                Some(AuditRecord {
                    id: id.to_string(),
                    stage,
                    decision: text(item, "decision").unwrap_or_default(),
                    reasons: list(item, "reasons"),
                    decided_by: list(item, "decided_by"),
                    sender: text(item, "sender"),
                    at: match item.get("at") {
                        Some(AttributeValue::N(n)) => n.parse().unwrap_or(0),
                        _ => 0,
                    },
                    event: text(item, "event"),
                })
            })
            .collect();
        records.sort_by_key(|r| (r.stage, r.event.is_some(), r.at));
        Ok(records)
    }
}

fn allow_pk(recipient: &str) -> String {
    format!("allow#{recipient}")
}
fn allowed_pk(sender: &str) -> String {
    format!("allowed#{sender}")
}

/// A `BatchGetItem` answers at most 100 keys; unprocessed keys are asked again this often
/// before the lookup fails (and the message is retried).
const BATCH_GET_TRIES: usize = 4;

impl DynamoState {
    /// The sort keys of partition `pk`, every page.
    async fn sort_keys_of(&self, pk: &str) -> PortResult<Vec<String>> {
        let what = format!("listing {pk}");
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", s(pk))
                .projection_expression("sk")
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| port_error(&what, &e, &[]))?;
            for item in page.items.unwrap_or_default() {
                if let Some(AttributeValue::S(sk)) = item.get("sk") {
                    out.push(sk.clone());
                }
            }
            start = page.last_evaluated_key;
            if start.is_none() {
                return Ok(out);
            }
        }
    }

    async fn delete_item(&self, pk: String, sk: String) -> PortResult<()> {
        let what = format!("deleting {pk} {sk}");
        self.client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(pk))
            .key("sk", s(sk))
            .send()
            .await
            .map_err(|e| port_error(&what, &e, &[]))?;
        Ok(())
    }
}

#[async_trait]
impl RecipientAllowList for DynamoState {
    async fn allow_sender(&self, e: &AllowedSender) -> PortResult<()> {
        let what = format!("allowing {} for {}", e.sender, e.recipient);
        let put = |pk: String, sk: &str| {
            Put::builder()
                .table_name(&self.table)
                .item("pk", s(pk))
                .item("sk", s(sk))
                .item("recipient", s(e.recipient.clone()))
                .item("sender", s(e.sender.clone()))
                .item("via", s(e.via.clone()))
                .item("at", n(e.at))
                .build()
                .map_err(|x| PortError::Permanent(format!("{what}: {x}")))
        };
        // Both items or neither: an erasure of either address finds the pair.
        let items = [
            put(allow_pk(&e.recipient), &e.sender)?,
            put(allowed_pk(&e.sender), &e.recipient)?,
        ];
        self.client
            .transact_write_items()
            .set_transact_items(Some(
                items
                    .into_iter()
                    .map(|p| TransactWriteItem::builder().put(p).build())
                    .collect(),
            ))
            .send()
            .await
            .map_err(|x| port_error(&what, &x, &[]))?;
        Ok(())
    }

    async fn allowing(&self, sender: &str, recipients: &[String]) -> PortResult<Vec<String>> {
        let what = format!("reading the allow lists of {} recipients", recipients.len());
        let mut found: Vec<String> = Vec::new();
        for chunk in recipients.chunks(100) {
            let mut keys: Vec<HashMap<String, AttributeValue>> = chunk
                .iter()
                .map(|r| {
                    HashMap::from([
                        ("pk".to_string(), s(allow_pk(r))),
                        ("sk".to_string(), s(sender)),
                    ])
                })
                .collect();
            for attempt in 0.. {
                if keys.is_empty() {
                    break;
                }
                if attempt == BATCH_GET_TRIES {
                    return Err(PortError::Retryable(format!(
                        "{what}: {} keys left unprocessed",
                        keys.len()
                    )));
                }
                if attempt > 0 {
                    tokio::time::sleep(std::time::Duration::from_millis(50 << attempt)).await;
                }
                let request = KeysAndAttributes::builder()
                    .set_keys(Some(std::mem::take(&mut keys)))
                    .projection_expression("recipient")
                    .build()
                    .map_err(|x| PortError::Permanent(format!("{what}: {x}")))?;
                let out = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, request)
                    .send()
                    .await
                    .map_err(|x| port_error(&what, &x, &[]))?;
                for item in out
                    .responses
                    .unwrap_or_default()
                    .remove(&self.table)
                    .unwrap_or_default()
                {
                    if let Some(AttributeValue::S(r)) = item.get("recipient") {
                        found.push(r.clone());
                    }
                }
                keys = out
                    .unprocessed_keys
                    .unwrap_or_default()
                    .remove(&self.table)
                    .map(|k| k.keys)
                    .unwrap_or_default();
            }
        }
        // In the order asked, once each.
        Ok(recipients
            .iter()
            .filter(|r| found.contains(r))
            .cloned()
            .collect())
    }

    async fn forget_allowed(&self, address: &str) -> PortResult<usize> {
        let mut gone: Vec<(String, String)> = Vec::new();
        // As the recipient: the sender's item first, so that a run stopped half way is
        // found again from the recipient's.
        for sender in self.sort_keys_of(&allow_pk(address)).await? {
            self.delete_item(allowed_pk(&sender), address.to_string())
                .await?;
            self.delete_item(allow_pk(address), sender.clone()).await?;
            gone.push((address.to_string(), sender));
        }
        // As the sender: the recipient's item first, for the same reason.
        for recipient in self.sort_keys_of(&allowed_pk(address)).await? {
            self.delete_item(allow_pk(&recipient), address.to_string())
                .await?;
            self.delete_item(allowed_pk(address), recipient.clone())
                .await?;
            let pair = (recipient, address.to_string());
            if !gone.contains(&pair) {
                gone.push(pair);
            }
        }
        Ok(gone.len())
    }
}
