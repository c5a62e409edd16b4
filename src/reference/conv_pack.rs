//! CPU truth for `shaders/conv_pack.wgsl` (and for the host packer `kernels::conv_pack::pack_host`):
//! walks the packed output and asks where each element comes from, the opposite direction to the
//! host packer, so the two are independent.

/// `w [Cout, Cin, KH, KW]` → `[ceil(Cout/tm), Cin, KH·KW, tm]`, zero past Cout.
pub fn conv_pack(w: &[f32], shape: [usize; 4], tm: usize) -> Vec<f32> {
    let [cout, cin, kh, kw] = shape;
    let taps = kh * kw;
    let n = cout.div_ceil(tm) * tm * cin * taps;
    (0..n)
        .map(|e| {
            let (r, t, ci, blk) = (e % tm, (e / tm) % taps, (e / tm / taps) % cin, e / tm / taps / cin);
            let co = blk * tm + r;
            if co < cout {
                w[(co * cin + ci) * taps + t]
            } else {
                0.0
            }
        })
        .collect()
}
