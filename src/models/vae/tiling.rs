//! Tiled VAE: decode (and encode) a large image in overlapping latent tiles, blended linearly
//! where they overlap, as diffusers' `enable_vae_tiling`, stable-diffusion.cpp's `--vae-tiling`
//! and A1111's tiled VAE do.
//!
//! Why: the VAE's activations grow with the image (at 1024² SDXL's decoder holds 128-channel
//! 1024×1024 maps and a 16384-token mid-block attention), while one tile's stay the size of a
//! 512² decode. The tiles are decoded one after the other with the same shapes, so the buffer
//! pool hands every tile the buffers of the one before.
//!
//! What it costs: GroupNorm normalises each tile by its own statistics, so a tiled result is not
//! the untiled one; the overlap hides the seams, not that difference (the tests state the
//! measured gap). A latent that fits in one tile takes the untiled path, bit for bit.
//!
//! Tiles along an axis all have the full tile size (the last is not cut short): the starts are
//! spread evenly, so neighbours overlap by at least the requested overlap. Each tile's weight
//! rises linearly over the part it shares with the previous tile and falls over the part it
//! shares with the next (weights of two tiles sum to one there); the output is Σ w·tile / Σ w,
//! which also covers spots where three tiles meet.

use super::Vae;
use crate::{Context, Error, GpuTensor, HostTensor, Recorder, Result};

const OP: &str = "vae.tiling";

/// The decoder's receptive field makes tiles below this mostly border.
pub const MIN_TILE: usize = 4;
/// Larger tiles would defeat the purpose (and an 8192-pixel image is the request limit).
pub const MAX_TILE: usize = 1024;

/// Tile size and overlap, in latent pixels (the image side is 8× for SD's VAE).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VaeTiling {
    pub tile: usize,
    pub overlap: usize,
}

impl Default for VaeTiling {
    /// 64-latent tiles (512 pixels, the size SD1.5's VAE was trained at) with 16 overlapping.
    fn default() -> Self {
        VaeTiling { tile: 64, overlap: 16 }
    }
}

impl VaeTiling {
    /// Checked options: `MIN_TILE ≤ tile ≤ MAX_TILE` and `overlap ≤ tile / 2` (a larger overlap
    /// would decode most pixels more than twice over).
    pub fn new(tile: usize, overlap: usize) -> Result<VaeTiling> {
        let t = VaeTiling { tile, overlap };
        t.validate()?;
        Ok(t)
    }

    pub fn validate(&self) -> Result<()> {
        if !(MIN_TILE..=MAX_TILE).contains(&self.tile) {
            return Err(Error::invalid(
                OP,
                format!("VAE tile size {} latent pixels is outside {MIN_TILE}..={MAX_TILE}", self.tile),
            ));
        }
        if 2 * self.overlap > self.tile {
            return Err(Error::invalid(
                OP,
                format!("VAE tile overlap {} is more than half the tile size {}", self.overlap, self.tile),
            ));
        }
        Ok(())
    }

    /// Tile starts along an axis of `len` latent pixels: one tile of `len` when it fits, else
    /// the fewest full tiles whose neighbours overlap by at least `overlap`, spread evenly.
    pub fn starts(&self, len: usize) -> Vec<usize> {
        if len <= self.tile {
            return vec![0];
        }
        let stride = self.tile - self.overlap;
        let n = (len - self.overlap).div_ceil(stride).max(2);
        let span = len - self.tile;
        (0..n).map(|i| (i * span + (n - 1) / 2) / (n - 1)).collect()
    }

    /// The tile length along an axis of `len`.
    pub fn length(&self, len: usize) -> usize {
        len.min(self.tile)
    }
}

/// Each tile's weight at each of its output positions along one axis: tiles start at `starts`
/// (input units) and are `len` long, `scale` output pixels per input pixel.
fn weights(starts: &[usize], len: usize, scale: usize) -> Vec<Vec<f32>> {
    let n = len * scale;
    let tiles: Vec<usize> = starts.iter().map(|&s| s * scale).collect();
    (0..tiles.len())
        .map(|i| {
            let a = tiles[i];
            // Shared with the previous tile: [a, prev_end); with the next: [next_start, a + n).
            let up = i.checked_sub(1).map_or(0, |p| (tiles[p] + n).saturating_sub(a).min(n));
            let down = tiles.get(i + 1).map_or(0, |&next| (a + n).saturating_sub(next).min(n));
            (0..n)
                .map(|x| {
                    // Half-pixel centres keep every weight above zero, so Σ w > 0 everywhere.
                    let rise = if x < up { (x as f32 + 0.5) / up as f32 } else { 1.0 };
                    let fall = if n - x <= down { ((n - x) as f32 - 0.5) / down as f32 } else { 1.0 };
                    rise.min(fall)
                })
                .collect()
        })
        .collect()
}

