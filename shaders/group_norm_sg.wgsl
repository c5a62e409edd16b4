// GroupNorm (+ optional fused SiLU) for CPU adapters (lavapipe): the contract, layout, Params,
// chunking and accuracy scheme of group_norm.wgsl (pivoted per-chunk partials, Chan merges, every
// chunk of a segment merging its partials in the same order), with workgroups of one subgroup of
// SG lanes, vec4 loads and stores, and subgroup shuffles instead of workgroup memory and barriers.
//
// Why: on lavapipe a workgroup runs on one CPU thread, SIMD across its lanes; each storage access
// is a scalar loop over the lanes (so one vec4 access moves 4× the data of a scalar one for the
// same cost), and barriers are coroutine switches, while private arithmetic and subgroup
// operations are vector instructions.
//
// Needs seg_len, chunk and spatial multiples of 4 and x_shift, y_shift multiples of 4 (the
// launcher checks), so a vec4 never straddles a chunk or a channel. Each lane keeps per-component
// shifted sums of its vec4s (pivot: its own first vec4), turns them into four (n, mean, M2)
// summaries and merges them; lanes then merge by a shuffle butterfly and take lane 0's result,
// so every lane, and every workgroup of a segment, uses the same bits.

alias ST = f32;

override SG: u32 = 8u;
override SILU: u32 = 0u;

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

@group(0) @binding(0) var<storage, read> x: array<vec4<ST>>;
@group(0) @binding(1) var<storage, read_write> part_w: array<vec4<f32>>;
@group(0) @binding(2) var<uniform> ps: Params;

@group(0) @binding(1) var<storage, read> part_r: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> gamma: array<ST>;
@group(0) @binding(3) var<storage, read> beta: array<ST>;
@group(0) @binding(4) var<storage, read_write> y: array<vec4<ST>>;
@group(0) @binding(5) var<uniform> pa: Params;

// Chan et al.: merge two (count, mean, M2) summaries; an empty side returns the other.
fn merge(a: vec3<f32>, b: vec3<f32>) -> vec3<f32> {
    if (b.x == 0.0) { return a; }
    if (a.x == 0.0) { return b; }
    let n = a.x + b.x;
    let d = b.y - a.y;
    let f = b.x / n;
    return vec3<f32>(n, a.y + d * f, a.z + b.z + d * d * a.x * f);
}

// Lane 0's merge of all lanes' summaries, in every lane.
fn reduce(st: vec3<f32>) -> vec3<f32> {
    var a = st;
    for (var m = 1u; m < SG; m <<= 1u) {
        a = merge(a, subgroupShuffleXor(a, m));
    }
    return subgroupBroadcast(a, 0u);
}

fn act(v: vec4<f32>) -> vec4<f32> {
    if (SILU == 1u) { return v / (1.0 + exp(-v)); }
    return v;
}

// Element offset of chunk j inside the dispatch's window (before the shift), and its length.
fn chunk_range(p: Params, j: u32) -> vec2<u32> {
    let seg = j / p.nchunks;
    let c = j - seg * p.nchunks;
    let seg0 = p.j0 / p.nchunks;
    let c0 = p.j0 - seg0 * p.nchunks;
    let start = (seg - seg0) * p.seg_len + c * p.chunk - c0 * p.chunk;
    let len = min(p.chunk, p.seg_len - c * p.chunk);
    return vec2<u32>(start, len);
}

@compute @workgroup_size(SG)
fn stats(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(subgroup_invocation_id) lane: u32) {
    let k = wg.x + wg.y * nwg.x;
    if (k >= ps.count) { return; }
    let j = ps.j0 + k;
    let r = chunk_range(ps, j);
    let base = (ps.x_shift + r.x) / 4u;
    let len4 = r.y / 4u;
    let pivot = f32(x[base].x);
    var kt = vec4<f32>(0.0);
    if (lane < len4) { kt = vec4<f32>(x[base + lane]); }
    var n = 0.0;
    var s = vec4<f32>(0.0);
    var q = vec4<f32>(0.0);
    for (var i = lane; i < len4; i += SG) {
        let d = vec4<f32>(x[base + i]) - kt;
        s += d;
        q += d * d;
        n += 1.0;
    }
    var st = vec3<f32>(0.0);
    if (n > 0.0) {
        let m = s / n;
        let mu = (kt - pivot) + m;
        let m2 = max(q - s * m, vec4<f32>(0.0));
        st = merge(merge(vec3<f32>(n, mu.x, m2.x), vec3<f32>(n, mu.y, m2.y)),
                   merge(vec3<f32>(n, mu.z, m2.z), vec3<f32>(n, mu.w, m2.w)));
    }
    let t = reduce(st);
    if (lane == 0u) {
        part_w[j] = vec4<f32>(t.x, pivot, t.y, t.z);
    }
}

@compute @workgroup_size(SG)
fn apply(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(subgroup_invocation_id) lane: u32) {
    let k = wg.x + wg.y * nwg.x;
    if (k >= pa.count) { return; }
    let j = pa.j0 + k;
    let seg = j / pa.nchunks;
    let c = j - seg * pa.nchunks;
    let pbase = seg * pa.nchunks;
    let k0 = part_r[pbase].y;
    var st = vec3<f32>(0.0);
    for (var i = lane; i < pa.nchunks; i += SG) {
        let q = part_r[pbase + i];
        st = merge(st, vec3<f32>(q.x, (q.y - k0) + q.z, q.w));
    }
    let t = reduce(st);
    let mean = t.y;
    let rstd = 1.0 / sqrt(t.z / t.x + pa.eps);

    let r = chunk_range(pa, j);
    let xb = (pa.x_shift + r.x) / 4u;
    let yb = (pa.y_shift + r.x) / 4u;
    let len = r.y;
    let ch0 = (seg % pa.groups) * pa.cpg;
    let e0 = c * pa.chunk;
    // Channel by channel, so γ and β are uniform loads once per channel.
    var lo = 0u;
    while (lo < len) {
        let cl = (e0 + lo) / pa.spatial;
        let hi = min(len, (cl + 1u) * pa.spatial - e0);
        let a = rstd * f32(gamma[pa.g_shift + ch0 + cl]);
        let b = f32(beta[pa.b_shift + ch0 + cl]) - mean * a;
        for (var i = lo / 4u + lane; i < hi / 4u; i += SG) {
            y[yb + i] = vec4<ST>(act((vec4<f32>(x[xb + i]) - k0) * a + b));
        }
        lo = hi;
    }
}
