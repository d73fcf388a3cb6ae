//! Map sheets: a period's map as an inspector reads it.
//!
//! Takes a window of the job grid, the period's land cover and NDVI rasters, the reported
//! patches and the county outlines. Gives a PNG: a title (place, period), a line with the
//! image dates, the map, and beside it a legend of every colour (with the count and area of
//! each type of patch), a scale bar, a north arrow and the coordinate system.
//! - Only reported patches are drawn as patches: flag pixels that made no patch (below the
//!   minimum area, off watched land) are not.
//! - Ground inside the counties that no clear image saw is hatched: no patch there means
//!   nothing was seen, not that nothing changed.
//! - A small window is enlarged by whole screen pixels per grid pixel to a readable size; a
//!   large one is shrunk with mode resampling. Patches and outlines are burnt at screen
//!   resolution with every pixel they touch, so that a small patch stays visible.

use super::{change_colour, class_colour, flag_colour, text_font};
use crate::domain::change::ChangeType;
use crate::domain::land_cover::LandCover;
use crate::engine::patches::Patch;
use crate::error::{Error, GdalContext, Result};
use crate::geo::composite::NDVI_NODATA;
use crate::geo::grid::{JobGrid, Window};
use crate::geo::layers::{rasterize_counties, County};
use crate::geo::raster::rasterize_touched;
use gdal::raster::ResampleAlg;
use gdal::vector::Geometry;
use std::path::Path;

/// What a map sheet shows.
pub(crate) struct MapSheet<'a> {
    /// First line: the place, the period and what the map is.
    pub title: String,
    /// Second line: image dates, model.
    pub subtitle: String,
    pub grid: &'a JobGrid,
    /// The part of the grid shown (clipped to the grid).
    pub window: Window,
    pub class_tif: &'a Path,
    pub ndvi_tif: &'a Path,
    pub patches: &'a [Patch],
    pub counties: &'a [County],
}

/// A map's long side is enlarged to at least this many screen pixels.
const MIN_MAP_SIDE: usize = 560;
const LEGEND_WIDTH: usize = 250;
const HEADER_HEIGHT: usize = 62;
const MARGIN: usize = 12;
/// Below the legend: scale bar, north arrow, coordinate system.
const FURNITURE_HEIGHT: usize = 150;

const WHITE: [u8; 3] = [255, 255, 255];
const FRAME: [u8; 3] = [90, 90, 90];
const BOUNDARY: [u8; 3] = [30, 30, 30];
const HATCH_LINE: [u8; 3] = [110, 110, 110];
const HATCH_GROUND: [u8; 3] = [222, 222, 222];

/// Hatching of ground no clear image saw, in screen pixels.
fn hatch(x: usize, y: usize) -> [u8; 3] {
    if (x + y) % 7 < 2 {
        HATCH_LINE
    } else {
        HATCH_GROUND
    }
}

/// Ground outside the counties: land cover faded towards white.
fn faded(c: [u8; 3]) -> [u8; 3] {
    c.map(|v| (u16::from(v) + 3 * 255).div_euclid(4) as u8)
}

