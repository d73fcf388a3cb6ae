//! The patch ledger on hand-made patches: every allowed transition works and every other is
//! refused with the allowed ones listed; a later detection of the same place keeps its number;
//! accepted patches go out again only when they grow; rectified patches are re-checked; a
//! returned file with one bad row changes nothing; returns saved as GBK CSV or with dates in
//! text columns read as the county typed them.

use gengbao::dispatch::read_returns;
use gengbao::domain::period::Period;
use gengbao::domain::status::{allowed_from, By, Evidence, Status, TRANSITIONS};
use gengbao::engine::patches::Patch;
use gengbao::job::layout::OutputLayout;
use gengbao::ledger::{Filter, Ledger, LedgerRules, ReturnRow};
use std::path::Path;

const COUNTY: &str = "320901";

/// A square patch of `side` m at (x, y).
fn patch(x: f64, y: f64, side: f64, period: &str) -> Patch {
    let mut p = gengbao::samples::square_patch(COUNTY, x, y, side, period);
    p.county_name = "西河县".into();
    p
}

fn p(s: &str) -> Period {
    s.parse().unwrap()
}

/// Records `patches` as the detections of `period`, with `share` as every re-check's answer.
fn record(dir: &Path, period: &str, patches: &mut [Patch], share: Option<f64>) -> Vec<String> {
    let mut ledger = Ledger::open(&OutputLayout::new(dir).ledger_file()).unwrap();
    ledger
        .record_period(
            p(period),
            &[COUNTY.to_string()],
            patches,
            &LedgerRules::default(),
            &|_| Ok(share),
        )
        .unwrap();
    patches.iter().map(|p| p.tbbh.clone()).collect()
}

/// Statuses an inspector walks through from 新发现 to reach each status.
fn path_to(s: Status) -> Option<Vec<Status>> {
    use Status::*;
    let path = match s {
        Detected => vec![],
        Dispatched => vec![Dispatched],
        Verifying => vec![Dispatched, Verifying],
        EvidenceSubmitted => vec![Dispatched, Verifying, EvidenceSubmitted],
        Accepted => vec![Dispatched, Verifying, EvidenceSubmitted, Accepted],
        Rejected => vec![Dispatched, Verifying, EvidenceSubmitted, Rejected],
        Closed => vec![Dispatched, Verifying, EvidenceSubmitted, Accepted, Closed],
        RectificationRequired => vec![Dispatched, Verifying, RectificationRequired],
        Rectifying => vec![Dispatched, Verifying, RectificationRequired, Rectifying],
        Rectified => vec![
            Dispatched,
            Verifying,
            RectificationRequired,
            Rectifying,
            Rectified,
        ],
        // Reached only through the satellite re-check (tested below).
        ClosingProposed => return None,
    };
    Some(path)
}

fn walk(ledger: &mut Ledger, tbbh: &str, path: &[Status]) {
    for &s in path {
        ledger
            .set_status(
                tbbh,
                COUNTY,
                s,
                "tester",
                "",
                Some(Evidence::FalseAlarm),
                &[],
                None,
            )
            .unwrap_or_else(|e| panic!("walking to {s}: {e}"));
    }
}

