//! Before and after true-colour chips of a patch, with its outline, dates and number.

use crate::domain::period::Period;
use crate::engine::patches::Patch;
use crate::error::{Error, Result};
use crate::geo::composite;
use crate::geo::grid::{overlaps, Bounds, JobGrid, Window};
use crate::geo::imagery::{date_span, Acquisition, Catalog};
use crate::geo::raster::rasterize;
use crate::geo::sensor::SensorProfile;
use crate::render::Stretch;
use gdal::spatial_ref::SpatialRef;
use std::collections::BTreeMap;
use std::path::Path;

/// Composites the imagery of a period around a patch, for its chips.
pub(super) struct ChipImagery<'a> {
    pub(super) catalog: &'a Catalog,
    pub(super) profile: &'static SensorProfile,
    /// The job's DN offset, overriding the products' own.
    pub(super) add_offset: Option<f32>,
    pub(super) grid: &'a JobGrid,
    pub(super) srs: &'a SpatialRef,
    /// Extents of each period's acquisitions in the grid CRS, found once per period.
    pub(super) located: std::cell::RefCell<BTreeMap<Period, Vec<(usize, Bounds)>>>,
}

/// Red, green and blue reflectance of a chip window, and the dates composited.
type TrueColour = ([Vec<f32>; 3], String);

/// Chip panels are drawn at this many screen pixels a side, at least.
const PANEL: usize = 240;

impl ChipImagery<'_> {
    /// First and last image date of `period` (`YYYYMMDD-YYYYMMDD`), or "无影像".
    pub(super) fn image_dates(&self, period: Period) -> String {
        date_span(self.catalog.in_period(period)).unwrap_or_else(|| "无影像".to_string())
    }

    /// The earliest acquisition up to `period` that covers `window`, as a one-image
    /// composite: the before view of a patch whose period before has no imagery (a patch
    /// seen in the job's first period).
    fn earliest_image(&self, period: Period, window: Window) -> Result<Option<TrueColour>> {
        for p in self.catalog.periods().into_iter().filter(|&p| p <= period) {
            let Some(&first) = self.covering(p, window)?.first() else {
                continue;
            };
            let comp =
                composite::build(&[first], self.profile, self.add_offset, self.grid, window)?;
            let [blue, green, red, ..] = comp.canonical(self.profile);
            let date = first.date.format("%Y%m%d").to_string();
            return Ok(Some(([red.to_vec(), green.to_vec(), blue.to_vec()], date)));
        }
        Ok(None)
    }

    /// The acquisitions of `period` whose extent overlaps `window`, in date order.
    fn covering(&self, period: Period, window: Window) -> Result<Vec<&Acquisition>> {
        let acquisitions = self.catalog.in_period(period);
        let mut located = self.located.borrow_mut();
        let extents = match located.entry(period) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => e.insert(
                acquisitions
                    .iter()
                    .enumerate()
                    .map(|(i, a)| Ok((i, a.check_and_locate(self.srs)?)))
                    .collect::<Result<Vec<_>>>()?,
            ),
        };
        let bounds = self.grid.window_bounds(window);
        Ok(extents
            .iter()
            .filter(|(_, e)| overlaps(*e, bounds))
            .map(|&(i, _)| acquisitions[i])
            .collect())
    }

    /// True colour of `period` over `window` (NaN where nothing clear was seen) and the
    /// dates composited, or None when the period has no imagery there.
    fn true_colour(&self, period: Period, window: Window) -> Result<Option<TrueColour>> {
        let covering = self.covering(period, window)?;
        let Some(dates) = date_span(covering.iter().copied()) else {
            return Ok(None);
        };
        let comp = composite::build(&covering, self.profile, self.add_offset, self.grid, window)?;
        let [blue, green, red, ..] = comp.canonical(self.profile);
        Ok(Some(([red.to_vec(), green.to_vec(), blue.to_vec()], dates)))
    }

    /// Before and after chips of a patch side by side, with its outline, number and dates.
    pub(super) fn chip(&self, p: &Patch, period: Period, png: &Path) -> Result<()> {
        let w0 = self.grid.window_around(&p.geometry.envelope(), 0);
        // Square, with room around the patch to see its context.
        let side = (w0.width.max(w0.height) + 24).max(48);
        let window = Window {
            x: w0.x - ((side - w0.width) / 2) as isize,
            y: w0.y - ((side - w0.height) / 2) as isize,
            width: side,
            height: side,
        };
        let inside = rasterize(self.grid, window, std::slice::from_ref(&p.geometry), &[1.0])?;
        let before_period = p
            .first_seen
            .parse::<Period>()
            .map(|f| f.prev())
            .unwrap_or(period.prev());
        let after = self.true_colour(period, window)?;
        // A patch seen in the job's first period has no period before it with imagery: the
        // earliest image up to now shows the ground as first seen, and the caption says so.
        let (before, before_caption) = match self.true_colour(before_period, window)? {
            Some(composite) => {
                let caption = format!("前时相 {before_period}  {}", composite.1);
                (Some(composite), caption)
            }
            None => match self.earliest_image(period, window)? {
                Some(image) => {
                    let caption = format!("前：最早影像 {}（{before_period} 无影像）", image.1);
                    (Some(image), caption)
                }
                None => (None, format!("前时相 {before_period}  无影像")),
            },
        };
        let stretch = stretch_of([&before, &after]);
        let scale = PANEL.div_ceil(side).max(1);
        let panel = side * scale;
        let (gap, top, bottom) = (8usize, 30usize, 24usize);
        let (w, h) = (2 * panel + 3 * gap, top + panel + bottom);
        let mut img = image::RgbImage::from_pixel(w as u32, h as u32, image::Rgb([255, 255, 255]));
        for (k, layer) in [&before, &after].into_iter().enumerate() {
            let x0 = gap + k * (panel + gap);
            for py in 0..panel {
                for px in 0..panel {
                    let i = (py / scale) * side + px / scale;
                    let rgb = match layer {
                        Some((bands, _)) => std::array::from_fn(|b| stretch[b].apply(bands[b][i])),
                        None => [90, 90, 90],
                    };
                    img.put_pixel((x0 + px) as u32, (top + py) as u32, image::Rgb(rgb));
                }
            }
            draw_outline(&mut img, &inside, side, scale, x0, top);
        }
        let captions = [
            before_caption,
            format!(
                "后时相 {period}  {}",
                after.as_ref().map_or("无影像", |(_, d)| d.as_str())
            ),
        ];
        let title = format!(
            "{}  {} {:.2} 亩  置信度 {:.2}",
            p.tbbh,
            p.change.label_zh(),
            p.area_mu,
            p.confidence
        );
        label(&mut img, &title, &captions, panel, gap, top).map_err(|e| {
            Error::input(
                png,
                format!("cannot draw the labels: {e}"),
                "check the font (GENGBAO_FONT)",
            )
        })?;
        img.save(png)
            .map_err(|e| Error::input(png, e.to_string(), "check that the folder is writable"))
    }
}

