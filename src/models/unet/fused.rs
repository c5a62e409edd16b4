//! GEMMs that save dispatches over what `nn::Linear` can express, through the crate's GEMM
//! launcher ([`crate::kernels::matmul::record_gemm`], `c[i] = a[i]·b[i]ᵀ` with per-operand batch
//! strides, stride 0 sharing an operand across the batch):
//! - several projections of one input in one launch (`to_q`/`to_k`/`to_v` of self-attention,
//!   `to_k`/`to_v` of cross-attention) from weights stacked at load into `[n, N, K]`;
//! - the `time_emb_proj` of every resnet of one width in one launch, from their weights copied
//!   into one `[n, N, K]` tensor after loading ([`stack_copies`]);
//! - a linear into an existing tensor ([`linear_into`]), so a recorded graph's input can be
//!   rewritten by a later, separate recording;
//! - a linear whose output comes out transposed (`W · tokensᵀ` per image), which takes
//!   `Transformer2DModel.proj_out` from tokens back to NCHW without a separate permutation.
//!
//! The stacked weights stay addressable per module: each `Linear` holds a view of its slice.

use crate::kernels::matmul::{kernel_for, record_gemm, Gemm};
use crate::nn::{Linear, Loader};
use crate::{Context, DType, Error, GpuTensor, Recorder, Result};

const OP: &str = "unet.fused_gemm";

/// The `weight` `[rows, cols]` of each loader scope in `ls` (at least one), stacked into one
/// `[n, rows, cols]` tensor in their dtype, and a bias-free `Linear` viewing each slice.
pub fn load_stacked(ls: &[Loader], cols: usize, rows: usize) -> Result<(GpuTensor, Vec<Linear>)> {
    let Some(first) = ls.first() else {
        return Err(Error::invalid(OP, "load_stacked: no weights to stack"));
    };
    let (ctx, shape) = (first.ctx(), [ls.len(), rows, cols]);
    let stacked = match first.dtype() {
        DType::F32 => {
            let mut data = Vec::with_capacity(rows * cols * ls.len());
            for l in ls {
                data.extend_from_slice(&l.get("weight", &[rows, cols])?.data);
            }
            GpuTensor::from_slice(ctx, &shape, &data, DType::F32)?
        }
        DType::F16 => {
            let mut data = Vec::with_capacity(rows * cols * ls.len());
            for l in ls {
                data.extend_from_slice(&l.get_f16("weight", &[rows, cols])?);
            }
            GpuTensor::from_f16(ctx, &shape, &data)?
        }
    };
    let linears = ls
        .iter()
        .enumerate()
        .map(|(i, l)| Ok(Linear::registered(l, stacked.view(i * rows * cols, &[rows, cols])?, None)))
        .collect::<Result<Vec<_>>>()?;
    Ok((stacked, linears))
}

/// One `[n, ...shape]` tensor holding copies of `parts` (same shape and dtype), made with buffer
/// copies at load time (no dispatch). `None` when a part's bytes are not 4-byte aligned, which
/// buffer copies require; the caller then keeps the parts apart.
pub fn stack_copies(ctx: &Context, parts: &[&GpuTensor]) -> Result<Option<GpuTensor>> {
    let Some(first) = parts.first() else {
        return Ok(None);
    };
    if parts.iter().any(|p| p.shape != first.shape || p.dtype != first.dtype) {
        return Err(Error::shape(OP, "stack_copies: parts differ in shape or dtype"));
    }
    let bytes = first.bytes();
    if bytes % 4 != 0 || parts.iter().any(|p| p.offset % 4 != 0) {
        return Ok(None);
    }
    let mut shape = vec![parts.len()];
    shape.extend_from_slice(&first.shape);
    // Filled by buffer copies, not by a dispatch: never an arena buffer.
    let out = GpuTensor::empty_outside_arena(ctx, &shape, first.dtype)?;
    ctx.scoped("unet.stack_copies", || {
        let mut enc = ctx.device.create_command_encoder(&Default::default());
        for (i, p) in parts.iter().enumerate() {
            enc.copy_buffer_to_buffer(p.buffer(), p.offset, out.buffer(), out.offset + i as u64 * bytes, bytes);
        }
        ctx.queue.submit([enc.finish()]);
        Ok(())
    })?;
    Ok(Some(out))
}

