//! Land cover on the real labelled sets, as `gengbao eval-real` scores it, beside a random
//! forest on the raw bands of the same folds: the EuroSAT patches (gengbao's single-look L1C
//! model retrained by its shipped config without each of five folds, run through `detect
//! --model` on the held-out patches) and the WorldCereal Flanders series (the multi-period
//! model retrained without each patch, classifying the other as a job does). Skips with a
//! message when `../shared/data` is absent.

use gengbao::eval_real::land_cover_sets;

#[test]
fn the_single_look_model_beats_a_random_forest_on_held_out_patches() {
    let Some(eurosat) = crate::common::real_data("eurosat-s2", "Forest/Forest_1.tif") else {
        eprintln!("SKIPPED: ../shared/data/eurosat-s2 not found (set GENGBAO_REAL_DATA to the data folder)");
        return;
    };
    let data = eurosat.parent().unwrap().to_path_buf();
    let tmp = tempfile::tempdir().unwrap();
    let sets = land_cover_sets(&data, tmp.path()).unwrap();
    let eurosat = sets
        .iter()
        .find(|s| s.set == "eurosat-s2")
        .expect("EuroSAT is run");
    println!(
        "EuroSAT, {} held-out patches: macro-F1 gengbao {:.3}, random forest {:.3}",
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

    let Some(flanders) = sets.iter().find(|s| s.set == "worldcereal-s2") else {
        eprintln!("SKIPPED: ../shared/data/worldcereal-s2 not found");
        return;
    };
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
