//! Portal accounts, kept in the job's ledger file beside the patches they act on.
//!
//! Takes: the ledger file's path. Gives: accounts (name, role, county) with argon2id password
//! hashes, the check of a login with lockout after repeated failures, and an append-only
//! record of every login attempt (who, from where, when, whether it succeeded and why not).
//! What each role may do is [`Account::may_read`] and [`Account::may_move`]: one place, which
//! every endpoint asks.

use crate::domain::status::{Status, AUTHORITY_DECISIONS};
use crate::error::{Error, Result};
use crate::ledger::{append_only, db_error, now, Ledger};
use argon2::password_hash::{PasswordHash, SaltString};
use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use rand::RngCore;
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use std::path::{Path, PathBuf};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS accounts (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    county TEXT,
    password TEXT NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0,
    failures INTEGER NOT NULL DEFAULT 0,
    locked_until INTEGER NOT NULL DEFAULT 0,
    generation INTEGER NOT NULL DEFAULT 0,
    created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS logins (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    name TEXT NOT NULL,
    from_address TEXT NOT NULL,
    outcome TEXT NOT NULL
);
";

/// Consecutive failed logins after which an account is locked.
pub const LOCK_AFTER_FAILURES: i64 = 5;
/// How long a locked account stays locked.
pub const LOCK_SECONDS: i64 = 15 * 60;
/// Shortest password accepted.
pub const MIN_PASSWORD_CHARS: usize = 10;

/// What an account may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Every county; every status change the lifecycle allows a person.
    Admin,
    /// A county officer: the county's patches; every status change the lifecycle allows a
    /// person except the supervising authority's decisions (accepted, rejected, closed), as
    /// for the county's returns.
    County,
    /// A field inspector: the county's patches; evidence, and the field steps (verifying,
    /// evidence submitted).
    Inspector,
    /// Every county, read only.
    Auditor,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "county" => Some(Role::County),
            "inspector" => Some(Role::Inspector),
            "auditor" => Some(Role::Auditor),
            _ => None,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::County => "county",
            Role::Inspector => "inspector",
            Role::Auditor => "auditor",
        }
    }

    /// Whether the role is held for one county (and needs `--county`).
    pub fn of_one_county(self) -> bool {
        matches!(self, Role::County | Role::Inspector)
    }

    /// Whether the role imports returned lists (of the counties it may read).
    pub fn imports_returns(self) -> bool {
        matches!(self, Role::Admin | Role::County)
    }
}

/// A portal account as the portal acts on it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Account {
    pub name: String,
    pub role: Role,
    /// The county (XZQDM) of a county officer or inspector.
    pub county: Option<String>,
    pub disabled: bool,
    /// Raised when the account is disabled or its password reset: sessions opened before
    /// end.
    pub generation: i64,
}

impl Account {
    /// The county an account of one county is held for; None for accounts of every county.
    pub fn own_county(&self) -> Option<&str> {
        self.county.as_deref().filter(|_| self.role.of_one_county())
    }

    /// Whether the account may see the patches, files and packages of `county`.
    pub fn may_read(&self, county: &str) -> bool {
        match self.role {
            Role::Admin | Role::Auditor => true,
            Role::County | Role::Inspector => self.county.as_deref() == Some(county),
        }
    }

    /// Whether the account may add evidence to a patch of `county`.
    pub fn may_add_evidence(&self, county: &str) -> bool {
        self.may_read(county) && self.role != Role::Auditor
    }

    /// Whether the account may import `county`'s returned list (the county's decisions on
    /// many patches at once, as `gengbao ledger import` applies them).
    pub fn may_import_returns(&self, county: &str) -> bool {
        self.may_read(county) && self.role.imports_returns()
    }

    /// Whether the account may move a patch of `county` to `to` (the lifecycle's own rules
    /// apply after this).
    pub fn may_move(&self, county: &str, to: Status) -> bool {
        self.may_read(county)
            && match self.role {
                Role::Admin => true,
                Role::County => !AUTHORITY_DECISIONS.contains(&to),
                Role::Inspector => matches!(to, Status::Verifying | Status::EvidenceSubmitted),
                Role::Auditor => false,
            }
    }
}

/// Why a login was refused. The portal answers every one the same way ("name or password
/// wrong"), so that nobody learns which names exist; the login record keeps the reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Unknown,
    WrongPassword,
    Disabled,
    Locked,
}

impl Refusal {
    fn code(self) -> &'static str {
        match self {
            Refusal::Unknown => "unknown name",
            Refusal::WrongPassword => "wrong password",
            Refusal::Disabled => "disabled",
            Refusal::Locked => "locked",
        }
    }
}

/// The accounts table of a job's ledger file.
pub struct Accounts {
    conn: Connection,
    path: PathBuf,
}

