// CFG rescale (diffusers `rescale_noise_cfg`, A1111's "CFG Rescale phi") as a split reduction.
//
// Inputs are two tensors of rows × n values (row = batch item): the conditional model output
// `text` and the guided output `guided`. Per row, f = φ·std(text)/std(guided) + (1 − φ), and
// y = guided·f. Both standard deviations are over the same n values, so the ratio is
// √(M2_text / M2_guided) whatever the degrees of freedom (torch.std's n − 1 cancels). A row
// whose guided M2 is 0 (constant, or n = 1) keeps f = 1: there is no spread to rescale (torch
// would give NaN there).
//
// Three passes, so that neither a long row nor many rows serialise on one workgroup:
// `stats`  bindings: 0 x (read), 1 part_w (read_write, vec4 f32 per chunk), 2 Params.
//   Each row of one tensor is cut into nchunks chunks of `chunk` values (the last shorter);
//   global chunk j = row·nchunks + c. One dispatch covers chunks [j0, j0+count), bound as one
//   window of x starting at chunk j0's first value (x_shift is the window shift). One workgroup
//   per chunk writes part[p_off + j] = (count, pivot, mean − pivot, M2): every thread sums
//   (x − its first value) and its square over its strided values (shifted sums, so a common
//   offset does not cancel), and the workgroup merges the threads' (n, mean, M2) with Chan's
//   formula. The pivot is the chunk's first value. The launcher runs it once per tensor:
//   text at p_off = 0, guided at p_off = rows·nchunks.
// `finish` bindings: 0 part_r (read), 1 factor_w (read_write, f32 per row), 2 Params.
//   One workgroup per row merges the row's partials of each tensor relative to the pivot of the
//   row's first chunk, always in the same order, and writes f.
// `apply`  bindings: 0 x (read: guided), 1 factor_r (read), 2 y (read_write), 3 Params.
//   One invocation per value: y = guided·f[row]. A dispatch covers values [j0, j0+count) of the
//   tensor, bound as windows of x and y (x_shift / y_shift).
// WG must be a power of two in [RADIX, MAXWG]; grids are folded over x and y.

alias ST = f32;

override WG: u32 = 256u;
const MAXWG: u32 = 256u;
const RADIX: u32 = 16u;

struct Params {
    n: u32,
    chunk: u32,
    nchunks: u32,
    rows: u32,
    j0: u32,
    count: u32,
    x_shift: u32,
    y_shift: u32,
    p_off: u32,
    phi: f32,
    pad0: u32,
    pad1: u32,
}

@group(0) @binding(0) var<storage, read> x: array<ST>;
@group(0) @binding(1) var<storage, read_write> part_w: array<vec4<f32>>;
@group(0) @binding(2) var<uniform> ps: Params;

@group(0) @binding(0) var<storage, read> part_r: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> factor_w: array<f32>;

@group(0) @binding(1) var<storage, read> factor_r: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<ST>;
@group(0) @binding(3) var<uniform> pa: Params;

// (count, mean, M2) per slot.
var<workgroup> red: array<vec3<f32>, MAXWG>;

// Chan et al.: merge two (count, mean, M2) summaries; an empty side returns the other.
fn merge(a: vec3<f32>, b: vec3<f32>) -> vec3<f32> {
    if (b.x == 0.0) { return a; }
    if (a.x == 0.0) { return b; }
    let n = a.x + b.x;
    let d = b.y - a.y;
    let f = b.x / n;
    return vec3<f32>(n, a.y + d * f, a.z + b.z + d * d * a.x * f);
}

// Merge the WG summaries of the workgroup in two radix-RADIX levels (2 barriers where a binary
// tree has 8: barriers are costly on CPU implementations). Every thread returns the same result,
// merged in a fixed order. A caller that reduces again must put a barrier in between.
fn reduce(li: u32, st: vec3<f32>) -> vec3<f32> {
    red[li] = st;
    workgroupBarrier();
    let k1 = WG / RADIX;
    if (li < k1) {
        var a = red[li * RADIX];
        for (var i = 1u; i < RADIX; i++) { a = merge(a, red[li * RADIX + i]); }
        red[li * RADIX] = a;
    }
    workgroupBarrier();
    var r = red[0];
    for (var i = 1u; i < k1; i++) { r = merge(r, red[i * RADIX]); }
    return r;
}

@compute @workgroup_size(WG)
fn stats(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) li: u32) {
    let k = wg.x + wg.y * nwg.x;
    if (k >= ps.count) { return; }
    let j = ps.j0 + k;
    let row = j / ps.nchunks;
    let c = j - row * ps.nchunks;
    let row0 = ps.j0 / ps.nchunks;
    let c0 = ps.j0 - row0 * ps.nchunks;
    // row ≥ row0, and c ≥ c0 when row = row0, so this never goes negative.
    let start = (row - row0) * ps.n + c * ps.chunk - c0 * ps.chunk;
    let len = min(ps.chunk, ps.n - c * ps.chunk);
    let base = ps.x_shift + start;
    let pivot = f32(x[base]);
    var kt = 0.0;
    if (li < len) { kt = f32(x[base + li]); }
    var n = 0.0;
    var s = 0.0;
    var q = 0.0;
    for (var i = li; i < len; i += WG) {
        let d = f32(x[base + i]) - kt;
        s += d;
        q += d * d;
        n += 1.0;
    }
    var st = vec3<f32>(0.0);
    if (n > 0.0) {
        let m = s / n;
        st = vec3<f32>(n, (kt - pivot) + m, max(q - s * m, 0.0));
    }
    let t = reduce(li, st);
    if (li == 0u) {
        part_w[ps.p_off + j] = vec4<f32>(t.x, pivot, t.y, t.z);
    }
}

// The merged (count, mean − K0, M2) of a row's partials starting at `pbase`, K0 = the first
// chunk's pivot.
fn row_stats(li: u32, pbase: u32) -> vec3<f32> {
    let k0 = part_r[pbase].y;
    var st = vec3<f32>(0.0);
    for (var i = li; i < ps.nchunks; i += WG) {
        let q = part_r[pbase + i];
        st = merge(st, vec3<f32>(q.x, (q.y - k0) + q.z, q.w));
    }
    return reduce(li, st);
}

@compute @workgroup_size(WG)
fn finish(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) li: u32) {
    let row = wg.x + wg.y * nwg.x;
    if (row >= ps.rows) { return; }
    let text = row_stats(li, row * ps.nchunks);
    workgroupBarrier();
    let guided = row_stats(li, (ps.rows + row) * ps.nchunks);
    if (li == 0u) {
        var f = 1.0;
        if (guided.z > 0.0) {
            f = ps.phi * sqrt(text.z / guided.z) + (1.0 - ps.phi);
        }
        factor_w[row] = f;
    }
}

@compute @workgroup_size(WG)
fn apply(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) li: u32) {
    let i = (wg.x + wg.y * nwg.x) * WG + li;
    if (i >= pa.count) { return; }
    let row = (pa.j0 + i) / pa.n;
    y[pa.y_shift + i] = ST(f32(x[pa.x_shift + i]) * factor_r[row]);
}
