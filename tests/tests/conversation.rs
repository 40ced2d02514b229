//! Conversations on a deployed stack: a reply to the auto-reply and a participant's reply by
//! Message-ID join the conversation through the DynamoDB index (under the template's IAM),
//! keep its route and get no new auto-reply; a stranger's forged References does not.

use mailroom_aws::erase::StackForget;
use mailroom_aws::operator::{StackNames, connect};
use std::time::SystemTime;

use mailroom_core::model::Stage;
use mailroom_core::pipeline::epoch_secs;
use mailroom_tests::aws::{OPERATOR, Stack, fixture, ses_message_id};

/// The support fixture from another sender, to another address, with extra headers.
fn reply(from: &str, to: &str, subject: &str, headers: &str, body: &str) -> Vec<u8> {
    let original = String::from_utf8(fixture("support.eml")).unwrap();
    let (head, _) = original.split_once("\n\n").unwrap();
    let domain = from.rsplit_once('@').unwrap().1;
    let head: String = head
        .lines()
        .filter(|l| {
            !["From:", "To:", "Subject:", "Message-ID:"]
                .iter()
                .any(|h| l.starts_with(h))
        })
        .map(|l| {
            l.replace("nora@client.example", from)
                .replace("client.example", domain)
                .replace("support@example.com", to)
        })
        .collect::<Vec<_>>()
        .join("\n");
    let n = ses_message_id();
    format!(
        "{head}\nFrom: <{from}>\nTo: {to}\nSubject: {subject}\nMessage-ID: <{n}@{domain}>\n{headers}\n{body}\n"
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_ups_join_their_conversation_on_a_stack() {
    let Some(stack) = Stack::create("conversation").await else {
        return;
    };
    let pipeline = stack.pipeline().await;
    let first = stack.put_mail("support.eml").await;
    stack.run_until_idle(&pipeline).await;
    let sent = stack.sent_mail().await;
    let auto_reply = sent
        .iter()
        .find(|m| m.is_auto_reply())
        .expect("the first message gets an auto-reply");
    let reply_id = auto_reply.header("Message-ID").expect("a Message-ID");
    assert!(
        reply_id.trim_start_matches('<').starts_with("MR-"),
        "the auto-reply's Message-ID carries the reference: {reply_id}"
    );

    // Nora answers the auto-reply, to billing@: it stays a support ticket.
    let answer = stack
        .put_raw(
            &ses_message_id(),
            reply(
                "nora@client.example",
                "billing@example.com",
                "Re: Export button does nothing",
                &format!(
                    "In-Reply-To: {reply_id}\nReferences: <ticket-42@client.example> {reply_id}\n"
                ),
                "Still nothing after a restart.",
            ),
        )
        .await;
    // A stranger names Nora's message to get into her ticket.
    let forged = stack
        .put_raw(
            &ses_message_id(),
            reply(
                "mallory@elsewhere.example",
                "support@example.com",
                "Re: Export button does nothing",
                "In-Reply-To: <ticket-42@client.example>\nReferences: <ticket-42@client.example>\n",
                "Please send me the export.",
            ),
        )
        .await;
    stack.run_until_idle(&pipeline).await;

    let classify = stack.audit_list(&answer, Stage::Classify, "reasons").await;
    assert!(
        classify
            .iter()
            .any(|r| r.contains(&format!("in conversation {first} (by reference)"))),
        "{classify:?}"
    );
    let deliveries: Vec<serde_json::Value> = stack
        .drain_bodies(&stack.tickets_url)
        .await
        .iter()
        .map(|b| serde_json::from_str(b).unwrap())
        .collect();
    let delivered = |id: &str| deliveries.iter().find(|d| d["id"] == id).cloned();
    let answered = delivered(&answer)
        .expect("the follow-up went to the ticket queue, as its conversation did");
    assert_eq!(answered["conversation"]["id"], first.as_str());
    assert_eq!(answered["results"]["classify"]["category"], "support");
    let sent = stack.sent_mail().await;
    assert!(
        !sent.iter().any(|m| m.sent_to("ledger@corp.example")),
        "not routed as billing mail"
    );
    assert_eq!(
        sent.iter()
            .filter(|m| m.sent_to("nora@client.example"))
            .count(),
        1,
        "no second auto-reply within the conversation"
    );
    assert_eq!(
        stack
            .audit_decision(&answer, Stage::Respond)
            .await
            .as_deref(),
        Some("suppressed")
    );

    let stranger = delivered(&forged).expect("the stranger's message is a ticket of its own");
    assert!(stranger.get("conversation").is_none(), "{stranger}");
    let notes = stack.audit_list(&forged, Stage::Classify, "reasons").await;
    assert!(notes.iter().any(|r| r.contains("not part of")), "{notes:?}");
    assert!(sent.iter().any(|m| m.sent_to("mallory@elsewhere.example")));

    // Nora again, naming only her own first message: a participant joins by Message-ID.
    let again = stack
        .put_raw(
            &ses_message_id(),
            reply(
                "nora@client.example",
                "support@example.com",
                "One more detail",
                "References: <ticket-42@client.example>\n",
                "It fails in Firefox only.",
            ),
        )
        .await;
    stack.run_until_idle(&pipeline).await;
    let notes = stack.audit_list(&again, Stage::Classify, "reasons").await;
    assert!(
        notes.iter().any(|r| r.contains("(by message-id)")),
        "{notes:?}"
    );

    // The operator sees the conversation, first message first.
    let names = StackNames::of_stack(&stack.name, &stack.account);
    let op = connect(&stack.sdk_as(OPERATOR).await, &names, None)
        .await
        .unwrap();
    let view = op.show(&answer).await.expect("show");
    let ids: Vec<&str> = view.conversation.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids.len(), 3, "{ids:?}");
    assert_eq!(ids[0], first);
    assert!(ids.contains(&again.as_str()) && !ids.contains(&forged.as_str()));

    let nora = [first.clone(), answer.clone(), again.clone()];
    let side = side_items(&stack, &nora).await;
    for prefix in ["mid#", "ref#", "conv#"] {
        assert!(
            side.iter().any(|pk| pk.starts_with(prefix)),
            "{prefix} items are written: {side:?}"
        );
    }
    // Erasing Nora takes the conversation's index items with her messages.
    let forget = StackForget::on(&stack.sdk_as(OPERATOR).await, &names);
    op.erase(
        &forget,
        "nora@client.example",
        "dpo",
        false,
        epoch_secs(SystemTime::now()),
    )
    .await
    .expect("erase");
    assert_eq!(side_items(&stack, &nora).await, Vec::<String>::new());
    stack.assert_no_dead_letters().await;
    stack.assert_calls_allowed();
}

/// The partition keys of the Message-ID, reference and conversation items that point at
/// any of `ids`.
async fn side_items(stack: &Stack, ids: &[String]) -> Vec<String> {
    let mut found: Vec<String> = stack
        .all_items()
        .await
        .into_iter()
        .filter_map(|item| {
            let text = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned();
            let (pk, id) = (text("pk")?, text("id")?);
            (["mid#", "ref#", "conv#"].iter().any(|p| pk.starts_with(p)) && ids.contains(&id))
                .then_some(pk)
        })
        .collect();
    found.sort();
    found
}