#[test]
fn every_allowed_transition_works_and_every_other_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cases = 0;
    for from in Status::ALL {
        let Some(path) = path_to(from) else {
            continue;
        };
        for to in Status::ALL {
            let dir = tmp.path().join(format!("{from}-{to}"));
            let tbbh = record(
                &dir,
                "2026-P1",
                &mut [patch(0.0, 0.0, 100.0, "2026-P1")],
                None,
            )
            .remove(0);
            let mut ledger = Ledger::open_existing(&OutputLayout::new(dir).ledger_file()).unwrap();
            walk(&mut ledger, &tbbh, &path);
            assert_eq!(ledger.entry(&tbbh).unwrap().status, from);
            let before = ledger.history(Some(&tbbh), None).unwrap().len();
            let allowed = allowed_from(from, By::Inspector);
            let r = ledger.set_status(
                &tbbh,
                COUNTY,
                to,
                "inspector 1",
                "note",
                Some(Evidence::LegalApproval),
                &["photo.jpg".into()],
                None,
            );
            let history = ledger.history(Some(&tbbh), None).unwrap();
            if allowed.contains(&to) {
                r.unwrap_or_else(|e| panic!("{from} -> {to} refused: {e}"));
                assert_eq!(ledger.entry(&tbbh).unwrap().status, to);
                let last = history.last().unwrap();
                assert_eq!((last.from, last.to), (Some(from), to));
                assert_eq!(last.who, "inspector 1");
                assert_eq!(last.attachments, ["photo.jpg"]);
            } else {
                let message = r
                    .expect_err(&format!("{from} -> {to} accepted"))
                    .to_string();
                assert!(message.contains("cannot go from"), "{message}");
                for a in &allowed {
                    assert!(message.contains(a.code()), "{message} lacks {a}");
                }
                assert_eq!(ledger.entry(&tbbh).unwrap().status, from, "unchanged");
                assert_eq!(history.len(), before, "nothing recorded");
            }
            cases += 1;
        }
    }
    assert_eq!(cases, 10 * Status::ALL.len());
    // Every transition a person may make was exercised as allowed.
    assert!(TRANSITIONS
        .iter()
        .filter(|(_, _, by)| by.contains(&By::Inspector))
        .all(|(f, _, _)| path_to(*f).is_some() || *f == Status::ClosingProposed));
}

#[test]
fn evidence_needs_its_type_and_a_county_changes_only_its_own_patches() {
    let tmp = tempfile::tempdir().unwrap();
    let tbbh = record(
        tmp.path(),
        "2026-P1",
        &mut [patch(0.0, 0.0, 100.0, "2026-P1")],
        None,
    )
    .remove(0);
    let mut ledger = Ledger::open_existing(&OutputLayout::new(tmp.path()).ledger_file()).unwrap();
    walk(&mut ledger, &tbbh, &[Status::Dispatched, Status::Verifying]);
    let e = ledger
        .set_status(
            &tbbh,
            COUNTY,
            Status::EvidenceSubmitted,
            "x",
            "",
            None,
            &[],
            None,
        )
        .unwrap_err();
    assert!(e.to_string().contains("--evidence"), "{e}");
    let e = ledger
        .set_status(
            &tbbh,
            "320902",
            Status::EvidenceSubmitted,
            "x",
            "",
            Some(Evidence::TemporaryUse),
            &[],
            None,
        )
        .unwrap_err();
    assert!(e.to_string().contains("belongs to county 320901"), "{e}");
    assert_eq!(ledger.entry(&tbbh).unwrap().status, Status::Verifying);
}

