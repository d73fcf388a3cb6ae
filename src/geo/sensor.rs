//! Sensor profiles: what a product's bands are called, how digital numbers become reflectance,
//! which value is nodata, and which pixels the product's own quality band marks as cloud or
//! shadow. The index rules see only the canonical bands (blue, green, red, near infrared,
//! and shortwave infrared 1 and 2 where the sensor has them), so one rule set serves
//! Sentinel-2 and Landsat alike; learned models may name bands by their common names
//! (`blue`, `nir`…) and so serve every sensor that has those bands.

use crate::domain::neighbourhood::window_mean;
use crate::error::{Error, Result};

/// How the product flags unusable pixels.
#[derive(Debug, Clone, PartialEq)]
pub enum CloudRule {
    /// Sentinel-2 L2A scene classification: these SCL classes are not clear ground.
    SclClasses(&'static [u16]),
    /// Landsat Collection 2 QA_PIXEL: a pixel with any of these bits set is not clear.
    QaBits(u16),
    /// No quality band: clouds are found in the reflectance of blue, green, red and NIR by
    /// [`visible_clouds`] (Gaofen's cameras).
    VisibleTests,
    /// The product has no quality band (e.g. a user's cloud-free mosaic).
    None,
}

/// Whether a pixel looks like cloud by the tests of Fmask (Zhu and Woodcock, 2012) that need
/// only blue, green, red and NIR reflectance, with Fmask's own thresholds: flat across the
/// visible bands (whiteness under 0.7), hazy in blue against red (HOT = blue − 0.5 red − 0.08
/// above 0), and not vegetation (NDVI under 0.8); and bright (mean visible reflectance above
/// 0.2), standing in for Fmask's shortwave-infrared and thermal tests: without it, the
/// atmosphere's blue in top-of-atmosphere looks made grey city blocks pass for cloud. Bright
/// roofs, concrete and sand pass these tests too; [`visible_clouds`] tells them from clouds
/// by their extent.
pub fn cloudy_in_visible(blue: f32, green: f32, red: f32, nir: f32) -> bool {
    let mean = (blue + green + red) / 3.0;
    if mean.is_nan() || mean <= 0.0 {
        return false;
    }
    let whiteness = ((blue - mean).abs() + (green - mean).abs() + (red - mean).abs()) / mean;
    let haze = blue - 0.5 * red - 0.08;
    mean > 0.2 && whiteness < 0.7 && haze > 0.0 && crate::geo::composite::ndvi(red, nir) < 0.8
}

/// The side, in metres, of a square that a cloud fills somewhere (its core) for
/// [`visible_clouds`] to call it cloud. Clouds that hide a field are hundreds of metres
/// across; the roofs, yards and construction sites that pass the pixel tests are mostly
/// narrower, and a new one on farmland is exactly the change that must not be hidden. The
/// side was chosen among 70, 90 and 110 m on real looks (README, "Configuration", the
/// paragraph on sensors without a quality band).
pub const CLOUD_CORE_SIDE_M: f64 = 90.0;

/// [`CLOUD_CORE_SIDE_M`] in pixels of `pixel_m` metres: odd, at least 1.
pub fn cloud_core_side(pixel_m: f64) -> usize {
    let side = (CLOUD_CORE_SIDE_M / pixel_m).round().max(1.0) as usize;
    side | 1
}

/// The pixels of a look (reflectance, row-major, `width` columns) that are cloud: those that
/// pass [`cloudy_in_visible`] and lie in a square of [`cloud_core_side`] pixels that passes
/// it throughout (a morphological opening). Near the window's edges the square is cut at the
/// edge; read the window wider by `cloud_core_side - 1` pixels on every side to decide its
/// edge pixels as in its middle.
pub fn visible_clouds(
    blue: &[f32],
    green: &[f32],
    red: &[f32],
    nir: &[f32],
    width: usize,
    pixel_m: f64,
) -> Vec<bool> {
    let side = cloud_core_side(pixel_m);
    let cloudy: Vec<f32> = (0..blue.len())
        .map(|i| {
            f32::from(u8::from(cloudy_in_visible(
                blue[i], green[i], red[i], nir[i],
            )))
        })
        .collect();
    // Means of 0/1 values over summed-area tables in f64 are exact: 1 only where every pixel
    // of the square passed.
    let core: Vec<f32> = window_mean(&cloudy, width, side)
        .into_iter()
        .map(|m| f32::from(u8::from(m >= 1.0)))
        .collect();
    window_mean(&core, width, side)
        .into_iter()
        .map(|m| m > 0.0)
        .collect()
}

#[derive(Debug, Clone, PartialEq)]
pub struct SensorProfile {
    pub name: &'static str,
    pub description: &'static str,
    /// Band names in the order a multi-band image of this profile stores them.
    pub bands: &'static [&'static str],
    /// Band name of each canonical band, in canonical order: blue, green, red, NIR.
    pub canonical: [&'static str; 4],
    /// Band names of shortwave infrared 1 and 2, when the sensor has them (Gaofen's cameras
    /// do not: the index rules need them, the learned models do not).
    pub swir: Option<[&'static str; 2]>,
    /// reflectance = (dn - dark + add_offset) * scale, with `band_scale[i]` instead of `scale`
    /// when given (uncalibrated products whose bands have different gains)
    pub scale: f32,
    pub band_scale: &'static [f32],
    /// In digital numbers, as product metadata gives it (Sentinel-2 BOA_ADD_OFFSET /
    /// RADIO_ADD_OFFSET). A job may override it (`[imagery] add_offset`).
    pub add_offset: f32,
    /// Subtract a per-band dark value found in the scene (dark-object subtraction), for digital
    /// numbers that still carry atmospheric path radiance. Needs whole-scene statistics, so
    /// such profiles serve `detect`, not folder jobs.
    pub dark_object_subtraction: bool,
    pub nodata: f64,
    pub mask_band: Option<&'static str>,
    pub cloud_rule: CloudRule,
}

/// SCL: 0 no data, 1 saturated/defective, 3 cloud shadow, 8/9 cloud, 10 cirrus, 11 snow.
const SCL_NOT_CLEAR: &[u16] = &[0, 1, 3, 8, 9, 10, 11];

const S2_CANONICAL: [&str; 4] = ["B02", "B03", "B04", "B08"];
const S2_SWIR: Option<[&str; 2]> = Some(["B11", "B12"]);

pub const PROFILES: &[SensorProfile] = &[
    SensorProfile {
        name: "sentinel2-l2a",
        description: "Sentinel-2 L2A, 10 bands B02 B03 B04 B05 B06 B07 B08 B8A B11 B12 ((DN-1000)/10000), SCL mask",
        bands: &["B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12"],
        canonical: S2_CANONICAL,
        swir: S2_SWIR,
        scale: 1e-4,
        band_scale: &[],
        // Processing baseline 04.00 and later (from 25 January 2022); older products: 0.
        add_offset: -1000.0,
        dark_object_subtraction: false,
        nodata: 0.0,
        mask_band: Some("SCL"),
        cloud_rule: CloudRule::SclClasses(SCL_NOT_CLEAR),
    },
    SensorProfile {
        name: "sentinel2-l2a-12",
        description: "Sentinel-2 L2A, 12 bands B01..B12 without B10 ((DN-1000)/10000), SCL mask",
        bands: &[
            "B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12",
        ],
        canonical: S2_CANONICAL,
        swir: S2_SWIR,
        scale: 1e-4,
        band_scale: &[],
        // Processing baseline 04.00 and later (from 25 January 2022); older products: 0.
        add_offset: -1000.0,
        dark_object_subtraction: false,
        nodata: 0.0,
        mask_band: Some("SCL"),
        cloud_rule: CloudRule::SclClasses(SCL_NOT_CLEAR),
    },
    SensorProfile {
        name: "sentinel2-l1c",
        description: "Sentinel-2 L1C, 13 bands B01..B12 with B10 ((DN-1000)/10000), no mask band: clouds by Fmask's visible-band tests",
        bands: &[
            "B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11",
            "B12",
        ],
        canonical: S2_CANONICAL,
        swir: S2_SWIR,
        scale: 1e-4,
        band_scale: &[],
        // Processing baseline 04.00 and later (from 25 January 2022); older products: 0.
        add_offset: -1000.0,
        dark_object_subtraction: false,
        nodata: 0.0,
        mask_band: None,
        // L1C products carry no scene classification: top-of-atmosphere looks, as a
        // calibrated Gaofen product's are, on which the visible-band test was measured.
        cloud_rule: CloudRule::VisibleTests,
    },
    SensorProfile {
        name: "landsat-tm-sr",
        description: "Landsat 4-7 TM/ETM+ Collection 2 L2 surface reflectance, bands 1 2 3 4 5 7, QA_PIXEL mask",
        bands: &["SR_B1", "SR_B2", "SR_B3", "SR_B4", "SR_B5", "SR_B7"],
        canonical: ["SR_B1", "SR_B2", "SR_B3", "SR_B4"],
        swir: Some(["SR_B5", "SR_B7"]),
        scale: 2.75e-5,
        band_scale: &[],
        // -0.2 reflectance
        add_offset: -0.2 / 2.75e-5,
        dark_object_subtraction: false,
        nodata: 0.0,
        mask_band: Some("QA_PIXEL"),
        // bit 1 dilated cloud, 3 cloud, 4 cloud shadow, 5 snow
        cloud_rule: CloudRule::QaBits(0b11_1010),
    },
    SensorProfile {
        name: "landsat-oli-sr",
        description: "Landsat 8-9 OLI Collection 2 L2 surface reflectance, bands 1 to 7 (coastal aerosol to SWIR 2), QA_PIXEL mask",
        bands: &[
            "SR_B1", "SR_B2", "SR_B3", "SR_B4", "SR_B5", "SR_B6", "SR_B7",
        ],
        canonical: ["SR_B2", "SR_B3", "SR_B4", "SR_B5"],
        swir: Some(["SR_B6", "SR_B7"]),
        scale: 2.75e-5,
        band_scale: &[],
        // -0.2 reflectance, as for TM
        add_offset: -0.2 / 2.75e-5,
        dark_object_subtraction: false,
        nodata: 0.0,
        mask_band: Some("QA_PIXEL"),
        // bit 1 dilated cloud, 2 cirrus, 3 cloud, 4 cloud shadow, 5 snow
        cloud_rule: CloudRule::QaBits(0b11_1110),
    },
    SensorProfile {
        name: "landsat-tm-dn",
        description: "Landsat TM/ETM+ 8-bit digital numbers, bands 1 2 3 4 5 7 (e.g. classic ENVI scenes), no mask",
        bands: &["B1", "B2", "B3", "B4", "B5", "B7"],
        canonical: ["B1", "B2", "B3", "B4"],
        swir: Some(["B5", "B7"]),
        scale: 1.0,
        // Nominal top-of-atmosphere reflectance per DN: ETM+ high-gain radiance per DN divided
        // by the band's solar irradiance, times pi / cos(40 deg sun zenith). Without the
        // scene's metadata this is approximate; dark-object subtraction removes the offsets.
        band_scale: &[0.0016, 0.0018, 0.0017, 0.0025, 0.0022, 0.0021],
        add_offset: 0.0,
        dark_object_subtraction: true,
        nodata: f64::NAN,
        mask_band: None,
        cloud_rule: CloudRule::None,
    },
    gaofen(
        "gf1-wfv",
        "GF-1 WFV (16 m), bands 1 to 4 (blue, green, red, NIR) as reflectance x 10000, or L1A DNs calibrated from the product's .xml; clouds by Fmask's visible-band tests",
        GF_BANDS,
    ),
    gaofen(
        "gf2-pms",
        "GF-2 PMS multispectral (4 m), bands 1 to 4 (blue, green, red, NIR) as reflectance x 10000, or L1A DNs calibrated from the product's .xml; clouds by Fmask's visible-band tests",
        GF_BANDS,
    ),
    gaofen(
        "gf6-wfv",
        "GF-6 WFV (16 m), bands 1 to 8 (blue, green, red, NIR, red edge 1 and 2, purple, yellow) as reflectance x 10000, or L1A DNs calibrated from the product's .xml; clouds by Fmask's visible-band tests",
        &["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8"],
    ),
];

/// Gaofen's four multispectral bands: blue, green, red, near infrared.
const GF_BANDS: &[&str] = &["B1", "B2", "B3", "B4"];

/// A Gaofen camera's profile: bands 1 to 4 are blue, green, red and NIR, without shortwave
/// infrared, read as reflectance × 10,000 without a mask band, or, for an L1A product with
/// its `.xml`, as DNs calibrated by [`crate::geo::gaofen`].
const fn gaofen(
    name: &'static str,
    description: &'static str,
    bands: &'static [&'static str],
) -> SensorProfile {
    SensorProfile {
        name,
        description,
        bands,
        canonical: ["B1", "B2", "B3", "B4"],
        swir: None,
        scale: 1e-4,
        band_scale: &[],
        add_offset: 0.0,
        dark_object_subtraction: false,
        nodata: 0.0,
        mask_band: None,
        cloud_rule: CloudRule::VisibleTests,
    }
}

impl SensorProfile {
    /// The name catalogs give band `band` besides its own: its common name in STAC's
    /// electro-optical extension (`blue`, `nir08`, `swir16`…), by which Earth Search and
    /// Planetary Computer key their assets, or the key they give the quality band (`scl`,
    /// `qa_pixel`).
    pub fn common_name(&self, band: &str) -> Option<&'static str> {
        let table: &[(&str, &str)] = if self.name.starts_with("sentinel2") {
            &[
                ("B01", "coastal"),
                ("B02", "blue"),
                ("B03", "green"),
                ("B04", "red"),
                ("B05", "rededge1"),
                ("B06", "rededge2"),
                ("B07", "rededge3"),
                ("B08", "nir"),
                ("B8A", "nir08"),
                ("B09", "nir09"),
                ("B10", "cirrus"),
                ("B11", "swir16"),
                ("B12", "swir22"),
                ("SCL", "scl"),
            ]
        } else if self.name == "landsat-oli-sr" {
            &[
                ("SR_B1", "coastal"),
                ("SR_B2", "blue"),
                ("SR_B3", "green"),
                ("SR_B4", "red"),
                ("SR_B5", "nir08"),
                ("SR_B6", "swir16"),
                ("SR_B7", "swir22"),
                ("QA_PIXEL", "qa_pixel"),
            ]
        } else if self.name.starts_with("gf") {
            &[
                ("B1", "blue"),
                ("B2", "green"),
                ("B3", "red"),
                ("B4", "nir"),
                ("B5", "rededge1"),
                ("B6", "rededge2"),
                ("B7", "coastal"),
                ("B8", "yellow"),
            ]
        } else if self.name == "landsat-tm-sr" {
            &[
                ("SR_B1", "blue"),
                ("SR_B2", "green"),
                ("SR_B3", "red"),
                ("SR_B4", "nir08"),
                ("SR_B5", "swir16"),
                ("SR_B7", "swir22"),
                ("QA_PIXEL", "qa_pixel"),
            ]
        } else {
            &[]
        };
        table.iter().find(|(b, _)| *b == band).map(|(_, c)| *c)
    }

