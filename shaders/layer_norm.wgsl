// LayerNorm over the last dimension: y = (x − μ)/√(σ² + eps)·γ + β per row of C values.
//
// Bindings: 0 x [rows, C] (read), 1 gamma [C] (read), 2 beta [C] (read), 3 y [rows, C]
// (read_write), 4 Params. One workgroup of WG threads (a power of two in [2·RADIX, MAXWG]) per
// row; the grid is folded over x and y (row = wg.x + wg.y·nwg.x). Rows are contiguous; a dispatch
// covers the rows of one binding window, x_shift / y_shift being the window shifts.
// Two-pass statistics in f32 through shared-memory reductions: pass 1 sums x − K with the pivot
// K = x[row, 0] (so a large common offset does not round the mean), pass 2 sums
// ((x − K) − mean)², pass 3 writes. The first CACHE·WG values of the row are read once and kept
// in registers; longer rows re-read the rest. C from 1 up to any size.

alias ST = f32;

override WG: u32 = 256u;
const MAXWG: u32 = 256u;
const RADIX: u32 = 16u;
// Values per thread kept in registers between the passes.
const CACHE: u32 = 8u;

struct Params {
    rows: u32,
    c: u32,
    x_shift: u32,
    y_shift: u32,
    g_shift: u32,
    b_shift: u32,
    eps: f32,
    pad: u32,
}

@group(0) @binding(0) var<storage, read> x: array<ST>;
@group(0) @binding(1) var<storage, read> gamma: array<ST>;
@group(0) @binding(2) var<storage, read> beta: array<ST>;
@group(0) @binding(3) var<storage, read_write> y: array<ST>;
@group(0) @binding(4) var<uniform> p: Params;

var<workgroup> red: array<f32, MAXWG>;

// Sum of `v` over the workgroup in two radix-RADIX levels (3 barriers where a binary tree has
// 9: barriers are costly on CPU implementations); every thread gets the result. Leaves `red` free.
fn wg_sum(li: u32, v: f32) -> f32 {
    red[li] = v;
    workgroupBarrier();
    let k1 = WG / RADIX;
    if (li < k1) {
        var a = 0.0;
        for (var i = 0u; i < RADIX; i++) { a += red[li * RADIX + i]; }
        red[li * RADIX] = a;
    }
    workgroupBarrier();
    var r = 0.0;
    for (var i = 0u; i < k1; i++) { r += red[i * RADIX]; }
    workgroupBarrier();
    return r;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let row = wg.x + wg.y * nwg.x;
    if (row >= p.rows) { return; }
    let xb = p.x_shift + row * p.c;
    let yb = p.y_shift + row * p.c;
    let pivot = f32(x[xb]);
    // The first CACHE·WG values of the row stay in registers (x − pivot); the rest is re-read.
    var v: array<f32, CACHE>;
    var s = 0.0;
    for (var k = 0u; k < CACHE; k++) {
        let i = li + k * WG;
        var d = 0.0;
        if (i < p.c) { d = f32(x[xb + i]) - pivot; }
        v[k] = d;
        s += d;
    }
    for (var i = li + CACHE * WG; i < p.c; i += WG) {
        s += f32(x[xb + i]) - pivot;
    }
    let mean = wg_sum(li, s) / f32(p.c);
    var q = 0.0;
    for (var k = 0u; k < CACHE; k++) {
        if (li + k * WG < p.c) {
            let d = v[k] - mean;
            q += d * d;
        }
    }
    for (var i = li + CACHE * WG; i < p.c; i += WG) {
        let d = (f32(x[xb + i]) - pivot) - mean;
        q += d * d;
    }
    let rstd = 1.0 / sqrt(wg_sum(li, q) / f32(p.c) + p.eps);
    for (var k = 0u; k < CACHE; k++) {
        let i = li + k * WG;
        if (i < p.c) {
            y[yb + i] = ST((v[k] - mean) * rstd * f32(gamma[p.g_shift + i]) + f32(beta[p.b_shift + i]));
        }
    }
    for (var i = li + CACHE * WG; i < p.c; i += WG) {
        let d = (f32(x[xb + i]) - pivot) - mean;
        y[yb + i] = ST(d * rstd * f32(gamma[p.g_shift + i]) + f32(beta[p.b_shift + i]));
    }
}