impl MapSheet<'_> {
    /// Draws the sheet into `png`, the map at most `max_side` screen pixels on its long side.
    pub(crate) fn write(&self, png: &Path, max_side: usize) -> Result<()> {
        text_font()?;
        let window = clip(self.window, self.grid);
        let long = window.width.max(window.height);
        let scale = if long < MIN_MAP_SIDE {
            MIN_MAP_SIDE.div_ceil(long).min(max_side / long).max(1) as f64
        } else {
            (max_side as f64 / long as f64).min(1.0)
        };
        let (sw, sh) = (
            ((window.width as f64 * scale).round() as usize).max(1),
            ((window.height as f64 * scale).round() as usize).max(1),
        );
        // Rasters are read at their own resolution at most and sampled per screen pixel.
        let (rw, rh) = if scale < 1.0 {
            (sw, sh)
        } else {
            (window.width, window.height)
        };
        let class = read_band(self.class_tif, window, (rw, rh), ResampleAlg::Mode)?;
        let ndvi = read_band(
            self.ndvi_tif,
            window,
            (rw, rh),
            ResampleAlg::NearestNeighbour,
        )?;

        let screen = JobGrid {
            origin_x: self.grid.origin_x + window.x as f64 * self.grid.resolution,
            origin_y: self.grid.origin_y - window.y as f64 * self.grid.resolution,
            resolution: self.grid.resolution * window.width as f64 / sw as f64,
            width: sw,
            height: sh,
            ..self.grid.clone()
        };
        let whole = screen.full_window();
        let county = rasterize_counties(self.counties, &screen, whole)?;
        // The most urgent type is burnt last, on top.
        let mut drawn: Vec<&Patch> = self.patches.iter().collect();
        drawn.sort_by_key(|p| std::cmp::Reverse(p.change.flag()));
        let geometries: Vec<Geometry> = drawn.iter().map(|p| p.geometry.clone()).collect();
        let flags: Vec<f64> = drawn.iter().map(|p| f64::from(p.change.flag())).collect();
        let patch = rasterize_touched(&screen, whole, &geometries, &flags)?;

        let map_x = MARGIN;
        let map_y = HEADER_HEIGHT;
        let width = map_x + sw + MARGIN + LEGEND_WIDTH;
        let legend_height = legend_rows().len() * 22 + 40 + FURNITURE_HEIGHT;
        let height = map_y + sh.max(legend_height) + MARGIN;
        let mut img = image::RgbImage::from_pixel(width as u32, height as u32, image::Rgb(WHITE));
        let at = |sx: usize, sy: usize| (sy * rh / sh) * rw + sx * rw / sw;
        let mut unobserved = false;
        for sy in 0..sh {
            for sx in 0..sw {
                let i = sy * sw + sx;
                let inside = county[i] != 0;
                let edge = inside
                    && [(0isize, -1isize), (-1, 0), (1, 0), (0, 1)]
                        .iter()
                        .any(|&(dx, dy)| {
                            let (x, y) = (sx as isize + dx, sy as isize + dy);
                            x < 0
                                || y < 0
                                || x >= sw as isize
                                || y >= sh as isize
                                || county[y as usize * sw + x as usize] != county[i]
                        });
                let r = at(sx, sy);
                let rgb = if edge {
                    BOUNDARY
                } else if let Some(c) = u8::try_from(patch[i]).ok().and_then(flag_colour) {
                    c
                } else if !inside {
                    faded(class_colour(class[r]))
                } else if ndvi[r] == NDVI_NODATA {
                    unobserved = true;
                    hatch(sx, sy)
                } else {
                    class_colour(class[r])
                };
                img.put_pixel((map_x + sx) as u32, (map_y + sy) as u32, image::Rgb(rgb));
            }
        }
        for (x, y) in (0..sw + 2)
            .flat_map(|x| [(x, 0), (x, sh + 1)])
            .chain((0..sh + 2).flat_map(|y| [(0, y), (sw + 1, y)]))
        {
            img.put_pixel(
                (map_x + x - 1) as u32,
                (map_y + y - 1) as u32,
                image::Rgb(FRAME),
            );
        }
        let legend_x = map_x + sw + MARGIN;
        let rows = legend_rows();
        let swatch_top = |k: usize| map_y + 30 + k * 22;
        for (k, row) in rows.iter().enumerate() {
            let (x0, y0) = (legend_x, swatch_top(k));
            for dy in 0..14 {
                for dx in 0..22 {
                    let rgb = match row.swatch {
                        Swatch::Fill(c) => c,
                        Swatch::Hatch => hatch(dx, dy),
                        Swatch::Line => {
                            if (6..8).contains(&dy) {
                                BOUNDARY
                            } else {
                                WHITE
                            }
                        }
                    };
                    img.put_pixel((x0 + dx) as u32, (y0 + dy) as u32, image::Rgb(rgb));
                }
            }
        }
        let labels: Vec<String> = rows
            .iter()
            .map(|row| match row.change {
                Some(t) => {
                    let of_type: Vec<&Patch> =
                        self.patches.iter().filter(|p| p.change == t).collect();
                    if of_type.is_empty() {
                        format!("{}  0 处", row.label)
                    } else {
                        let mu: f64 = of_type.iter().map(|p| p.area_mu).sum();
                        format!("{}  {} 处 {:.1} 亩", row.label, of_type.len(), mu)
                    }
                }
                None if matches!(row.swatch, Swatch::Hatch) && !unobserved => {
                    format!("{}：本期无", row.label)
                }
                None => row.label.to_string(),
            })
            .collect();
        let metres_per_pixel = screen.resolution;
        let crs = self
            .grid
            .spatial_ref()
            .ok()
            .and_then(|s| s.name())
            .unwrap_or_default();
        let furniture = Furniture {
            title: &self.title,
            subtitle: &self.subtitle,
            labels: &labels,
            legend: (legend_x, map_y, swatch_top(rows.len()) + 14),
            scale: ScaleBar::fitting(metres_per_pixel, LEGEND_WIDTH - 40),
            crs: &crs,
        };
        furniture.draw(&mut img).map_err(|e| {
            Error::input(
                png,
                format!("cannot draw the map's text: {e}"),
                "check the font (GENGBAO_FONT)",
            )
        })?;
        img.save(png)
            .map_err(|e| Error::input(png, e.to_string(), "check that the folder is writable"))
    }
}

