//! The per-period composite of clear observations (cloud, shadow and nodata masked by the
//! sensor's quality band): per pixel, all bands of the observation with the median blue
//! reflectance ([`pick_observations`]), plus the lowest and highest NDVI seen in the period.

use crate::error::{Error, Result};
use crate::geo::grid::{JobGrid, Window};
use crate::geo::imagery::Acquisition;
use crate::geo::sensor::{cloud_core_side, visible_clouds, CloudRule, SensorProfile};
use ndarray::{Array2, Array3, ArrayView2, Axis};

// The red band must come before NIR in a profile so that per-observation NDVI can be formed.

/// A period composite on a tile's read window: all profile bands, reflectance, NaN = no clear
/// observation.
#[derive(Debug, Clone)]
pub struct Composite {
    /// Band names in profile order.
    pub band_names: Vec<String>,
    /// Reflectance, bands (in profile order) × rows × columns.
    pub bands: Array3<f32>,
    /// Number of clear observations per pixel.
    pub clear_count: Vec<u8>,
    /// NDVI of the composite, and the lowest and highest NDVI of the clear observations: the
    /// within-period swing that a median alone hides (a harvest, a green-up).
    pub ndvi: NdviStats,
}

/// NDVI summary of a period, per pixel (NaN = unknown).
#[derive(Debug, Clone, Default)]
pub struct NdviStats {
    pub median: Vec<f32>,
    pub min: Vec<f32>,
    pub max: Vec<f32>,
}

/// The NDVI archive stores one byte per value: (NDVI + 1) x 100, 255 = unknown. The rules
/// need 0.01 precision at most, and a province's year of history stays small.
pub(crate) const NDVI_NODATA: u8 = 255;

pub(crate) fn ndvi_to_byte(v: f32) -> u8 {
    if v.is_finite() {
        ((v.clamp(-1.0, 1.0) + 1.0) * 100.0).round() as u8
    } else {
        NDVI_NODATA
    }
}

pub(crate) fn byte_to_ndvi(b: u8) -> f32 {
    if b == NDVI_NODATA {
        f32::NAN
    } else {
        f32::from(b) / 100.0 - 1.0
    }
}

/// The archived look of a period stores each band's reflectance × 10,000 as a 16-bit
/// integer (−3.27 to 3.27, steps of 0.0001, finer than any sensor's noise); this value where
/// no clear observation was made.
pub(crate) const LOOK_NODATA: i16 = i16::MIN;

pub(crate) fn reflectance_to_look(v: f32) -> i16 {
    if v.is_finite() {
        (v * 10_000.0).round().clamp(-32_767.0, 32_767.0) as i16
    } else {
        LOOK_NODATA
    }
}

/// Pixels to read beyond a window on every side so that the profile's cloud test decides the
/// window's edge pixels as its middle ones ([`visible_clouds`] looks that far); 0 for
/// profiles with a quality band.
pub(crate) fn cloud_margin(profile: &SensorProfile, pixel_m: f64) -> usize {
    match profile.cloud_rule {
        CloudRule::VisibleTests => cloud_core_side(pixel_m) - 1,
        _ => 0,
    }
}

/// The clouds of a window by the visible-band test, from blue, green, red and NIR read
/// `margin` pixels wider on every side (`cols` columns of the wider read): window pixels,
/// row-major.
pub(crate) fn clouds_in_window(
    [blue, green, red, nir]: [&[f32]; 4],
    cols: usize,
    margin: usize,
    pixel_m: f64,
) -> Vec<bool> {
    let clouds = visible_clouds(blue, green, red, nir, cols, pixel_m);
    let rows = clouds.len() / cols;
    (margin..rows - margin)
        .flat_map(|r| (margin..cols - margin).map(move |c| r * cols + c))
        .map(|i| clouds[i])
        .collect()
}

