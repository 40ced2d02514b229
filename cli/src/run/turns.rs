//! The order `mailroom run --jobs N` keeps between messages running at once, so that each
//! decides as it would with `--jobs 1` (see [`mailroom_core::pipeline::turns`]):
//!
//! - a copy of a message (the same content, so the same id) starts once the earlier copy
//!   has ended, and then finds its effects done;
//! - a follow-up (a message naming another one) looks its conversation up once every
//!   earlier message has written its row to the message index (its route stage, or its
//!   failure path), and before any later one does;
//! - a message takes the auto-reply rate limit once every earlier message a reply could go
//!   to the same address from has passed its respond stage.
//!
//! The main loop hands these out in input order and never waits on them itself; a message
//! only ever waits for earlier ones, so none waits in a circle. A message that ends early
//! (an error, a panic) releases whoever waits for it.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use mailroom_core::model::Stage;
use mailroom_core::pipeline::turns::Turns;
use tokio::sync::watch;

/// A point one message reaches: set when it passes it, or dropped when the message ends.
struct Mark(watch::Sender<bool>);

impl Mark {
    fn reach(&self) {
        self.0.send_replace(true);
    }
}

/// Another message's [`Mark`], to wait for.
#[derive(Clone)]
struct Reached(watch::Receiver<bool>);

impl Reached {
    async fn wait(mut self) {
        // An error: the message ended without reaching it, which is as good.
        let _ = self.0.wait_for(|reached| *reached).await;
    }

    fn pending(&self) -> bool {
        !*self.0.borrow() && self.0.has_changed().is_ok()
    }
}

fn mark() -> (Mark, Reached) {
    let (tx, rx) = watch::channel(false);
    (Mark(tx), Reached(rx))
}

/// How far the messages, numbered in input order, have got past one point of the message
/// index: the first not past it yet, and those after it that are. One number to wait on,
/// however many messages run at once.
struct Progress {
    ahead: Mutex<BTreeSet<u64>>,
    first_not_past: watch::Sender<u64>,
}

impl Progress {
    fn new() -> Arc<Progress> {
        Arc::new(Progress {
            ahead: Mutex::new(BTreeSet::new()),
            first_not_past: watch::Sender::new(0),
        })
    }

    fn pass(&self, n: u64) {
        let mut ahead = self.ahead.lock().expect("progress lock");
        let mut first = *self.first_not_past.borrow();
        if n != first {
            ahead.insert(n);
            return;
        }
        first += 1;
        while ahead.remove(&first) {
            first += 1;
        }
        self.first_not_past.send_replace(first);
    }

    /// Until every message before `n` is past the point.
    async fn all_before(&self, n: u64) {
        let mut first = self.first_not_past.subscribe();
        // The sender lives as long as `self`: this cannot fail.
        let _ = first.wait_for(|first| *first >= n).await;
    }
}

/// The main loop's side: who came last for each id and reply address, and how far the
/// messages have got with the message index.
pub struct Order {
    latest: HashMap<String, Reached>,
    /// `latest` drops the entries of finished messages once it holds this many.
    prune_at: usize,
    next: u64,
    /// Conversations looked up (classify stages finished).
    looked_up: Arc<Progress>,
    /// Rows written.
    indexed: Arc<Progress>,
}

impl Order {
    /// For about `window` messages running at once (each has an id and a few reply
    /// addresses in `latest`).
    pub fn new(window: usize) -> Self {
        Order {
            latest: HashMap::new(),
            prune_at: 16 * window,
            next: 0,
            looked_up: Progress::new(),
            indexed: Progress::new(),
        }
    }

    /// The waits of the next message in input order: its content `id` and the addresses a
    /// reply to it could go to.
    pub fn next(&mut self, id: &str, reply_keys: &[String]) -> MessageTurns {
        if self.latest.len() > self.prune_at {
            self.latest.retain(|_, r| r.pending());
        }
        let (done, done_r) = mark();
        let (replied, replied_r) = mark();
        let same_id = self.latest.insert(format!("id:{id}"), done_r);
        let replies = reply_keys
            .iter()
            .filter_map(|k| self.latest.insert(format!("reply:{k}"), replied_r.clone()))
            .collect();
        let n = self.next;
        self.next += 1;
        MessageTurns {
            n,
            same_id,
            replies,
            _done: done,
            replied,
            looked_up: Passing::new(&self.looked_up),
            indexed: Passing::new(&self.indexed),
        }
    }
}

/// One message's way past one point of the message index: passed once, at the latest when
/// the message ends.
struct Passing {
    progress: Arc<Progress>,
    passed: bool,
}

impl Passing {
    fn new(progress: &Arc<Progress>) -> Passing {
        Passing {
            progress: progress.clone(),
            passed: false,
        }
    }

    fn pass(&mut self, n: u64) {
        if !std::mem::replace(&mut self.passed, true) {
            self.progress.pass(n);
        }
    }
}

