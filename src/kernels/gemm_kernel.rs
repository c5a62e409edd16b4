//! Which GEMM kernel runs: the variants (the portable `tiled` kernel and the CPU adapters' `sg`),
//! the device's default, the checks that a variant fits the device, and the names the autotune
//! store keeps them under. The launcher (`matmul.rs`) records them.

use crate::{Context, Error, Result};

/// Which GEMM kernel (entry point and tile sizes) to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GemmKernel {
    /// `tiled`: a `bm x bn` output tile per workgroup of `(bm/4)·(bn/4)` threads, K staged through
    /// workgroup memory `bk` at a time. `bm`, `bn` multiples of 4.
    Tiled { bm: u32, bn: u32, bk: u32 },
    /// `sg`: one subgroup of `lanes` invocations per workgroup computing a `rows` x 8·lanes tile
    /// (`rows` 32 or 64: 64 shares each loaded B vec4 among twice the rows). Needs subgroups of
    /// exactly `lanes` (≥ 8) invocations.
    Subgroup { lanes: u32, rows: u32 },
}

impl GemmKernel {
    /// Output rows and columns covered by one workgroup.
    pub fn tile(self) -> (usize, usize) {
        match self {
            GemmKernel::Tiled { bm, bn, .. } => (bm as usize, bn as usize),
            GemmKernel::Subgroup { lanes, rows } => (rows as usize, 8 * lanes as usize),
        }
    }
}

impl GemmKernel {
    /// How a choice is written in the autotune store: `tiled:BMxBNxBK` or `sg:LANESxROWS`.
    pub fn name(&self) -> String {
        match *self {
            GemmKernel::Tiled { bm, bn, bk } => format!("tiled:{bm}x{bn}x{bk}"),
            GemmKernel::Subgroup { lanes, rows } => format!("sg:{lanes}x{rows}"),
        }
    }

    /// The inverse of [`GemmKernel::name`]; `None` for anything else (a store from another build).
    pub fn parse(s: &str) -> Option<GemmKernel> {
        let (kind, rest) = s.split_once(':')?;
        let v: Vec<u32> = rest.split('x').map(|p| p.parse().ok()).collect::<Option<_>>()?;
        match (kind, &v[..]) {
            ("tiled", &[bm, bn, bk]) => Some(GemmKernel::Tiled { bm, bn, bk }),
            ("sg", &[lanes, rows]) => Some(GemmKernel::Subgroup { lanes, rows }),
            _ => None,
        }
    }
}

/// The portable kernel for this device: 64x64 tiles with 256 threads where the adapter allows,
/// 32x32 with 64 threads otherwise.
pub fn tiled_kernel(ctx: &Context) -> GemmKernel {
    let big = GemmKernel::Tiled { bm: 64, bn: 64, bk: 16 };
    if !ctx.caps.is_cpu() && check_kernel(ctx, "matmul", big).is_ok() {
        big
    } else {
        GemmKernel::Tiled { bm: 32, bn: 32, bk: 16 }
    }
}

/// The kernel `linear`, `matmul` and `lora_linear` use on this device: `sg` on CPU adapters with
/// 8- or 16-wide subgroups (lavapipe), `tiled` everywhere else.
pub fn default_kernel(ctx: &Context) -> GemmKernel {
    let c = &ctx.caps;
    if c.is_cpu() && c.subgroups && c.subgroup_min_size == c.subgroup_max_size {
        let k = GemmKernel::Subgroup { lanes: c.subgroup_min_size, rows: 32 };
        if check_kernel(ctx, "matmul", k).is_ok() {
            return k;
        }
    }
    tiled_kernel(ctx)
}

/// Whether `k` can run on this device (tile shape, workgroup size and memory, subgroup width).
pub fn check_kernel(ctx: &Context, op: &'static str, k: GemmKernel) -> Result<()> {
    let c = &ctx.caps;
    match k {
        GemmKernel::Tiled { bm, bn, bk } => {
            if bm == 0 || bn == 0 || bk == 0 || bm % 4 != 0 || bn % 4 != 0 {
                return Err(Error::invalid(
                    op,
                    format!("{k:?}: bm and bn must be positive multiples of 4, bk positive"),
                ));
            }
            let wg = (bm / 4) * (bn / 4);
            if wg > c.max_invocations {
                return Err(Error::limit(
                    op,
                    format!("invocations per workgroup of {k:?}"),
                    wg as u64,
                    c.max_invocations as u64,
                ));
            }
            let shared = 16 * bk as u64 * (bm / 4 + 1 + bn / 4 + 1) as u64;
            if shared > c.max_workgroup_storage as u64 {
                return Err(Error::limit(
                    op,
                    format!("workgroup bytes of {k:?}"),
                    shared,
                    c.max_workgroup_storage as u64,
                ));
            }
        }
        GemmKernel::Subgroup { lanes, rows } => {
            if rows != 32 && rows != 64 {
                return Err(Error::invalid(op, format!("{k:?}: rows must be 32 or 64")));
            }
            if !c.subgroups || lanes < 8 || c.subgroup_min_size != lanes || c.subgroup_max_size != lanes {
                return Err(Error::invalid(
                    op,
                    format!(
                        "{k:?} needs subgroups of exactly {lanes} (≥ 8) invocations; adapter: subgroups={}, sizes {}..{}",
                        c.subgroups, c.subgroup_min_size, c.subgroup_max_size
                    ),
                ));
            }
            if lanes > c.max_invocations {
                return Err(Error::limit(op, "invocations per workgroup", lanes as u64, c.max_invocations as u64));
            }
            if c.max_storage_buffers_per_stage < 10 {
                return Err(Error::limit(
                    op,
                    format!("storage buffers per stage of {k:?}"),
                    10,
                    c.max_storage_buffers_per_stage as u64,
                ));
            }
        }
    }
    Ok(())
}
