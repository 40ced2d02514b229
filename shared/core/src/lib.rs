//! mailroom's pure core: the data model, the configuration, the four stages and the ports
//! they talk to the world through, plus embedded adapters for running without AWS.
//!
//! No AWS or Lambda crate is a dependency of this crate.

pub mod assist;
pub mod classify;
pub mod config;
pub mod conversation;
pub mod embedded;
pub mod filter;
pub mod mail;
pub mod matcher;
pub mod model;
pub mod operate;
pub mod pipeline;
pub mod ports;
pub mod receipt;
pub mod report;
pub mod respond;
pub mod route;
pub mod secret;
pub mod skip;

pub use config::Config;
pub use mail::Mail;
