//! The inspectors' portal (`gengbao serve`): a map page and an HTTP API over the job's
//! ledger and archive, with accounts scoped to a county.
//!
//! Takes: the job's ledger file, its period archive (composites for map tiles) and its
//! dispatch packages. Gives: [`accounts`] (who may log in and what each role may do, with a
//! record of every login), [`evidence`] (photos and documents stored by content, a photo's
//! position checked against its patch), [`server`] (the routes, their access rules and the
//! server loop, HTTP or HTTPS through [`tls`]) and the embedded page (`assets`, `web/`). Every status change goes through
//! the ledger's own lifecycle rules, so the portal and `gengbao ledger set-status` can never
//! disagree.

pub mod accounts;
mod assets;
pub mod evidence;
pub mod server;
pub mod tls;

pub use accounts::{Account, Accounts, Role};
