//! The job's 撂荒 (PH) rule on real NDVI series (UCR Crop: a year of FORMOSAT-2 pixels in
//! south-west France), as `gengbao eval-real` scores it, with each choice of `[rules]
//! cultivation_signs`. Skips with a message when `../shared/data` is absent.

use gengbao::domain::change::CultivationSigns;
use gengbao::eval_real::abandonment_sets;

#[test]
fn where_fields_lie_bare_real_abandoned_land_is_flagged_after_a_year_and_crops_mostly_are_not() {
    let Some(ucr) = crate::common::real_data("ucr-crop", "Crop_TRAIN.tsv") else {
        eprintln!(
            "SKIPPED: ../shared/data/ucr-crop not found (set GENGBAO_REAL_DATA to the data folder)"
        );
        return;
    };
    let sets = abandonment_sets(ucr.parent().unwrap()).unwrap();
    let of = |signs| {
        sets.iter()
            .find(|s| s.cultivation_signs == signs)
            .expect("each choice of signs is run")
    };
    for s in &sets {
        println!(
            "UCR Crop, {}: PH recall {:.3}, precision {:.3}, annual crops flagged {:.3}; {:?}",
            s.cultivation_signs.name(),
            s.score.recall,
            s.score.precision,
            s.crops_flagged,
            s.by_class
        );
        assert_eq!(s.series, 7200);
    }

    // Bare soil only: wasteland and fallow, whose weeds grow as green as a crop, are flagged.
    let bare = of(CultivationSigns::BareSoil);
    assert!(bare.score.recall > 0.8, "recall {:.3}", bare.score.recall);
    for class in ["wasteland", "fallow"] {
        assert!(
            bare.by_class[class].1 > 0.7,
            "{class}: {:?}",
            bare.by_class[class]
        );
    }
    // Every annual crop is bare at sowing or after harvest; a pixel that never reads bare is a
    // minority the job's two-thirds-of-a-field share then outvotes.
    assert!(
        bare.crops_flagged < 0.15,
        "crops flagged {:.3}",
        bare.crops_flagged
    );
    let meadows = ["wasteland", "fallow", "temporary meadow", "meadow"];
    for (crop, (_, flagged)) in bare
        .by_class
        .iter()
        .filter(|(c, _)| !meadows.contains(&c.as_str()))
    {
        assert!(*flagged < 0.25, "{crop}: {flagged:.2} flagged");
    }

    // The default, which also counts a dense canopy, stays the cautious choice: it flags
    // fewer crops, and far less abandoned land.
    let canopy = of(CultivationSigns::BareSoilOrCanopy);
    assert!(canopy.crops_flagged < bare.crops_flagged);
    assert!(
        canopy.crops_flagged < 0.05,
        "crops flagged {:.3}",
        canopy.crops_flagged
    );
    assert!(canopy.score.recall < bare.score.recall);
}
