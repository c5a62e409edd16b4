//! CPU truth for `kernels::attention`: plain softmax attention per head in f64.

/// `softmax(scale · q·kᵀ [causal]) · v` per head for `q [b, sq, heads·d]`, `k, v [b, sk, heads·d]`
/// (flat row-major), returning `[b, sq, heads·d]`. Causal masks key j > query i.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    b: usize,
    sq: usize,
    sk: usize,
    heads: usize,
    d: usize,
    causal: bool,
    scale: f64,
) -> Vec<f32> {
    let rows: Vec<usize> = (0..sq).collect();
    attention_rows(q, k, v, b, sq, sk, heads, d, causal, scale, &rows)
}

/// The same, for the query rows `rows` of every batch only (big cases check a sample of rows):
/// returns `[b, rows.len(), heads·d]`.
#[allow(clippy::too_many_arguments)]
pub fn attention_rows(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    b: usize,
    sq: usize,
    sk: usize,
    heads: usize,
    d: usize,
    causal: bool,
    scale: f64,
    rows: &[usize],
) -> Vec<f32> {
    let hd = heads * d;
    assert_eq!(q.len(), b * sq * hd, "q size");
    assert_eq!(k.len(), b * sk * hd, "k size");
    assert_eq!(v.len(), b * sk * hd, "v size");
    let mut out = vec![0f32; b * rows.len() * hd];
    let mut s = vec![0f64; sk];
    for bi in 0..b {
        for h in 0..heads {
            for (ri, &i) in rows.iter().enumerate() {
                let qr = &q[(bi * sq + i) * hd + h * d..][..d];
                let mut mx = f64::NEG_INFINITY;
                for (j, sj) in s.iter_mut().enumerate() {
                    if causal && j > i {
                        *sj = f64::NEG_INFINITY;
                        continue;
                    }
                    let kr = &k[(bi * sk + j) * hd + h * d..][..d];
                    let dot: f64 = qr.iter().zip(kr).map(|(&a, &b)| a as f64 * b as f64).sum();
                    *sj = dot * scale;
                    mx = mx.max(*sj);
                }
                let mut sum = 0.0;
                for sj in s.iter_mut() {
                    *sj = (*sj - mx).exp();
                    sum += *sj;
                }
                let mut acc = vec![0f64; d];
                for (j, &pj) in s.iter().enumerate() {
                    if pj != 0.0 {
                        let vr = &v[(bi * sk + j) * hd + h * d..][..d];
                        for (a, &x) in acc.iter_mut().zip(vr) {
                            *a += pj * x as f64;
                        }
                    }
                }
                let o = &mut out[(bi * rows.len() + ri) * hd + h * d..][..d];
                for (oc, a) in o.iter_mut().zip(&acc) {
                    *oc = (a / sum) as f32;
                }
            }
        }
    }
    out
}
