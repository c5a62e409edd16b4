// LayerNorm over the last dimension: y = (x − μ)/√(σ² + eps)·γ + β per row of C values.
//
// Bindings: 0 x [rows, C] (read), 1 gamma [C] (read), 2 beta [C] (read), 3 y [rows, C]
// (read_write), 4 Params. A workgroup of WG threads handles WG/TPR consecutive rows with TPR
// threads each (TPR a power of two dividing WG, ≥ 8; the launcher picks about 8 values per thread,
// so short rows such as C = 77 share a workgroup and long ones get all of it). Workgroup index
// wg.x + wg.y·nwg.x (grid folded over x and y); rows are contiguous; a dispatch covers the rows of
// one binding window, x_shift / y_shift being the window shifts.
// Two-pass statistics in f32 through shared-memory reductions: pass 1 sums x − K with the pivot
// K = x[row, 0] (so a large common offset does not round the mean), pass 2 sums
// ((x − K) − mean)², pass 3 writes. The first CACHE·TPR values of a row are read once and kept in
// registers; longer rows re-read the rest. C from 1 up to any size.

alias ST = f32;

override WG: u32 = 256u;
override TPR: u32 = 256u;
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

// Sum of `v` over the TPR threads of this thread's row, in two levels of at most RADIX (3
// barriers where a binary tree has up to 9: barriers are costly on CPU implementations). Every
// thread of the row gets the result; `red` is free again on return. Call from uniform control flow.
fn row_sum(li: u32, v: f32) -> f32 {
    red[li] = v;
    workgroupBarrier();
    let r1 = min(RADIX, TPR);
    let k1 = TPR / r1;
    let base = li - li % TPR;
    let sub = li % TPR;
    if (sub < k1) {
        var a = 0.0;
        for (var i = 0u; i < r1; i++) { a += red[base + sub * r1 + i]; }
        red[base + sub * r1] = a;
    }
    workgroupBarrier();
    var r = 0.0;
    for (var i = 0u; i < k1; i++) { r += red[base + i * r1]; }
    workgroupBarrier();
    return r;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let row0 = (wg.x + wg.y * nwg.x) * (WG / TPR);
    if (row0 >= p.rows) { return; }
    let row = row0 + li / TPR;
    let t = li % TPR;
    // Threads of rows past the end keep going (with c = 0) to take part in the barriers.
    var c = 0u;
    if (row < p.rows) { c = p.c; }
    let xb = p.x_shift + row * p.c;
    let yb = p.y_shift + row * p.c;
    var pivot = 0.0;
    if (c > 0u) { pivot = f32(x[xb]); }
    var v: array<f32, CACHE>;
    var s = 0.0;
    for (var k = 0u; k < CACHE; k++) {
        let i = t + k * TPR;
        var d = 0.0;
        if (i < c) { d = f32(x[xb + i]) - pivot; }
        v[k] = d;
        s += d;
    }
    for (var i = t + CACHE * TPR; i < c; i += TPR) {
        s += f32(x[xb + i]) - pivot;
    }
    let mean = row_sum(li, s) / f32(p.c);
    var q = 0.0;
    for (var k = 0u; k < CACHE; k++) {
        if (t + k * TPR < c) {
            let d = v[k] - mean;
            q += d * d;
        }
    }
    for (var i = t + CACHE * TPR; i < c; i += TPR) {
        let d = (f32(x[xb + i]) - pivot) - mean;
        q += d * d;
    }
    let rstd = 1.0 / sqrt(row_sum(li, q) / f32(p.c) + p.eps);
    for (var k = 0u; k < CACHE; k++) {
        let i = t + k * TPR;
        if (i < c) {
            y[yb + i] = ST((v[k] - mean) * rstd * f32(gamma[p.g_shift + i]) + f32(beta[p.b_shift + i]));
        }
    }
    for (var i = t + CACHE * TPR; i < c; i += TPR) {
        let d = (f32(x[xb + i]) - pivot) - mean;
        y[yb + i] = ST(d * rstd * f32(gamma[p.g_shift + i]) + f32(beta[p.b_shift + i]));
    }
}