/// The window, clipped to the grid: GDAL refuses reads outside a raster.
fn clip(window: Window, grid: &JobGrid) -> Window {
    let x = window.x.clamp(0, grid.width as isize - 1);
    let y = window.y.clamp(0, grid.height as isize - 1);
    let right = (window.x + window.width as isize).clamp(x + 1, grid.width as isize);
    let bottom = (window.y + window.height as isize).clamp(y + 1, grid.height as isize);
    Window {
        x,
        y,
        width: (right - x) as usize,
        height: (bottom - y) as usize,
    }
}

fn read_band(
    path: &Path,
    window: Window,
    shape: (usize, usize),
    resampling: ResampleAlg,
) -> Result<Vec<u8>> {
    let ds = gdal::Dataset::open(path).in_file(path, "re-run the period")?;
    let band = ds.rasterband(1).in_file(path, "re-run the period")?;
    let data = band
        .read_as::<u8>(
            (window.x, window.y),
            (window.width, window.height),
            shape,
            Some(resampling),
        )
        .in_file(path, "re-run the period")?;
    Ok(data.into_shape_and_vec().1)
}

enum Swatch {
    Fill([u8; 3]),
    Hatch,
    Line,
}

struct LegendRow {
    label: &'static str,
    swatch: Swatch,
    /// Rows of patch types also give the count and area of the type's patches.
    change: Option<ChangeType>,
}

/// Every colour of the map, patches first.
fn legend_rows() -> Vec<LegendRow> {
    let mut rows: Vec<LegendRow> = ChangeType::ALL
        .iter()
        .map(|&t| LegendRow {
            label: t.label_zh(),
            swatch: Swatch::Fill(change_colour(t)),
            change: Some(t),
        })
        .collect();
    rows.extend(LandCover::ALL.iter().map(|&c| LegendRow {
        label: c.label_zh(),
        swatch: Swatch::Fill(class_colour(c.code())),
        change: None,
    }));
    rows.push(LegendRow {
        label: "未观测 (无晴空影像)",
        swatch: Swatch::Hatch,
        change: None,
    });
    rows.push(LegendRow {
        label: "县界",
        swatch: Swatch::Line,
        change: None,
    });
    rows
}

/// A scale bar of a round length (1, 2 or 5 times a power of ten metres).
struct ScaleBar {
    metres: f64,
    pixels: usize,
}

