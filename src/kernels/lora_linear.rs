//! Fused multi-LoRA linear on `shaders/matmul.wgsl`:
//! `y = x·Wᵀ + b + Σᵢ sᵢ·(x·Aᵢᵀ)·Bᵢᵀ` in two launches whatever the number of adapters:
//!
//! 1. shrink: `t = x·A_catᵀ` (`[M, R]`), where `A_cat` stacks every adapter's down matrix along
//!    the rank;
//! 2. one GEMM over the K-concatenation `[x | t]·[W | B_cat]ᵀ + b`, where `B_cat` holds every up
//!    matrix side by side with its adapter's scale folded in (the kernel's second K segment).
//!
//! The cost grows with the total rank R = Σrᵢ, not with the adapter count. R is padded with zero
//! rows/columns to a multiple of 4 so that the vec4 (`sg`) kernel applies. The intermediate `t` is
//! stored in the stack's dtype.

use crate::gpu::Recorder;
use crate::kernels::matmul::{kernel_for, linear_shapes, record_gemm, Gemm};
use crate::tensor::{DType, GpuTensor, HostTensor};
use crate::{Context, Error, Result};

/// Most adapters one [`LoraStack`] holds.
pub const MAX_ADAPTERS: usize = 16;

/// One LoRA adapter for a linear layer with weight `[N, K]`: `ΔW = scale · up · down`.
#[derive(Clone, Debug)]
pub struct LoraAdapter {
    /// A: `[r, K]`.
    pub down: HostTensor,
    /// B: `[N, r]`.
    pub up: HostTensor,
    pub scale: f32,
}

/// Up to [`MAX_ADAPTERS`] adapters of one layer, stacked for [`lora_linear`]: `A_cat [R, K]` and
/// `B_cat [N, R]` (scales folded into B's columns) on the GPU, R padded to a multiple of 4.
pub struct LoraStack {
    a_cat: Option<GpuTensor>,
    b_cat: Option<GpuTensor>,
    k: usize,
    n: usize,
    ranks: Vec<usize>,
    dtype: DType,
}

impl LoraStack {
    /// Stack `adapters` (ranks may differ; all must share K and N) and upload them as `dtype`. An
    /// empty slice gives a stack that adds nothing.
    pub fn new(ctx: &Context, adapters: &[LoraAdapter], dtype: DType) -> Result<LoraStack> {
        const OP: &str = "lora_stack";
        if adapters.len() > MAX_ADAPTERS {
            return Err(Error::limit(OP, "adapters in one stack", adapters.len() as u64, MAX_ADAPTERS as u64));
        }
        let Some(first) = adapters.first() else {
            return Ok(LoraStack { a_cat: None, b_cat: None, k: 0, n: 0, ranks: Vec::new(), dtype });
        };
        let (k, n) = match (&first.down.shape[..], &first.up.shape[..]) {
            ([_, k], [n, _]) => (*k, *n),
            _ => (0, 0),
        };
        let mut ranks = Vec::with_capacity(adapters.len());
        for (i, ad) in adapters.iter().enumerate() {
            let r = match (&ad.down.shape[..], &ad.up.shape[..]) {
                ([r, kd], [nu, ru]) if *kd == k && *nu == n && ru == r && *r > 0 && k > 0 && n > 0 => *r,
                _ => {
                    return Err(Error::shape(
                        OP,
                        format!(
                            "adapter {i}: need down [r, K] and up [N, r] with r > 0 and the K, N of adapter 0 (K={k}, N={n}); got down {:?}, up {:?}",
                            ad.down.shape, ad.up.shape
                        ),
                    ))
                }
            };
            if ad.down.data.len() != r * k || ad.up.data.len() != n * r {
                return Err(Error::shape(
                    OP,
                    format!(
                        "adapter {i}: data lengths {} (down) and {} (up) do not match shapes {:?} and {:?}",
                        ad.down.data.len(),
                        ad.up.data.len(),
                        ad.down.shape,
                        ad.up.shape
                    ),
                ));
            }
            if !ad.scale.is_finite() {
                return Err(Error::invalid(OP, format!("adapter {i}: scale {} is not finite", ad.scale)));
            }
            ranks.push(r);
        }
        let total: usize = ranks.iter().sum();
        let rp = total.div_ceil(4) * 4;
        let mut a = vec![0.0f32; rp * k];
        let mut b = vec![0.0f32; n * rp];
        let mut off = 0;
        for (ad, &r) in adapters.iter().zip(&ranks) {
            a[off * k..(off + r) * k].copy_from_slice(&ad.down.data);
            for row in 0..n {
                for j in 0..r {
                    b[row * rp + off + j] = ad.scale * ad.up.data[row * r + j];
                }
            }
            off += r;
        }
        let a_cat = GpuTensor::from_slice(ctx, &[rp, k], &a, dtype)?;
        let b_cat = GpuTensor::from_slice(ctx, &[n, rp], &b, dtype)?;
        Ok(LoraStack { a_cat: Some(a_cat), b_cat: Some(b_cat), k, n, ranks, dtype })
    }

