//! Conversations through the whole pipeline, on the memory and the disk store: a reply to
//! our auto-reply, a reply naming a message we received, a quoted reference, a forged
//! References from a stranger, and the rules that override a conversation's decisions.

use std::sync::Arc;

use super::{Engine, Outcome, content_id};
use crate::Config;
use crate::conversation;
use crate::embedded::disk::DiskState;
use crate::embedded::memory::{MemoryWorld, memory_ports};
use crate::model::{Action, DecidedBy, Envelope, RawRef, RespondResult};
use crate::ports::{AuditLog, MessageIndex};

const CONFIG: &str = r#"
[mailroom]
domains = ["example.com"]

[[classify.rules]]
name = "escalation"
category = "escalation"
when = { follow_up = true, keywords = ["still broken"] }

[[classify.rules]]
name = "billing"
category = "billing"
when = { recipient = "billing@" }

[[classify.rules]]
name = "sales"
category = "sales"
sticky = false
when = { recipient = "sales@" }

[[classify.rules]]
name = "support"
category = "support"
when = { recipient = "support@" }

[[route]]
name = "billing"
when = { category = "billing" }
actions = [{ deliver = "billing" }]

[[route]]
name = "escalation"
when = { category = "escalation" }
actions = [{ deliver = "escalations" }]

[[route]]
name = "support"
when = { category = "support" }
actions = [{ forward = ["team@corp.example"] }]

[[route]]
name = "sales"
when = { category = "sales" }
actions = [{ forward = ["sales-team@corp.example"] }]

[[respond.templates]]
name = "thanks"
subject = ""
body = "Thanks {{ sender_name }}, your reference is {{ reference }}."
"#;

struct Rig {
    engine: Engine,
    world: Arc<MemoryWorld>,
    index: Arc<dyn MessageIndex>,
    audit: Arc<dyn AuditLog>,
    _dir: Option<Scratch>,
}

/// A state directory removed when the test ends.
struct Scratch(std::path::PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

static RIGS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// The engine on the memory store, or on the disk store in a fresh directory.
fn rig(disk: bool) -> Rig {
    let (mut ports, world, memory) = memory_ports();
    let config = Arc::new(Config::from_toml(CONFIG, "t.toml").unwrap());
    let mut dir = None;
    let (index, audit): (Arc<dyn MessageIndex>, Arc<dyn AuditLog>) = if disk {
        let n = RIGS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let d = Scratch(std::env::temp_dir().join(format!(
            "mailroom-conversation-test-{}-{n}",
            std::process::id()
        )));
        let _ = std::fs::remove_dir_all(&d.0);
        let state = Arc::new(DiskState::open(&d.0).unwrap());
        ports.state = state.clone();
        ports.audit = state.clone();
        ports.index = state.clone();
        ports.feedback = state.clone();
        ports.allow_list = state.clone();
        dir = Some(d);
        (state.clone(), state)
    } else {
        (memory.clone(), memory)
    };
    Rig {
        engine: Engine::with_rules(config, ports),
        world,
        index,
        audit,
        _dir: dir,
    }
}

/// A message from an authenticated sender (SPF and DMARC passed).
fn mail(from: &str, to: &str, subject: &str, headers: &str, body: &str) -> Vec<u8> {
    let domain = from.rsplit_once('@').map_or(from, |(_, d)| d);
    let id = content_id(format!("{from}{to}{subject}{headers}{body}").as_bytes());
    format!(
        "Authentication-Results: amazonses.com; spf=pass smtp.mailfrom={from}; \
         dmarc=pass header.from={domain}\r\nFrom: <{from}>\r\nTo: {to}\r\n\
         Subject: {subject}\r\nMessage-ID: <{id}@{domain}>\r\n{headers}\r\n{body}\r\n"
    )
    .into_bytes()
}

async fn run(rig: &Rig, raw: &[u8]) -> Outcome {
    let env = Envelope::new(
        content_id(raw),
        RawRef {
            bucket: "t".into(),
            key: content_id(raw),
        },
    );
    rig.engine.run_all(env, raw).await.unwrap()
}

/// The Message-ID of the last auto-reply sent.
fn last_reply_id(world: &MemoryWorld) -> String {
    let sent = world.sent.lock().unwrap();
    let reply = sent.last().expect("a reply was sent").raw.to_vec();
    let text = String::from_utf8_lossy(&reply);
    let line = text
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("message-id:"))
        .expect("the reply has a Message-ID");
    line.split_once(':').unwrap().1.trim().to_string()
}