impl ScaleBar {
    /// The longest round length that fits in `max_pixels` at `metres_per_pixel`.
    fn fitting(metres_per_pixel: f64, max_pixels: usize) -> ScaleBar {
        let most = metres_per_pixel * max_pixels as f64;
        let power = 10f64.powf(most.log10().floor());
        let metres = [5.0, 2.0, 1.0]
            .iter()
            .map(|k| k * power)
            .find(|&m| m <= most)
            .unwrap_or(power);
        ScaleBar {
            metres,
            pixels: ((metres / metres_per_pixel).round() as usize).max(1),
        }
    }

    fn label(&self) -> String {
        if self.metres >= 1000.0 {
            format!("{} 千米", self.metres / 1000.0)
        } else {
            format!("{} 米", self.metres)
        }
    }
}

/// The text and the drawn parts of a sheet around the map.
struct Furniture<'a> {
    title: &'a str,
    subtitle: &'a str,
    labels: &'a [String],
    /// Left, top and bottom of the legend's swatches.
    legend: (usize, usize, usize),
    scale: ScaleBar,
    crs: &'a str,
}

impl Furniture<'_> {
    fn draw(
        &self,
        img: &mut image::RgbImage,
    ) -> std::result::Result<(), Box<dyn std::error::Error>> {
        use plotters::prelude::*;
        let (w, h) = img.dimensions();
        let root = BitMapBackend::with_buffer(img.as_mut(), (w, h)).into_drawing_area();
        let font = |size| ("sans-serif", size).into_font();
        root.draw(&Text::new(
            self.title.to_string(),
            (MARGIN as i32, 8),
            font(22),
        ))?;
        root.draw(&Text::new(
            self.subtitle.to_string(),
            (MARGIN as i32, 38),
            font(14).color(&RGBColor(70, 70, 70)),
        ))?;
        let (x, top, bottom) = (
            self.legend.0 as i32,
            self.legend.1 as i32,
            self.legend.2 as i32,
        );
        root.draw(&Text::new("图例", (x, top + 4), font(16)))?;
        for (k, label) in self.labels.iter().enumerate() {
            root.draw(&Text::new(
                label.clone(),
                (x + 30, top + 30 + k as i32 * 22),
                font(14),
            ))?;
        }
        // North arrow: grid north is up (a projected grid; its convergence is a few degrees
        // at most).
        let (ax, ay) = (x + 14, bottom + 20);
        root.draw(&Polygon::new(
            vec![(ax, ay), (ax - 9, ay + 30), (ax, ay + 23)],
            BLACK.filled(),
        ))?;
        root.draw(&PathElement::new(
            vec![(ax, ay), (ax + 9, ay + 30), (ax, ay + 23)],
            BLACK.stroke_width(1),
        ))?;
        root.draw(&Text::new("北", (ax + 16, ay + 6), font(16)))?;
        // Scale bar: two halves, black and white.
        let (sx, sy) = (x, bottom + 70);
        let len = self.scale.pixels as i32;
        root.draw(&Rectangle::new(
            [(sx, sy), (sx + len / 2, sy + 6)],
            BLACK.filled(),
        ))?;
        root.draw(&Rectangle::new(
            [(sx, sy), (sx + len, sy + 6)],
            BLACK.stroke_width(1),
        ))?;
        root.draw(&Text::new("0", (sx - 3, sy + 10), font(12)))?;
        root.draw(&Text::new(
            self.scale.label(),
            (sx + len - 10, sy + 10),
            font(12),
        ))?;
        if !self.crs.is_empty() {
            root.draw(&Text::new(
                format!("坐标系 {}", self.crs),
                (sx, sy + 34),
                font(11).color(&RGBColor(70, 70, 70)),
            ))?;
        }
        root.present()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_bars_are_round_and_fit() {
        let bar = ScaleBar::fitting(10.0, 200);
        assert_eq!(bar.metres, 2000.0);
        assert_eq!(bar.pixels, 200);
        assert_eq!(bar.label(), "2 千米");
        let bar = ScaleBar::fitting(3.0, 200);
        assert_eq!(bar.metres, 500.0);
        assert_eq!(bar.label(), "500 米");
        let bar = ScaleBar::fitting(0.7, 210);
        assert_eq!(bar.metres, 100.0);
        assert!(bar.pixels <= 210);
    }
}
