//! Rendering for people: the period quicklook (land cover muted, flags in colour) and the
//! font that text in images is drawn with. Takes rasters on disk, gives PNG files.

use crate::error::{Error, GdalContext, Result};
use std::path::Path;

/// fonts-dejavu-core (installed by scripts/setup.sh), or the file in `GENGBAO_FONT`.
pub(crate) fn text_font() -> Result<()> {
    use plotters::style::{register_font, FontStyle};
    static FONT: std::sync::OnceLock<std::result::Result<(), String>> = std::sync::OnceLock::new();
    let font_path = std::env::var("GENGBAO_FONT")
        .unwrap_or_else(|_| "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf".into());
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
            "install fonts-dejavu-core (scripts/setup.sh does) or set GENGBAO_FONT to a .ttf file",
        )
    })
}

/// Colour of a land-cover class in the quicklook (muted, so flags stand out).
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

/// Colour of a change flag in the quicklook.
pub(crate) fn flag_colour(flag: u8) -> Option<[u8; 3]> {
    match flag {
        1 => Some([220, 20, 30]),
        2 => Some([255, 140, 0]),
        3 => Some([140, 40, 200]),
        _ => None,
    }
}

/// A PNG overview of a period, or of `window` of it (at most `max_side` pixels a side): land
/// cover in muted colours, FNH red, FLH orange, PH purple. For a glance at a run, not for
/// measuring. Written into a staging folder, so it needs no atomic write of its own.
pub(crate) fn write_quicklook(
    class_tif: &Path,
    flags_tif: &Path,
    png: &Path,
    max_side: usize,
    window: Option<crate::geo::grid::Window>,
) -> Result<()> {
    let read = |path: &Path| -> Result<(usize, usize, Vec<u8>)> {
        let ds = gdal::Dataset::open(path).in_file(path, "re-run the period")?;
        let (width, height) = ds.raster_size();
        let (x, y, w, h) = match window {
            // Clipped to the raster: GDAL refuses reads outside it.
            Some(win) => {
                let x = win.x.clamp(0, width as isize) as usize;
                let y = win.y.clamp(0, height as isize) as usize;
                let right = (win.x + win.width as isize).clamp(x as isize + 1, width as isize);
                let bottom = (win.y + win.height as isize).clamp(y as isize + 1, height as isize);
                (x, y, right as usize - x, bottom as usize - y)
            }
            None => (0, 0, width, height),
        };
        let f = (w.max(h) as f64 / max_side as f64).max(1.0);
        let shape = (
            ((w as f64 / f) as usize).max(1),
            ((h as f64 / f) as usize).max(1),
        );
        let band = ds.rasterband(1)?;
        // Mode resampling keeps small patches visible when shrinking.
        let data = band.read_as::<u8>(
            (x as isize, y as isize),
            (w, h),
            shape,
            Some(gdal::raster::ResampleAlg::Mode),
        )?;
        Ok((shape.0, shape.1, data.into_shape_and_vec().1))
    };
    let (w, h, class) = read(class_tif)?;
    let (_, _, flags) = read(flags_tif)?;
    let mut img = image::RgbImage::new(w as u32, h as u32);
    for (i, px) in img.pixels_mut().enumerate() {
        *px = image::Rgb(flag_colour(flags[i]).unwrap_or_else(|| class_colour(class[i])));
    }
    img.save(png)
        .map_err(|e| Error::input(png, e.to_string(), "check the output folder"))
}
