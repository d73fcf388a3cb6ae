//! Recording a period run: the satellite re-check of rectified patches, matching the period's
//! patches to known ones, numbering the new ones, and their sightings.
//!
//! Takes: the period's patches, the counties of the run, the ledger rules and the period's
//! cultivated share, inside the transaction the caller commits.
//! Gives: every patch its number and status, the ledger its updated and new patches,
//! transitions and sightings, and a summary of what the period did.

use super::store::{damaged_record, db_error, now, transition};
use super::{CultivatedShare, LedgerRules, PeriodLedger};
use crate::domain::land_cover::LandCover;
use crate::domain::period::Period;
use crate::domain::status::Status;
use crate::engine::patches::Patch;
use crate::error::Result;
use gdal::vector::Geometry;
use rusqlite::{params, Transaction};
use std::collections::{btree_map, BTreeMap, BTreeSet};
use std::path::Path;
use Status::*;

/// A known patch of the ledger that a patch of the period may continue.
struct Known {
    tbbh: String,
    status: Status,
    area: f64,
    accepted_area: Option<f64>,
    geometry: Geometry,
}

/// (index of the period's patch, index of the known patch, area they share).
type Pair = (usize, usize, f64);

/// One period being written: where to, which period, under which rules, and what was done.
struct Recording<'a> {
    tx: &'a Transaction<'a>,
    path: &'a Path,
    period: String,
    rules: &'a LedgerRules,
    /// The last number given under each county-and-period prefix, read once per prefix.
    last_seq: BTreeMap<String, u32>,
    summary: PeriodLedger,
}

/// Takes the period's patches inside an open transaction; gives each its number and status
/// and returns what the period did to the ledger.
pub(super) fn record_in(
    tx: &Transaction,
    path: &Path,
    period: Period,
    counties: &[String],
    patches: &mut [Patch],
    rules: &LedgerRules,
    cultivated: &CultivatedShare,
) -> Result<PeriodLedger> {
    let mut recording = Recording {
        tx,
        path,
        period: period.to_string(),
        rules,
        last_seq: BTreeMap::new(),
        summary: PeriodLedger::default(),
    };
    recording.recheck_rectified(counties, cultivated)?;
    let (known, pairs) = recording.candidate_pairs(patches)?;
    let matched = match_pairs(pairs, &known);
    for (i, p) in patches.iter_mut().enumerate() {
        let wkb = p.geometry.wkb().map_err(|e| damaged_record(path, e))?;
        match matched.get(&i) {
            Some(&k) => recording.continue_known(p, &known[k], &wkb)?,
            None => recording.add_new(p, &wkb)?,
        }
        recording.write_sighting(p, &wkb)?;
    }
    Ok(recording.summary)
}

