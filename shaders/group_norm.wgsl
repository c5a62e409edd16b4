// GroupNorm (+ optional fused SiLU) as a split reduction, two entry points.
//
// Layout: x, y [N, C, spatial...] contiguous (NCHW or [N, C, L]). The channels of one group are
// contiguous, so (n, group) is one contiguous "segment" of seg_len = (C/groups)·spatial elements,
// segment s = n·groups + g. Each segment is cut into nchunks "chunks" of `chunk` elements (the last
// one shorter); global chunk j = s·nchunks + c. One dispatch covers chunks [j0, j0+count), whose
// elements are contiguous in x and y and bound as windows starting at that range's first element
// (x_shift / y_shift are the window shifts). One workgroup per chunk, grid folded over x and y.
//
// `stats`  bindings: 0 x (read), 1 part_w (read_write, vec4 f32 per chunk), 2 Params.
//   A workgroup computes its chunk's (count, pivot, mean − pivot, M2) with f32 arithmetic: every
//   thread accumulates sums of (x − its first value) over its strided elements (shifted sums, so a
//   large common offset does not cancel), turns them into (n, mean, M2), and the workgroup merges
//   those with Chan's formula in a shared-memory reduction. The pivot is the chunk's first value.
// `apply`  bindings: 0 x (read), 1 part_r (read), 2 gamma [C] (read), 3 beta [C] (read),
//   4 y (read_write), 5 Params.
//   A workgroup merges all partials of its segment (Chan, relative to the pivot K0 of the
//   segment's first chunk; always in the same order, so every chunk of a segment sees bit-identical
//   statistics), then writes y = (x − K0)·a + b with a = rstd·γ[c], b = β[c] − (μ − K0)·a (then
//   SiLU when SILU = 1) for its chunk. Keeping μ as K0 + a small f32 term is what keeps x − μ
//   accurate at x ≈ 1000 ± 1, where rounding μ itself to f32 would already cost 3e-5·|x|.
//   Channel by channel (uniform γ/β loads) when spatial ≥ WG, else a division per element.
// WG must be a power of two in [2·RADIX, MAXWG].

alias ST = f32;

override WG: u32 = 256u;
override SILU: u32 = 0u;
const MAXWG: u32 = 256u;
const RADIX: u32 = 16u;

struct Params {
    seg_len: u32,
    chunk: u32,
    nchunks: u32,
    spatial: u32,
    cpg: u32,
    groups: u32,
    j0: u32,
    count: u32,
    x_shift: u32,
    y_shift: u32,
    g_shift: u32,
    b_shift: u32,
    eps: f32,
    pad0: u32,
    pad1: u32,
    pad2: u32,
}

@group(0) @binding(0) var<storage, read> x: array<ST>;
@group(0) @binding(1) var<storage, read_write> part_w: array<vec4<f32>>;
@group(0) @binding(2) var<uniform> ps: Params;

@group(0) @binding(1) var<storage, read> part_r: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> gamma: array<ST>;
@group(0) @binding(3) var<storage, read> beta: array<ST>;
@group(0) @binding(4) var<storage, read_write> y: array<ST>;
@group(0) @binding(5) var<uniform> pa: Params;

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

// Merge the WG summaries `st` of the workgroup in two radix-RADIX levels (2 barriers where a
// binary tree has 8: barriers are costly on CPU implementations and cheap elsewhere). Every thread
// returns the same result, merged in a fixed order, so every workgroup of a segment gets
// bit-identical statistics. `red` is not written again afterwards by the callers.
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

fn act(v: f32) -> f32 {
    if (SILU == 1u) { return v / (1.0 + exp(-v)); }
    return v;
}

// Element offset of chunk j inside the dispatch's window (before the shift), and its length.
fn chunk_range(p: Params, j: u32) -> vec2<u32> {
    let seg = j / p.nchunks;
    let c = j - seg * p.nchunks;
    let seg0 = p.j0 / p.nchunks;
    let c0 = p.j0 - seg0 * p.nchunks;
    // seg ≥ seg0, and c ≥ c0 when seg = seg0, so this never goes negative.
    let start = (seg - seg0) * p.seg_len + c * p.chunk - c0 * p.chunk;
    let len = min(p.chunk, p.seg_len - c * p.chunk);
    return vec2<u32>(start, len);
}

@compute @workgroup_size(WG)
fn stats(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) li: u32) {
    let k = wg.x + wg.y * nwg.x;
    if (k >= ps.count) { return; }
    let j = ps.j0 + k;
    let r = chunk_range(ps, j);
    let base = ps.x_shift + r.x;
    let len = r.y;
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
        part_w[j] = vec4<f32>(t.x, pivot, t.y, t.z);
    }
}

@compute @workgroup_size(WG)
fn apply(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) li: u32) {
    let k = wg.x + wg.y * nwg.x;
    if (k >= pa.count) { return; }
    let j = pa.j0 + k;
    let seg = j / pa.nchunks;
    let c = j - seg * pa.nchunks;
    let pbase = seg * pa.nchunks;
    let k0 = part_r[pbase].y;
    var st = vec3<f32>(0.0);
    for (var i = li; i < pa.nchunks; i += WG) {
        let q = part_r[pbase + i];
        st = merge(st, vec3<f32>(q.x, (q.y - k0) + q.z, q.w));
    }
    let t = reduce(li, st);
    let mean = t.y;
    let rstd = 1.0 / sqrt(t.z / t.x + pa.eps);

    let r = chunk_range(pa, j);
    let xb = pa.x_shift + r.x;
    let yb = pa.y_shift + r.x;
    let len = r.y;
    let ch0 = (seg % pa.groups) * pa.cpg;
    let e0 = c * pa.chunk;
    // y = (x − K0)·a + b with a = rstd·γ[ch], b = β[ch] − mean·a.
    if (pa.spatial >= WG) {
        // Walk the chunk channel by channel: a and b are uniform loads, the inner loop is a
        // plain coalesced stream.
        var lo = 0u;
        while (lo < len) {
            let cl = (e0 + lo) / pa.spatial;
            let hi = min(len, (cl + 1u) * pa.spatial - e0);
            let a = rstd * f32(gamma[pa.g_shift + ch0 + cl]);
            let b = f32(beta[pa.b_shift + ch0 + cl]) - mean * a;
            for (var i = lo + li; i < hi; i += WG) {
                y[yb + i] = ST(act((f32(x[xb + i]) - k0) * a + b));
            }
            lo = hi;
        }
    } else {
        // Small images: several channels per WG elements, so find each element's channel.
        for (var i = li; i < len; i += WG) {
            let ch = ch0 + (e0 + i) / pa.spatial;
            let a = rstd * f32(gamma[pa.g_shift + ch]);
            let b = f32(beta[pa.b_shift + ch]) - mean * a;
            y[yb + i] = ST(act((f32(x[xb + i]) - k0) * a + b));
        }
    }
}
