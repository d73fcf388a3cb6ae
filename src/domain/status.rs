//! The patch lifecycle: statuses, evidence kinds, who may move a patch from one status to
//! another ([`TRANSITIONS`]), and the refusal that lists the allowed moves. Pure data and
//! rules: the ledger stores and applies them.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};

/// Where a patch is in its lifecycle (the table in the README, "Ledger and dispatch packages").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Detected,
    Dispatched,
    Verifying,
    EvidenceSubmitted,
    Accepted,
    Rejected,
    RectificationRequired,
    Rectifying,
    Rectified,
    ClosingProposed,
    Closed,
}

impl Status {
    pub const ALL: [Status; 11] = [
        Status::Detected,
        Status::Dispatched,
        Status::Verifying,
        Status::EvidenceSubmitted,
        Status::Accepted,
        Status::Rejected,
        Status::RectificationRequired,
        Status::Rectifying,
        Status::Rectified,
        Status::ClosingProposed,
        Status::Closed,
    ];

    pub fn code(self) -> &'static str {
        match self {
            Status::Detected => "detected",
            Status::Dispatched => "dispatched",
            Status::Verifying => "verifying",
            Status::EvidenceSubmitted => "evidence_submitted",
            Status::Accepted => "accepted",
            Status::Rejected => "rejected",
            Status::RectificationRequired => "rectification_required",
            Status::Rectifying => "rectifying",
            Status::Rectified => "rectified",
            Status::ClosingProposed => "closing_proposed",
            Status::Closed => "closed",
        }
    }

    pub fn label_zh(self) -> &'static str {
        match self {
            Status::Detected => "新发现",
            Status::Dispatched => "已下发",
            Status::Verifying => "核查中",
            Status::EvidenceSubmitted => "已举证",
            Status::Accepted => "举证通过",
            Status::Rejected => "举证不通过",
            Status::RectificationRequired => "需整改",
            Status::Rectifying => "整改中",
            Status::Rectified => "已整改",
            Status::ClosingProposed => "拟销号",
            Status::Closed => "已销号",
        }
    }

    /// From the code or the Chinese label.
    pub fn parse(s: &str) -> Option<Status> {
        let s = s.trim();
        Status::ALL
            .into_iter()
            .find(|t| t.code() == s || t.label_zh() == s)
    }

    /// Whether nothing more is asked of the county: the evidence was accepted or the patch
    /// is closed. Packages no longer carry it; the map draws it faded.
    pub fn is_settled(self) -> bool {
        matches!(self, Status::Accepted | Status::Closed)
    }

    /// `已下发 (dispatched)`.
    pub fn both(self) -> String {
        format!("{} ({})", self.label_zh(), self.code())
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

/// The kind of evidence (举证) a county submits for a patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Evidence {
    LegalApproval,
    FacilityAgriculture,
    TemporaryUse,
    FalseAlarm,
}

impl Evidence {
    pub const ALL: [Evidence; 4] = [
        Evidence::LegalApproval,
        Evidence::FacilityAgriculture,
        Evidence::TemporaryUse,
        Evidence::FalseAlarm,
    ];

    pub fn code(self) -> &'static str {
        match self {
            Evidence::LegalApproval => "legal_approval",
            Evidence::FacilityAgriculture => "facility_agriculture",
            Evidence::TemporaryUse => "temporary_use",
            Evidence::FalseAlarm => "false_alarm",
        }
    }

    pub fn label_zh(self) -> &'static str {
        match self {
            Evidence::LegalApproval => "合法批准",
            Evidence::FacilityAgriculture => "设施农业",
            Evidence::TemporaryUse => "临时用地",
            Evidence::FalseAlarm => "误报",
        }
    }

    pub fn parse(s: &str) -> Option<Evidence> {
        let s = s.trim();
        Evidence::ALL
            .into_iter()
            .find(|e| e.code() == s || e.label_zh() == s)
    }
}

/// Who makes a transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum By {
    /// A person: `ledger set-status` or `ledger import`.
    Inspector,
    /// `gengbao export`, when a package carries the patch.
    Dispatch,
    /// A period run: the satellite re-check and the growth of accepted patches.
    Satellite,
}

use By::{Dispatch, Inspector, Satellite};
use Status::*;

/// Every allowed transition and who may make it.
pub const TRANSITIONS: &[(Status, Status, &[By])] = &[
    (Detected, Dispatched, &[Dispatch, Inspector]),
    (Dispatched, Verifying, &[Inspector]),
    (Verifying, EvidenceSubmitted, &[Inspector]),
    (Verifying, RectificationRequired, &[Inspector]),
    (EvidenceSubmitted, Accepted, &[Inspector]),
    (EvidenceSubmitted, Rejected, &[Inspector]),
    (Accepted, Closed, &[Inspector]),
    // An accepted patch that grew beyond the margin is a new case to verify.
    (Accepted, Detected, &[Satellite]),
    (Rejected, RectificationRequired, &[Inspector]),
    (RectificationRequired, Rectifying, &[Inspector]),
    (Rectifying, Rectified, &[Inspector]),
    (Rectified, ClosingProposed, &[Satellite]),
    (Rectified, Rectifying, &[Satellite]),
    (ClosingProposed, Closed, &[Inspector]),
    // The inspector disagrees with the satellite: the ground says it is not rectified.
    (ClosingProposed, Rectifying, &[Inspector]),
];

/// Decisions of the supervising authority: never reached through a county's returned file
/// or a county's portal account.
pub const AUTHORITY_DECISIONS: [Status; 3] = [Accepted, Rejected, Closed];

/// The statuses `by` may move a patch to from `from`.
pub fn allowed_from(from: Status, by: By) -> Vec<Status> {
    TRANSITIONS
        .iter()
        .filter(|(f, _, who)| *f == from && who.contains(&by))
        .map(|(_, t, _)| *t)
        .collect()
}

/// Ok when `by` may move a patch from `from` to `to`; else the message lists what is allowed.
pub(crate) fn check_transition(
    from: Status,
    to: Status,
    by: By,
) -> std::result::Result<(), String> {
    if allowed_from(from, by).contains(&to) {
        Ok(())
    } else {
        Err(refusal(from, to, by))
    }
}

/// Why `by` cannot move a patch from `from` to `to`, with the statuses it may move it to.
pub(crate) fn refusal(from: Status, to: Status, by: By) -> String {
    let allowed = allowed_from(from, by);
    let list = if allowed.is_empty() {
        "none".to_string()
    } else {
        allowed
            .iter()
            .map(|s| s.both())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let whom = match by {
        Inspector => "an inspector",
        Dispatch => "a dispatch",
        Satellite => "the satellite re-check",
    };
    format!(
        "cannot go from {} to {}; allowed from {} for {whom}: {list}",
        from.both(),
        to.both(),
        from.both()
    )
}

/// The shortest chain of steps a county's returned results may take from `from` to `to`
/// (without the authority's decisions), or None.
pub(crate) fn county_path(from: Status, to: Status) -> Option<Vec<Status>> {
    let mut previous: BTreeMap<Status, Status> = BTreeMap::new();
    let mut queue = VecDeque::from([from]);
    while let Some(s) = queue.pop_front() {
        if s == to {
            let mut path = vec![to];
            let mut at = to;
            while at != from {
                at = previous[&at];
                path.push(at);
            }
            path.pop();
            path.reverse();
            return Some(path);
        }
        for next in allowed_from(s, Inspector) {
            if next != from && !AUTHORITY_DECISIONS.contains(&next) && !previous.contains_key(&next)
            {
                previous.insert(next, s);
                queue.push_back(next);
            }
        }
    }
    None
}