/// The window inside `bands` (reflectance, bands × rows × columns in profile order, read
/// `margin` pixels wider on every side), with the pixels the profile's visible-band cloud
/// test calls cloud unobserved (NaN in every band: [`CloudRule::VisibleTests`], sensors
/// without a quality band). Other profiles' bands are only cut to the window.
pub(crate) fn without_visible_clouds(
    bands: Array3<f32>,
    profile: &SensorProfile,
    pixel_m: f64,
    margin: usize,
) -> Array3<f32> {
    if profile.cloud_rule != CloudRule::VisibleTests {
        debug_assert_eq!(
            margin, 0,
            "only the visible-band test reads beyond the window"
        );
        return bands;
    }
    let (count, rows, cols) = bands.dim();
    let mut window = bands
        .slice(ndarray::s![
            ..,
            margin..rows - margin,
            margin..cols - margin
        ])
        .to_owned();
    let band = |name: &str| {
        let b = profile
            .band_index(name)
            .expect("a profile's canonical bands are its own");
        bands
            .index_axis(Axis(0), b)
            .to_slice()
            .expect("a read window is in standard layout")
    };
    let clouds = clouds_in_window(profile.canonical.map(band), cols, margin, pixel_m);
    let pixels = clouds.len();
    let mut flat = window
        .view_mut()
        .into_shape((count, pixels))
        .expect("a sliced window copied in standard layout");
    for (mut pixel, _) in flat
        .columns_mut()
        .into_iter()
        .zip(&clouds)
        .filter(|(_, &c)| c)
    {
        pixel.fill(f32::NAN);
    }
    window
}

/// Marks a band's pixels off the watched parcels (`parcels` 0) unobserved (NaN): the decision
/// is the farmland's.
pub(crate) fn hide_unwatched(band: &mut [f32], parcels: &[i32]) {
    for (v, &parcel) in band.iter_mut().zip(parcels) {
        if parcel == 0 {
            *v = f32::NAN;
        }
    }
}

pub(crate) fn look_to_reflectance(v: i16) -> f32 {
    if v == LOOK_NODATA {
        f32::NAN
    } else {
        f32::from(v) / 10_000.0
    }
}

/// An earlier period as the archive gives it back to a classifier: its NDVI statistics and,
/// for models that read them, its bands (band × pixel, profile order, as
/// [`look_to_reflectance`] reads them; `None` when not asked for or not archived).
#[derive(Debug, Clone, Default)]
pub struct ArchivedPeriod {
    pub ndvi: NdviStats,
    pub bands: Option<Array2<f32>>,
}

impl NdviStats {
    /// The statistics as a later period reads them back from the archive.
    pub(crate) fn as_archived(&self) -> NdviStats {
        let round = |v: &Vec<f32>| v.iter().map(|&x| byte_to_ndvi(ndvi_to_byte(x))).collect();
        NdviStats {
            median: round(&self.median),
            min: round(&self.min),
            max: round(&self.max),
        }
    }
}

impl Composite {
    /// A "composite" of one cloud-free image (two-date detection): every observation counts.
    /// `bands` holds every band of `profile`, in its order.
    pub fn single(profile: &SensorProfile, bands: Array3<f32>) -> Self {
        assert_eq!(
            bands.dim().0,
            profile.bands.len(),
            "one plane per profile band"
        );
        let v = ndvi_of_bands(profile, &bands);
        let clear_count = v.iter().map(|x| u8::from(x.is_finite())).collect();
        Composite {
            band_names: profile.bands.iter().map(|s| s.to_string()).collect(),
            bands,
            clear_count,
            ndvi: NdviStats {
                median: v.clone(),
                min: v.clone(),
                max: v,
            },
        }
    }

    /// The period as a later one reads it back from the archive, its bands too when
    /// `with_bands`.
    pub(crate) fn as_archived(&self, with_bands: bool) -> ArchivedPeriod {
        ArchivedPeriod {
            ndvi: self.ndvi.as_archived(),
            bands: with_bands.then(|| {
                self.pixels()
                    .mapv(|v| look_to_reflectance(reflectance_to_look(v)))
            }),
        }
    }

    pub fn width(&self) -> usize {
        self.bands.dim().2
    }

    pub fn height(&self) -> usize {
        self.bands.dim().1
    }