/// The stretch of each band over both chips, so that before and after share one stretch and
/// can be compared.
fn stretch_of(layers: [&Option<TrueColour>; 2]) -> [Stretch; 3] {
    std::array::from_fn(|b| {
        Stretch::robust(
            layers
                .iter()
                .filter_map(|l| l.as_ref())
                .flat_map(|(bands, _)| bands[b].iter().copied())
                .collect(),
        )
    })
}

/// Draws the patch outline (the sides of its pixels that face outside) in yellow.
fn draw_outline(
    img: &mut image::RgbImage,
    inside: &[i32],
    side: usize,
    scale: usize,
    x0: usize,
    y0: usize,
) {
    let at = |x: isize, y: isize| {
        x >= 0
            && y >= 0
            && (x as usize) < side
            && (y as usize) < side
            && inside[y as usize * side + x as usize] != 0
    };
    let yellow = image::Rgb([255, 230, 0]);
    let thick = (scale / 2).clamp(1, 3);
    for y in 0..side as isize {
        for x in 0..side as isize {
            if !at(x, y) {
                continue;
            }
            let (px, py) = (x0 + x as usize * scale, y0 + y as usize * scale);
            for t in 0..thick {
                for s in 0..scale {
                    if !at(x, y - 1) {
                        img.put_pixel((px + s) as u32, (py + t) as u32, yellow);
                    }
                    if !at(x, y + 1) {
                        img.put_pixel((px + s) as u32, (py + scale - 1 - t) as u32, yellow);
                    }
                    if !at(x - 1, y) {
                        img.put_pixel((px + t) as u32, (py + s) as u32, yellow);
                    }
                    if !at(x + 1, y) {
                        img.put_pixel((px + scale - 1 - t) as u32, (py + s) as u32, yellow);
                    }
                }
            }
        }
    }
}

fn label(
    img: &mut image::RgbImage,
    title: &str,
    captions: &[String; 2],
    panel: usize,
    gap: usize,
    top: usize,
) -> std::result::Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let (w, h) = img.dimensions();
    let root = BitMapBackend::with_buffer(img.as_mut(), (w, h)).into_drawing_area();
    let font = |size| ("sans-serif", size).into_font();
    root.draw(&Text::new(title.to_string(), (gap as i32, 7), font(17)))?;
    for (k, c) in captions.iter().enumerate() {
        let x = (gap + k * (panel + gap)) as i32;
        root.draw(&Text::new(
            c.clone(),
            (x, (top + panel + 5) as i32),
            font(13),
        ))?;
    }
    root.present()?;
    Ok(())
}