impl Recording<'_> {
    /// Takes the counties of the run and the period's cultivated share; gives each of their
    /// rectified patches its verdict: closing proposed, rectifying again, or undecided.
    fn recheck_rectified(
        &mut self,
        counties: &[String],
        cultivated: &CultivatedShare,
    ) -> Result<()> {
        for (tbbh, county, wkb) in self.rectified()? {
            if !counties.contains(&county) {
                continue;
            }
            let geometry = Geometry::from_wkb(&wkb).map_err(|e| damaged_record(self.path, e))?;
            let period_s = &self.period;
            match cultivated(&geometry)? {
                None => self.summary.recheck_undecided.push(tbbh),
                Some(share) if share >= 0.5 => {
                    let note = format!(
                        "卫星复核: cultivation back on {:.0} % of the patch in {period_s}",
                        share * 100.0
                    );
                    self.recheck_transition(&tbbh, ClosingProposed, &note)?;
                    self.summary.proposed_for_closing.push(tbbh);
                }
                Some(share) => {
                    let note = format!(
                        "卫星复核: cultivation not back, {:.0} % of the patch cultivated in {period_s} (50 % needed)",
                        share * 100.0
                    );
                    self.recheck_transition(&tbbh, Rectifying, &note)?;
                    self.summary.back_to_rectifying.push(tbbh);
                }
            }
        }
        Ok(())
    }

    /// Takes nothing; gives (number, county, outline as WKB) of every rectified patch, by
    /// number.
    fn rectified(&self) -> Result<Vec<(String, String, Vec<u8>)>> {
        let db = db_error(self.path);
        let mut stmt = self
            .tx
            .prepare("SELECT tbbh, county, geometry FROM patches WHERE status = ? ORDER BY tbbh")
            .map_err(db)?;
        let rows = stmt
            .query_map([Rectified.code()], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .map_err(db)?;
        rows.collect::<rusqlite::Result<_>>().map_err(db)
    }

    /// Takes a rectified patch, the re-check's verdict and its reason; gives the transition.
    fn recheck_transition(&self, tbbh: &str, to: Status, note: &str) -> Result<()> {
        transition(
            self.tx,
            self.path,
            tbbh,
            Rectified,
            to,
            "gengbao satellite re-check",
            Some(&self.period),
            note,
            &[],
            None,
        )
    }

    /// Takes the period's patches; gives the open known patches of their counties whose
    /// bounding boxes they touch, and the pairs sharing at least `match_overlap` of the
    /// smaller patch.
    fn candidate_pairs(&self, patches: &[Patch]) -> Result<(Vec<Known>, Vec<Pair>)> {
        let db = db_error(self.path);
        let mut pairs: Vec<Pair> = Vec::new();
        let mut known: Vec<Known> = Vec::new();
        let mut known_index: BTreeMap<String, usize> = BTreeMap::new();
        let mut stmt = self
            .tx
            .prepare(
                "SELECT tbbh, status, area_m2, accepted_area_m2, geometry FROM patches
                 WHERE county = ? AND status != 'closed' AND first_period <= ?
                   AND maxx >= ? AND minx <= ? AND maxy >= ? AND miny <= ? ORDER BY tbbh",
            )
            .map_err(db)?;
        for (i, p) in patches.iter().enumerate() {
            let env = p.geometry.envelope();
            let rows = stmt
                .query_map(
                    params![
                        p.county_code,
                        self.period,
                        env.MinX,
                        env.MaxX,
                        env.MinY,
                        env.MaxY
                    ],
                    |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, f64>(2)?,
                            r.get::<_, Option<f64>>(3)?,
                            r.get::<_, Vec<u8>>(4)?,
                        ))
                    },
                )
                .map_err(db)?;
            for row in rows {
                let (tbbh, status, area, accepted_area, wkb) = row.map_err(db)?;
                let k = match known_index.get(&tbbh) {
                    Some(&k) => k,
                    None => {
                        known.push(Known {
                            tbbh: tbbh.clone(),
                            status: Status::parse(&status).unwrap_or(Detected),
                            area,
                            accepted_area,
                            geometry: Geometry::from_wkb(&wkb)
                                .map_err(|e| damaged_record(self.path, e))?,
                        });
                        known_index.insert(tbbh, known.len() - 1);
                        known.len() - 1
                    }
                };
                let shared = p
                    .geometry
                    .intersection(&known[k].geometry)
                    .map_or(0.0, |g| surface_area(&g));
                let smaller = p.geometry.area().min(known[k].area).max(f64::MIN_POSITIVE);
                if shared >= self.rules.match_overlap * smaller && shared > 0.0 {
                    pairs.push((i, k, shared));
                }
            }
        }
        Ok((known, pairs))
    }

    /// Takes a patch of the period matched to a known one, and its outline as WKB; gives it
    /// the known number and status (detected again when it regrew) and updates the known
    /// patch to this period.
    fn continue_known(&mut self, p: &mut Patch, k: &Known, wkb: &[u8]) -> Result<()> {
        let env = p.geometry.envelope();
        p.tbbh = k.tbbh.clone();
        p.status = k.status;
        if k.status == Accepted {
            self.check_regrowth(p, k)?;
        }
        self.tx
            .execute(
                "UPDATE patches SET change = ?2, last_period = max(last_period, ?3), area_m2 = ?4,
                        persisted = ?5, minx = ?6, miny = ?7, maxx = ?8, maxy = ?9, geometry = ?10,
                        township = CASE WHEN ?3 >= last_period THEN ?11 ELSE township END
                     WHERE tbbh = ?1",
                params![
                    p.tbbh,
                    p.change.code(),
                    self.period,
                    p.area_m2,
                    p.persisted,
                    env.MinX,
                    env.MinY,
                    env.MaxX,
                    env.MaxY,
                    wkb,
                    p.township_code
                ],
            )
            .map_err(db_error(self.path))?;
        self.summary.continued.push(p.tbbh.clone());
        Ok(())
    }

    /// Takes a patch of the period that continues an accepted one; gives it back to detected,
    /// with the growth in the history, when it grew beyond the margin since acceptance.
    fn check_regrowth(&mut self, p: &mut Patch, k: &Known) -> Result<()> {
        let at_acceptance = k.accepted_area.unwrap_or(k.area);
        if p.area_m2 > at_acceptance * (1.0 + self.rules.regrowth_margin) {
            let note = format!(
                "grew from {at_acceptance:.0} m² at acceptance to {:.0} m² (more than {:.0} %): to be verified again",
                p.area_m2,
                self.rules.regrowth_margin * 100.0
            );
            transition(
                self.tx,
                self.path,
                &p.tbbh,
                Accepted,
                Detected,
                "gengbao run",
                Some(&self.period),
                &note,
                &[],
                None,
            )?;
            p.status = Detected;
            self.summary.regrown.push(p.tbbh.clone());
        }
        Ok(())
    }

    /// Takes a patch of the period that matches no known one, and its outline as WKB; gives
    /// it the next number of its county and period and records it as detected.
    fn add_new(&mut self, p: &mut Patch, wkb: &[u8]) -> Result<()> {
        let db = db_error(self.path);
        let env = p.geometry.envelope();
        let prefix = format!("{}{}", p.county_code, self.period.replace('-', ""));
        let seq = self.next_number(&prefix)?;
        p.tbbh = format!("{prefix}{seq:05}");
        p.status = Detected;
        self.tx.execute(
            "INSERT INTO patches (tbbh, county, change, status, first_period, last_period, area_m2, persisted, minx, miny, maxx, maxy, geometry, township)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            params![p.tbbh, p.county_code, p.change.code(), Detected.code(), self.period, p.area_m2, p.persisted, env.MinX, env.MinY, env.MaxX, env.MaxY, wkb, p.township_code],
        )
        .map_err(db)?;
        let note = format!(
            "{} {:.0} m², first seen {}",
            p.change.label_zh(),
            p.area_m2,
            p.first_seen
        );
        self.tx.execute(
            "INSERT INTO history (tbbh, at, who, from_status, to_status, period, note, attachments) VALUES (?, ?, 'gengbao run', NULL, ?, ?, ?, '')",
            params![p.tbbh, now(), Detected.code(), self.period, note],
        )
        .map_err(db)?;
        self.summary.new.push(p.tbbh.clone());
        Ok(())
    }

    /// Takes a county-and-period prefix; gives the next sequence number under it, reading the
    /// last one given from the ledger the first time the prefix comes up.
    fn next_number(&mut self, prefix: &str) -> Result<u32> {
        let seq = match self.last_seq.entry(prefix.to_string()) {
            btree_map::Entry::Occupied(seq) => seq.into_mut(),
            btree_map::Entry::Vacant(slot) => {
                let last: Option<String> = self
                    .tx
                    .query_row(
                        "SELECT max(tbbh) FROM patches WHERE tbbh LIKE ? || '%' AND length(tbbh) = ?",
                        params![prefix, prefix.len() + 5],
                        |r| r.get(0),
                    )
                    .map_err(db_error(self.path))?;
                slot.insert(
                    last.and_then(|t| t[prefix.len()..].parse::<u32>().ok())
                        .unwrap_or(0),
                )
            }
        };
        *seq += 1;
        Ok(*seq)
    }

    /// Takes a numbered patch of the period and its outline as WKB; gives the ledger its
    /// sighting in the period, replacing the one of an earlier run of the same period.
    fn write_sighting(&self, p: &Patch, wkb: &[u8]) -> Result<()> {
        let record = serde_json::to_string(p).expect("serialisable");
        self.tx
            .execute(
                "INSERT OR REPLACE INTO sightings (tbbh, period, record, geometry) VALUES (?, ?, ?, ?)",
                params![p.tbbh, self.period, record, wkb],
            )
            .map_err(db_error(self.path))?;
        Ok(())
    }
}