/// One message's waits, and its own marks; dropped when the message ends.
pub struct MessageTurns {
    /// Its place in input order.
    n: u64,
    same_id: Option<Reached>,
    replies: Vec<Reached>,
    _done: Mark,
    replied: Mark,
    looked_up: Passing,
    indexed: Passing,
}

impl MessageTurns {
    /// Before the message's first stage: the end of an earlier copy of it.
    pub async fn start(&mut self) {
        if let Some(copy) = &self.same_id {
            copy.clone().wait().await;
        }
        self.same_id = None;
    }

    /// Before the failure path, which writes the message's row as its route stage would.
    pub async fn before_failure_path(&mut self) {
        self.before(Stage::Route, false).await;
    }
}

impl Drop for MessageTurns {
    /// A message that ends early (an error, a panic) holds no later one up.
    fn drop(&mut self) {
        self.looked_up.pass(self.n);
        self.indexed.pass(self.n);
    }
}

/// Waits for each in turn; each is dropped once over, so a wait given up part way (a
/// timeout) can be taken again.
async fn wait_all(waits: &mut Vec<Reached>) {
    while let Some(earlier) = waits.last() {
        earlier.clone().wait().await;
        waits.pop();
    }
}

#[async_trait]
impl Turns for MessageTurns {
    async fn before(&mut self, stage: Stage, follows_up: bool) {
        match stage {
            Stage::Classify if follows_up => self.indexed.progress.all_before(self.n).await,
            // The route stage writes the row as it finishes.
            Stage::Route => self.looked_up.progress.all_before(self.n).await,
            Stage::Respond => wait_all(&mut self.replies).await,
            _ => {}
        }
    }

    fn after(&mut self, stage: Stage) {
        match stage {
            Stage::Classify => self.looked_up.pass(self.n),
            Stage::Route => self.indexed.pass(self.n),
            Stage::Respond => self.replied.reach(),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn waits(f: impl std::future::Future<Output = ()>) -> bool {
        tokio::time::timeout(Duration::from_millis(50), f)
            .await
            .is_err()
    }

    #[tokio::test]
    async fn progress_counts_messages_passing_out_of_order() {
        let p = Progress::new();
        p.pass(2);
        assert_eq!(*p.first_not_past.borrow(), 0);
        p.pass(0);
        assert_eq!(*p.first_not_past.borrow(), 1);
        assert!(!waits(p.all_before(1)).await);
        assert!(waits(p.all_before(2)).await);
        p.pass(1);
        assert_eq!(*p.first_not_past.borrow(), 3, "2 was past already");
        assert!(!waits(p.all_before(3)).await);
        assert!(p.ahead.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_copy_starts_when_the_first_ends() {
        let mut order = Order::new(8);
        let first = order.next("a", &[]);
        let mut other = order.next("b", &[]);
        assert!(!waits(other.start()).await, "another id does not wait");
        let mut copy = order.next("a", &[]);
        assert!(waits(copy.start()).await);
        drop(first);
        assert!(!waits(copy.start()).await);
    }

    #[tokio::test]
    async fn a_reply_address_is_taken_in_input_order() {
        let mut order = Order::new(8);
        let keys = ["x@example.com".to_string()];
        let mut first = order.next("a", &keys);
        let mut second = order.next("b", &keys);
        let mut stranger = order.next("c", &["y@example.com".to_string()]);
        assert!(!waits(stranger.before(Stage::Respond, false)).await);
        assert!(!waits(second.before(Stage::Filter, false)).await);
        assert!(waits(second.before(Stage::Respond, false)).await);
        first.before(Stage::Respond, false).await;
        first.after(Stage::Respond);
        assert!(!waits(second.before(Stage::Respond, false)).await);
    }

    #[tokio::test]
    async fn a_follow_up_reads_the_index_after_every_earlier_row() {
        let mut order = Order::new(8);
        let mut first = order.next("a", &[]);
        let second = order.next("b", &[]);
        let mut follow_up = order.next("c", &[]);
        let mut fresh = order.next("d", &[]);
        assert!(!waits(fresh.before(Stage::Classify, false)).await);
        assert!(waits(follow_up.before(Stage::Classify, true)).await);
        first.after(Stage::Route);
        assert!(waits(follow_up.before(Stage::Classify, true)).await);
        // The second failed before its route stage: its failure path is done once it ends.
        drop(second);
        assert!(!waits(follow_up.before(Stage::Classify, true)).await);
    }

    #[tokio::test]
    async fn a_later_row_waits_for_every_earlier_lookup() {
        let mut order = Order::new(8);
        let mut follow_up = order.next("a", &[]);
        let mut later = order.next("b", &[]);
        let mut failed = order.next("c", &[]);
        assert!(waits(later.before(Stage::Route, false)).await);
        assert!(waits(failed.before_failure_path()).await);
        assert!(!waits(later.before(Stage::Classify, false)).await);
        follow_up.before(Stage::Classify, true).await;
        follow_up.after(Stage::Classify);
        assert!(!waits(later.before(Stage::Route, false)).await);
        later.after(Stage::Classify);
        assert!(!waits(failed.before_failure_path()).await);
    }
}
