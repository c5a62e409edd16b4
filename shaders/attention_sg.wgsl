// Multi-head attention for CPU adapters (lavapipe): the same contract as `attention.wgsl`
// (softmax(scale · q·kᵀ [+ causal mask]) · v per head, online softmax in f32, f16 or f32 storage)
// without workgroup memory or barriers.
//
// Why: on lavapipe a workgroup runs on one CPU thread, SIMD across its invocations (8 lanes on
// AVX2). Every storage or workgroup-memory load is a scalar loop over the lanes, and every
// barrier a coroutine switch, while arithmetic on private values is one vector instruction for
// all lanes and subgroupBroadcast from a constant lane is a register shuffle. So here each lane
// owns R query rows outright (rows q0 + lane + SG·r): its pre-scaled Q rows and its O
// accumulators live in private variables, named per head-dim vec4 column and indexed only by
// constants, so they stay in registers or the CPU stack (vector spills, no per-lane loops). The
// keys are walked in blocks of SG: lane l loads key kt + l's K row (one vec4 at a time) and every
// vec4 is handed to all lanes with subgroupBroadcast, so each K and V element is loaded once per
// workgroup and feeds R rows' multiply-adds. Softmax needs no cross-lane reduction at all: each
// lane rescales its own rows.
//
// This file is a template: the launcher (src/kernels/attention_sg.rs) replaces the lines starting
// with `//#` by code unrolled over the head dim's vec4 columns (D4 = D/4), the key lanes (SG) and
// the rows (R), since private arrays indexed by a loop variable would become per-lane memory
// loops on lavapipe. As written (no expansion) the file is valid WGSL but computes nothing useful.
//
// Bindings: 0 q [nb, sq, H·D], 1 k [nb, sk, H·D], 2 v [nb, sk, H·D] (read, as vec4), 3 out
// [nb, sq, H·D] (read_write, as vec4), 4 Params (uniform; the same struct as attention.wgsl).
// Needs D % 4 == 0 and every window shift % 4 == 0 (the launcher checks). A launch may cover
// query rows row0..row0+nr of each batch (rows are counted from the window; `row0` only serves
// the causal mask). Grid: groups = nb·H·nqt workgroups of SG invocations, query tile fastest,
// folded over x and y; workgroups past the end return. Rows past nr read a clamped row and are
// not stored; keys past sk read a clamped key and are masked to −1e30, so P = 0 for them (the
// first block always holds key 0, which no row masks, so the running max is finite after it).
// Lavapipe ends every loop after 65535 iterations per invocation: the key loop runs sk/SG times.

alias ST = f32;

override SG: u32 = 8u;  // lanes per subgroup = invocations per workgroup (the code is unrolled for it)
override R: u32 = 1u;   // query rows per lane (the code is unrolled for it)
override D4: u32 = 1u;  // vec4 columns of the head dim (the code is unrolled for it)

const NEG: f32 = -1e30;

struct Params {
    nb: u32,
    sq: u32,
    nr: u32,
    row0: u32,
    sk: u32,
    heads: u32,
    hd: u32,
    nqt: u32,
    groups: u32,
    q_shift: u32,
    k_shift: u32,
    v_shift: u32,
    o_shift: u32,
    causal: u32,
    scale_log2: f32,
    d: u32,
}

@group(0) @binding(0) var<storage, read> q: array<vec4<ST>>;
@group(0) @binding(1) var<storage, read> k: array<vec4<ST>>;
@group(0) @binding(2) var<storage, read> v: array<vec4<ST>>;
@group(0) @binding(3) var<storage, read_write> o: array<vec4<ST>>;
@group(0) @binding(4) var<uniform> p: Params;

// Scores of a key block past the last key, or after the query row when causal, become NEG.
fn mask(s: f32, j: u32, nk: u32, kt: u32, row: u32) -> f32 {
    if (j >= nk || (p.causal != 0u && kt + j > row)) {
        return NEG;
    }
    return s;
}

@compute @workgroup_size(SG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(subgroup_invocation_id) lane: u32) {
    let wid = wg.x + wg.y * nwg.x;
    if (wid >= p.groups) {
        return;
    }
    let qt = wid % p.nqt;
    let bh = wid / p.nqt;
    let h = bh % p.heads;
    let b = bh / p.heads;
    let q0 = qt * SG * R;
    let hd4 = p.hd / 4u;
    // vec4 index of this (batch, head)'s row 0 in each window.
    let qb = (p.q_shift + b * p.sq * p.hd + h * p.d) / 4u;
    let ob = (p.o_shift + b * p.sq * p.hd + h * p.d) / 4u;
    let kb = (p.k_shift + b * p.sk * p.hd + h * p.d) / 4u;
    let vb = (p.v_shift + b * p.sk * p.hd + h * p.d) / 4u;
    let rlast = p.nr - 1u;
    let sc = p.scale_log2;
    // Per row r: its window row `row<r>`, the row read (clamped) `qa<r>`, global row `g<r>`
    // (causal mask), pre-scaled Q `q<r>_<c>`, O accumulators `o<r>_<c>`, running max and sum.
//# rows

    var kend = p.sk;
    if (p.causal != 0u) {
        kend = min(p.sk, p.row0 + q0 + SG * R);
    }
    for (var kt = 0u; kt < kend; kt = kt + SG) {
        let nk = p.sk - kt;
        let ka = kb + min(kt + lane, p.sk - 1u) * hd4;
        let va = vb + min(kt + lane, p.sk - 1u) * hd4;
        // S phase: s<r>_<j> = q<r> · K[kt + j] (Q already in log2 units), K rows broadcast.
//# scores
        // Online softmax per row: new max, rescale α, P = 2^(s − m), O and l rescaled by α.
//# softmax
        // O phase: o<r>_<c> += Σ_j p<r>_<j> · V[kt + j] column c, V rows broadcast.
//# pv
    }
//# store
}
