//! Launcher for `shaders/concat.wgsl`: concatenation of contiguous tensors along any dim (the
//! UNet decoder's skip concat is [`concat_channels`]).

use bytemuck::{Pod, Zeroable};

use crate::gpu::{flat_groups, launch, Arg, KernelSource, PipelineKey, Recorder};
use crate::tensor::{chunks, max_window_elems, GpuTensor};
use crate::{wgsl, Context, Error, Result};

pub static SRC: KernelSource = wgsl!("concat");
const OP: &str = "concat";
const WG: u32 = 256;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    n: u32,
    cols: u32,
    dst_stride: u32,
    src_shift: u32,
    dst_shift: u32,
}

/// `[N, Ca, H, W]` ++ `[N, Cb, H, W]` → `[N, Ca + Cb, H, W]`.
pub fn concat_channels(ctx: &Context, rec: &mut Recorder, a: &GpuTensor, b: &GpuTensor) -> Result<GpuTensor> {
    if a.shape.len() != 4 || b.shape.len() != 4 {
        return Err(Error::shape(
            OP,
            format!("concat_channels takes [N, C, H, W] tensors, got {:?} and {:?}", a.shape, b.shape),
        ));
    }
    concat(ctx, rec, &[a, b], 1)
}

/// The output shape of concatenating `parts` along `dim`, after checking them.
fn out_shape(parts: &[&GpuTensor], dim: usize) -> Result<Vec<usize>> {
    let shapes = || parts.iter().map(|p| format!("{:?}", p.shape)).collect::<Vec<_>>().join(", ");
    let first = parts.first().ok_or_else(|| Error::invalid(OP, "no tensors to concatenate"))?;
    if dim >= first.shape.len() {
        return Err(Error::shape(OP, format!("dim {dim} out of range for {}", shapes())));
    }
    let mut shape = first.shape.clone();
    shape[dim] = 0;
    for p in parts {
        let same_rank = p.shape.len() == first.shape.len();
        if !same_rank || p.shape.iter().enumerate().any(|(i, &s)| i != dim && s != first.shape[i]) {
            return Err(Error::shape(OP, format!("shapes differ outside dim {dim}: {}", shapes())));
        }
        if p.dtype != first.dtype {
            return Err(Error::dtype(OP, format!("mixed dtypes in {}", shapes())));
        }
        shape[dim] += p.shape[dim];
    }
    Ok(shape)
}

/// Concatenate contiguous tensors along `dim` into a new tensor.
pub fn concat(ctx: &Context, rec: &mut Recorder, parts: &[&GpuTensor], dim: usize) -> Result<GpuTensor> {
    let shape = out_shape(parts, dim)?;
    let y = GpuTensor::empty(ctx, &shape, parts[0].dtype)?;
    concat_into(ctx, rec, parts, dim, &y)?;
    Ok(y)
}

/// [`concat`] into an existing tensor of the concatenated shape (aliasing no part).
pub fn concat_into(ctx: &Context, rec: &mut Recorder, parts: &[&GpuTensor], dim: usize, y: &GpuTensor) -> Result<()> {
    let shape = out_shape(parts, dim)?;
    if y.shape != shape || y.dtype != parts[0].dtype {
        return Err(Error::shape(
            OP,
            format!(
                "output {:?} {} but the parts concatenate to {shape:?} {}",
                y.shape,
                y.dtype.name(),
                parts[0].dtype.name()
            ),
        ));
    }
    if parts.iter().any(|p| p.same_buffer(y)) {
        return Err(Error::invalid(OP, "output aliases an input"));
    }
    let rows: usize = shape[..dim].iter().product();
    let inner: usize = shape[dim + 1..].iter().product();
    let dst_stride = shape[dim] * inner;
    let lim = max_window_elems(ctx, y.dtype) as usize;
    let key = PipelineKey::new(&SRC, "main", y.dtype).with("WG", WG);
    let mut off = 0; // column offset of the part in a row of the output
    for part in parts {
        let cols = part.shape[dim] * inner;
        if cols == 0 || rows == 0 {
            continue;
        }
        // Row blocks whose windows fit; a row wider than a binding goes in column blocks.
        let (rows_per, col_block) = if cols <= lim && dst_stride <= lim {
            (((lim - cols) / dst_stride + 1).min(lim / cols).max(1), cols)
        } else {
            (1, cols.min(lim))
        };
        for (r0, nr) in chunks(rows, rows_per) {
            for (c0, nc) in chunks(cols, col_block) {
                let xw = part.window(ctx, r0 * cols + c0, if nr > 1 { nr * cols } else { nc })?;
                let yw = y.window(ctx, r0 * dst_stride + off + c0, (nr - 1) * dst_stride + nc)?;
                let n = nr * nc;
                let prm = Params {
                    n: n as u32,
                    cols: nc as u32,
                    dst_stride: dst_stride as u32,
                    src_shift: xw.shift,
                    dst_shift: yw.shift,
                };
                let groups = flat_groups(ctx, OP, n, WG)?;
                let args = [Arg::Read(xw), Arg::Write(yw), Arg::Uniform(bytemuck::bytes_of(&prm))];
                launch(ctx, rec, &SRC, &key, &args, groups, vec![part.keep(), y.keep()])?;
            }
        }
        off += cols;
    }
    Ok(())
}