#[test]
fn the_same_place_keeps_its_number_and_accepted_patches_return_only_when_grown() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let first = record(
        dir,
        "2026-P1",
        &mut [
            patch(0.0, 0.0, 100.0, "2026-P1"),
            patch(1000.0, 0.0, 100.0, "2026-P1"),
            patch(2000.0, 0.0, 100.0, "2026-P1"),
        ],
        None,
    );
    assert_eq!(
        first,
        ["320901202600001", "320901202600002", "320901202600003"]
            .map(|s| s.replace("2026", "2026P1"))
    );
    let mut ledger = Ledger::open_existing(&OutputLayout::new(dir).ledger_file()).unwrap();
    // The second is accepted at 100 x 100 m; the third is closed.
    let accepted = [
        Status::Dispatched,
        Status::Verifying,
        Status::EvidenceSubmitted,
        Status::Accepted,
    ];
    walk(&mut ledger, &first[1], &accepted);
    walk(
        &mut ledger,
        &first[2],
        &[accepted.as_slice(), &[Status::Closed]].concat(),
    );
    drop(ledger);

    // Next period: the first moved a little (still 60 % shared), the second grew by 10 %,
    // the third's place is flagged again, and something small touches the first's corner.
    let mut second = [
        patch(40.0, 0.0, 100.0, "2026-P2"),
        patch(1000.0, 0.0, 104.9, "2026-P2"),
        patch(2000.0, 0.0, 100.0, "2026-P2"),
        patch(130.0, 90.0, 30.0, "2026-P2"),
    ];
    let numbers = record(dir, "2026-P2", &mut second, None);
    assert_eq!(numbers[0], first[0], "persisting change keeps its TBBH");
    assert_eq!(numbers[1], first[1]);
    assert_eq!(
        second[1].status,
        Status::Accepted,
        "10 % growth is within the margin"
    );
    assert!(
        numbers[2].starts_with("3209012026P2"),
        "a closed case found again is new: {}",
        numbers[2]
    );
    assert!(
        numbers[3].starts_with("3209012026P2"),
        "a small overlap is another patch"
    );
    assert_ne!(numbers[2], numbers[3]);

    let mut ledger = Ledger::open_existing(&OutputLayout::new(dir).ledger_file()).unwrap();
    let sent: Vec<String> = ledger
        .dispatch(p("2026-P2"), COUNTY, |_| Ok(()))
        .unwrap()
        .into_iter()
        .map(|p| p.tbbh)
        .collect();
    assert!(
        !sent.contains(&first[1]),
        "accepted, not grown: not dispatched again"
    );
    assert!(sent.contains(&first[0]) && sent.contains(&numbers[2]));
    drop(ledger);

    // Re-running a period updates, never duplicates.
    let again = record(dir, "2026-P2", &mut second.clone(), None);
    assert_eq!(again, numbers);

    // Grown by 30 %: out again, with the reason in the history.
    let mut third = [patch(1000.0, 0.0, 114.1, "2026-P3")];
    assert_eq!(record(dir, "2026-P3", &mut third, None)[0], first[1]);
    assert_eq!(third[0].status, Status::Detected);
    let mut ledger = Ledger::open_existing(&OutputLayout::new(dir).ledger_file()).unwrap();
    let last = ledger
        .history(Some(&first[1]), None)
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(
        (last.from, last.to),
        (Some(Status::Accepted), Status::Detected)
    );
    assert!(last.note.contains("grew"), "{}", last.note);
    let sent = ledger.dispatch(p("2026-P3"), COUNTY, |_| Ok(())).unwrap();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].status, Status::Dispatched);
}

#[test]
fn rectified_patches_are_rechecked_by_satellite() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let numbers = record(
        dir,
        "2026-P1",
        &mut [patch(0.0, 0.0, 100.0, "2026-P1")],
        None,
    );
    let mut ledger = Ledger::open_existing(&OutputLayout::new(dir).ledger_file()).unwrap();
    walk(
        &mut ledger,
        &numbers[0],
        &path_to(Status::Rectified).unwrap(),
    );
    drop(ledger);
    // Too cloudy to tell: left as it is.
    record(dir, "2026-P2", &mut [], None);
    let ledger = Ledger::open_existing(&OutputLayout::new(dir).ledger_file()).unwrap();
    assert_eq!(ledger.entry(&numbers[0]).unwrap().status, Status::Rectified);
    drop(ledger);
    // Not back: rectifying again, with the reason.
    record(dir, "2026-P3", &mut [], Some(0.2));
    let mut ledger = Ledger::open_existing(&OutputLayout::new(dir).ledger_file()).unwrap();
    assert_eq!(
        ledger.entry(&numbers[0]).unwrap().status,
        Status::Rectifying
    );
    let last = ledger
        .history(Some(&numbers[0]), None)
        .unwrap()
        .pop()
        .unwrap();
    assert!(last.note.contains("not back"), "{}", last.note);
    assert_eq!(last.period.as_deref(), Some("2026-P3"));
    walk(&mut ledger, &numbers[0], &[Status::Rectified]);
    drop(ledger);
    // Back: proposed for closing, then closed by a person.
    record(dir, "2026-P4", &mut [], Some(0.9));
    let mut ledger = Ledger::open_existing(&OutputLayout::new(dir).ledger_file()).unwrap();
    assert_eq!(
        ledger.entry(&numbers[0]).unwrap().status,
        Status::ClosingProposed
    );
    walk(&mut ledger, &numbers[0], &[Status::Closed]);
}