    /// Number of pixels of the window.
    pub fn len(&self) -> usize {
        self.width() * self.height()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn band(&self, name: &str) -> Option<&[f32]> {
        self.band_names
            .iter()
            .position(|b| b == name)
            .map(|i| band_values(&self.bands, i))
    }

    /// The bands as one row of pixels each (band × pixel, pixels in row-major order): how
    /// per-pixel code indexes them.
    pub fn pixels(&self) -> ArrayView2<'_, f32> {
        let (bands, rows, cols) = self.bands.dim();
        self.bands
            .view()
            .into_shape((bands, rows * cols))
            .expect("a composite is in standard layout")
    }

    /// The canonical bands (blue, green, red, NIR) of `profile`.
    pub(crate) fn canonical<'a>(&'a self, profile: &SensorProfile) -> [&'a [f32]; 4] {
        profile
            .canonical
            .map(|n| self.band(n).expect("composite has all profile bands"))
    }

    /// Shortwave infrared 1 and 2, when the sensor has them.
    pub(crate) fn swir<'a>(&'a self, profile: &SensorProfile) -> Option<[&'a [f32]; 2]> {
        profile
            .swir
            .map(|names| names.map(|n| self.band(n).expect("composite has all profile bands")))
    }
}

/// Marks a pixel without any clear observation.
const NO_OBSERVATION: u16 = u16::MAX;

/// For each pixel, the clear observation whose blue reflectance is the median (the lower of the
/// two middle ones for an even count): haze and undetected cloud edges brighten blue, so the
/// choice leans away from them, and all bands of a pixel come from one real observation.
fn pick_observations(blue: &[&[f32]], clear: &[Vec<bool>], n: usize) -> Vec<u16> {
    let mut ranked: Vec<(f32, u16)> = Vec::with_capacity(blue.len());
    (0..n)
        .map(|i| {
            ranked.clear();
            ranked.extend(
                blue.iter()
                    .zip(clear)
                    .enumerate()
                    .filter(|(_, (b, m))| m[i] && b[i].is_finite())
                    .map(|(k, (b, _))| (b[i], k as u16)),
            );
            if ranked.is_empty() {
                return NO_OBSERVATION;
            }
            ranked.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            ranked[(ranked.len() - 1) / 2].1
        })
        .collect()
}