    pub fn by_name(name: &str) -> Result<&'static SensorProfile> {
        PROFILES.iter().find(|p| p.name == name).ok_or_else(|| {
            Error::usage(
                format!("unknown sensor profile `{name}`"),
                format!("use one of: {}", profile_names().join(", ")),
            )
        })
    }

    /// The profile for a multi-band image with `band_count` bands, when only one fits.
    pub(crate) fn for_band_count(band_count: usize) -> Option<&'static SensorProfile> {
        let mut fits = PROFILES
            .iter()
            .filter(|p| p.guessable() && p.bands.len() == band_count);
        let first = fits.next()?;
        // Several 6-band profiles exist; the caller must name one.
        fits.next().is_none().then_some(first)
    }

    /// Whether the profile may be guessed from a file's band count or a folder's band names.
    /// Gaofen's bands are plain numbers (B1..B8), which other sensors' files share
    /// (Landsat's L1 band files, any 8-band image): they must be named with `--sensor`.
    pub(crate) fn guessable(&self) -> bool {
        !self.name.starts_with("gf")
    }

    pub(crate) fn is_clear(&self, mask_value: u16) -> bool {
        match self.cloud_rule {
            CloudRule::SclClasses(bad) => !bad.contains(&mask_value),
            CloudRule::QaBits(bits) => mask_value & bits == 0,
            CloudRule::VisibleTests | CloudRule::None => true,
        }
    }

    /// Position of band `name` in the profile's band order.
    pub(crate) fn band_index(&self, name: &str) -> Option<usize> {
        self.bands.iter().position(|b| *b == name)
    }

    /// Position of the band a model input names: by the profile's own name, or by its
    /// common name ([`SensorProfile::common_name`]), so that a model of `blue`, `green`,
    /// `red` and `nir` reads every sensor that has them. `nir` is the broad near infrared:
    /// STAC names Landsat's `nir08` (0.85-0.88 µm on OLI), which is the band NDVI uses there.
    pub(crate) fn input_band(&self, name: &str) -> Option<usize> {
        let by_common = |name: &str| {
            self.bands
                .iter()
                .position(|b| self.common_name(b) == Some(name))
        };
        self.band_index(name)
            .or_else(|| by_common(name))
            .or_else(|| (name == "nir").then(|| by_common("nir08")).flatten())
    }

    /// Reflectance per DN of band `index` (profile order).
    pub(crate) fn scale_of(&self, index: usize) -> f32 {
        self.band_scale.get(index).copied().unwrap_or(self.scale)
    }

    pub(crate) fn is_nodata(&self, dn: f64) -> bool {
        dn == self.nodata || dn.is_nan()
    }
}

