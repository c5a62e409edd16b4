//! Convolution weights in the kernel's layout: `[ceil(Cout/tm), Cin, KH, KW, tm]`, output
//! channels in blocks of `tm` (zero-padded), so a workgroup's weights for one input channel and tap
//! are `tm` consecutive values. Layers pack once at load on the host ([`pack_host`]); the GPU pass
//! ([`pack_weight`]) serves one-off convolutions and LoRA deltas merged into packed weights.

use bytemuck::{Pod, Zeroable};

use crate::gpu::{flat_groups, launch, Arg, KernelSource, PipelineKey, Recorder};
use crate::tensor::{chunks, max_window_elems, DType, GpuTensor};
use crate::{wgsl, Context, Error, Result};

pub static SRC: KernelSource = wgsl!("conv_pack");
/// Errors name the convolution: packing is part of it.
const OP: &str = "conv2d";

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    cin: u32,
    cout: u32,
    n: u32,
    w_shift: u32,
    o_shift: u32,
}

/// A weight repacked for the kernels: `[ceil(Cout/tm), Cin, KH, KW, tm]`, zero-padded channels.
#[derive(Clone)]
pub struct PackedConvWeight {
    pub packed: GpuTensor,
    /// The original `[Cout, Cin, KH, KW]`.
    pub shape: [usize; 4],
    pub tm: u32,
}

impl PackedConvWeight {
    /// Uploads `w [Cout, Cin, KH, KW]` (host values in the checkpoint's layout) packed with
    /// block `tm`, stored as `dtype`, with no GPU pass and no unpacked copy on the GPU.
    pub fn from_host(ctx: &Context, w: &[f32], shape: [usize; 4], tm: u32, dtype: DType) -> Result<Self> {
        let data = pack_host(w, shape, tm)?;
        let packed = GpuTensor::from_slice(ctx, &[data.len()], &data, dtype)?;
        Ok(PackedConvWeight { packed, shape, tm })
    }

    /// [`PackedConvWeight::from_host`] for f16 host values (uploaded as f16 without an f32 copy).
    pub fn from_host_f16(ctx: &Context, w: &[half::f16], shape: [usize; 4], tm: u32) -> Result<Self> {
        let data = pack_host(w, shape, tm)?;
        let packed = GpuTensor::from_f16(ctx, &[data.len()], &data)?;
        Ok(PackedConvWeight { packed, shape, tm })
    }
}

/// Elements of a `[Cout, Cin, KH, KW]` weight packed with block `tm` (channels padded to `tm`).
pub fn packed_len(shape: [usize; 4], tm: u32) -> usize {
    let [cout, cin, kh, kw] = shape;
    cout.div_ceil(tm as usize) * tm as usize * cin * kh * kw
}

/// The host twin of the GPU `pack` pass: `w [Cout, Cin, KH, KW]` →
/// `[ceil(Cout/tm), Cin, KH, KW, tm]`, padding channels zero.
pub fn pack_host<T: Copy + Default>(w: &[T], shape: [usize; 4], tm: u32) -> Result<Vec<T>> {
    let [cout, cin, kh, kw] = shape;
    if !(4..=32).contains(&tm) || !tm.is_multiple_of(4) {
        return Err(Error::invalid(OP, format!("pack: tm = {tm} is not a multiple of 4 in 4..=32")));
    }
    if w.len() != cout * cin * kh * kw {
        return Err(Error::shape(OP, format!("pack: {} values for a weight {shape:?}", w.len())));
    }
    let (tm, taps) = (tm as usize, kh * kw);
    let mut out = vec![T::default(); packed_len(shape, tm as u32)];
    for co in 0..cout {
        let (blk, r) = (co / tm, co % tm);
        for ci in 0..cin {
            for t in 0..taps {
                out[((blk * cin + ci) * taps + t) * tm + r] = w[(co * cin + ci) * taps + t];
            }
        }
    }
    Ok(out)
}

/// The inverse of [`pack_host`] (drops the padding channels).
pub fn unpack_host<T: Copy + Default>(packed: &[T], shape: [usize; 4], tm: u32) -> Result<Vec<T>> {
    let [cout, cin, kh, kw] = shape;
    if tm == 0 || packed.len() != packed_len(shape, tm) {
        return Err(Error::shape(OP, format!("unpack: {} values for {shape:?} packed with tm {tm}", packed.len())));
    }
    let (tm, taps) = (tm as usize, kh * kw);
    let mut out = vec![T::default(); cout * cin * taps];
    for co in 0..cout {
        let (blk, r) = (co / tm, co % tm);
        for ci in 0..cin {
            for t in 0..taps {
                out[(co * cin + ci) * taps + t] = packed[((blk * cin + ci) * taps + t) * tm + r];
            }
        }
    }
    Ok(out)
}

/// Repack `w [Cout, Cin, KH, KW]` into channel blocks of `tm` (a multiple of 4, ≤ 32) for
/// [`conv2d_packed`]. Do it once per weight when the same weight is used many times.
pub fn pack_weight(ctx: &Context, rec: &mut Recorder, w: &GpuTensor, tm: u32) -> Result<PackedConvWeight> {
    let ws: [usize; 4] = w.shape[..]
        .try_into()
        .map_err(|_| Error::shape(OP, format!("w must be [Cout, Cin, KH, KW], got {:?}", w.shape)))?;
    let [cout, cin, kh, kw] = ws;
    if !(4..=32).contains(&tm) || !tm.is_multiple_of(4) {
        return Err(Error::invalid(OP, format!("pack_weight: tm = {tm} is not a multiple of 4 in 4..=32")));
    }
    if ws.contains(&0) {
        return Err(Error::shape(OP, format!("pack_weight: zero-sized weight {ws:?}")));
    }
    let tmu = tm as usize;
    let taps = kh * kw;
    let blk = cin * taps * tmu; // packed elements per channel block
    let nblk = cout.div_ceil(tmu);
    let lim = max_window_elems(ctx, w.dtype) as usize;
    if blk > lim || blk > u32::MAX as usize || taps > u32::MAX as usize {
        return Err(Error::limit(OP, format!("packed weight block of {ws:?}"), blk as u64, lim as u64));
    }
    let packed = GpuTensor::empty(ctx, &[nblk * blk], w.dtype)?;
    let key = PipelineKey::new(&SRC, "main", w.dtype).with("TM", tm).with("TAPS", taps as u32);
    let per = (lim / blk).max(1); // blocks per launch
    for (b0, nb) in chunks(nblk, per) {
        let co0 = b0 * tmu;
        let rows = (nb * tmu).min(cout - co0);
        let src = w.window(ctx, co0 * cin * taps, rows * cin * taps)?;
        let dst = packed.window(ctx, b0 * blk, nb * blk)?;
        let n = nb * blk;
        let prm = Params { cin: cin as u32, cout: rows as u32, n: n as u32, w_shift: src.shift, o_shift: dst.shift };
        let groups = flat_groups(ctx, OP, n, 64)?;
        let args = [Arg::Read(src), Arg::Write(dst), Arg::Uniform(bytemuck::bytes_of(&prm))];
        launch(ctx, rec, &SRC, &key, &args, groups, vec![w.keep(), packed.keep()])?;
    }
    Ok(PackedConvWeight { packed, shape: ws, tm })
}
