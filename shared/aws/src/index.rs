//! The operators' index of message summaries in the state table:
//!
//! | item | pk | sk | index keys |
//! |---|---|---|---|
//! | summary | `msg#<id>` | `summary` | `t_pk = t#<YYYY-MM>`, `s_pk = s#<sender>`, `q_pk = q#<YYYY-MM>` (while quarantined), `ix_sk = <time>#<id>` |
//! | recipient | `rcpt#<address>` | `<time>#<id>` | |
//! | another address it names (Cc, Reply-To, ...) | `addr#<address>` | `<time>#<id>` | |
//! | its Message-ID (angle brackets off) | `mid#<message-id>` | `<time>#<id>` | |
//! | the reference it was given | `ref#<reference>` | `<time>#<id>` | |
//! | a follow-up, in its conversation | `conv#<first message's id>` | `<time>#<id>` | |
//!
//! The global secondary indexes `by-time`, `by-sender` and `by-quarantine` order each by
//! `ix_sk`; an index cannot key on a list, so each recipient is an item of its own. Time
//! and quarantine are partitioned by month, read newest first. The Message-ID, reference
//! and conversation items are what the classify stage finds a follow-up's conversation by
//! (items rather than more indexes: CloudFormation adds one index per table update).

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use mailroom_core::operate::{
    IndexKey, MessageSummary, Page, Query, collect_page, indexed_message_id,
};
use mailroom_core::ports::{MessageIndex, PortResult};

use crate::dynamo::DynamoState;
use crate::errors::port_error;

/// Months read back for a time or quarantine query without `since`.
const DEFAULT_MONTHS: u32 = 24;

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn sort_key(at: u64, id: &str) -> String {
    format!("{at:020}#{id}")
}

/// `(year, month)` of a time (seconds since the epoch), in UTC.
fn month_of(secs: u64) -> (i64, u32) {
    // Howard Hinnant's civil-from-days.
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month)
}

fn month_key(prefix: &str, (year, month): (i64, u32)) -> String {
    format!("{prefix}#{year:04}-{month:02}")
}

fn previous((year, month): (i64, u32)) -> (i64, u32) {
    if month == 1 {
        (year - 1, 12)
    } else {
        (year, month - 1)
    }
}

/// The partition keys of a summary's items beside it, each with the sort key
/// `<time>#<id>` and the attribute `id`: erasure finds a message by every address it names
/// (the sender and recipients by their own index, the others by an item each), and the
/// classify stage a conversation by Message-ID, reference and conversation.
pub(crate) fn side_items(summary: &MessageSummary) -> Vec<String> {
    let others = summary
        .addresses
        .iter()
        .filter(|a| summary.sender.as_ref() != Some(*a) && !summary.recipients.contains(a))
        .map(|a| format!("addr#{a}"));
    summary
        .recipients
        .iter()
        .map(|r| format!("rcpt#{r}"))
        .chain(others)
        .chain(indexed_message_id(summary).map(|m| format!("mid#{m}")))
        .chain(summary.reference.iter().map(|r| format!("ref#{r}")))
        .chain(summary.conversation.iter().map(|c| format!("conv#{c}")))
        .collect()
}

fn summary_of(item: &HashMap<String, AttributeValue>) -> Option<MessageSummary> {
    match item.get("summary") {
        Some(AttributeValue::S(json)) => serde_json::from_str(json).ok(),
        _ => None,
    }
}

impl DynamoState {
    /// Rows of one index partition (or the recipient items), newest first, until `want`
    /// rows hold the query or the partition ends.
    async fn read_partition(
        &self,
        index: Option<&str>,
        key: (&str, String),
        query: &Query,
        want: usize,
        out: &mut Vec<MessageSummary>,
    ) -> PortResult<()> {
        let (key_name, key_value) = key;
        let sort_name = if index.is_some() { "ix_sk" } else { "sk" };
        let lo = sort_key(query.since.unwrap_or(0), "");
        let hi = match &query.before {
            Some(c) => sort_key(c.at, &c.id),
            None => sort_key(query.until.unwrap_or(u64::MAX / 2), "\u{10ffff}"),
        };
        let mut start = None;
        loop {
            let what = format!("querying {} {key_value}", index.unwrap_or("the table"));
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .set_index_name(index.map(str::to_string))
                .key_condition_expression("#k = :k AND #s BETWEEN :lo AND :hi")
                .expression_attribute_names("#k", key_name)
                .expression_attribute_names("#s", sort_name)
                .expression_attribute_values(":k", s(key_value.clone()))
                .expression_attribute_values(":lo", s(lo.clone()))
                .expression_attribute_values(":hi", s(hi.clone()))
                .scan_index_forward(false)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| port_error(&what, &e, &[]))?;
            for item in page.items.unwrap_or_default() {
                let row = if index.is_some() {
                    summary_of(&item)
                } else {
                    match item.get("id") {
                        Some(AttributeValue::S(id)) => self.get(id).await?,
                        _ => None,
                    }
                };
                if let Some(row) = row
                    && query.matches(&row)
                {
                    out.push(row);
                    if out.len() >= want {
                        return Ok(());
                    }
                }
            }
            start = page.last_evaluated_key;
            if start.is_none() {
                return Ok(());
            }
        }
    }
}

