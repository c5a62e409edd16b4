//! The grid picture, laid out as A1111's X/Y/Z plot: cells edge to edge, column (x) labels in a
//! band on top, row (y) labels in a band on the left, and one such block per z value, stacked
//! top to bottom under a title line naming the z value. Black text on white.

use super::font::{draw_text, line_height, text_width, wrap, GLYPH};
use crate::{Error, Result};

const OP: &str = "grid_image";
const BACKGROUND: [u8; 3] = [255, 255, 255];
const INK: [u8; 3] = [0, 0, 0];

/// An interleaved RGB8 image.
#[derive(Clone, Debug, PartialEq)]
pub struct RgbImage {
    pub width: usize,
    pub height: usize,
    pub rgb: Vec<u8>,
}

/// The labels of the three axes; an axis that is not used has one empty label.
#[derive(Clone, Debug, Default)]
pub struct GridLabels {
    pub x: Vec<String>,
    pub y: Vec<String>,
    pub z: Vec<String>,
}

/// Where things landed, so callers (and tests) can find the cells and label bands.
#[derive(Clone, Debug, PartialEq)]
pub struct GridGeometry {
    /// Width of the row-label band on the left (0 without row labels).
    pub left: usize,
    /// Height of the column-label band above each block (0 without column labels).
    pub top: usize,
    /// Height of the z title above each block (0 without a z axis).
    pub title: usize,
    /// Pixel (x, y) of each cell's top-left corner, z-major, then row, then column.
    pub cells: Vec<(usize, usize)>,
}

/// Text scale for a cell size: 8-pixel glyphs up to 255-pixel cells, 32-pixel glyphs at 512×512
/// (about A1111's font size, which grows with the cell).
pub fn label_scale(cell_w: usize, cell_h: usize) -> usize {
    ((cell_w + cell_h) / 256).max(1)
}

fn any_text(labels: &[String]) -> bool {
    labels.iter().any(|l| !l.is_empty())
}

fn centered(outer: usize, inner: usize) -> usize {
    outer.saturating_sub(inner) / 2
}

/// Lay out and draw the grid. `cells` holds `z·y·x` RGB8 images of `cell_w`×`cell_h`, z-major,
/// then row, then column.
pub fn compose(
    cells: &[Vec<u8>],
    cell_w: usize,
    cell_h: usize,
    labels: &GridLabels,
) -> Result<(RgbImage, GridGeometry)> {
    let (nx, ny, nz) = (labels.x.len().max(1), labels.y.len().max(1), labels.z.len().max(1));
    if cells.len() != nx * ny * nz {
        return Err(Error::shape(OP, format!("{} cells for a {nx}x{ny}x{nz} grid", cells.len())));
    }
    if cell_w == 0 || cell_h == 0 {
        return Err(Error::shape(OP, format!("cell size {cell_w}x{cell_h}")));
    }
    if let Some(c) = cells.iter().find(|c| c.len() != cell_w * cell_h * 3) {
        return Err(Error::shape(OP, format!("a cell has {} bytes, expected {cell_w}x{cell_h}x3", c.len())));
    }
    let s = label_scale(cell_w, cell_h);
    let pad = 3 * s;
    let lh = line_height(s);
    let glyph = GLYPH * s;

    // Column labels wrap to the cell width.
    let col_chars = cell_w.saturating_sub(2 * pad) / glyph;
    let col_lines: Vec<Vec<String>> = labels.x.iter().map(|l| wrap(l, col_chars)).collect();
    let top = if any_text(&labels.x) { col_lines.iter().map(|l| l.len()).max().unwrap_or(1) * lh + 2 * pad } else { 0 };
    // Row labels get a band as wide as the longest label, at most three quarters of a cell
    // (but room for 8 characters), and wrap inside it.
    let row_chars_max = ((cell_w * 3 / 4) / glyph).max(8);
    let longest = labels.y.iter().map(|l| l.chars().count()).max().unwrap_or(0);
    let row_chars = longest.min(row_chars_max);
    let row_lines: Vec<Vec<String>> = labels.y.iter().map(|l| wrap(l, row_chars)).collect();
    let left = if any_text(&labels.y) { row_chars * glyph + 2 * pad } else { 0 };
    let width = left + nx * cell_w;
    let z_lines: Vec<Vec<String>> = labels.z.iter().map(|l| wrap(l, width.saturating_sub(2 * pad) / glyph)).collect();
    let title = if any_text(&labels.z) { z_lines.iter().map(|l| l.len()).max().unwrap_or(1) * lh + 2 * pad } else { 0 };
    let block = title + top + ny * cell_h;
    let height = nz * block;
    if width.checked_mul(height).and_then(|p| p.checked_mul(3)).is_none_or(|b| b > isize::MAX as usize) {
        return Err(Error::limit(OP, "grid pixels", (width as u64).saturating_mul(height as u64), isize::MAX as u64));
    }
    let mut img = RgbImage { width, height, rgb: BACKGROUND.repeat(width * height) };
    let mut cells_at = Vec::with_capacity(cells.len());

    for z in 0..nz {
        let y0 = z * block;
        if title > 0 {
            let lines = &z_lines[z];
            for (i, line) in lines.iter().enumerate() {
                let x = centered(width, text_width(line, s));
                draw_text(&mut img.rgb, width, height, x, y0 + pad + i * lh, line, s, INK);
            }
        }
        if top > 0 {
            for (c, lines) in col_lines.iter().enumerate() {
                let block_h = lines.len() * lh;
                let ty = y0 + title + centered(top, block_h);
                for (i, line) in lines.iter().enumerate() {
                    let x = left + c * cell_w + centered(cell_w, text_width(line, s));
                    draw_text(&mut img.rgb, width, height, x, ty + i * lh, line, s, INK);
                }
            }
        }
        for (r, lines) in row_lines.iter().enumerate() {
            if left == 0 {
                break;
            }
            let block_h = lines.len() * lh;
            let ty = y0 + title + top + r * cell_h + centered(cell_h, block_h);
            for (i, line) in lines.iter().enumerate() {
                let x = centered(left, text_width(line, s));
                draw_text(&mut img.rgb, width, height, x, ty + i * lh, line, s, INK);
            }
        }
        for r in 0..ny {
            for c in 0..nx {
                let (px, py) = (left + c * cell_w, y0 + title + top + r * cell_h);
                let cell = &cells[(z * ny + r) * nx + c];
                for row in 0..cell_h {
                    let dst = ((py + row) * width + px) * 3;
                    img.rgb[dst..dst + cell_w * 3].copy_from_slice(&cell[row * cell_w * 3..(row + 1) * cell_w * 3]);
                }
                cells_at.push((px, py));
            }
        }
    }
    Ok((img, GridGeometry { left, top, title, cells: cells_at }))
}
