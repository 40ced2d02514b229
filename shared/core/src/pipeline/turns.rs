//! Where [`Engine::run_all_in_turn`](super::Engine::run_all_in_turn) lets a message wait
//! between stages, so that messages run at once decide as they would one after another.
//!
//! A stage reads what earlier messages wrote in three places only: the effects done for the
//! same message id (every stage), the message index a follow-up's conversation is looked up
//! in (classify; the route stage writes the row) and the auto-reply rate limit of a reply
//! address (respond). A local run holds each message at the stage that reads, until the
//! earlier messages that could have written it are past the stage that writes; the rest of
//! the work runs in parallel. The functions wait nowhere: SQS delivers in no order.

use async_trait::async_trait;

use crate::model::Stage;

/// The waits of one message.
#[async_trait]
pub trait Turns: Send {
    /// Before `stage` decides. `follows_up`: the message names an earlier one (a
    /// conversation clue), so its classify stage reads the message index.
    async fn before(&mut self, stage: Stage, follows_up: bool);
    /// Once `stage` has finished: its effects carried out, its audit record written.
    fn after(&mut self, stage: Stage);
}

/// No waits: the message runs alone, or the order does not matter.
pub struct AnyOrder;

#[async_trait]
impl Turns for AnyOrder {
    async fn before(&mut self, _: Stage, _: bool) {}
    fn after(&mut self, _: Stage) {}
}