/// Takes the candidate pairs; gives each matched patch of the period its known patch,
/// largest shared area first, each patch at most once.
fn match_pairs(mut pairs: Vec<Pair>, known: &[Known]) -> BTreeMap<usize, usize> {
    pairs.sort_by(|a, b| {
        b.2.total_cmp(&a.2)
            .then(a.0.cmp(&b.0))
            .then(known[a.1].tbbh.cmp(&known[b.1].tbbh))
    });
    let mut matched: BTreeMap<usize, usize> = BTreeMap::new();
    let mut taken: BTreeSet<usize> = BTreeSet::new();
    for (i, k, _) in pairs {
        if !matched.contains_key(&i) && !taken.contains(&k) {
            matched.insert(i, k);
            taken.insert(k);
        }
    }
    matched
}

/// Area of the surfaces of a geometry; 0 for the points and lines where outlines only touch.
fn surface_area(g: &Geometry) -> f64 {
    use gdal_sys::OGRwkbGeometryType::{wkbGeometryCollection, wkbMultiPolygon, wkbPolygon};
    // SAFETY: a pure function of the type code.
    let flat = unsafe { gdal_sys::OGR_GT_Flatten(g.geometry_type()) };
    if flat == wkbPolygon || flat == wkbMultiPolygon {
        g.area()
    } else if flat == wkbGeometryCollection {
        (0..g.geometry_count())
            .map(|i| surface_area(&g.get_geometry(i)))
            .sum()
    } else {
        0.0
    }
}

/// Share of the observed pixels of `classes` (a window's land cover) inside `inside` that
/// are grain; None when fewer than half of the inside pixels were observed.
pub(crate) fn grain_share(classes: &[u8], inside: &[i32]) -> Option<f64> {
    let (mut total, mut seen, mut grain) = (0u32, 0u32, 0u32);
    for (&c, &m) in classes.iter().zip(inside) {
        if m == 0 {
            continue;
        }
        total += 1;
        if c != LandCover::NoData.code() {
            seen += 1;
            grain += u32::from(c == LandCover::Grain.code());
        }
    }
    (total > 0 && seen * 2 >= total).then(|| f64::from(grain) / f64::from(seen))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grain_share_needs_half_the_patch_observed() {
        assert_eq!(grain_share(&[1, 1, 3, 0], &[1, 1, 1, 1]), Some(2.0 / 3.0));
        assert_eq!(grain_share(&[1, 0, 0, 0], &[1, 1, 1, 1]), None);
        assert_eq!(grain_share(&[1, 1, 3, 3], &[0, 0, 1, 1]), Some(0.0));
    }
}
