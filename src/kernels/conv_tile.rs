//! The geometry of a convolution launch: stride and padding ([`Conv2dParams`]) and the tile of
//! the conv kernels ([`ConvTile`]: workgroup size, channel block, pixels per invocation), with the
//! default choice per adapter and shape.

use crate::Context;

/// Stride and padding of a convolution. `pad` is `[top, bottom, left, right]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dParams {
    pub stride: usize,
    pub pad: [usize; 4],
}

impl Conv2dParams {
    /// `k/2` padding on every side (PyTorch `padding=k//2`): "same" size at stride 1.
    pub fn same(k: usize, stride: usize) -> Self {
        Conv2dParams { stride, pad: [k / 2; 4] }
    }

    /// Output `(Ho, Wo)` for an `h × w` input and a `kh × kw` kernel, or `None` when the padded input
    /// is smaller than the kernel (or the stride is 0).
    pub fn out_size(&self, h: usize, w: usize, kh: usize, kw: usize) -> Option<(usize, usize)> {
        if self.stride == 0 || kh == 0 || kw == 0 {
            return None;
        }
        let ph = h + self.pad[0] + self.pad[1];
        let pw = w + self.pad[2] + self.pad[3];
        if ph < kh || pw < kw {
            return None;
        }
        Some(((ph - kh) / self.stride + 1, (pw - kw) / self.stride + 1))
    }
}

/// Tile configuration (override constants) of the convolution kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvTile {
    /// Invocations per workgroup (multiple of 8, ≤ 256); a workgroup covers 4·wg output pixels.
    pub wg: u32,
    /// Output channels per workgroup (multiple of 4, ≤ 32).
    pub tm: u32,
    /// Output pixels per invocation (multiple of 4, ≤ TN_MAX).
    pub tn: u32,
}

/// Weights (Cin·KH·KW·Cout) below which a convolution is "small" for [`ConvTile::pick`].
pub const SMALL_CONV: usize = 65536;

/// Largest `tn` the shader's accumulator blocks are written out for.
pub const TN_MAX: u32 = 16;

impl ConvTile {
    /// Whether the shader's layout assumptions hold on this device.
    pub fn valid(&self, ctx: &Context) -> bool {
        (8..=256).contains(&self.wg)
            && self.wg.is_multiple_of(8)
            && self.wg <= ctx.caps.max_invocations
            && (4..=32).contains(&self.tm)
            && self.tm.is_multiple_of(4)
            && (4..=TN_MAX).contains(&self.tn)
            && self.tn.is_multiple_of(4)
    }

    /// The default tile for `cout` output channels, output width `wo` and `pixels` GEMM columns.
    ///
    /// On a CPU adapter (lavapipe) every storage load is a per-lane loop costing ~100 cycles, so
    /// the tile is as large as the spill budget allows (32 channels × 16 pixels per invocation);
    /// on GPUs the accumulators must stay in registers (16 × 4).
    ///
    /// A CPU adapter always gets one subgroup (8 invocations) per workgroup: weights are shared
    /// only within a subgroup, so a bigger workgroup measured no faster (8 to 64 within ±10 % at
    /// SD shapes), while each workgroup size is a separate JIT of this large body (10–30 s each on
    /// lavapipe, the bulk of a cold first run).
    ///
    /// A small convolution (`weights` = Cin·KH·KW·Cout under [`SMALL_CONV`]) gets 4 pixels per
    /// invocation on a CPU adapter as on a GPU: its wider tiles gain nothing measurable (a few
    /// milliseconds a step), while each is another 5–17 s JIT on a cold lavapipe. This keeps the
    /// bundled tiny model's first run short and touches only SD's conv_in/conv_out.
    pub fn pick(ctx: &Context, cout: usize, wo: usize, pixels: usize, weights: usize) -> ConvTile {
        let cpu = ctx.caps.is_cpu();
        let tm = Self::tm_for(ctx, cout);
        let tn_max = if cpu && weights >= SMALL_CONV { TN_MAX as usize } else { 4 };
        let tn = [16, 8, 4].into_iter().find(|&t| t <= tn_max && wo.is_multiple_of(t)).unwrap_or(4);
        let wg = if cpu { 8 } else { pixels.div_ceil(tn).next_power_of_two().clamp(8, 64) as u32 };
        ConvTile { wg, tm, tn: tn as u32 }
    }

    /// The output channels per workgroup (and weight packing block) for `cout` channels: it
    /// depends on the channel count and the adapter only, so layers pack their weights once at
    /// load with it ([`pack_host`](super::conv_pack::pack_host)) whatever size they later run at.
    pub fn tm_for(ctx: &Context, cout: usize) -> u32 {
        let tm_max = if ctx.caps.is_cpu() { 32 } else { 16 };
        cout.div_ceil(4).min(tm_max / 4) as u32 * 4
    }

    /// Whether the weights can be shared through subgroup broadcasts (lanes 0..tm/4 must exist).
    pub(crate) fn bcast(&self, ctx: &Context) -> bool {
        ctx.caps.subgroups && ctx.caps.subgroup_min_size >= 1 && ctx.caps.subgroup_min_size * 4 >= self.tm
    }
}
