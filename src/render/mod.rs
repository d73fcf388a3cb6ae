//! Rendering for people: map sheets of a period ([`map`]), the colours every image and page
//! shares, and the font that text in images is drawn with.

use crate::error::{Error, Result};

mod map;
pub mod tiles;

pub(crate) use map::MapSheet;

/// A linear stretch of one band of reflectance between robust low and high values: how
/// chips and map tiles show true colour.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Stretch {
    low: f32,
    high: f32,
}

impl Stretch {
    /// From the 2nd to the 98th percentile of the finite `values`; 0 to 0.3 reflectance
    /// when there are too few of them.
    pub(crate) fn robust(mut values: Vec<f32>) -> Stretch {
        values.retain(|v| v.is_finite());
        if values.len() < 2 {
            return Stretch {
                low: 0.0,
                high: 0.3,
            };
        }
        values.sort_by(f32::total_cmp);
        let at = |q: f64| values[((values.len() - 1) as f64 * q).round() as usize];
        Stretch {
            low: at(0.02),
            high: at(0.98),
        }
    }

    /// The grey level of `v`: dark grey where nothing was seen.
    pub(crate) fn apply(self, v: f32) -> u8 {
        if !v.is_finite() {
            return 40;
        }
        let t = ((v - self.low) / (self.high - self.low).max(1e-6)).clamp(0.0, 1.0);
        (t * 255.0).round() as u8
    }
}

/// The one font of text in images: WenQuanYi Micro Hei (fonts-wqy-microhei, installed by
/// scripts/setup.sh) holds Chinese and Latin glyphs, so that 非农化, 亩 and dates read alike in
/// every chip, map and plot. `GENGBAO_FONT` names another TrueType file or collection (its
/// first face is used).
pub(crate) fn text_font() -> Result<()> {
    use plotters::style::{register_font, FontStyle};
    static FONT: std::sync::OnceLock<std::result::Result<(), String>> = std::sync::OnceLock::new();
    let font_path = std::env::var("GENGBAO_FONT")
        .unwrap_or_else(|_| "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc".into());
    FONT.get_or_init(|| {
        let bytes = std::fs::read(&font_path).map_err(|e| e.to_string())?;
        register_font(
            "sans-serif",
            FontStyle::Normal,
            Box::leak(bytes.into_boxed_slice()),
        )
        .map_err(|_| "not a TrueType font".to_string())
    })
    .clone()
    .map_err(|e| {
        Error::input(
            &font_path,
            format!("cannot load the font for text in images: {e}"),
            "install fonts-wqy-microhei (scripts/setup.sh does) or set GENGBAO_FONT to a .ttf or .ttc file with Chinese glyphs",
        )
    })
}

/// Colour of a land-cover class on maps (muted, so patches stand out).
fn class_colour(class: u8) -> [u8; 3] {
    match class {
        1 => [222, 214, 160],
        2 => [176, 196, 130],
        3 => [170, 160, 160],
        4 => [150, 180, 215],
        5 => [200, 215, 175],
        6 => [120, 160, 120],
        _ => [255, 255, 255],
    }
}

/// Colour of a type of change on maps, in reports and on the portal's pages.
pub(crate) fn change_colour(change: crate::domain::change::ChangeType) -> [u8; 3] {
    flag_colour(change.flag()).expect("every type of change has a colour")
}

/// Colour of a type of change on maps and in reports.
fn flag_colour(flag: u8) -> Option<[u8; 3]> {
    match flag {
        1 => Some([220, 20, 30]),
        2 => Some([255, 140, 0]),
        3 => Some([140, 40, 200]),
        _ => None,
    }
}
