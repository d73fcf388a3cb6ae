//! The inspectors' portal (`gengbao serve`): accounts scoped to a county, and an HTTP API over
//! the job's ledger that the page and scripts use.
//!
//! Takes: the job's ledger file. Gives: [`accounts`] (who may log in and what each role may
//! do, with a record of every login), [`evidence`] (photos and documents stored by content,
//! a photo's position checked against its patch) and [`server`] (the routes, their access
//! rules and the server loop). Every status change goes through the ledger's own lifecycle rules, so the
//! portal and `gengbao ledger set-status` can never disagree.

pub mod accounts;
pub mod evidence;
pub mod server;

pub use accounts::{Account, Accounts, Role};
