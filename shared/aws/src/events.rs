//! What arrives on the queues. The inbound queue gets SES's receipt notifications, which
//! SES publishes to the inbound topic once it has stored a message in S3 and which the
//! topic delivers to the queue (raw message delivery, so the body is the notification; an
//! SNS envelope around it is read too). The other queues get [`Envelope`]s.
//!
//! The notification is read leniently, as [`mailroom_core::receipt`] describes.

use mailroom_core::model::{ENVELOPE_VERSION, Envelope};
use mailroom_core::receipt;
use serde::Deserialize;

/// An SNS envelope, for a subscription without raw message delivery.
#[derive(Deserialize)]
struct SnsEnvelope {
    #[serde(rename = "Type")]
    kind: String,
    #[serde(rename = "Message", default)]
    message: String,
}

/// Turns one inbound-queue message body into the envelopes to filter: one per receipt
/// notification; none for the SES setup notification and for SNS subscription messages.
/// Errors name what is wrong with the body.
pub fn inbound_envelopes(body: &str) -> Result<Vec<Envelope>, String> {
    if let Ok(env) = serde_json::from_str::<Envelope>(body) {
        // A redriven or hand-sent envelope.
        check_version(&env)?;
        return Ok(vec![env]);
    }
    if let Ok(sns) = serde_json::from_str::<SnsEnvelope>(body) {
        return match sns.kind.as_str() {
            "Notification" => receipt::envelope_from_notification(&sns.message)
                .map(|e| e.into_iter().collect())
                .map_err(|e| format!("SNS notification: {e}")),
            // SubscriptionConfirmation, UnsubscribeConfirmation: SNS talking, not mail.
            _ => Ok(vec![]),
        };
    }
    receipt::envelope_from_notification(body).map(|e| e.into_iter().collect())
}

/// Reads an envelope from a stage queue.
pub fn envelope(body: &str) -> Result<Envelope, String> {
    let env: Envelope =
        serde_json::from_str(body).map_err(|e| format!("not a mailroom envelope: {e}"))?;
    check_version(&env)?;
    Ok(env)
}

fn check_version(env: &Envelope) -> Result<(), String> {
    if env.version != ENVELOPE_VERSION {
        return Err(format!(
            "envelope version {} is not supported (this function reads version {ENVELOPE_VERSION})",
            env.version
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mailroom_core::model::RawRef;

    const NOTIFICATION: &str = r#"{"notificationType":"Received",
        "mail":{"timestamp":"2026-11-30T10:00:00.000Z","source":"Ann@Example.org",
            "messageId":"0abcdef","destination":["team@example.com"],"headersTruncated":false,
            "headers":[{"name":"From","value":"Ann <ann@example.org>"}],"commonHeaders":{}},
        "receipt":{"timestamp":"2026-11-30T10:00:00.000Z","processingTimeMillis":320,
            "recipients":["Support@Example.com","bcc-alias@example.com"],
            "spamVerdict":{"status":"PASS"},"virusVerdict":{"status":"PASS"},
            "spfVerdict":{"status":"PASS"},"dkimVerdict":{"status":"GRAY"},
            "dmarcVerdict":{"status":"FAIL"},"dmarcPolicy":"reject",
            "action":{"type":"S3","topicArn":"arn:aws:sns:us-east-1:1:t",
                "bucketName":"b","objectKeyPrefix":"raw/","objectKey":"raw/0abcdef"}}}"#;

    #[test]
    fn reads_a_receipt_notification_raw_and_in_an_sns_envelope() {
        let envs = inbound_envelopes(NOTIFICATION).unwrap();
        assert_eq!(envs.len(), 1);
        let e = &envs[0];
        assert_eq!(e.id, "0abcdef");
        assert_eq!(
            e.raw,
            RawRef {
                bucket: "b".into(),
                key: "raw/0abcdef".into()
            }
        );
        let r = e.receipt.as_ref().unwrap();
        assert_eq!(
            r.recipients,
            ["support@example.com", "bcc-alias@example.com"]
        );
        assert_eq!(r.mail_from.as_deref(), Some("ann@example.org"));
        assert_eq!(r.dmarc.as_deref(), Some("FAIL"));
        assert_eq!(r.dmarc_policy.as_deref(), Some("reject"));
        let sns = serde_json::json!({"Type":"Notification","MessageId":"m","TopicArn":"t",
            "Message": NOTIFICATION})
        .to_string();
        assert_eq!(inbound_envelopes(&sns).unwrap(), envs);
    }

    #[test]
    fn ignores_subscription_messages_and_the_setup_notification() {
        let confirm =
            r#"{"Type":"SubscriptionConfirmation","Message":"You have chosen...","TopicArn":"t"}"#;
        assert!(inbound_envelopes(confirm).unwrap().is_empty());
        let setup = NOTIFICATION.replace("0abcdef", "AMAZON_SES_SETUP_NOTIFICATION");
        assert!(inbound_envelopes(&setup).unwrap().is_empty());
        assert!(
            inbound_envelopes("not json")
                .unwrap_err()
                .contains("not an SES receipt notification")
        );
    }

    #[test]
    fn envelopes_check_their_version() {
        let mut env = Envelope::new(
            "m",
            RawRef {
                bucket: "b".into(),
                key: "raw/m".into(),
            },
        );
        assert_eq!(
            envelope(&serde_json::to_string(&env).unwrap()).unwrap(),
            env
        );
        env.version = 99;
        assert!(
            envelope(&serde_json::to_string(&env).unwrap())
                .unwrap_err()
                .contains("version 99")
        );
    }
}
