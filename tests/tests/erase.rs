//! Erasure and export per data subject on a stack, with the operator's credentials: every
//! message naming the address (as sender, and only in Cc) loses its raw mail and copies in
//! every version, its items, index entries, audit and auto-reply slot; an erasure stopped
//! half way by a failing table is finished by the next run; afterwards no item and no
//! object version holds the address.

use mailroom_aws::erase::StackForget;
use mailroom_aws::operator::{StackNames, connect};
use mailroom_core::operate::{Forget, subject_hash};
use mailroom_core::pipeline::release::Releaser;
use mailroom_tests::aws::{OPERATOR, Stack, fixture, ses_message_id};
use mailroom_tests::proxy::Fault;

const SUBJECT: &str = "promo@prizes.example";

/// Every item of the table and every version of every object, as text, that holds `needle`.
async fn holding(stack: &Stack, needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for item in stack.all_items().await {
        let text = format!("{item:?}");
        if text.to_ascii_lowercase().contains(needle) {
            found.push(format!("item {:?}", item.get("pk")));
        }
    }
    let versions = stack
        .s3
        .list_object_versions()
        .bucket(&stack.bucket)
        .send()
        .await
        .unwrap();
    for v in versions.versions() {
        let (key, version) = (v.key().unwrap(), v.version_id().unwrap());
        let body = stack
            .s3
            .get_object()
            .bucket(&stack.bucket)
            .key(key)
            .version_id(version)
            .send()
            .await
            .unwrap()
            .body
            .collect()
            .await
            .unwrap()
            .into_bytes();
        if String::from_utf8_lossy(&body)
            .to_ascii_lowercase()
            .contains(needle)
        {
            found.push(format!("object {key} version {version}"));
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_on_a_stack_leaves_no_version_and_no_item_naming_the_address() {
    let Some(stack) = Stack::create("erase").await else {
        return;
    };
    let spam = stack.put_mail("spam-fail.eml").await;
    let cc = stack
        .put_raw(
            &ses_message_id(),
            String::from_utf8(fixture("support.eml"))
                .unwrap()
                .replacen(
                    "To: support@example.com",
                    "To: support@example.com\r\nCc: Prize Desk <Promo@Prizes.example>",
                    1,
                )
                .into_bytes(),
        )
        .await;
    let other = stack.put_mail("sales.eml").await;
    let pipeline = stack.pipeline().await;
    stack.run_until_idle(&pipeline).await;
    let names = StackNames::of_stack(&stack.name, &stack.account);
    let sdk = stack.sdk_as(OPERATOR).await;
    let op = connect(&sdk, &names, None).await.unwrap();
    // The release sends the auto-reply to the subject: a rate-limit slot names them.
    op.release(&spam, &Releaser::operator("ops")).await.unwrap();
    stack.run_until_idle(&pipeline).await;
    assert!(
        stack
            .sent_mail()
            .await
            .iter()
            .any(|m| m.destinations == [SUBJECT]),
        "the subject got an auto-reply"
    );
    let forget = StackForget::on(&sdk, &names);
    assert_eq!(
        mailroom_aws::erase::RAW_PREFIX,
        mailroom_tests::aws::resources().prefix("raw")
    );
    let mut found = forget.messages_naming(SUBJECT).await.unwrap();
    found.sort();
    let mut want = vec![spam.clone(), cc.clone()];
    want.sort();
    assert_eq!(found, want, "by sender, and by an address only in Cc");

    // The access request: both messages as they arrived, with their audit trails.
    let exported = op.export(&forget, "Promo@Prizes.example").await.unwrap();
    assert_eq!(exported.len(), 2);
    let of_spam = exported.iter().find(|m| m.view.summary.id == spam).unwrap();
    assert!(String::from_utf8_lossy(&of_spam.bytes).contains("Claim your reward today"));
    assert!(
        of_spam
            .view
            .audit
            .iter()
            .any(|r| r.event.as_deref() == Some("release"))
    );

    // The table fails part way: the erasure stops with an error naming what failed.
    let rule = stack.arm(OPERATOR, "DeleteItem", 4, 1000, Fault::Internal);
    let stopped = op.erase(&forget, SUBJECT, "dpo", false, now()).await;
    assert!(stopped.is_err(), "{stopped:?}");
    stack.disarm(rule);
    assert!(!holding(&stack, SUBJECT).await.is_empty(), "half done");
    // Run again, it finishes.
    let erasure = op
        .erase(&forget, SUBJECT, "dpo", false, now())
        .await
        .unwrap();
    assert_eq!(erasure.messages.len(), 2, "{erasure:?}");
    let record = erasure.record.clone().unwrap();
    assert_eq!(record.slots, 1, "the auto-reply slot");
    assert!(
        erasure
            .messages
            .iter()
            .any(|m| m.went.iter().any(|w| w.contains("sales-team@corp.example"))),
        "the report says where the mail went: {erasure:?}"
    );
    assert_eq!(
        holding(&stack, SUBJECT).await,
        Vec::<String>::new(),
        "spam {spam} cc {cc} other {other}: {erasure:#?}"
    );
    assert!(stack.items(&spam).await.is_empty() && stack.items(&cc).await.is_empty());
    assert!(
        !stack.items(&other).await.is_empty(),
        "other people's mail stays"
    );
    assert!(
        !stack.objects("raw/").await.is_empty(),
        "other people's raw mail stays"
    );

    // What stays: the record under the keyed hash, kept for retention.erasures.
    let key = mailroom_core::ports::StateStore::subject_key(&forget.state)
        .await
        .unwrap();
    let hash = subject_hash(&key, SUBJECT);
    assert_eq!(record.subject, hash);
    let kept = stack
        .dynamo
        .query()
        .table_name(&stack.table)
        .key_condition_expression("pk = :pk")
        .expression_attribute_values(
            ":pk",
            aws_sdk_dynamodb::types::AttributeValue::S(format!("erasure#{hash}")),
        )
        .send()
        .await
        .unwrap()
        .items
        .unwrap_or_default();
    assert_eq!(kept.len(), 1);
    let expires: u64 = kept[0]["expires_at"].as_n().unwrap().parse().unwrap();
    assert!(expires > now() + 1800 * 86_400, "five years: {expires}");
    assert!(forget.pending_erasure(&hash).await.unwrap().is_empty());
    // Again: nothing left to erase.
    let again = op
        .erase(&forget, SUBJECT, "dpo", false, now())
        .await
        .unwrap();
    assert!(again.messages.is_empty());
    stack.assert_calls_allowed();
}

/// A digest's recipient whom an operator also allowed as a sender: after the erasure and
/// `--from-config`, no item (the digest's effect, keys of older versions included) and no
/// version of any object, the config's included, names them; every call is one the
/// operator policy allows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_digest_and_an_allow_an_erasure_leaves_no_item_and_no_config_version_naming_them() {
    use mailroom_core::ports::StateStore;
    use std::time::{Duration, SystemTime};
    const DANA: &str = "dana@example.com";
    let Some(stack) = Stack::create("erasedigest").await else {
        return;
    };
    let spam = String::from_utf8(fixture("spam-fail.eml"))
        .unwrap()
        .replacen("To: sales@example.com", "To: Dana <Dana@example.com>", 1);
    let held = stack.put_raw(&ses_message_id(), spam.into_bytes()).await;
    let pipeline = stack.pipeline().await;
    stack.run_until_idle(&pipeline).await;
    let (digest, _) = stack
        .desk(
            mailroom_aws::digest::Function::Digest,
            "https://links.example/",
        )
        .await;
    let at = now();
    let sent = digest.send_digests(at).await.unwrap();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].to, DANA);
    let names = StackNames::of_stack(&stack.name, &stack.account);
    let sdk = stack.sdk_as(OPERATOR).await;
    let s3 = mailroom_aws::app::s3_client(&sdk);
    let allowed = mailroom_aws::config_source::edit_senders(
        &s3,
        &names.bucket,
        &names.config_key,
        mailroom_core::config::SenderList::Allow,
        "Dana@Example.com",
    )
    .await
    .unwrap();
    assert!(allowed.contains("added dana@example.com"), "{allowed}");
    // A later edit: the version that added Dana is now one of several earlier ones.
    mailroom_aws::config_source::edit_senders(
        &s3,
        &names.bucket,
        &names.config_key,
        mailroom_core::config::SenderList::Block,
        "@junk.example",
    )
    .await
    .unwrap();
    // Items as versions before the keyed hash wrote them: a digest's effect, a reply slot.
    let old = mailroom_aws::dynamo::DynamoState::new(
        stack.dynamo.clone(),
        stack.table.clone(),
        Duration::from_secs(86_400),
    );
    let run = format!("digest-{}", at / 86_400 - 3);
    let effect = "respond/digest/dana@example.com";
    let t = SystemTime::now();
    old.claim_effect(&run, effect, "o", Duration::from_secs(60), t)
        .await
        .unwrap();
    old.complete_effect(&run, effect, "ses-old").await.unwrap();
    assert!(
        old.acquire_rate_limit(
            "reply#dana@example.com#support",
            "m-old",
            t + Duration::from_secs(600),
            t
        )
        .await
        .unwrap()
    );
    assert!(
        holding(&stack, DANA).await.len() >= 5,
        "mail, index, config, old keys"
    );

    let op = connect(&sdk, &names, None).await.unwrap();
    let forget = StackForget::on(&sdk, &names);
    let erasure = op.erase(&forget, DANA, "dpo", false, now()).await.unwrap();
    assert_eq!(erasure.messages.len(), 1);
    assert_eq!(erasure.messages[0].id, held);
    assert_eq!(
        erasure.sender_lists,
        ["allow_senders"],
        "named, not removed"
    );
    assert_eq!(erasure.record.as_ref().unwrap().slots, 1, "the old slot");
    let left = holding(&stack, DANA).await;
    assert!(
        !left.is_empty() && left.iter().all(|w| w.contains("config/")),
        "only the config names them now: {left:?}"
    );
    let done = mailroom_aws::config_source::erase_from_config(
        &s3,
        &names.bucket,
        &names.config_key,
        DANA,
        true,
    )
    .await
    .unwrap();
    assert_eq!(done.lists, ["allow_senders"]);
    assert!(!done.named_elsewhere);
    assert_eq!(done.versions_deleted, 2, "the allow and the block after it");
    assert_eq!(holding(&stack, DANA).await, Vec::<String>::new());
    // The config still works, the block kept, and the digest run's own record stays.
    let config = connect(&sdk, &names, None).await.unwrap();
    let filter = &config.engine().config().filter;
    assert!(filter.allow_senders.is_empty());
    assert_eq!(filter.block_senders, ["@junk.example"]);
    let again = digest.send_digests(at + 60).await.unwrap();
    assert!(again.is_empty(), "nothing left to list: {again:?}");
    stack.assert_calls_allowed();
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}