impl Accounts {
    /// Opens the accounts of the ledger file `path`, which must exist (a job that has run).
    pub fn open(path: &Path) -> Result<Accounts> {
        // The ledger's own opening makes its tables and checks the file is a ledger.
        drop(Ledger::open_existing(path)?);
        let conn = Connection::open(path).map_err(db_error(path))?;
        conn.busy_timeout(std::time::Duration::from_secs(30))
            .and_then(|_| conn.execute_batch("PRAGMA foreign_keys = ON;"))
            .and_then(|_| conn.execute_batch(SCHEMA))
            .and_then(|_| conn.execute_batch(&append_only("logins")))
            .map_err(db_error(path))?;
        Ok(Accounts {
            conn,
            path: path.to_path_buf(),
        })
    }

    /// Adds an account. A county role needs its county, the others must not name one.
    pub fn add(&self, name: &str, role: Role, county: Option<&str>, password: &str) -> Result<()> {
        check_name(name)?;
        match (role.of_one_county(), county) {
            (true, None) => {
                return Err(Error::usage(
                    format!("a {} account belongs to one county", role.code()),
                    "add --county XZQDM",
                ))
            }
            (false, Some(_)) => {
                return Err(Error::usage(
                    format!("a {} account is not held for one county", role.code()),
                    "leave out --county",
                ))
            }
            _ => {}
        }
        let hash = hash_password(password)?;
        let added = self.conn.execute(
            "INSERT INTO accounts (name, role, county, password, created) VALUES (?, ?, ?, ?, ?)
             ON CONFLICT (name) DO NOTHING",
            params![name, role.code(), county, hash, now()],
        );
        match added.map_err(db_error(&self.path))? {
            0 => Err(Error::usage(
                format!("an account named {name} exists"),
                "choose another name, or `gengbao users reset` its password",
            )),
            _ => Ok(()),
        }
    }

    /// Every account, by name.
    pub fn list(&self) -> Result<Vec<Account>> {
        let mut stmt = self
            .conn
            .prepare("SELECT name, role, county, disabled, generation FROM accounts ORDER BY name")
            .map_err(db_error(&self.path))?;
        let rows = stmt
            .query_map([], account_from_row)
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(db_error(&self.path))?;
        Ok(rows)
    }

    /// Disables an account: it can no longer log in; its sessions end at their next request.
    pub fn disable(&self, name: &str) -> Result<()> {
        self.update(
            name,
            "UPDATE accounts SET disabled = 1, generation = generation + 1 WHERE name = ?",
            params![name],
        )
    }

    /// Sets a new password, enables the account and lifts a lock; sessions opened with the
    /// old password end.
    pub fn reset(&self, name: &str, password: &str) -> Result<()> {
        let hash = hash_password(password)?;
        self.update(
            name,
            "UPDATE accounts SET password = ?, disabled = 0, failures = 0, locked_until = 0, generation = generation + 1 WHERE name = ?",
            params![hash, name],
        )
    }

    fn update(&self, name: &str, sql: &str, args: impl rusqlite::Params) -> Result<()> {
        match self.conn.execute(sql, args).map_err(db_error(&self.path))? {
            0 => Err(Error::usage(
                format!("no account named {name}"),
                "`gengbao users list` shows the accounts",
            )),
            _ => Ok(()),
        }
    }

    /// The account of `name` as it is now (a session checks it on every request: a disabled
    /// account's sessions end).
    pub fn account(&self, name: &str) -> Result<Option<Account>> {
        self.conn
            .query_row(
                "SELECT name, role, county, disabled, generation FROM accounts WHERE name = ?",
                [name],
                account_from_row,
            )
            .optional()
            .map_err(db_error(&self.path))
    }

    /// Checks a login from `from` (an address) at `now_seconds` (Unix time) and records it.
    /// A wrong password counts towards the lock; a right one clears the count. The password
    /// is checked whatever the account's state (and against a dummy hash for an unknown
    /// name), and every outcome is one write, so that the time taken tells little about the
    /// name.
    pub fn log_in(
        &self,
        name: &str,
        password: &str,
        from: &str,
        now_seconds: i64,
    ) -> Result<std::result::Result<Account, Refusal>> {
        let row = self
            .conn
            .query_row(
                "SELECT name, role, county, disabled, generation, password, failures, locked_until
                 FROM accounts WHERE name = ?",
                [name],
                |r| {
                    Ok((
                        account_from_row(r)?,
                        r.get::<_, String>(5)?,
                        r.get::<_, i64>(6)?,
                        r.get::<_, i64>(7)?,
                    ))
                },
            )
            .optional()
            .map_err(db_error(&self.path))?;
        let hash = row.as_ref().map_or(DUMMY_HASH, |r| r.1.as_str());
        let right = verify_password(password, hash);
        // One transaction, one write to disk, whatever the outcome: the time taken tells
        // nothing either. The failure count is raised in SQL, so that logins of one name
        // checked at once on other connections all count.
        let tx = self
            .conn
            .unchecked_transaction()
            .map_err(db_error(&self.path))?;
        let write = |sql: &str, args: &[&dyn rusqlite::ToSql]| {
            tx.execute(sql, args)
                .map(drop)
                .map_err(db_error(&self.path))
        };
        let outcome = match row {
            None => Err(Refusal::Unknown),
            Some((_, _, _, locked_until)) if locked_until > now_seconds => Err(Refusal::Locked),
            Some((a, ..)) if a.disabled => Err(Refusal::Disabled),
            Some((a, ..)) if right => {
                write(
                    "UPDATE accounts SET failures = 0, locked_until = 0 WHERE name = ?1",
                    &[&name],
                )?;
                Ok(a)
            }
            Some(_) => {
                write(
                    "UPDATE accounts SET
                        locked_until = CASE WHEN failures + 1 >= ?1 THEN ?2 ELSE locked_until END,
                        failures = (failures + 1) % ?1
                     WHERE name = ?3",
                    &[&LOCK_AFTER_FAILURES, &(now_seconds + LOCK_SECONDS), &name],
                )?;
                Err(Refusal::WrongPassword)
            }
        };
        let recorded = match &outcome {
            Ok(_) => "ok",
            Err(r) => r.code(),
        };
        write(
            "INSERT INTO logins (at, name, from_address, outcome) VALUES (?1, ?2, ?3, ?4)",
            &[&now(), &name, &from, &recorded],
        )?;
        tx.commit().map_err(db_error(&self.path))?;
        Ok(outcome)
    }