/// `x [..., K]` through every slice of `w [n, N, K]` in one launch → `[n, ...x leading, N]`.
pub fn multi_linear(ctx: &Context, rec: &mut Recorder, x: &GpuTensor, w: &GpuTensor) -> Result<GpuTensor> {
    let (&[n, rows, cols], Some(&k)) = (w.shape.as_slice(), x.shape.last()) else {
        return Err(Error::shape(OP, format!("need x [..., K] and w [n, N, K]: x {:?}, w {:?}", x.shape, w.shape)));
    };
    if k != cols || x.dtype != w.dtype {
        return Err(Error::shape(
            OP,
            format!("x {:?} {} does not fit w {:?} {}", x.shape, x.dtype.name(), w.shape, w.dtype.name()),
        ));
    }
    let m = x.numel() / k;
    let mut shape = vec![n];
    shape.extend_from_slice(&x.shape[..x.shape.len() - 1]);
    shape.push(rows);
    let c = GpuTensor::empty(ctx, &shape, x.dtype)?;
    let g = Gemm {
        op: OP,
        batch: n,
        m,
        n: rows,
        k,
        a: x,
        a_bstride: 0,
        b: w,
        b_bstride: rows * cols,
        trans_b: true,
        seg2: None,
        bias: None,
        c: &c,
    };
    record_gemm(ctx, rec, &g, kernel_for(ctx, g.m, g.n, g.k, g.c.dtype, g.trans_b))?;
    Ok(c)
}

/// Slice `i` of a [`multi_linear`] output, shaped like its input with the last dim replaced.
pub fn slice(y: &GpuTensor, i: usize) -> Result<GpuTensor> {
    let Some((_, shape)) = y.shape.split_first() else {
        return Err(Error::shape(OP, "slice of a scalar"));
    };
    y.view(i * shape.iter().product::<usize>(), shape)
}

/// `w [N, K]` applied to tokens `t [B, S, K]`, transposed: `[B, N, S]` (`w · t[b]ᵀ`), no bias.
pub fn linear_transposed(ctx: &Context, rec: &mut Recorder, t: &GpuTensor, w: &GpuTensor) -> Result<GpuTensor> {
    let (&[b, s, k], &[rows, cols]) = (t.shape.as_slice(), w.shape.as_slice()) else {
        return Err(Error::shape(OP, format!("need t [B, S, K] and w [N, K]: t {:?}, w {:?}", t.shape, w.shape)));
    };
    if k != cols || t.dtype != w.dtype {
        return Err(Error::shape(
            OP,
            format!("t {:?} {} does not fit w {:?} {}", t.shape, t.dtype.name(), w.shape, w.dtype.name()),
        ));
    }
    let c = GpuTensor::empty(ctx, &[b, rows, s], t.dtype)?;
    let g = Gemm {
        op: OP,
        batch: b,
        m: rows,
        n: s,
        k,
        a: w,
        a_bstride: 0,
        b: t,
        b_bstride: s * k,
        trans_b: true,
        seg2: None,
        bias: None,
        c: &c,
    };
    record_gemm(ctx, rec, &g, kernel_for(ctx, g.m, g.n, g.k, g.c.dtype, g.trans_b))?;
    Ok(c)
}

/// `l` applied to `x [..., K]` (with its bias) into the existing `out [..., N]`.
pub fn linear_into(ctx: &Context, rec: &mut Recorder, x: &GpuTensor, l: &Linear, out: &GpuTensor) -> Result<()> {
    let k = l.in_features;
    let n = l.out_features;
    let mut want = x.shape.clone();
    if want.last() != Some(&k) || x.dtype != out.dtype || l.weight.dtype != out.dtype {
        return Err(Error::shape(OP, format!("linear_into: x {:?} does not fit weight {:?}", x.shape, l.weight.shape)));
    }
    if let Some(last) = want.last_mut() {
        *last = n;
    }
    if out.shape != want {
        return Err(Error::shape(OP, format!("linear_into: out {:?} must be {want:?}", out.shape)));
    }
    let g = Gemm {
        op: OP,
        batch: 1,
        m: x.numel() / k,
        n,
        k,
        a: x,
        a_bstride: 0,
        b: &l.weight,
        b_bstride: 0,
        trans_b: true,
        seg2: None,
        bias: l.bias.as_ref(),
        c: out,
    };
    record_gemm(ctx, rec, &g, kernel_for(ctx, g.m, g.n, g.k, g.c.dtype, g.trans_b))
}
