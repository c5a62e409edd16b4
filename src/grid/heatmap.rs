//! The `lora compare --heatmap` picture: one row per block (text encoders, IN00…, MID, OUT…), one
//! column per measure (two LoRAs: cosine, subspace similarity, interference) or per pair (more
//! LoRAs: cosine), cells coloured on a diverging scale from −1 (blue) through 0 (white) to +1
//! (red) with the value written in, a legend bar and a caption. Labels use the grid's bitmap font.

use super::compose::RgbImage;
use super::font::{draw_text, line_height, text_width, wrap, GLYPH};
use crate::lora::compare::CompareReport;
use crate::{Error, Result};

const OP: &str = "heatmap";
/// Cell size in pixels.
pub const CELL_W: usize = 64;
pub const CELL_H: usize = 16;
const MARGIN: usize = 8;
const LEGEND_H: usize = 10;
const BACKGROUND: [u8; 3] = [255, 255, 255];
const INK: [u8; 3] = [0, 0, 0];
const MISSING: [u8; 3] = [200, 200, 200];
const NEG: [u8; 3] = [33, 102, 172];
const MID: [u8; 3] = [247, 247, 247];
const POS: [u8; 3] = [178, 24, 43];

/// A table of values in [−1, 1] (None: nothing to show) with its labels.
#[derive(Clone, Debug, PartialEq)]
pub struct Heatmap {
    pub title: String,
    pub rows: Vec<String>,
    pub cols: Vec<String>,
    /// Row-major, rows × cols.
    pub values: Vec<Option<f64>>,
    /// Lines under the legend (what the columns mean).
    pub caption: Vec<String>,
}

/// The colour of `v` (clamped to [−1, 1]).
pub fn color(v: f64) -> [u8; 3] {
    let t = v.clamp(-1.0, 1.0);
    let (end, t) = if t < 0.0 { (NEG, -t) } else { (POS, t) };
    let mut c = [0u8; 3];
    for i in 0..3 {
        c[i] = (MID[i] as f64 + (end[i] as f64 - MID[i] as f64) * t).round() as u8;
    }
    c
}

fn fill(img: &mut RgbImage, x: usize, y: usize, w: usize, h: usize, c: [u8; 3]) {
    for py in y..(y + h).min(img.height) {
        for px in x..(x + w).min(img.width) {
            let o = (py * img.width + px) * 3;
            img.rgb[o..o + 3].copy_from_slice(&c);
        }
    }
}

/// Column labels wrapped to the cell width.
fn col_lines(h: &Heatmap) -> Vec<Vec<String>> {
    h.cols.iter().map(|c| wrap(c, CELL_W / GLYPH)).collect()
}

