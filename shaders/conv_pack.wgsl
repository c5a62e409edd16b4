// Convolution weight packing for conv2d.wgsl: wp[blk][ci][t][r] = w[blk·TM + r, ci, t], zero for
// channels past Cout. The launcher splits big weights into launches of whole channel blocks: the
// source window starts at output channel blk0·TM (p.cout channels available from there), the
// destination at block blk0. A plain copy in its own module, so it builds on adapters without
// subgroups and costs no compile of conv2d.wgsl's large bodies. One invocation per packed element,
// ceil(p.n / 64) workgroups folded over x and y.

alias ST = f32;

override TM: u32 = 32u;
override TAPS: u32 = 9u;

struct Params {
    cin: u32,
    cout: u32,
    n: u32,
    w_shift: u32,
    o_shift: u32,
}

@group(0) @binding(0) var<storage, read> w: array<ST>;
@group(0) @binding(1) var<storage, read_write> o: array<ST>;
@group(0) @binding(2) var<uniform> p: Params;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let e = (wg.x + wg.y * nwg.x) * 64u + li;
    if (e >= p.n) { return; }
    let r = e % TM;
    let rest = e / TM;
    let t = rest % TAPS;
    let rest2 = rest / TAPS;
    let ci = rest2 % p.cin;
    let co = (rest2 / p.cin) * TM + r;
    var v = ST(0.0);
    if (co < p.cout) {
        v = w[p.w_shift + (co * p.cin + ci) * TAPS + t];
    }
    o[p.o_shift + e] = v;
}