/// Accumulates weighted tiles of a `[B, C, H, W]` output.
struct Blend {
    shape: [usize; 4],
    sum: Vec<f32>,
    weight: Vec<f32>,
}

impl Blend {
    fn new(shape: [usize; 4]) -> Blend {
        let [b, c, h, w] = shape;
        Blend { shape, sum: vec![0.0; b * c * h * w], weight: vec![0.0; h * w] }
    }

    /// Adds tile `vals` (`[B, C, th, tw]`) at `(y0, x0)` with separable weights `wy × wx`.
    fn add(&mut self, vals: &[f32], (y0, x0): (usize, usize), wy: &[f32], wx: &[f32]) {
        let [b, c, h, w] = self.shape;
        let (th, tw) = (wy.len(), wx.len());
        for (y, &ay) in wy.iter().enumerate() {
            let row = &mut self.weight[(y0 + y) * w + x0..][..tw];
            for (o, &ax) in row.iter_mut().zip(wx) {
                *o += ay * ax;
            }
        }
        for plane in 0..b * c {
            let (src, dst) = (&vals[plane * th * tw..], &mut self.sum[plane * h * w..]);
            for y in 0..th {
                let row = &mut dst[(y0 + y) * w + x0..][..tw];
                for (x, o) in row.iter_mut().enumerate() {
                    *o += src[y * tw + x] * wy[y] * wx[x];
                }
            }
        }
    }

    fn finish(self) -> Result<HostTensor> {
        let [_, _, h, w] = self.shape;
        let mut out = self.sum;
        for plane in out.chunks_mut(h * w) {
            for (v, wt) in plane.iter_mut().zip(&self.weight) {
                *v /= wt;
            }
        }
        HostTensor::new(&self.shape, out)
    }
}

/// `[B, C, H, W]` host values → the `[B, C, th, tw]` window at `(y0, x0)`.
fn crop(data: &[f32], shape: &[usize], (y0, x0): (usize, usize), (th, tw): (usize, usize)) -> Vec<f32> {
    let (h, w) = (shape[2], shape[3]);
    let mut out = Vec::with_capacity(shape[0] * shape[1] * th * tw);
    for plane in data.chunks(h * w) {
        for y in y0..y0 + th {
            out.extend_from_slice(&plane[y * w + x0..][..tw]);
        }
    }
    out
}

/// What [`map_tiles`] runs per tile: the tile's shape and values → its output values.
pub type TileFn<'a> = dyn FnMut(&[usize], &[f32]) -> Result<Vec<f32>> + 'a;

/// Runs `tile_fn` on every tile of `input` (`[B, C, H, W]` host values; `tile_fn` gets the
/// tile's shape and values) and blends its results. The plan is in latent pixels: the input has
/// `in_scale` pixels per latent pixel (1 to decode, 8 to encode), the output `out_scale` (8 to
/// decode, 1 to encode) and `out_channels` channels. Public so the blending can be checked with
/// an operation that has no per-tile statistics (then the result is the whole operation's).
pub fn map_tiles(
    input: &HostTensor,
    tiling: &VaeTiling,
    (in_scale, out_scale): (usize, usize),
    out_channels: usize,
    tile_fn: &mut TileFn<'_>,
) -> Result<HostTensor> {
    tiling.validate()?;
    let s = &input.shape;
    let fits = |n: usize| in_scale > 0 && n.is_multiple_of(in_scale);
    if s.len() != 4 || !fits(s[2]) || !fits(s[3]) || out_scale == 0 {
        return Err(Error::shape(
            OP,
            format!("cannot tile {s:?} at {in_scale} input and {out_scale} output pixels per latent pixel"),
        ));
    }
    let (lh, lw) = (s[2] / in_scale, s[3] / in_scale);
    let (th, tw) = (tiling.length(lh), tiling.length(lw));
    let (sy, sx) = (tiling.starts(lh), tiling.starts(lw));
    let (wy, wx) = (weights(&sy, th, out_scale), weights(&sx, tw, out_scale));
    let mut blend = Blend::new([s[0], out_channels, lh * out_scale, lw * out_scale]);
    let tile_shape = [s[0], s[1], th * in_scale, tw * in_scale];
    let want = s[0] * out_channels * th * out_scale * tw * out_scale;
    for (ty, &y0) in sy.iter().enumerate() {
        for (tx, &x0) in sx.iter().enumerate() {
            let tile = crop(&input.data, s, (y0 * in_scale, x0 * in_scale), (tile_shape[2], tile_shape[3]));
            let vals = tile_fn(&tile_shape, &tile)?;
            if vals.len() != want {
                return Err(Error::shape(
                    OP,
                    format!("a {tile_shape:?} tile gave {} values, expected {want}", vals.len()),
                ));
            }
            blend.add(&vals, (y0 * out_scale, x0 * out_scale), &wy[ty], &wx[tx]);
        }
    }
    blend.finish()
}