#[test]
fn a_returned_file_with_one_bad_row_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let numbers = record(
        dir,
        "2026-P1",
        &mut [
            patch(0.0, 0.0, 100.0, "2026-P1"),
            patch(1000.0, 0.0, 100.0, "2026-P1"),
        ],
        None,
    );
    std::fs::write(dir.join("photo.jpg"), b"jpg").unwrap();
    let mut ledger = Ledger::open_existing(&OutputLayout::new(dir).ledger_file()).unwrap();
    let good = ReturnRow {
        row: 2,
        tbbh: numbers[0].clone(),
        result: "举证".into(),
        evidence: "设施农业".into(),
        note: "大棚".into(),
        attachments: vec!["photo.jpg".into()],
        ..Default::default()
    };
    let bad = ReturnRow {
        row: 3,
        tbbh: numbers[1].clone(),
        result: "需整改".into(),
        rectification: "整改完了".into(),
        ..Default::default()
    };
    let report = ledger
        .import(&[good.clone(), bad.clone()], COUNTY, "county", dir, false)
        .unwrap();
    assert_eq!(report.bad_rows.len(), 1);
    assert_eq!(report.bad_rows[0].0, 3);
    assert!(
        report.bad_rows[0].1.contains("整改状态"),
        "{:?}",
        report.bad_rows
    );
    assert!(report.applied.is_empty());
    assert_eq!(
        ledger.entry(&numbers[0]).unwrap().status,
        Status::Detected,
        "nothing applied"
    );
    assert_eq!(
        ledger.history(None, None).unwrap().len(),
        2,
        "only the detections"
    );

    // With the explicit flag the valid row goes in, through the statuses between.
    let report = ledger
        .import(&[good, bad], COUNTY, "county", dir, true)
        .unwrap();
    assert_eq!(
        report.applied,
        [(
            numbers[0].clone(),
            vec![
                Status::Dispatched,
                Status::Verifying,
                Status::EvidenceSubmitted
            ]
        )]
    );
    let e = ledger.entry(&numbers[0]).unwrap();
    assert_eq!(
        (e.status, e.evidence),
        (
            Status::EvidenceSubmitted,
            Some(Evidence::FacilityAgriculture)
        )
    );
    let last = ledger
        .history(Some(&numbers[0]), None)
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(
        (last.note.as_str(), last.attachments.as_slice()),
        ("大棚", ["photo.jpg".to_string()].as_slice())
    );
}

