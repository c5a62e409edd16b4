// Softmax over the last dimension: y = exp(x − max) / Σ exp(x − max) per row of `len` values.
//
// Bindings: 0 x [rows, len] (read), 1 y [rows, len] (read_write), 2 Params. A workgroup of WG
// threads handles WG/TPR consecutive rows with TPR threads each (TPR a power of two dividing WG,
// ≥ 8; the launcher picks about 8 values per thread, so the text encoder's 77-long rows share a
// workgroup and 4096-long attention rows get all of it, looping). Workgroup index
// wg.x + wg.y·nwg.x (grid folded over x and y); a dispatch covers the rows of one binding window,
// x_shift / y_shift being the window shifts.
// Pass 1 is an online softmax per thread (running max m and sum s of exp(x − m)), merged across
// the row's threads through shared memory; pass 2 writes. The first CACHE·TPR values of a row are
// read once and kept in registers; longer rows re-read the rest. All f32.

alias ST = f32;

override WG: u32 = 256u;
override TPR: u32 = 256u;
const MAXWG: u32 = 256u;
const RADIX: u32 = 16u;
// Values per thread kept in registers between the passes.
const CACHE: u32 = 8u;
// Start value of the running max: exp(NEG - x) is 0 for every finite x.
const NEG: f32 = -3.4028235e38;

struct Params {
    rows: u32,
    len: u32,
    x_shift: u32,
    y_shift: u32,
}

@group(0) @binding(0) var<storage, read> x: array<ST>;
@group(0) @binding(1) var<storage, read_write> y: array<ST>;
@group(0) @binding(2) var<uniform> p: Params;

var<workgroup> red_m: array<f32, MAXWG>;
var<workgroup> red_s: array<f32, MAXWG>;

// Add value e to the online-softmax state (m, s): one exp either way.
fn step_state(st: vec2<f32>, e: f32) -> vec2<f32> {
    if (e > st.x) { return vec2<f32>(e, st.y * exp(st.x - e) + 1.0); }
    return vec2<f32>(st.x, st.y + exp(e - st.x));
}

// Merge two online-softmax states (max, sum of exp(x − max)).
fn merge(a: vec2<f32>, b: vec2<f32>) -> vec2<f32> {
    let m = max(a.x, b.x);
    return vec2<f32>(m, a.y * exp(a.x - m) + b.y * exp(b.x - m));
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let row0 = (wg.x + wg.y * nwg.x) * (WG / TPR);
    if (row0 >= p.rows) { return; }
    let row = row0 + li / TPR;
    let t = li % TPR;
    // Threads of rows past the end keep going (with len = 0) to take part in the barriers.
    var len = 0u;
    if (row < p.rows) { len = p.len; }
    let xb = p.x_shift + row * p.len;
    let yb = p.y_shift + row * p.len;
    var v: array<f32, CACHE>;
    var st = vec2<f32>(NEG, 0.0);
    for (var k = 0u; k < CACHE; k++) {
        let i = t + k * TPR;
        var e = NEG;
        if (i < len) {
            e = f32(x[xb + i]);
            st = step_state(st, e);
        }
        v[k] = e;
    }
    for (var i = t + CACHE * TPR; i < len; i += TPR) {
        st = step_state(st, f32(x[xb + i]));
    }
    // Merge the row's TPR states in two levels of at most RADIX (2 barriers where a binary tree
    // has up to 8).
    red_m[li] = st.x;
    red_s[li] = st.y;
    workgroupBarrier();
    let r1 = min(RADIX, TPR);
    let k1 = TPR / r1;
    let base = li - t;
    if (t < k1) {
        var a = vec2<f32>(red_m[base + t * r1], red_s[base + t * r1]);
        for (var i = 1u; i < r1; i++) {
            a = merge(a, vec2<f32>(red_m[base + t * r1 + i], red_s[base + t * r1 + i]));
        }
        red_m[base + t * r1] = a.x;
        red_s[base + t * r1] = a.y;
    }
    workgroupBarrier();
    var tot = vec2<f32>(red_m[base], red_s[base]);
    for (var i = 1u; i < k1; i++) {
        tot = merge(tot, vec2<f32>(red_m[base + i * r1], red_s[base + i * r1]));
    }
    let mx = tot.x;
    let inv = 1.0 / tot.y;
    for (var k = 0u; k < CACHE; k++) {
        let i = t + k * TPR;
        if (i < len) { y[yb + i] = ST(exp(v[k] - mx) * inv); }
    }
    for (var i = t + CACHE * TPR; i < len; i += TPR) {
        y[yb + i] = ST(exp(f32(x[xb + i]) - mx) * inv);
    }
}
