//! `gengbao eval-real` on the real change pairs, fast subset: the Landsat pair of Taizhou
//! and the four smallest OSCD cities (by labelled pixels: paris, bercy, rennes, bordeaux),
//! each through detect and beside change vector analysis with Otsu's threshold on the same
//! pixels. Skips with a message when `../shared/data` is absent. The full run (all 14 OSCD
//! cities) is `gengbao eval-real --out eval-real`.

use gengbao::{eval_real, EvalRealOptions};

const FAST_CITIES: [&str; 4] = ["paris", "bercy", "rennes", "bordeaux"];

#[test]
fn detect_beats_the_classical_change_detector_on_real_pairs() {
    let Some(taizhou) = crate::common::real_data("landsat-taizhou", "2000TM") else {
        eprintln!("SKIPPED: ../shared/data/landsat-taizhou not found (set GENGBAO_REAL_DATA to the data folder)");
        return;
    };
    let data = taizhou.parent().unwrap().to_path_buf();
    let tmp = tempfile::tempdir().unwrap();
    let report = eval_real(&EvalRealOptions {
        data: data.clone(),
        out: tmp.path().to_path_buf(),
        cities: Some(FAST_CITIES.map(String::from).to_vec()),
        land_cover: false,
        regions: None,
    })
    .unwrap();
    println!("{}", report.markdown());
    assert!(tmp.path().join("eval-real.json").exists());
    assert!(tmp.path().join("eval-real.md").exists());

    let taizhou = report
        .change
        .iter()
        .find(|s| s.scene == "taizhou")
        .expect("Taizhou is run");
    assert!(
        taizhou.gengbao.f1 >= 0.90 && taizhou.gengbao.f1 > taizhou.cva_otsu.f1,
        "Taizhou: gengbao F1 {:.3}, CVA + Otsu {:.3}",
        taizhou.gengbao.f1,
        taizhou.cva_otsu.f1
    );
    // The spectral decision is what makes the difference: the classes alone miss most changes.
    assert!(taizhou.gengbao.f1 > taizhou.classes_only.f1 + 0.3);

    if !data.join("oscd-train").is_dir() {
        eprintln!("SKIPPED: ../shared/data/oscd-train not found");
        return;
    }
    let oscd = report
        .change_means
        .iter()
        .find(|m| m.set == "oscd-train")
        .expect("the OSCD cities are run");
    assert_eq!(oscd.scenes, FAST_CITIES.len());
    assert!(
        oscd.gengbao_f1 > oscd.cva_otsu_f1 + 0.05,
        "OSCD subset: gengbao mean F1 {:.3}, CVA + Otsu {:.3}",
        oscd.gengbao_f1,
        oscd.cva_otsu_f1
    );
    // The same cities seen as a four-band camera (Gaofen's path): over all fourteen gengbao
    // is 0.05 above CVA (README), on these four just below it (0.169 against 0.183: rennes).
    // This holds the line against losses like a cloud test that hid four-fifths of Paris
    // (0.077 on these cities) or one that hid new buildings as cloud (0.108).
    let four = report
        .change_means
        .iter()
        .find(|m| m.set == "oscd-train-four-bands")
        .expect("the four-band OSCD cities are run");
    println!(
        "OSCD subset, four bands: gengbao {:.3}, CVA + Otsu {:.3}",
        four.gengbao_f1, four.cva_otsu_f1
    );
    assert!(
        four.gengbao_f1 > 0.8 * four.cva_otsu_f1,
        "four bands: gengbao {:.3}, CVA + Otsu {:.3}",
        four.gengbao_f1,
        four.cva_otsu_f1
    );
}