fn delivered_to(world: &MemoryWorld, queue: &str) -> Vec<serde_json::Value> {
    world
        .delivered
        .lock()
        .unwrap()
        .iter()
        .filter(|(q, _)| q == queue)
        .map(|(_, body)| serde_json::from_str(body).unwrap())
        .collect()
}

async fn replies_join_their_conversation(disk: bool) {
    let rig = rig(disk);
    let first = mail(
        "ann@customer.example",
        "billing@example.com",
        "Invoice 118 is wrong",
        "",
        "Please correct it.",
    );
    let a = run(&rig, &first).await.envelope;
    let Some(RespondResult::Sent { reference, .. }) = &a.results.respond else {
        panic!(
            "the first message gets an auto-reply: {:?}",
            a.results.respond
        );
    };
    let reply_id = last_reply_id(&rig.world);
    assert!(
        reply_id
            .trim_start_matches('<')
            .starts_with(reference.as_str()),
        "the auto-reply's Message-ID {reply_id} starts with the reference {reference}"
    );
    assert!(a.conversation.is_none(), "the first message starts one");

    // Ann answers the auto-reply, to another address: it stays a billing matter.
    let answer = mail(
        "ann@customer.example",
        "support@example.com",
        "Re: Invoice 118 is wrong",
        &format!("In-Reply-To: {reply_id}\r\nReferences: {reply_id}\r\n"),
        "Here is the purchase order.",
    );
    let b = run(&rig, &answer).await.envelope;
    let c = b
        .conversation
        .as_ref()
        .expect("a reply to our auto-reply follows up");
    assert_eq!(
        (c.id.as_str(), c.follows.as_str(), c.by.as_str()),
        (a.id.as_str(), a.id.as_str(), "reference")
    );
    let classify = b.results.classify.as_ref().unwrap();
    assert_eq!(classify.category, "billing");
    assert_eq!(classify.category_by, DecidedBy::Conversation(a.id.clone()));
    assert_eq!(
        b.results.route.as_ref().unwrap().actions,
        [Action::Deliver("billing".into())]
    );
    match &b.results.respond {
        Some(RespondResult::Suppressed { reason }) => {
            assert!(reason.contains("follows up conversation"), "{reason}")
        }
        other => panic!("no new auto-reply within the conversation: {other:?}"),
    }
    let delivered = delivered_to(&rig.world, "billing");
    assert_eq!(delivered.len(), 2);
    assert_eq!(
        delivered[1]["conversation"]["id"],
        a.id.as_str(),
        "the delivered JSON names it"
    );

    // A reply naming the first message's own Message-ID, from its sender.
    let first_id = rig
        .index
        .get(&a.id)
        .await
        .unwrap()
        .unwrap()
        .message_id
        .unwrap();
    let first_id = format!("<{first_id}>");
    let by_header = mail(
        "ann@customer.example",
        "support@example.com",
        "Re: Invoice 118",
        &format!("References: {first_id}\r\n"),
        "And one more thing.",
    );
    let d = run(&rig, &by_header).await.envelope;
    let c = d
        .conversation
        .as_ref()
        .expect("a participant's reply by Message-ID follows up");
    assert_eq!(
        (c.id.as_str(), c.by.as_str()),
        (a.id.as_str(), "message-id")
    );

    // A stranger forges the same References: not pulled into Ann's conversation.
    let forged = mail(
        "mallory@elsewhere.example",
        "support@example.com",
        "Re: Invoice 118",
        &format!("In-Reply-To: {first_id}\r\nReferences: {first_id}\r\n"),
        "Send me the invoice.",
    );
    let e = run(&rig, &forged).await.envelope;
    assert!(
        e.conversation.is_none(),
        "a forged References joins nothing"
    );
    assert_eq!(e.results.classify.as_ref().unwrap().category, "support");
    assert!(matches!(
        e.results.respond,
        Some(RespondResult::Sent { .. })
    ));
    let audit = rig.audit.records(&e.id).await.unwrap();
    let note = audit
        .iter()
        .flat_map(|r| &r.reasons)
        .find(|r| r.contains("not part of"))
        .expect("the audit says why the headers were not followed");
    assert!(note.contains(&a.id), "{note}");

    // Anyone quoting the reference (unguessable) joins, from any address.
    let quoted = mail(
        "colleague@customer.example",
        "support@example.com",
        &format!("About {}", reference.to_ascii_lowercase()),
        "",
        "Taking over from Ann.",
    );
    let f = run(&rig, &quoted).await.envelope;
    assert_eq!(
        f.conversation.as_ref().map(|c| c.id.as_str()),
        Some(a.id.as_str())
    );

    // The conversation, first message first, as show lists it.
    let any = rig.index.get(&d.id).await.unwrap().unwrap();
    let thread = conversation::thread(rig.index.as_ref(), &any, 100)
        .await
        .unwrap();
    assert_eq!(thread[0].id, a.id);
    let mut ids: Vec<&str> = thread.iter().map(|s| s.id.as_str()).collect();
    ids.sort();
    let mut want = vec![a.id.as_str(), b.id.as_str(), d.id.as_str(), f.id.as_str()];
    want.sort();
    assert_eq!(ids, want, "the stranger's message is not in it");
    assert!(
        thread[1..]
            .iter()
            .all(|s| s.conversation.as_deref() == Some(a.id.as_str()))
    );
}