#[test]
fn returns_are_read_as_county_officers_save_them() {
    let tmp = tempfile::tempdir().unwrap();
    let header = "图斑编号,核查结果,举证类型,整改状态,备注,附件\n";
    let row = "3209012026P100001,举证,设施农业,,大棚（已备案）,photo.jpg\n";

    // Chinese Excel's "CSV (逗号分隔)" is GBK.
    let gbk_csv = tmp.path().join("gbk.csv");
    let text = format!("{header}{row}");
    let (bytes, _, unmappable) = encoding_rs::GBK.encode(&text);
    assert!(!unmappable);
    std::fs::write(&gbk_csv, &bytes).unwrap();
    let rows = read_returns(&gbk_csv).unwrap();
    assert_eq!(
        (
            rows[0].tbbh.as_str(),
            rows[0].result.as_str(),
            rows[0].note.as_str()
        ),
        ("3209012026P100001", "举证", "大棚（已备案）")
    );

    // A date typed into 备注 is a day number inside the workbook.
    let xlsx = tmp.path().join("dates.xlsx");
    let mut book = rust_xlsxwriter::Workbook::new();
    let sheet = book.add_worksheet();
    for (c, h) in ["图斑编号", "核查结果", "备注"].iter().enumerate() {
        sheet.write_string(0, c as u16, *h).unwrap();
    }
    sheet.write_string(1, 0, "3209012026P100001").unwrap();
    sheet.write_string(1, 1, "举证").unwrap();
    let day = rust_xlsxwriter::ExcelDateTime::from_ymd(2026, 5, 1).unwrap();
    let format = rust_xlsxwriter::Format::new().set_num_format("yyyy/m/d");
    sheet
        .write_datetime_with_format(1, 2, &day, &format)
        .unwrap();
    book.save(&xlsx).unwrap();
    assert_eq!(read_returns(&xlsx).unwrap()[0].note, "2026-05-01");

    // Bytes that are no text at all are refused with the way to save the list.
    let junk = tmp.path().join("junk.csv");
    std::fs::write(&junk, [0xff, 0xfe, 0x80, 0x81, 0xff, 0x00, 0xff]).unwrap();
    let err = read_returns(&junk).unwrap_err().to_string();
    assert!(err.contains("junk.csv") && err.contains("UTF-8"), "{err}");
}

#[test]
fn a_return_of_ten_thousand_rows_with_one_bad_row_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut patches: Vec<Patch> = (0..10_000)
        .map(|i| {
            patch(
                (i % 100) as f64 * 50.0,
                (i / 100) as f64 * 50.0,
                20.0,
                "2026-P1",
            )
        })
        .collect();
    let numbers = record(dir, "2026-P1", &mut patches, None);
    let mut rows: Vec<ReturnRow> = numbers
        .iter()
        .enumerate()
        .map(|(k, tbbh)| ReturnRow {
            row: k + 2,
            tbbh: tbbh.clone(),
            result: "举证".into(),
            evidence: "设施农业".into(),
            ..Default::default()
        })
        .collect();
    rows[7_777].evidence = "不知道".into();
    let mut ledger = Ledger::open_existing(&OutputLayout::new(dir).ledger_file()).unwrap();
    let before = ledger.history(None, None).unwrap().len();
    let report = ledger.import(&rows, COUNTY, "county", dir, false).unwrap();
    assert_eq!(
        report.bad_rows.iter().map(|(r, _)| *r).collect::<Vec<_>>(),
        [7_779]
    );
    assert!(report.applied.is_empty());
    assert_eq!(
        ledger.history(None, None).unwrap().len(),
        before,
        "nothing applied"
    );
}

/// A ledger written before patches had a township column opens, gains the column from each
/// patch's latest sighting, and lists by township.
#[test]
fn a_ledger_of_an_earlier_version_lists_by_township() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut patches: Vec<Patch> = (0..30)
        .map(|i| {
            let mut p = patch(i as f64 * 50.0, 0.0, 20.0, "2026-P1");
            p.township_code = format!("320901{:03}", i % 3);
            p.township_name = format!("第{}镇", i % 3);
            p
        })
        .collect();
    record(dir, "2026-P1", &mut patches, None);
    let file = OutputLayout::new(dir).ledger_file();
    {
        let old = rusqlite::Connection::open(&file).unwrap();
        old.execute_batch(
            "DROP INDEX patches_township; DROP INDEX patches_county_number;
             ALTER TABLE patches DROP COLUMN township;",
        )
        .unwrap();
    }
    let ledger = Ledger::open_existing(&file).unwrap();
    let second = Filter {
        township: Some("320901001".into()),
        ..Default::default()
    };
    let page = ledger.page(&second, 0, 100).unwrap();
    assert_eq!(page.total, 10);
    assert!(page
        .patches
        .iter()
        .all(|l| l.record.township_name == "第1镇"));
    let places = ledger.places(None).unwrap();
    assert_eq!(
        places
            .iter()
            .map(|p| p.township_name.as_str())
            .collect::<Vec<_>>(),
        ["第0镇", "第1镇", "第2镇"]
    );
}