    /// The login record, oldest first: (when, name, from where, outcome).
    pub fn logins(&self) -> Result<Vec<(String, String, String, String)>> {
        let mut stmt = self
            .conn
            .prepare("SELECT at, name, from_address, outcome FROM logins ORDER BY id")
            .map_err(db_error(&self.path))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(db_error(&self.path))?;
        Ok(rows)
    }
}

/// A password of 16 letters and digits from the system's random source (the demo's
/// accounts).
pub fn random_password() -> String {
    const CHARS: &[u8] = b"abcdefghjkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes
        .iter()
        .map(|b| CHARS[usize::from(*b) % CHARS.len()] as char)
        .collect()
}

/// An argon2id hash of a password no account has, checked against unknown names.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$0Yf2pPZ2yQnq1lRXXbX3GUdGk9mNn2uQ7A1hOe1rkVk";

/// An account from (name, role, county, disabled, generation). An unknown role is an error,
/// never a guess that would open counties.
fn account_from_row(r: &rusqlite::Row) -> rusqlite::Result<Account> {
    let role: String = r.get(1)?;
    let role = Role::parse(&role).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            1,
            rusqlite::types::Type::Text,
            format!("unknown role {role}").into(),
        )
    })?;
    Ok(Account {
        name: r.get(0)?,
        role,
        county: r.get(2)?,
        disabled: r.get::<_, i64>(3)? != 0,
        generation: r.get(4)?,
    })
}

fn check_name(name: &str) -> Result<()> {
    let fine = !name.is_empty()
        && name.chars().count() <= 64
        && name.chars().all(|c| !c.is_control() && !c.is_whitespace());
    match fine {
        true => Ok(()),
        false => Err(Error::usage(
            format!("{name:?} is not an account name"),
            "use 1 to 64 characters without spaces (Chinese names are fine)",
        )),
    }
}

fn hash_password(password: &str) -> Result<String> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(Error::usage(
            format!("the password has fewer than {MIN_PASSWORD_CHARS} characters"),
            "give a longer password on standard input",
        ));
    }
    let mut salt = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt)
        .map_err(|e| Error::usage(format!("no salt for the password ({e})"), "retry"))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::usage(format!("the password cannot be hashed ({e})"), "retry"))
}

fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(role: Role, county: Option<&str>) -> Account {
        Account {
            name: "a".into(),
            role,
            county: county.map(String::from),
            disabled: false,
            generation: 0,
        }
    }

    #[test]
    fn roles_reach_their_counties_only() {
        let officer = account(Role::County, Some("320901"));
        assert!(officer.may_read("320901") && !officer.may_read("320902"));
        assert!(officer.may_move("320901", Status::Rectifying));
        assert!(
            !officer.may_move("320901", Status::Accepted),
            "the authority decides"
        );
        assert!(!officer.may_move("320902", Status::Verifying));
        let inspector = account(Role::Inspector, Some("320901"));
        assert!(inspector.may_move("320901", Status::EvidenceSubmitted));
        assert!(!inspector.may_move("320901", Status::Accepted));
        let auditor = account(Role::Auditor, None);
        assert!(auditor.may_read("320902") && !auditor.may_move("320902", Status::Verifying));
        let admin = account(Role::Admin, None);
        assert!(admin.may_move("320902", Status::Closed));
    }

    #[test]
    fn the_dummy_hash_is_a_hash_no_password_matches() {
        assert!(PasswordHash::new(DUMMY_HASH).is_ok());
        assert!(!verify_password("", DUMMY_HASH));
    }
}