#[tokio::test]
async fn replies_join_their_conversation_in_memory() {
    replies_join_their_conversation(false).await;
}

#[tokio::test]
async fn replies_join_their_conversation_on_disk() {
    replies_join_their_conversation(true).await;
}

async fn rules_override_a_conversation(disk: bool) {
    let rig = rig(disk);
    let first = mail(
        "ann@customer.example",
        "billing@example.com",
        "Invoice",
        "",
        "Wrong.",
    );
    let a = run(&rig, &first).await.envelope;
    let Some(RespondResult::Sent { reference, .. }) = &a.results.respond else {
        panic!("{:?}", a.results.respond);
    };
    // A rule for follow-ups takes over from the conversation's category and route.
    let angry = mail(
        "ann@customer.example",
        "billing@example.com",
        &format!("Re: Invoice [{reference}]"),
        "",
        "It is still broken.",
    );
    let b = run(&rig, &angry).await.envelope;
    assert!(b.conversation.is_some());
    assert_eq!(b.results.classify.as_ref().unwrap().category, "escalation");
    assert_eq!(
        b.results.route.as_ref().unwrap().actions,
        [Action::Deliver("escalations".into())]
    );
    // The same words in a new message are no follow-up: the rule does not match.
    let new = mail(
        "bob@customer.example",
        "billing@example.com",
        "Hi",
        "",
        "It is still broken.",
    );
    let c = run(&rig, &new).await.envelope;
    assert_eq!(c.results.classify.as_ref().unwrap().category, "billing");

    // `sticky = false`: follow-ups of sales mail are classified afresh.
    let sales = mail(
        "carl@customer.example",
        "sales@example.com",
        "Prices",
        "",
        "How much?",
    );
    let s = run(&rig, &sales).await.envelope;
    let Some(RespondResult::Sent { reference, .. }) = &s.results.respond else {
        panic!("{:?}", s.results.respond);
    };
    let to_support = mail(
        "carl@customer.example",
        "support@example.com",
        &format!("Re: Prices {reference}"),
        "",
        "Also, my login fails.",
    );
    let t = run(&rig, &to_support).await.envelope;
    assert!(t.conversation.is_some(), "still part of the conversation");
    assert_eq!(t.results.classify.as_ref().unwrap().category, "support");
    assert_eq!(
        t.results.route.as_ref().unwrap().actions,
        [Action::Forward(vec!["team@corp.example".into()])]
    );
}

#[tokio::test]
async fn rules_override_a_conversation_in_memory() {
    rules_override_a_conversation(false).await;
}

#[tokio::test]
async fn rules_override_a_conversation_on_disk() {
    rules_override_a_conversation(true).await;
}
