//! What arrives on the queues. The inbound queue gets S3 event notifications (parsed here
//! with our own lenient structs: emulators and some real events omit `userIdentity` and
//! `requestParameters`, which `aws_lambda_events`' `S3Event` requires); the other queues
//! get [`Envelope`]s.

use mailroom_core::model::{ENVELOPE_VERSION, Envelope, RawRef};
use serde::Deserialize;

/// The object SES writes when a receipt rule is created; it is not mail.
pub const SES_SETUP_OBJECT: &str = "AMAZON_SES_SETUP_NOTIFICATION";

#[derive(Deserialize)]
struct S3Notification {
    #[serde(rename = "Records", default)]
    records: Vec<S3Record>,
    #[serde(rename = "Event")]
    event: Option<String>,
}

#[derive(Deserialize)]
struct S3Record {
    #[serde(rename = "eventName", default)]
    event_name: String,
    s3: S3Entity,
}

#[derive(Deserialize)]
struct S3Entity {
    bucket: S3Bucket,
    object: S3Object,
}

#[derive(Deserialize)]
struct S3Bucket {
    name: String,
}

#[derive(Deserialize)]
struct S3Object {
    key: String,
}

/// Turns one inbound-queue message body into the envelopes to filter. An `s3:TestEvent`
/// and the SES setup object give none. Errors name what is wrong with the body.
pub fn inbound_envelopes(body: &str) -> Result<Vec<Envelope>, String> {
    if let Ok(env) = serde_json::from_str::<Envelope>(body) {
        // A redriven or hand-sent envelope.
        check_version(&env)?;
        return Ok(vec![env]);
    }
    let n: S3Notification =
        serde_json::from_str(body).map_err(|e| format!("not an S3 event notification: {e}"))?;
    if n.event.as_deref() == Some("s3:TestEvent") {
        return Ok(vec![]);
    }
    let mut out = Vec::new();
    for r in n.records {
        if !r.event_name.starts_with("ObjectCreated") {
            continue;
        }
        let key = decode_key(&r.s3.object.key)?;
        let id = key.rsplit('/').next().unwrap_or(&key).to_string();
        if id.is_empty() || id == SES_SETUP_OBJECT {
            continue;
        }
        out.push(Envelope::new(
            id,
            RawRef {
                bucket: r.s3.bucket.name,
                key,
            },
        ));
    }
    Ok(out)
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

/// S3 event keys are URL-encoded, with '+' for space.
pub fn decode_key(key: &str) -> Result<String, String> {
    let bytes = key.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = key
                    .get(i + 1..i + 3)
                    .ok_or_else(|| format!("bad %-escape at the end of key {key:?}"))?;
                out.push(
                    u8::from_str_radix(hex, 16)
                        .map_err(|_| format!("bad %-escape %{hex} in key {key:?}"))?,
                );
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| format!("key {key:?} does not decode to UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_keys() {
        assert_eq!(decode_key("raw/a+b%2Fc%3D").unwrap(), "raw/a b/c=");
        assert!(decode_key("raw/%zz").is_err());
    }

    #[test]
    fn reads_s3_events_without_optional_fields() {
        let body = r#"{"Records":[{"eventVersion":"2.1","eventSource":"aws:s3","eventName":"ObjectCreated:Put",
            "s3":{"bucket":{"name":"b"},"object":{"key":"raw/0abc%2Bdef","size":12}}}]}"#;
        let envs = inbound_envelopes(body).unwrap();
        assert_eq!(envs.len(), 1);
        assert_eq!(envs[0].raw.key, "raw/0abc+def");
        assert_eq!(envs[0].id, "0abc+def");
    }

    #[test]
    fn ignores_test_events_and_the_setup_object() {
        assert!(
            inbound_envelopes(r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Bucket":"b"}"#)
                .unwrap()
                .is_empty()
        );
        let setup = r#"{"Records":[{"eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"b"},"object":{"key":"raw/AMAZON_SES_SETUP_NOTIFICATION"}}}]}"#;
        assert!(inbound_envelopes(setup).unwrap().is_empty());
        assert!(
            inbound_envelopes("not json")
                .unwrap_err()
                .contains("not an S3 event")
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
