//! One module's ΔW as `lora compare` uses it: kept in low-rank form `up @ down` where the file has
//! one (so inner products cost O((out + in)·r²) instead of O(out·in)), dense otherwise, with the
//! top singular vectors it needs for subspace similarity.

use crate::error::{Error, Result};
use crate::lora::svd::{svd, svd_factored, Spectrum};
use crate::lora::LoraModule;

const OP: &str = "lora_compare";

/// Singular values at or below this fraction of the largest count as zero (f32 factors put the
/// rounding floor of a rank-r product near 1e-7 of s_max).
pub(crate) const RANK_TOL: f64 = 1e-5;

enum Form {
    /// `up` `[rows, r]` (multiplier and alpha/rank folded in) and `down` `[r, cols]`, row-major.
    LowRank { r: usize, up: Vec<f64>, down: Vec<f64> },
    /// `[rows, cols]`, row-major.
    Dense(Vec<f64>),
}

/// ΔW of one module at the LoRA's multiplier, as the matrix `[out, in·kh·kw]`.
pub(crate) struct Delta {
    pub rows: usize,
    pub cols: usize,
    form: Form,
}

/// Orthonormal top-k singular vectors of a ΔW.
pub(crate) struct Basis {
    /// Numerical rank of ΔW (singular values above [`RANK_TOL`] × s_max).
    pub rank: usize,
    /// Left (output side) vectors, each of length rows.
    u: Vec<Vec<f64>>,
    /// Right (input side) vectors, each of length cols.
    v: Vec<Vec<f64>>,
}

fn numerical_rank(s: &[f64]) -> usize {
    match s.first() {
        Some(&s0) if s0 > 0.0 => s.iter().filter(|&&v| v > s0 * RANK_TOL).count(),
        _ => 0,
    }
}

fn to_f32(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

/// The top-`k` singular vectors of a spectrum (fewer where its numerical rank is lower):
/// (s, U columns, V columns).
#[allow(clippy::type_complexity)]
fn top_vectors(sp: Spectrum, k: usize) -> Result<(Vec<f64>, Vec<Vec<f64>>, Vec<Vec<f64>>)> {
    let (rows, cols) = (sp.rows, sp.cols);
    let k = k.min(numerical_rank(&sp.s));
    if k == 0 {
        return Ok((sp.s, Vec::new(), Vec::new()));
    }
    // `factors` gives U·diag(s) and Vᵀ; dividing by s (all above the rank floor) recovers U.
    let (up, down) = sp.factors(k)?;
    let u = (0..k).map(|c| (0..rows).map(|i| up[i * k + c] as f64 / sp.s[c]).collect()).collect();
    let v = (0..k).map(|c| down[c * cols..(c + 1) * cols].iter().map(|&x| x as f64).collect()).collect();
    Ok((sp.s, u, v))
}

impl Delta {
    /// The module's ΔW times `weight`. DoRA modules give the low-rank update of their direction
    /// (the magnitude vector is not part of ΔW and is left out).
    pub fn new(m: &LoraModule, weight: f32) -> Result<Delta> {
        let w = weight as f64;
        if let Some((down, up, scale)) = m.low_rank() {
            let (r, cols) = (down.shape[0], down.shape[1]);
            let rows = up.shape[0];
            let s = w * scale as f64;
            let up = up.data.iter().map(|&x| x as f64 * s).collect();
            let down = down.data.iter().map(|&x| x as f64).collect();
            return Ok(Delta { rows, cols, form: Form::LowRank { r, up, down } });
        }
        let d = m.delta()?;
        let rows = d.shape.first().copied().unwrap_or(1).max(1);
        let cols = d.data.len() / rows;
        Ok(Delta { rows, cols, form: Form::Dense(d.data.iter().map(|&x| x as f64 * w).collect()) })
    }

    /// Frobenius inner product ⟨ΔW_self, ΔW_other⟩ (same shape, checked by the caller).
    pub fn dot(&self, o: &Delta) -> f64 {
        match (&self.form, &o.form) {
            (Form::LowRank { r: r1, up: b1, down: a1 }, Form::LowRank { r: r2, up: b2, down: a2 }) => {
                // ⟨B₁A₁, B₂A₂⟩ = Σ (B₁ᵀB₂) ∘ (A₁A₂ᵀ), both r₁ × r₂.
                let (r1, r2) = (*r1, *r2);
                let mut total = 0.0;
                for p in 0..r1 {
                    for q in 0..r2 {
                        let g_up: f64 = (0..self.rows).map(|i| b1[i * r1 + p] * b2[i * r2 + q]).sum();
                        let a_p = &a1[p * self.cols..(p + 1) * self.cols];
                        let a_q = &a2[q * self.cols..(q + 1) * self.cols];
                        let g_down: f64 = a_p.iter().zip(a_q).map(|(x, y)| x * y).sum();
                        total += g_up * g_down;
                    }
                }
                total
            }
            (Form::LowRank { r, up, down }, Form::Dense(d)) | (Form::Dense(d), Form::LowRank { r, up, down }) => {
                // ⟨BA, D⟩ = Σ_p ⟨A_p, (BᵀD)_p⟩.
                let (r, cols) = (*r, self.cols);
                let mut total = 0.0;
                for p in 0..r {
                    let mut t = vec![0f64; cols];
                    for i in 0..self.rows {
                        let b = up[i * r + p];
                        if b != 0.0 {
                            t.iter_mut().zip(&d[i * cols..(i + 1) * cols]).for_each(|(t, x)| *t += b * x);
                        }
                    }
                    total += t.iter().zip(&down[p * cols..(p + 1) * cols]).map(|(x, y)| x * y).sum::<f64>();
                }
                total
            }
            (Form::Dense(x), Form::Dense(y)) => x.iter().zip(y).map(|(a, b)| a * b).sum(),
        }
    }

    /// ‖ΔW‖²_F.
    pub fn energy(&self) -> f64 {
        self.dot(self)
    }

    /// The top `k` singular vectors (fewer where ΔW's rank is lower); a low-rank ΔW = B·A is
    /// factored without forming the `rows × cols` matrix.
    pub fn basis(&self, k: usize, what: &str) -> Result<Basis> {
        let sp = match &self.form {
            Form::Dense(d) => svd(&to_f32(d), self.rows, self.cols),
            Form::LowRank { r, up, down } => svd_factored(&to_f32(up), self.rows, *r, &to_f32(down), self.cols),
        }
        .map_err(|e| Error::invalid(OP, format!("{what}: {e}")))?;
        let (s, u, v) = top_vectors(sp, k)?;
        Ok(Basis { rank: numerical_rank(&s), u, v })
    }
}

/// Normalized subspace similarity (Hu et al. 2021, LoRA §7.2) of the top-`k` vectors:
/// (‖U_aᵀU_b‖²_F / k, ‖V_aᵀV_b‖²_F / k), each in [0, 1]; (0, 0) when k is 0.
pub(crate) fn subspace_similarity(a: &Basis, b: &Basis, k: usize) -> (f64, f64) {
    let k = k.min(a.u.len()).min(b.u.len());
    if k == 0 {
        return (0.0, 0.0);
    }
    let phi = |x: &[Vec<f64>], y: &[Vec<f64>]| {
        let mut s = 0.0;
        for xi in &x[..k] {
            for yj in &y[..k] {
                let d: f64 = xi.iter().zip(yj).map(|(p, q)| p * q).sum();
                s += d * d;
            }
        }
        s / k as f64
    };
    (phi(&a.u, &b.u), phi(&a.v, &b.v))
}