/// Builds the composite of `acquisitions` (those covering the window) on `window`. Memory: one
/// band of each of them at a time. `add_offset`: the job's DN offset, overriding each
/// product's ([`Acquisition::dn_offset`]).
pub fn build(
    acquisitions: &[&Acquisition],
    profile: &'static SensorProfile,
    add_offset: Option<f32>,
    grid: &JobGrid,
    window: Window,
) -> Result<Composite> {
    if acquisitions.len() >= usize::from(NO_OBSERVATION) {
        return Err(Error::usage(
            format!(
                "{} acquisitions cover one tile in one period",
                acquisitions.len()
            ),
            "split the imagery folder into smaller jobs",
        ));
    }
    let n = window.len();
    // Sensors without a quality band: the cloud test reads blue, green, red and NIR wider
    // than the window (a cloud is judged by its extent); their window is kept for the
    // composite instead of being read again.
    let mut kept: Vec<Vec<(&str, Array2<f32>)>> = vec![Vec::new(); acquisitions.len()];
    let clear: Vec<Vec<bool>> = acquisitions
        .iter()
        .zip(&mut kept)
        .map(|(a, kept)| {
            if profile.cloud_rule != CloudRule::VisibleTests {
                return a.read_clear(profile, grid, window);
            }
            let (offset, margin) = (
                a.dn_offset(profile, add_offset),
                cloud_margin(profile, grid.resolution),
            );
            let wider = window.grown(margin);
            let bands = profile
                .canonical
                .iter()
                .map(|name| a.read_reflectance(profile, offset, name, grid, wider))
                .collect::<Result<Vec<_>>>()?;
            let clouds = clouds_in_window(
                [&bands[0], &bands[1], &bands[2], &bands[3]]
                    .map(|b| b.as_slice().expect("a read band")),
                wider.width,
                margin,
                grid.resolution,
            );
            let inner = ndarray::s![margin..wider.height - margin, margin..wider.width - margin];
            kept.extend(
                profile
                    .canonical
                    .iter()
                    .zip(&bands)
                    .map(|(name, b)| (*name, b.slice(inner).to_owned())),
            );
            Ok(clouds.into_iter().map(|c| !c).collect())
        })
        .collect::<Result<_>>()?;
    let [blue_name, _, red_name, nir_name] = profile.canonical;
    let mut read_all = |name: &str| -> Result<Vec<Array2<f32>>> {
        acquisitions
            .iter()
            .zip(&mut kept)
            .map(
                |(a, kept)| match kept.iter().position(|(n, _)| *n == name) {
                    Some(k) => Ok(kept.swap_remove(k).1),
                    None => {
                        let offset = a.dn_offset(profile, add_offset);
                        a.read_reflectance(profile, offset, name, grid, window)
                    }
                },
            )
            .collect()
    };
    let mut blue = read_all(blue_name)?;
    let chosen = pick_observations(&as_slices(&blue), &clear, n);
    // Usable observations: clear by the quality band and holding data.
    let clear_count = (0..n)
        .map(|i| {
            clear
                .iter()
                .zip(&blue)
                .filter(|(m, b)| m[i] && b.as_slice().is_some_and(|b| b[i].is_finite()))
                .count()
                .min(255) as u8
        })
        .collect();
    let (mut ndvi_min, mut ndvi_max) = (vec![f32::NAN; n], vec![f32::NAN; n]);
    let mut red_obs: Vec<Array2<f32>> = Vec::new();
    let mut bands = Array3::from_elem((profile.bands.len(), window.height, window.width), f32::NAN);
    for (b, name) in profile.bands.iter().enumerate() {
        // Blue was read to choose the observations: not again.
        let obs = if *name == blue_name {
            std::mem::take(&mut blue)
        } else {
            read_all(name)?
        };
        let obs_values = as_slices(&obs);
        if *name == nir_name {
            for ((nir, red), m) in obs_values.iter().zip(as_slices(&red_obs)).zip(&clear) {
                for i in 0..n {
                    let v = ndvi(red[i], nir[i]);
                    if m[i] && v.is_finite() {
                        ndvi_min[i] = if ndvi_min[i].is_nan() {
                            v
                        } else {
                            ndvi_min[i].min(v)
                        };
                        ndvi_max[i] = if ndvi_max[i].is_nan() {
                            v
                        } else {
                            ndvi_max[i].max(v)
                        };
                    }
                }
            }
        }
        let mut plane = bands.index_axis_mut(Axis(0), b);
        let plane = plane
            .as_slice_mut()
            .expect("a new array is in standard layout");
        for ((v, &k), i) in plane.iter_mut().zip(&chosen).zip(0..) {
            if k != NO_OBSERVATION {
                *v = obs_values[usize::from(k)][i];
            }
        }
        if *name == red_name {
            red_obs = obs;
        }
    }
    let median = ndvi_of_bands(profile, &bands);
    Ok(Composite {
        band_names: profile.bands.iter().map(|s| s.to_string()).collect(),
        bands,
        clear_count,
        ndvi: NdviStats {
            median,
            min: ndvi_min,
            max: ndvi_max,
        },
    })
}

/// Each acquisition's band as one slice of its pixels.
fn as_slices(stack: &[Array2<f32>]) -> Vec<&[f32]> {
    stack
        .iter()
        .map(|a| a.as_slice().expect("a band is read in standard layout"))
        .collect()
}

/// Band `b` of a stack in standard layout, as one slice of its pixels.
fn band_values(bands: &Array3<f32>, b: usize) -> &[f32] {
    let (_, rows, cols) = bands.dim();
    let all = bands.as_slice().expect("a stack is in standard layout");
    &all[b * rows * cols..(b + 1) * rows * cols]
}

