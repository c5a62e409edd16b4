//! CPU truth for `kernels::conv2d` (f64 accumulation).

use crate::kernels::conv2d::Conv2dParams;

/// `x [n, cin, h, w]` ⊛ `wt [cout, cin, kh, kw]` (+ bias) with PyTorch semantics (cross-correlation,
/// zero padding `[top, bottom, left, right]`). Returns the output and its shape `[n, cout, ho, wo]`.
pub fn conv2d(
    x: &[f32],
    xs: [usize; 4],
    wt: &[f32],
    ws: [usize; 4],
    bias: Option<&[f32]>,
    p: Conv2dParams,
) -> (Vec<f32>, [usize; 4]) {
    let [n, cin, h, w] = xs;
    let [cout, wcin, kh, kw] = ws;
    assert_eq!(cin, wcin, "reference conv2d: channel mismatch");
    assert_eq!(x.len(), n * cin * h * w);
    assert_eq!(wt.len(), cout * cin * kh * kw);
    let (ho, wo) = p.out_size(h, w, kh, kw).expect("reference conv2d: kernel larger than padded input");
    let s = p.stride;
    let mut y = vec![0f32; n * cout * ho * wo];
    let mut acc = vec![0f64; ho * wo];
    for img in 0..n {
        for co in 0..cout {
            let b = bias.map_or(0.0, |b| b[co] as f64);
            acc.iter_mut().for_each(|a| *a = b);
            for ci in 0..cin {
                let plane = &x[(img * cin + ci) * h * w..][..h * w];
                for ky in 0..kh {
                    for kx in 0..kw {
                        let wv = wt[((co * cin + ci) * kh + ky) * kw + kx] as f64;
                        if wv == 0.0 {
                            continue;
                        }
                        for oy in 0..ho {
                            let iy = (oy * s + ky) as isize - p.pad[0] as isize;
                            if iy < 0 || iy >= h as isize {
                                continue;
                            }
                            let row = &plane[iy as usize * w..][..w];
                            let out = &mut acc[oy * wo..][..wo];
                            for (ox, o) in out.iter_mut().enumerate() {
                                let ix = (ox * s + kx) as isize - p.pad[2] as isize;
                                if ix >= 0 && ix < w as isize {
                                    *o += wv * row[ix as usize] as f64;
                                }
                            }
                        }
                    }
                }
            }
            let dst = &mut y[(img * cout + co) * ho * wo..][..ho * wo];
            for (d, a) in dst.iter_mut().zip(&acc) {
                *d = *a as f32;
            }
        }
    }
    (y, [n, cout, ho, wo])
}
