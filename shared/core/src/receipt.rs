//! SES's receipt notification: the JSON SES publishes (`notificationType: Received`) once a
//! receipt rule's S3 action has stored a message. It carries what the message's own headers
//! cannot be trusted for: the SMTP envelope (`mail.source`, `receipt.recipients`) and SES's
//! verdicts, including the sender domain's DMARC policy when DMARC failed.
//!
//! Read leniently: unknown fields are ignored and a missing verdict is "not given". The shape
//! is the one in the SES developer guide ("Contents of notifications for Amazon SES email
//! receiving").

use serde::Deserialize;

use crate::model::{Envelope, RawRef, Receipt};

/// The object (and message id) SES writes when a receipt rule is created; it is not mail.
pub const SES_SETUP_OBJECT: &str = "AMAZON_SES_SETUP_NOTIFICATION";

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Notification {
    notification_type: String,
    #[serde(default)]
    mail: NotificationMail,
    #[serde(default)]
    receipt: NotificationReceipt,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct NotificationMail {
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    message_id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct NotificationReceipt {
    #[serde(default)]
    recipients: Vec<String>,
    #[serde(default)]
    spam_verdict: Option<Status>,
    #[serde(default)]
    virus_verdict: Option<Status>,
    #[serde(default)]
    spf_verdict: Option<Status>,
    #[serde(default)]
    dkim_verdict: Option<Status>,
    #[serde(default)]
    dmarc_verdict: Option<Status>,
    #[serde(default)]
    dmarc_policy: Option<String>,
    #[serde(default)]
    action: Option<NotificationAction>,
}

#[derive(Debug, Deserialize)]
struct Status {
    #[serde(default)]
    status: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct NotificationAction {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    bucket_name: Option<String>,
    #[serde(default)]
    object_key: Option<String>,
}

fn status(s: Option<Status>) -> Option<String> {
    s.and_then(|s| s.status)
        .map(|v| v.trim().to_ascii_uppercase())
        .filter(|v| !v.is_empty())
}

/// The envelope facts and verdicts of a notification, without the stored object.
pub fn receipt_from_notification(json: &str) -> Result<Receipt, String> {
    parse(json).map(|(_, receipt, _)| receipt)
}

/// The envelope to filter for one receipt notification: the message id SES gave it, the
/// object its S3 action stored, and the [`Receipt`]. `None` for the setup notification SES
/// sends when a rule is created. An error says what the notification lacks.
pub fn envelope_from_notification(json: &str) -> Result<Option<Envelope>, String> {
    let (id, receipt, action) = parse(json)?;
    let id = id.ok_or("the notification has no mail.messageId")?;
    if id == SES_SETUP_OBJECT {
        return Ok(None);
    }
    let action = action.ok_or_else(|| format!("notification for {id} has no receipt.action"))?;
    if !action.kind.eq_ignore_ascii_case("S3") {
        return Err(format!(
            "notification for {id} is for a {} action; mailroom reads mail an S3 action stored",
            action.kind
        ));
    }
    let bucket = action
        .bucket_name
        .filter(|b| !b.is_empty())
        .ok_or_else(|| format!("notification for {id} has no receipt.action.bucketName"))?;
    let key = action
        .object_key
        .filter(|k| !k.is_empty())
        .ok_or_else(|| format!("notification for {id} has no receipt.action.objectKey"))?;
    let mut env = Envelope::new(id, RawRef { bucket, key });
    env.receipt = Some(receipt);
    Ok(Some(env))
}

type Parsed = (Option<String>, Receipt, Option<NotificationAction>);

fn parse(json: &str) -> Result<Parsed, String> {
    let n: Notification =
        serde_json::from_str(json).map_err(|e| format!("not an SES receipt notification: {e}"))?;
    if n.notification_type != "Received" {
        return Err(format!(
            "notificationType is {:?}, not \"Received\"",
            n.notification_type
        ));
    }
    let lower = |v: String| v.trim().to_ascii_lowercase();
    let r = n.receipt;
    let receipt = Receipt {
        mail_from: n.mail.source.map(lower).filter(|s| !s.is_empty()),
        recipients: r
            .recipients
            .into_iter()
            .map(lower)
            .filter(|s| !s.is_empty())
            .collect(),
        spam: status(r.spam_verdict),
        virus: status(r.virus_verdict),
        spf: status(r.spf_verdict),
        dkim: status(r.dkim_verdict),
        dmarc: status(r.dmarc_verdict),
        dmarc_policy: r.dmarc_policy.map(lower).filter(|s| !s.is_empty()),
    };
    let id = n.mail.message_id.filter(|s| !s.is_empty());
    Ok((id, receipt, r.action))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_verdicts_are_not_given_and_unknown_fields_are_ignored() {
        let r = receipt_from_notification(
            r#"{"notificationType":"Received","extra":1,"mail":{"messageId":"m","source":""},
                "receipt":{"recipients":["A@X.example"],"spamVerdict":{"status":"gray"},"new":{}}}"#,
        )
        .unwrap();
        assert_eq!(r.recipients, ["a@x.example"]);
        assert_eq!(r.spam.as_deref(), Some("GRAY"));
        assert_eq!((r.virus, r.mail_from, r.dmarc_policy), (None, None, None));
    }

    #[test]
    fn errors_say_what_is_missing() {
        let e = envelope_from_notification(
            r#"{"notificationType":"Received","mail":{"messageId":"m"},"receipt":{}}"#,
        )
        .unwrap_err();
        assert!(e.contains("no receipt.action"), "{e}");
        let e = envelope_from_notification(r#"{"notificationType":"Bounce"}"#).unwrap_err();
        assert!(e.contains("\"Bounce\""), "{e}");
        let e = envelope_from_notification(
            r#"{"notificationType":"Received","mail":{"messageId":"m"},"receipt":{"action":{"type":"SNS"}}}"#,
        )
        .unwrap_err();
        assert!(e.contains("SNS action"), "{e}");
    }
}