/// NDVI of every pixel of a stack of all profile bands.
fn ndvi_of_bands(profile: &SensorProfile, bands: &Array3<f32>) -> Vec<f32> {
    let index = |name| {
        profile
            .band_index(name)
            .expect("canonical bands are profile bands")
    };
    let (red, nir) = (
        band_values(bands, index(profile.canonical[2])),
        band_values(bands, index(profile.canonical[3])),
    );
    red.iter().zip(nir).map(|(&r, &n)| ndvi(r, n)).collect()
}

/// Normalised difference vegetation index; NaN where undefined.
pub fn ndvi(red: f32, nir: f32) -> f32 {
    let s = nir + red;
    if s.abs() < 1e-6 {
        f32::NAN
    } else {
        (nir - red) / s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_read_with_its_margin_sees_the_clouds_the_whole_image_sees() {
        let gf2 = SensorProfile::by_name("gf2-pms").unwrap();
        // 60 × 60 pixels of 10 m, four bands: a cloud of 20 × 14 pixels whose edge a window
        // cuts, on green fields.
        let (size, bands) = (60, 4);
        let whole = Array3::from_shape_fn((bands, size, size), |(b, r, c)| {
            let cloudy = (20..40).contains(&c) && (10..24).contains(&r);
            match (cloudy, b) {
                (true, 3) => 0.38,
                (true, _) => 0.32 + 0.01 * b as f32,
                (false, 1) | (false, 3) => 0.3,
                (false, _) => 0.04,
            }
        });
        let margin = cloud_margin(gf2, 10.0);
        assert_eq!(margin, 8);
        let seen = without_visible_clouds(whole.clone(), gf2, 10.0, 0);
        // The window (x 30..50, y 20..40) holds the cloud's bottom edge.
        let wider = whole
            .slice(ndarray::s![
                ..,
                20 - margin..40 + margin,
                30 - margin..50 + margin
            ])
            .to_owned();
        let window = without_visible_clouds(wider, gf2, 10.0, margin);
        let expected = seen.slice(ndarray::s![.., 20..40, 30..50]);
        assert_eq!(window.dim(), (bands, 20, 20));
        for (b, r, c) in ndarray::indices((bands, 20, 20)) {
            let (w, e) = (window[[b, r, c]], expected[[b, r, c]]);
            assert_eq!(w.is_nan(), e.is_nan(), "window pixel ({c}, {r})");
        }
        assert!(window[[0, 3, 0]].is_nan(), "the cloud's edge is hidden");
        assert!(window[[0, 4, 0]].is_finite(), "the field below is seen");
        // Profiles with a quality band only cut the window out.
        let s2 = SensorProfile::by_name("sentinel2-l2a").unwrap();
        assert_eq!(cloud_margin(s2, 10.0), 0);
    }

    #[test]
    fn the_archived_look_keeps_reflectance_to_a_ten_thousandth_and_gaps_as_gaps() {
        for v in [0.0f32, 0.0312, 0.4567, 1.2, -0.05] {
            assert!(
                (look_to_reflectance(reflectance_to_look(v)) - v).abs() < 0.5e-4,
                "{v}"
            );
        }
        assert!(look_to_reflectance(reflectance_to_look(f32::NAN)).is_nan());
        // Beyond the range the value saturates rather than becoming a gap.
        assert_eq!(reflectance_to_look(9.0), 32_767);
        assert!(look_to_reflectance(reflectance_to_look(-9.0)).is_finite());
    }

    #[test]
    fn picks_the_median_blue_and_leans_away_from_haze() {
        // Pixel 0: three clear observations -> the middle one (index 2, blue 0.05).
        // Pixel 1: two clear (0.04 and a hazy 0.20) -> the lower; the cloudy one is ignored.
        // Pixel 2: nothing clear.
        let blue: [&[f32]; 3] = [&[0.09, 0.04, 0.3], &[0.02, 0.20, 0.3], &[0.05, 0.9, 0.3]];
        let clear = vec![
            vec![true, true, false],
            vec![true, true, false],
            vec![true, false, false],
        ];
        assert_eq!(
            pick_observations(&blue, &clear, 3),
            vec![2, 0, NO_OBSERVATION]
        );
    }
}