pub(crate) fn profile_names() -> Vec<&'static str> {
    PROFILES.iter().map(|p| p.name).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_profile_maps_its_canonical_bands() {
        for p in PROFILES {
            let idx = p
                .canonical
                .map(|n| p.band_index(n).expect("canonical bands are profile bands"));
            for n in p.swir.iter().flatten() {
                assert!(p.band_index(n).is_some(), "{}: SWIR band {n}", p.name);
            }
            // Per-observation NDVI in the composite needs red before NIR.
            assert!(idx[2] < idx[3], "{}", p.name);
            assert!(
                p.band_scale.is_empty() || p.band_scale.len() == p.bands.len(),
                "{}",
                p.name
            );
        }
    }

    #[test]
    fn a_band_is_found_by_its_common_name_on_every_sensor_that_has_it() {
        let s2 = SensorProfile::by_name("sentinel2-l1c").unwrap();
        let gf2 = SensorProfile::by_name("gf2-pms").unwrap();
        let gf6 = SensorProfile::by_name("gf6-wfv").unwrap();
        for (common, s2_band, gf_band) in [("blue", "B02", "B1"), ("nir", "B08", "B4")] {
            assert_eq!(s2.input_band(common), s2.band_index(s2_band));
            assert_eq!(gf2.input_band(common), gf2.band_index(gf_band));
            assert_eq!(gf6.input_band(common), gf6.band_index(gf_band));
        }
        assert_eq!(gf6.input_band("rededge1"), gf6.band_index("B5"));
        assert_eq!(gf2.input_band("swir16"), None, "Gaofen has no SWIR");
        // Landsat's NIR is STAC's `nir08`; Sentinel-2's `nir08` (B8A) is not its `nir`.
        for landsat in ["landsat-oli-sr", "landsat-tm-sr"] {
            let l = SensorProfile::by_name(landsat).unwrap();
            assert_eq!(l.input_band("nir"), l.input_band("nir08"), "{landsat}");
            assert!(l.input_band("nir").is_some(), "{landsat}");
        }
        assert!(gf2.swir.is_none() && s2.swir.is_some());
        // Own names first: Landsat TM's DN profile calls its bands B1.. too.
        assert_eq!(gf2.input_band("B3"), Some(2));
    }

    #[test]
    fn the_visible_cloud_test_takes_white_haze_for_cloud_and_not_fields_water_or_roofs() {
        assert!(cloudy_in_visible(0.32, 0.33, 0.34, 0.38), "a white cumulus");
        assert!(!cloudy_in_visible(0.04, 0.07, 0.04, 0.36), "a green field");
        assert!(!cloudy_in_visible(0.07, 0.08, 0.06, 0.03), "water");
        assert!(
            !cloudy_in_visible(0.12, 0.14, 0.16, 0.21),
            "a grey roof: no blue haze"
        );
        assert!(
            !cloudy_in_visible(0.15, 0.13, 0.11, 0.14),
            "a city block through the atmosphere's blue: hazy but not bright"
        );
        assert!(!cloudy_in_visible(f32::NAN, 0.3, 0.3, 0.3), "unobserved");
        assert!(!cloudy_in_visible(0.0, 0.0, 0.0, 0.0), "fill");
    }

    #[test]
    fn a_cloud_must_fill_a_90_m_square_somewhere_a_smaller_bright_roof_is_no_cloud() {
        assert_eq!(cloud_core_side(10.0), 9);
        assert_eq!(cloud_core_side(4.0), 23);
        assert_eq!(
            cloud_core_side(16.0),
            7,
            "odd, so that the square has a centre"
        );
        assert_eq!(cloud_core_side(500.0), 1);
        // 40 × 40 pixels of 10 m: a cloud of 12 × 10 pixels with a ragged edge pixel, and a
        // roof of 6 × 6 pixels, both white and bright; green fields elsewhere.
        let width = 40;
        let cloud = |c: usize, r: usize| (4..16).contains(&c) && (5..15).contains(&r);
        let roof = |c: usize, r: usize| (25..31).contains(&c) && (25..31).contains(&r);
        let ragged = (16, 9);
        let white = |c: usize, r: usize| cloud(c, r) || roof(c, r) || (c, r) == ragged;
        let band = |bright: f32, field: f32| -> Vec<f32> {
            (0..width * width)
                .map(|i| {
                    if white(i % width, i / width) {
                        bright
                    } else {
                        field
                    }
                })
                .collect()
        };
        let (b, g, r, n) = (
            band(0.32, 0.04),
            band(0.33, 0.07),
            band(0.34, 0.04),
            band(0.38, 0.36),
        );
        let clouds = visible_clouds(&b, &g, &r, &n, width, 10.0);
        for (i, &called) in clouds.iter().enumerate() {
            let (c, r) = (i % width, i / width);
            assert_eq!(called, cloud(c, r), "pixel ({c}, {r})");
        }
    }

    #[test]
    fn scl_rule_rejects_clouds_and_shadows() {
        let p = SensorProfile::by_name("sentinel2-l2a").unwrap();
        assert!(p.is_clear(4));
        assert!(!p.is_clear(3));
        assert!(!p.is_clear(9));
        let l = SensorProfile::by_name("landsat-tm-sr").unwrap();
        assert!(l.is_clear(0b1000000));
        assert!(!l.is_clear(0b1000));
    }

    #[test]
    fn band_count_picks_unambiguous_profiles() {
        assert_eq!(
            SensorProfile::for_band_count(10).unwrap().name,
            "sentinel2-l2a"
        );
        assert_eq!(
            SensorProfile::for_band_count(13).unwrap().name,
            "sentinel2-l1c"
        );
        assert!(SensorProfile::for_band_count(6).is_none());
        // Gaofen is named, never guessed: an 8-band file of another camera is not GF-6.
        assert!(SensorProfile::for_band_count(8).is_none());
        assert!(SensorProfile::for_band_count(4).is_none());
        assert!(SensorProfile::by_name("spot").is_err());
    }
}
