//! Exact ΔW arithmetic for the adapter families (LoRA/LoCon, LoHa, LoKr) on the CPU, in f64
//! accumulation so the result matches reference merges to ~1e-7 relative.

use crate::error::{Error, Result};

const OP: &str = "lora_delta";

/// A dense row-major tensor used only inside the delta arithmetic.
#[derive(Clone, Debug)]
pub(crate) struct Mat {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl Mat {
    pub fn numel(&self) -> usize {
        self.data.len()
    }
    /// Rows = first dim, cols = everything else flattened (how kohya reshapes conv factors).
    pub fn rows_cols(&self) -> (usize, usize) {
        let r = self.shape.first().copied().unwrap_or(1).max(1);
        (r, self.numel() / r)
    }
}

/// `a [m,k] @ b [k,n]` with a shape check naming `what`.
pub(crate) fn matmul(a: &Mat, b: &Mat, what: &str) -> Result<Mat> {
    let (m, k) = a.rows_cols();
    let (k2, n) = b.rows_cols();
    if k != k2 || a.numel() != m * k {
        return Err(Error::shape(OP, format!("{what}: {:?} @ {:?} do not chain", a.shape, b.shape)));
    }
    let mut out = vec![0f32; m * n];
    let mut acc = vec![0f64; n];
    for i in 0..m {
        acc.iter_mut().for_each(|v| *v = 0.0);
        for p in 0..k {
            let av = a.data[i * k + p] as f64;
            if av == 0.0 {
                continue;
            }
            let row = &b.data[p * n..(p + 1) * n];
            for (s, bv) in acc.iter_mut().zip(row) {
                *s += av * *bv as f64;
            }
        }
        for (o, s) in out[i * n..(i + 1) * n].iter_mut().zip(&acc) {
            *o = *s as f32;
        }
    }
    Ok(Mat { shape: vec![m, n], data: out })
}

/// Tucker/CP rebuild: `out[o,i,y,x] = Σ_{p,q} t[p,q,y,x] · wa[p,o] · wb[q,i]` with `t [P,Q,kh,kw]`,
/// `wa [P,O]`, `wb [Q,I]`.
pub(crate) fn tucker(t: &Mat, wa: &Mat, wb: &Mat, what: &str) -> Result<Mat> {
    if t.shape.len() < 2 {
        return Err(Error::shape(OP, format!("{what}: core tensor {:?} is not [r,r,kh,kw]", t.shape)));
    }
    let (p_n, q_n) = (t.shape[0], t.shape[1]);
    let kk = t.numel() / (p_n * q_n).max(1);
    let (pa, o_n) = wa.rows_cols();
    let (qb, i_n) = wb.rows_cols();
    if pa != p_n || qb != q_n || t.numel() != p_n * q_n * kk {
        return Err(Error::shape(
            OP,
            format!("{what}: core {:?} does not fit factors {:?} and {:?}", t.shape, wa.shape, wb.shape),
        ));
    }
    // tmp[p, i, k] = Σ_q t[p,q,k] wb[q,i]
    let mut tmp = vec![0f64; p_n * i_n * kk];
    for p in 0..p_n {
        for q in 0..q_n {
            for i in 0..i_n {
                let w = wb.data[q * i_n + i] as f64;
                for k in 0..kk {
                    tmp[(p * i_n + i) * kk + k] += t.data[(p * q_n + q) * kk + k] as f64 * w;
                }
            }
        }
    }
    let mut out = vec![0f64; o_n * i_n * kk];
    for p in 0..p_n {
        for o in 0..o_n {
            let w = wa.data[p * o_n + o] as f64;
            for j in 0..i_n * kk {
                out[o * i_n * kk + j] += w * tmp[p * i_n * kk + j];
            }
        }
    }
    let mut shape = vec![o_n, i_n];
    shape.extend_from_slice(&t.shape[2..]);
    Ok(Mat { shape, data: out.into_iter().map(|v| v as f32).collect() })
}

/// Transpose of a 2-D view `[m, n]` → `[n, m]`.
pub(crate) fn transpose(a: &Mat) -> Mat {
    let (m, n) = a.rows_cols();
    let mut data = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            data[j * m + i] = a.data[i * n + j];
        }
    }
    Mat { shape: vec![n, m], data }
}

/// Kronecker product of `w1 [a,c]` and `w2 [b,d,(kh,kw)]` → `[a·b, c·d, (kh,kw)]`.
pub(crate) fn kron(w1: &Mat, w2: &Mat, what: &str) -> Result<Mat> {
    let (a, c) = w1.rows_cols();
    if w2.shape.len() < 2 || w1.numel() != a * c {
        return Err(Error::shape(OP, format!("{what}: kron of {:?} and {:?}", w1.shape, w2.shape)));
    }
    let (b, d) = (w2.shape[0], w2.shape[1]);
    let kk = w2.numel() / (b * d).max(1);
    let mut out = vec![0f32; a * b * c * d * kk];
    let row = c * d * kk;
    for ia in 0..a {
        for ic in 0..c {
            let s = w1.data[ia * c + ic];
            for ib in 0..b {
                for id in 0..d {
                    for k in 0..kk {
                        out[(ia * b + ib) * row + (ic * d + id) * kk + k] = s * w2.data[(ib * d + id) * kk + k];
                    }
                }
            }
        }
    }
    let mut shape = vec![a * b, c * d];
    shape.extend_from_slice(&w2.shape[2..]);
    Ok(Mat { shape, data: out })
}

/// Elementwise product of equal-sized tensors.
pub(crate) fn hadamard(x: &Mat, y: &Mat, what: &str) -> Result<Mat> {
    if x.numel() != y.numel() {
        return Err(Error::shape(OP, format!("{what}: factors {:?} and {:?} differ", x.shape, y.shape)));
    }
    Ok(Mat { shape: x.shape.clone(), data: x.data.iter().zip(&y.data).map(|(a, b)| a * b).collect() })
}