#[async_trait]
impl MessageIndex for DynamoState {
    async fn record(&self, summary: &MessageSummary) -> PortResult<()> {
        let json = serde_json::to_string(summary).expect("summaries serialise");
        let ix = sort_key(summary.at, &summary.id);
        let month = month_of(summary.at);
        let mut item = HashMap::from([
            ("pk".to_string(), s(format!("msg#{}", summary.id))),
            ("sk".to_string(), s("summary")),
            ("summary".to_string(), s(json)),
            ("t_pk".to_string(), s(month_key("t", month))),
            ("ix_sk".to_string(), s(ix.clone())),
            ("expires_at".to_string(), self.expires()),
        ]);
        if let Some(sender) = &summary.sender {
            item.insert("s_pk".into(), s(format!("s#{sender}")));
        }
        if summary.quarantined.is_some() {
            item.insert("q_pk".into(), s(month_key("q", month)));
        }
        let what = format!("recording the summary of {}", summary.id);
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| port_error(&what, &e, &[]))?;
        for pk in side_items(summary) {
            let item = HashMap::from([
                ("pk".to_string(), s(pk)),
                ("sk".to_string(), s(ix.clone())),
                ("id".to_string(), s(summary.id.clone())),
                ("expires_at".to_string(), self.expires()),
            ]);
            self.client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item))
                .send()
                .await
                .map_err(|e| port_error(&what, &e, &[]))?;
        }
        Ok(())
    }

    async fn get(&self, id: &str) -> PortResult<Option<MessageSummary>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(format!("msg#{id}")))
            .key("sk", s("summary"))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| port_error(&format!("reading the summary of {id}"), &e, &[]))?;
        Ok(out.item.as_ref().and_then(summary_of))
    }

    async fn query(&self, query: &Query) -> PortResult<Page> {
        let want = query.page_size();
        let mut rows = Vec::new();
        match query.index() {
            IndexKey::Sender(sender) => {
                self.read_partition(
                    Some("by-sender"),
                    ("s_pk", format!("s#{sender}")),
                    query,
                    want,
                    &mut rows,
                )
                .await?
            }
            IndexKey::Recipient(r) => {
                self.read_partition(None, ("pk", format!("rcpt#{r}")), query, want, &mut rows)
                    .await?
            }
            IndexKey::MessageId(m) => {
                self.read_partition(None, ("pk", format!("mid#{m}")), query, want, &mut rows)
                    .await?
            }
            IndexKey::Reference(r) => {
                self.read_partition(None, ("pk", format!("ref#{r}")), query, want, &mut rows)
                    .await?
            }
            IndexKey::Conversation(c) => {
                self.read_partition(None, ("pk", format!("conv#{c}")), query, want, &mut rows)
                    .await?
            }
            key @ (IndexKey::Quarantine | IndexKey::Time) => {
                let (index, name, prefix) = if key == IndexKey::Quarantine {
                    ("by-quarantine", "q_pk", "q")
                } else {
                    ("by-time", "t_pk", "t")
                };
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                let top = query
                    .before
                    .as_ref()
                    .map(|c| c.at)
                    .or(query.until)
                    .unwrap_or(now)
                    .min(now);
                let mut month = month_of(top);
                let floor = match query.since {
                    Some(since) => month_of(since),
                    None => (0..DEFAULT_MONTHS).fold(month, |m, _| previous(m)),
                };
                while month >= floor && rows.len() < want {
                    self.read_partition(
                        Some(index),
                        (name, month_key(prefix, month)),
                        query,
                        want,
                        &mut rows,
                    )
                    .await?;
                    month = previous(month);
                }
            }
        }
        Ok(collect_page(rows.into_iter(), query))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_of_times() {
        assert_eq!(month_of(0), (1970, 1));
        assert_eq!(month_of(1_764_547_200), (2025, 12)); // 2025-12-01
        assert_eq!(month_of(1_709_164_800), (2024, 2)); // 2024-02-29
        assert_eq!(previous((2026, 1)), (2025, 12));
        assert_eq!(month_key("q", (2026, 3)), "q#2026-03");
    }
}