    /// `(A_cat [Rp, K], B_cat [N, Rp])` with the scales folded into B; `None` when empty.
    pub fn factors(&self) -> Option<(&GpuTensor, &GpuTensor)> {
        Some((self.a_cat.as_ref()?, self.b_cat.as_ref()?))
    }

    /// Σ rᵢ over the adapters (without the padding to a multiple of 4).
    pub fn total_rank(&self) -> usize {
        self.ranks.iter().sum()
    }

    /// The rank of each adapter, in stacking order.
    pub fn ranks(&self) -> &[usize] {
        &self.ranks
    }

    /// Number of adapters.
    pub fn len(&self) -> usize {
        self.ranks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ranks.is_empty()
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }
}

/// `y = x·Wᵀ + b + Σᵢ sᵢ·(x·Aᵢᵀ)·Bᵢᵀ`: x `[..., K]`, w `[N, K]`, bias `[N]` → y `[..., N]`, in two
/// launches (shrink, then one two-segment GEMM). All operands, and the stack, share one dtype.
pub fn lora_linear(
    ctx: &Context,
    rec: &mut Recorder,
    x: &GpuTensor,
    w: &GpuTensor,
    bias: Option<&GpuTensor>,
    lora: &LoraStack,
) -> Result<GpuTensor> {
    const OP: &str = "lora_linear";
    let (m, n, k, out) = linear_shapes(OP, x, w, bias)?;
    if !lora.is_empty() && (lora.k != k || lora.n != n) {
        return Err(Error::shape(
            OP,
            format!("LoRA stack is for K={}, N={} but x {:?}, w {:?}", lora.k, lora.n, x.shape, w.shape),
        ));
    }
    let dt = x.dtype;
    if w.dtype != dt || bias.is_some_and(|b| b.dtype != dt) || lora.dtype != dt {
        return Err(Error::dtype(
            OP,
            format!(
                "operands must share one dtype: x {}, w {}, bias {}, LoRA stack {}",
                dt.name(),
                w.dtype.name(),
                bias.map_or("-", |b| b.dtype.name()),
                lora.dtype.name()
            ),
        ));
    }
    let kernel = kernel_for(ctx, m, n, k, dt, true);
    let y = GpuTensor::empty(ctx, &out, dt)?;
    let seg2 = match (&lora.a_cat, &lora.b_cat) {
        (Some(a_cat), Some(b_cat)) => {
            let rp = a_cat.shape[0];
            let t = GpuTensor::empty(ctx, &[m, rp], dt)?;
            let shrink = Gemm::linear(OP, (m, rp, k), x, a_cat, &t);
            record_gemm(ctx, rec, &shrink, kernel)?;
            Some((t, b_cat, rp))
        }
        _ => None,
    };
    let g = Gemm {
        seg2: seg2.as_ref().map(|(t, b_cat, rp)| (t, *b_cat, *rp)),
        bias,
        ..Gemm::linear(OP, (m, n, k), x, w, &y)
    };
    record_gemm(ctx, rec, &g, kernel)?;
    Ok(y)
}