/// Draws the table.
pub fn render(h: &Heatmap) -> Result<RgbImage> {
    if h.rows.is_empty() || h.cols.is_empty() || h.values.len() != h.rows.len() * h.cols.len() {
        return Err(Error::shape(
            OP,
            format!("{} values for {} rows × {} columns", h.values.len(), h.rows.len(), h.cols.len()),
        ));
    }
    let lh = line_height(1);
    let cols = col_lines(h);
    let header = cols.iter().map(Vec::len).max().unwrap_or(1) * lh;
    let left = h.rows.iter().map(|r| text_width(r, 1)).max().unwrap_or(0) + 2 * MARGIN;
    let grid_w = h.cols.len() * CELL_W;
    let bar_w = grid_w.max(160);
    let text_w = h.caption.iter().chain(std::iter::once(&h.title)).map(|t| text_width(t, 1)).max().unwrap_or(0);
    let width = (left + grid_w.max(bar_w)).max(MARGIN + text_w) + MARGIN;
    let top = MARGIN + lh + MARGIN / 2 + header;
    let grid_bottom = top + h.rows.len() * CELL_H;
    let height = grid_bottom + MARGIN + LEGEND_H + 2 + lh + MARGIN / 2 + h.caption.len() * lh + MARGIN;
    let mut img = RgbImage { width, height, rgb: BACKGROUND.repeat(width * height) };
    draw_text(&mut img.rgb, width, height, MARGIN, MARGIN, &h.title, 1, INK);
    for (c, lines) in cols.iter().enumerate() {
        for (i, l) in lines.iter().enumerate() {
            let x = left + c * CELL_W + CELL_W.saturating_sub(text_width(l, 1)) / 2;
            draw_text(&mut img.rgb, width, height, x, top - header + i * lh, l, 1, INK);
        }
    }
    for (r, label) in h.rows.iter().enumerate() {
        let y = top + r * CELL_H;
        draw_text(&mut img.rgb, width, height, MARGIN, y + (CELL_H - GLYPH) / 2, label, 1, INK);
        for c in 0..h.cols.len() {
            let x = left + c * CELL_W;
            let v = h.values[r * h.cols.len() + c].filter(|v| v.is_finite());
            let bg = v.map_or(MISSING, color);
            fill(&mut img, x + 1, y + 1, CELL_W - 2, CELL_H - 2, bg);
            let text = v.map_or("-".to_string(), |v| format!("{v:+.2}"));
            let ink = if v.is_some_and(|v| v.abs() > 0.6) { BACKGROUND } else { INK };
            let tx = x + CELL_W.saturating_sub(text_width(&text, 1)) / 2;
            draw_text(&mut img.rgb, width, height, tx, y + (CELL_H - GLYPH) / 2, &text, 1, ink);
        }
    }
    // Legend: the scale from −1 to +1 under the grid.
    let by = grid_bottom + MARGIN;
    for px in 0..bar_w {
        let v = -1.0 + 2.0 * px as f64 / (bar_w - 1) as f64;
        fill(&mut img, left + px, by, 1, LEGEND_H, color(v));
    }
    let ly = by + LEGEND_H + 2;
    draw_text(&mut img.rgb, width, height, left, ly, "-1", 1, INK);
    draw_text(&mut img.rgb, width, height, left + bar_w / 2 - GLYPH / 2, ly, "0", 1, INK);
    draw_text(&mut img.rgb, width, height, left + bar_w - text_width("+1", 1), ly, "+1", 1, INK);
    for (i, line) in h.caption.iter().enumerate() {
        draw_text(&mut img.rgb, width, height, MARGIN, ly + lh + MARGIN / 2 + i * lh, line, 1, INK);
    }
    Ok(img)
}

/// The heat-map of a comparison: for two LoRAs the block cosine, the block's subspace similarity
/// φ_out and its interference (relative to the largest); for more, the block cosine per pair.
pub fn from_report(r: &CompareReport) -> Heatmap {
    let names: Vec<String> = r.loras.iter().map(|l| l.name.clone()).collect();
    let rows = r.blocks.clone();
    let mut values = Vec::new();
    let mut caption = Vec::new();
    let cols = if let [p] = r.pairs.as_slice() {
        let max = p.blocks.iter().map(|b| b.interference).fold(0.0, f64::max);
        for b in &p.blocks {
            let interf = (b.shared > 0).then(|| if max > 0.0 { b.interference / max } else { 0.0 });
            values.extend([b.cosine, b.phi_out, interf]);
        }
        caption.push(format!("A = {}, B = {}", names[p.a], names[p.b]));
        caption.push("cosine: of the blocks' dW; phi_out: output-subspace similarity (0..1)".into());
        caption.push(format!("interf.: block's largest interference / {max:.3e} ({})", r.strength));
        vec!["cosine".to_string(), "phi_out".into(), "interf.".into()]
    } else {
        for row in 0..rows.len() {
            values.extend(r.pairs.iter().map(|p| p.blocks[row].cosine));
        }
        for (i, n) in names.iter().enumerate() {
            caption.push(format!("{} = {n}", i + 1));
        }
        caption.push("cells: cosine of the block's dW for each pair of LoRAs".into());
        r.pairs.iter().map(|p| format!("{}-{}", p.a + 1, p.b + 1)).collect()
    };
    caption.push("grey: the block is not changed by both".into());
    Heatmap { title: "lora compare: per-block similarity".into(), rows, cols, values, caption }
}
