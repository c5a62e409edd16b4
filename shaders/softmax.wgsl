// Softmax over the last dimension: y = exp(x − max) / Σ exp(x − max) per row of `len` values.
//
// Bindings: 0 x [rows, len] (read), 1 y [rows, len] (read_write), 2 Params. One workgroup of WG
// threads (a power of two in [2·RADIX, MAXWG]) per row, looping over the row, so any length
// works (77 for the text encoder, 4096+ for attention rows). Grid folded over x and y (row = wg.x + wg.y·nwg.x); a
// dispatch covers the rows of one binding window, x_shift / y_shift being the window shifts.
// Pass 1 is an online softmax per thread (running max m and sum s of exp(x − m)), merged across
// the workgroup through shared memory; pass 2 writes. The first CACHE·WG values of the row are read
// once and kept in registers; longer rows re-read the rest. All f32.

alias ST = f32;

override WG: u32 = 256u;
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
fn step_state(m: f32, s: f32, e: f32) -> vec2<f32> {
    if (e > m) { return vec2<f32>(e, s * exp(m - e) + 1.0); }
    return vec2<f32>(m, s + exp(e - m));
}

// Merge two online-softmax states (max, sum of exp(x − max)).
fn merge(ma: f32, sa: f32, mb: f32, sb: f32) -> vec2<f32> {
    let m = max(ma, mb);
    return vec2<f32>(m, sa * exp(ma - m) + sb * exp(mb - m));
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let row = wg.x + wg.y * nwg.x;
    if (row >= p.rows) { return; }
    let xb = p.x_shift + row * p.len;
    let yb = p.y_shift + row * p.len;
    // The first CACHE·WG values of the row stay in registers; the rest is re-read.
    var v: array<f32, CACHE>;
    var m = NEG;
    var s = 0.0;
    for (var k = 0u; k < CACHE; k++) {
        let i = li + k * WG;
        var e = NEG;
        if (i < p.len) {
            e = f32(x[xb + i]);
            let r = step_state(m, s, e);
            m = r.x;
            s = r.y;
        }
        v[k] = e;
    }
    for (var i = li + CACHE * WG; i < p.len; i += WG) {
        let r = step_state(m, s, f32(x[xb + i]));
        m = r.x;
        s = r.y;
    }
    // Merge the (m, s) pairs in two radix-RADIX levels (2 barriers where a binary tree has 8).
    red_m[li] = m;
    red_s[li] = s;
    workgroupBarrier();
    let k1 = WG / RADIX;
    if (li < k1) {
        var mm = red_m[li * RADIX];
        var ss = red_s[li * RADIX];
        for (var i = 1u; i < RADIX; i++) {
            let r = merge(mm, ss, red_m[li * RADIX + i], red_s[li * RADIX + i]);
            mm = r.x;
            ss = r.y;
        }
        red_m[li * RADIX] = mm;
        red_s[li * RADIX] = ss;
    }
    workgroupBarrier();
    var mx = red_m[0];
    var sum = red_s[0];
    for (var i = 1u; i < k1; i++) {
        let r = merge(mx, sum, red_m[i * RADIX], red_s[i * RADIX]);
        mx = r.x;
        sum = r.y;
    }
    let inv = 1.0 / sum;
    for (var k = 0u; k < CACHE; k++) {
        let i = li + k * WG;
        if (i < p.len) { y[yb + i] = ST(exp(v[k] - mx) * inv); }
    }
    for (var i = li + CACHE * WG; i < p.len; i += WG) {
        y[yb + i] = ST(exp(f32(x[xb + i]) - mx) * inv);
    }
}
