//! Land cover on the real labelled sets, as `gengbao eval-real` scores it, beside a random
//! forest on the raw bands of the same folds: the EuroSAT patches (gengbao's single-look L1C
//! model, and its four-band model, each retrained by its shipped config without each of five
//! folds, run through `detect --model` on the held-out patches) and the WorldCereal Flanders series (the multi-period
//! model retrained without each patch, classifying the other as a job does), and Digital
//! Earth Africa's crop points (gengbao's trainer and classifier without each region). Skips
//! with a message when `../shared/data` is absent.

use gengbao::eval_real::land_cover_set;

#[test]
fn the_single_look_model_beats_a_random_forest_on_held_out_patches() {
    beats_the_forest_on_eurosat("eurosat-s2");
}

/// The four-band model (blue, green, red, NIR: Gaofen's bands) against a forest on the same
/// four bands.
#[test]
fn the_four_band_model_beats_a_random_forest_of_the_same_bands_on_held_out_patches() {
    beats_the_forest_on_eurosat("eurosat-s2-four-bands");
}

fn beats_the_forest_on_eurosat(set: &str) {
    let Some(eurosat) = crate::common::real_data("eurosat-s2", "Forest/Forest_1.tif") else {
        eprintln!("SKIPPED: ../shared/data/eurosat-s2 not found (set GENGBAO_REAL_DATA to the data folder)");
        return;
    };
    let data = eurosat.parent().unwrap().to_path_buf();
    let tmp = tempfile::tempdir().unwrap();
    let eurosat = land_cover_set(set, &data, tmp.path(), None)
        .unwrap()
        .expect("EuroSAT is run");
    println!(
        "{set}, {} held-out patches: macro-F1 gengbao {:.3}, random forest {:.3}",
        eurosat.patches, eurosat.gengbao.macro_f1, eurosat.random_forest.macro_f1
    );
    assert_eq!(eurosat.patches, 90, "nine classes of ten patches");
    assert!(
        eurosat.gengbao.macro_f1 >= eurosat.random_forest.macro_f1 + 0.05,
        "gengbao {:.3} against the forest's {:.3}",
        eurosat.gengbao.macro_f1,
        eurosat.random_forest.macro_f1
    );
    // Every class is found somewhere: no class is given up for the others.
    for class in 1..=6u8 {
        let f1 = eurosat.gengbao.f1.get(&class).copied().unwrap_or(0.0);
        assert!(f1 > 0.3, "class {class}: F1 {f1:.2}");
    }
}

#[test]
fn the_multi_period_model_beats_a_random_forest_on_a_held_out_flanders_patch() {
    let Some(data) = crate::common::real_data("worldcereal-s2", "") else {
        eprintln!("SKIPPED: ../shared/data/worldcereal-s2 not found (set GENGBAO_REAL_DATA to the data folder)");
        return;
    };
    let data = data.parent().unwrap().to_path_buf();
    let tmp = tempfile::tempdir().unwrap();
    let flanders = land_cover_set("worldcereal-s2", &data, tmp.path(), None)
        .unwrap()
        .expect("WorldCereal is run");
    println!(
        "WorldCereal Flanders, leave one patch out: macro-F1 gengbao {:.3}, random forest {:.3}",
        flanders.gengbao.macro_f1, flanders.random_forest.macro_f1
    );
    assert!(
        flanders.gengbao.macro_f1 >= flanders.random_forest.macro_f1 + 0.05,
        "gengbao {:.3} against the forest's {:.3}",
        flanders.gengbao.macro_f1,
        flanders.random_forest.macro_f1
    );
    // Annual crops are what the job watches.
    assert!(
        flanders.gengbao.f1[&1] > 0.7,
        "annual crop F1 {:.2}",
        flanders.gengbao.f1[&1]
    );
}

#[test]
fn crop_is_told_from_other_land_in_held_out_african_regions() {
    let Some(data) = crate::common::real_data("deafrica-cropmask", "sahel.txt") else {
        eprintln!("SKIPPED: ../shared/data/deafrica-cropmask not found (set GENGBAO_REAL_DATA to the data folder)");
        return;
    };
    let data = data.parent().unwrap().to_path_buf();
    let tmp = tempfile::tempdir().unwrap();
    // Two of the eight regions, West Africa and the Indian Ocean islands: each fold's forest
    // takes two minutes here. `gengbao eval-real` holds out all eight.
    let held_out = ["western".to_string(), "indian_ocean".to_string()];
    let africa = land_cover_set("deafrica-cropmask", &data, tmp.path(), Some(&held_out))
        .unwrap()
        .expect("the crop points are run");
    println!(
        "Digital Earth Africa, West Africa and the Indian Ocean held out: macro-F1 gengbao {:.3}, random forest {:.3}",
        africa.gengbao.macro_f1, africa.random_forest.macro_f1
    );
    assert_eq!(africa.patches, 2);
    assert_eq!(
        africa.gengbao.pixels,
        2113 + 1777,
        "every point of both regions is scored"
    );
    // 0.664 against 0.601 here (2026-11-28); the issue's +0.05 is judged on all eight
    // regions (`eval-real`), two leave room for another machine's rounding.
    assert!(
        africa.gengbao.macro_f1 >= africa.random_forest.macro_f1 + 0.03,
        "gengbao {:.3} against the forest's {:.3}",
        africa.gengbao.macro_f1,
        africa.random_forest.macro_f1
    );
}
