//! Comparison grids (A1111's X/Y/Z plot): up to three axes over LoRA weights, LoRA sets, seeds,
//! CFG, steps, samplers and prompt search/replace, expanded into one [`Request`] per cell, then
//! laid out with labels drawn in an embedded font.
//!
//! - [`axes`]: `KIND:VALUES` parsing and applying a value to a request.
//! - [`font`], [`compose`]: the grid picture.

pub mod axes;
pub mod compose;
pub mod font;
pub mod heatmap;

pub use axes::{apply_values, Axis, AxisKind, AxisValue, LoraLookup};
pub use compose::{compose, GridGeometry, GridLabels, RgbImage};

use std::path::{Path, PathBuf};

use crate::pipeline::request::Request;
use crate::{Error, Result};

/// Default cap on the number of cells (`--max-cells`).
pub const DEFAULT_MAX_CELLS: usize = 64;

/// One image of the grid.
#[derive(Clone, Debug)]
pub struct Cell {
    /// Indices along z, y (row) and x (column).
    pub z: usize,
    pub row: usize,
    pub col: usize,
    pub req: Request,
}

/// A grid expanded into cells, z-major, then row, then column.
#[derive(Clone, Debug)]
pub struct GridPlan {
    pub cols: usize,
    pub rows: usize,
    pub layers: usize,
    pub cells: Vec<Cell>,
    pub labels: GridLabels,
}

/// Expand `base` over the axes (`x` columns, `y` rows, `z` separate blocks). Errors, all before
/// any work: no axis, more than `max_cells` cells, a prompt-sr search text found in neither
/// prompt, or a cell whose request is invalid. LoRA-changing axes set `lora_weights_vary`, so
/// `auto` LoRA mode runs the factors at run time instead of re-merging weights per cell.
pub fn plan(
    base: &Request,
    x: Option<&Axis>,
    y: Option<&Axis>,
    z: Option<&Axis>,
    max_cells: usize,
) -> Result<GridPlan> {
    const OP: &str = "grid";
    if x.is_none() && y.is_none() && z.is_none() {
        return Err(Error::invalid(OP, "give at least one axis (--x, --y or --z)"));
    }
    let n = |a: Option<&Axis>| a.map_or(1, |a| a.len());
    let (cols, rows, layers) = (n(x), n(y), n(z));
    let total = (cols as u64).saturating_mul(rows as u64).saturating_mul(layers as u64);
    if total > max_cells as u64 {
        return Err(Error::limit(OP, format!("cells ({cols}x{rows}x{layers}, --max-cells)"), total, max_cells as u64));
    }
    for a in [x, y, z].into_iter().flatten() {
        if let Some(AxisValue::PromptSr { from, .. }) = a.values.first() {
            if !base.prompt.contains(from.as_str()) && !base.negative_prompt.contains(from.as_str()) {
                return Err(Error::invalid(
                    OP,
                    format!("prompt-sr: {from:?} is in neither the prompt nor the negative prompt"),
                ));
            }
        }
    }
    let vary = [x, y, z].into_iter().flatten().any(|a| a.changes_loras());
    let mut cells = Vec::with_capacity(total as usize);
    for zi in 0..layers {
        for row in 0..rows {
            for col in 0..cols {
                let mut req = base.clone();
                req.lora_weights_vary = vary || base.lora_weights_vary;
                let mut vals = Vec::new();
                for (a, i) in [(x, col), (y, row), (z, zi)] {
                    if let Some(a) = a {
                        vals.push(&a.values[i]);
                    }
                }
                apply_values(&mut req, &vals);
                req.validate()?;
                cells.push(Cell { z: zi, row, col, req });
            }
        }
    }
    let labels = |a: Option<&Axis>| a.map(|a| a.labels.clone()).unwrap_or_default();
    Ok(GridPlan { cols, rows, layers, cells, labels: GridLabels { x: labels(x), y: labels(y), z: labels(z) } })
}

/// Where a cell's PNG goes: `grid-<row>-<col>.png` beside `grid.png`, or
/// `grid-<z>-<row>-<col>.png` when the grid has a z axis.
pub fn cell_path(grid: &Path, cell: &Cell, with_z: bool) -> PathBuf {
    let stem = grid.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "grid".into());
    let ext = grid.extension().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "png".into());
    let name = if with_z {
        format!("{stem}-{}-{}-{}.{ext}", cell.z, cell.row, cell.col)
    } else {
        format!("{stem}-{}-{}.{ext}", cell.row, cell.col)
    };
    grid.with_file_name(name)
}
