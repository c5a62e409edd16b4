//! CPU truth for `kernels::binary`: broadcasting add/sub/mul and `alpha·a + beta·b`, written
//! directly from coordinates (no dimension merging), computed in f64.

use crate::kernels::binary::BinaryOp;

/// The broadcast shape, or `None` when incompatible (right-aligned, sizes equal or 1).
pub fn broadcast_shape(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let r = a.len().max(b.len());
    let get = |s: &[usize], d: usize| {
        if d + s.len() >= r {
            s[d + s.len() - r]
        } else {
            1
        }
    };
    (0..r)
        .map(|d| {
            let (x, y) = (get(a, d), get(b, d));
            if x == y || y == 1 {
                Some(x)
            } else if x == 1 {
                Some(y)
            } else {
                None
            }
        })
        .collect()
}

/// Flat index into a tensor of `shape` for output coordinates `coord` (broadcast dims read 0).
fn source_index(shape: &[usize], coord: &[usize]) -> usize {
    let off = coord.len() - shape.len();
    let mut idx = 0;
    for (d, &ext) in shape.iter().enumerate() {
        let c = if ext == 1 { 0 } else { coord[off + d] };
        idx = idx * ext + c;
    }
    idx
}

fn zip_broadcast(
    a: &[f32],
    a_shape: &[usize],
    b: &[f32],
    b_shape: &[usize],
    f: impl Fn(f64, f64) -> f64,
) -> (Vec<usize>, Vec<f32>) {
    let out = broadcast_shape(a_shape, b_shape)
        .unwrap_or_else(|| panic!("reference::binary: cannot broadcast {a_shape:?} with {b_shape:?}"));
    assert_eq!(a.len(), a_shape.iter().product::<usize>(), "a length");
    assert_eq!(b.len(), b_shape.iter().product::<usize>(), "b length");
    let n: usize = out.iter().product();
    let mut coord = vec![0usize; out.len()];
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let x = a[source_index(a_shape, &coord)] as f64;
        let y = b[source_index(b_shape, &coord)] as f64;
        v.push(f(x, y) as f32);
        for d in (0..out.len()).rev() {
            coord[d] += 1;
            if coord[d] < out[d] {
                break;
            }
            coord[d] = 0;
        }
    }
    (out, v)
}

/// `a op b` with broadcasting: returns (output shape, values).
pub fn binary(a: &[f32], a_shape: &[usize], b: &[f32], b_shape: &[usize], op: BinaryOp) -> (Vec<usize>, Vec<f32>) {
    zip_broadcast(a, a_shape, b, b_shape, |x, y| match op {
        BinaryOp::Add => x + y,
        BinaryOp::Sub => x - y,
        BinaryOp::Mul => x * y,
    })
}

/// `alpha·a + beta·b` with broadcasting: returns (output shape, values).
pub fn add_scaled(
    a: &[f32],
    a_shape: &[usize],
    b: &[f32],
    b_shape: &[usize],
    alpha: f32,
    beta: f32,
) -> (Vec<usize>, Vec<f32>) {
    zip_broadcast(a, a_shape, b, b_shape, |x, y| alpha as f64 * x + beta as f64 * y)
}