impl Vae {
    /// Output pixels per latent pixel: 2 per level below the top.
    pub fn scale_factor(&self) -> usize {
        1 << self.config.block_out_channels.len().saturating_sub(1)
    }

    /// [`Vae::decode_checked`] read back to the host, tile by tile (see the module docs):
    /// `z [B, latent, h, w]` (already divided by the scaling factor) → raw image values
    /// `[B, out, 8h, 8w]`. Submits `rec` first (it may hold the work that computes `z`). A latent
    /// that fits in one tile is decoded whole, exactly as [`Vae::decode_checked`] does.
    pub fn decode_tiled(
        &self,
        ctx: &Context,
        rec: &mut Recorder,
        z: &GpuTensor,
        tiling: &VaeTiling,
    ) -> Result<HostTensor> {
        tiling.validate()?;
        super::check_input("vae.decode", z, self.config.latent_channels, self.dtype)?;
        let (h, w, f) = (z.shape[2], z.shape[3], self.scale_factor());
        if h <= tiling.tile && w <= tiling.tile {
            let values = self.decode_checked_host(ctx, rec, z)?;
            return HostTensor::new(&[z.shape[0], self.config.out_channels, h * f, w * f], values);
        }
        rec.submit(ctx)?;
        let zh = z.to_host(ctx)?;
        map_tiles(&zh, tiling, (1, f), self.config.out_channels, &mut |shape, vals| {
            let zt = GpuTensor::from_slice(ctx, shape, vals, z.dtype)?;
            let mut tile_rec = Recorder::new();
            // Per tile: an f16 overflow falls back to f32 for that tile only.
            self.decode_checked_host(ctx, &mut tile_rec, &zt)
        })
    }

    /// [`Vae::encode_mean`] tile by tile: `x [B, in, H, W]` in [-1, 1], H and W multiples of the
    /// scale factor (8), → latent mean `[B, latent, H/8, W/8]` on the host. `tiling` is in latent
    /// pixels (a 64-latent tile is 512 image pixels). Submits `rec` first. An image whose latent
    /// fits in one tile is encoded whole, exactly as [`Vae::encode_mean`] does.
    pub fn encode_mean_tiled(
        &self,
        ctx: &Context,
        rec: &mut Recorder,
        x: &GpuTensor,
        tiling: &VaeTiling,
    ) -> Result<HostTensor> {
        tiling.validate()?;
        super::check_input("vae.encode", x, self.config.in_channels, self.dtype)?;
        let f = self.scale_factor();
        let (h, w) = (x.shape[2], x.shape[3]);
        if !h.is_multiple_of(f) || !w.is_multiple_of(f) {
            return Err(Error::shape(
                "vae.encode",
                format!("tiled encoding needs image sides that are multiples of {f}, got {h}x{w}"),
            ));
        }
        if h / f <= tiling.tile && w / f <= tiling.tile {
            let out = self.encode_mean(ctx, rec, x)?;
            rec.submit(ctx)?;
            return out.to_host(ctx);
        }
        rec.submit(ctx)?;
        let xh = x.to_host(ctx)?;
        map_tiles(&xh, tiling, (f, 1), self.config.latent_channels, &mut |shape, vals| {
            let xt = GpuTensor::from_slice(ctx, shape, vals, x.dtype)?;
            let mut tile_rec = Recorder::new();
            let m = self.encode_mean(ctx, &mut tile_rec, &xt)?;
            tile_rec.submit(ctx)?;
            m.to_vec(ctx)
        })
    }
}
