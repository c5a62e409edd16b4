// GEMM with f32 accumulation: C = A·op(B) [+ A2·B2ᵀ] [+ bias] [+ C], batched, for `linear`,
// `matmul` and the fused LoRA linear (kernels::matmul, kernels::lora_linear).
//
// Layouts (row-major, element offsets inside the bound windows; `*_shift` is where each window's
// first requested element sits, `ld*` are row strides in elements):
//   A  [batch, M, K]        a[a_shift + bi*a_bstride + m*lda + k]
//   B  TRANS_B=1: [N, K]    b[b_shift + bi*b_bstride + n*ldb + k]    (PyTorch linear weight)
//      TRANS_B=0: [K, N]    b[b_shift + bi*b_bstride + k*ldb + n]
//   A2 [M, K2], B2 [N, K2]  second K segment (SEG2=1): the LoRA pair [x | t]·[W | B_cat]ᵀ
//   bias [N] (flags bit 0), C [batch, M, N] c[c_shift + bi*c_bstride + m*ldc + n];
//   flags bit 1 adds the C already stored (K split over several launches).
// Bindings: 0 A, 1 B, 2 A2, 3 B2, 4 bias (read; unused ones are bound to any buffer), 5 C
// (read_write), 6 Params (uniform); `sg` also reads A, B, A2, B2 as vec4s through bindings 7-10
// (the same windows bound a second time; separate bindings rather than aliases of 0-3, which
// some backends reject).
// Grid: one workgroup per output tile, linear tile id = wg.x + wg.y * num_workgroups.x (folded by
// registry::fold_groups), ordered n-tile fastest, then m-tile, then batch; ids past the end exit.
// The launcher keeps K per launch ≤ 16384 (more is summed over launches with flags bit 1), so no
// invocation runs more than 65535 loop iterations: lavapipe silently ends a shader's loops there.
//
// Two entry points over the same bindings (`sg` below the "==== sg kernel" line, which `tiled`
// pipelines leave out):
//   `tiled`: the portable kernel. A BM x BN tile per workgroup of WG = (BM/4)(BN/4) threads, K in
//     steps of BK staged in workgroup memory k-major (As[k][m], Bs[k][n] as vec4s), each thread
//     accumulating a 4x4 block in four named vec4 registers. Any shape and alignment; every
//     global read is bounds-checked (out-of-range tile elements read as 0).
//   `sg`: for CPU adapters (lavapipe), where every divergent memory access costs a per-lane loop
//     but subgroupBroadcast from a constant lane is one shuffle. One subgroup of SG lanes per
//     workgroup computes a 32 x 8·SG tile: each lane owns 8 columns and all 32 rows; the 32 rows of
//     A are loaded cooperatively (lane l loads rows l, 8+l, 16+l, 24+l as vec4s along K) and handed
//     to every lane by subgroupBroadcast, so each lane reads only its own 8 columns of B (lanes
//     past 8, where SG > 8, load duplicate rows). The 256 accumulators per lane are named private
//     vec4s (acc00l..acc31r, zero-initialised). Needs K (and K2) % 4 == 0, N % 4 == 0 when
//     TRANS_B=0, and A/B/A2/B2 windows starting at multiples of 4 elements, since it reads them
//     as vec4 (the launcher checks and otherwise uses `tiled`). Reads clamp rows/columns into
//     range; writes are guarded.

alias ST = f32;

override TRANS_B: u32 = 1u;
override SEG2: u32 = 0u;
// `tiled` tile sizes: BM, BN multiples of 4, WG = (BM / 4) * (BN / 4).
override BM: u32 = 64u;
override BN: u32 = 64u;
override BK: u32 = 16u;
override WG: u32 = 256u;
// `sg`: lanes per subgroup (= workgroup size; lavapipe on AVX2: 8).
override SG: u32 = 8u;
// `sg`: row blocks of 32 per workgroup (1 or 2; 2 shares each B load between 64 rows).
override RB: u32 = 1u;

struct Params {
    m: u32, n: u32, k1: u32, k2: u32,
    lda: u32, ldb: u32, lda2: u32, ldb2: u32,
    ldc: u32, a_shift: u32, b_shift: u32, a2_shift: u32,
    b2_shift: u32, c_shift: u32, bias_shift: u32, flags: u32,
    batch: u32, tiles_n: u32, tiles_m: u32, a_bstride: u32,
    b_bstride: u32, c_bstride: u32, _p0: u32, _p1: u32,
}

@group(0) @binding(0) var<storage, read> a: array<ST>;
@group(0) @binding(1) var<storage, read> b: array<ST>;
@group(0) @binding(2) var<storage, read> a2: array<ST>;
@group(0) @binding(3) var<storage, read> b2: array<ST>;
@group(0) @binding(4) var<storage, read> bias: array<ST>;
@group(0) @binding(5) var<storage, read_write> c: array<ST>;
@group(0) @binding(6) var<uniform> p: Params;
// vec4 views of bindings 0-3 (entry `sg`).
@group(0) @binding(7) var<storage, read> a4: array<vec4<ST>>;
@group(0) @binding(8) var<storage, read> b4: array<vec4<ST>>;
@group(0) @binding(9) var<storage, read> a24: array<vec4<ST>>;
@group(0) @binding(10) var<storage, read> b24: array<vec4<ST>>;

const FLAG_BIAS: u32 = 1u;
const FLAG_ACCUM: u32 = 2u;

struct TileId { n0: u32, m0: u32, bi: u32, live: bool }

fn tile_id(wg: vec3<u32>, nwg: vec3<u32>, tile_m: u32, tile_n: u32) -> TileId {
    let t = wg.x + wg.y * nwg.x;
    let rest = t / p.tiles_n;
    let bi = rest / p.tiles_m;
    return TileId((t % p.tiles_n) * tile_n, (rest % p.tiles_m) * tile_m, bi, bi < p.batch);
}

// One output element: + bias (already in v), + old C when accumulating, stored if in range.
fn put(c_base: u32, row: u32, col: u32, v: f32) {
    if (row < p.m && col < p.n) {
        let o = c_base + row * p.ldc + col;
        var x = v;
        if ((p.flags & FLAG_ACCUM) != 0u) { x += f32(c[o]); }
        c[o] = ST(x);
    }
}

fn bias_at(col: u32) -> f32 {
    if ((p.flags & FLAG_BIAS) != 0u && col < p.n) { return f32(bias[p.bias_shift + col]); }
    return 0.0;
}

// ---------------------------------------------------------------------------------------------
// `tiled`

// k-major tiles, one vec4 of padding per k-row so that the transposing stores (consecutive threads
// walk k) spread over memory banks.
override AS_ROW: u32 = BM / 4u + 1u;
override BS_ROW: u32 = BN / 4u + 1u;
var<workgroup> As: array<vec4<f32>, BK * AS_ROW>;
var<workgroup> Bs: array<vec4<f32>, BK * BS_ROW>;

@compute @workgroup_size(WG)
fn tiled(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let id = tile_id(wg, nwg, BM, BN);
    let a_base = p.a_shift + id.bi * p.a_bstride;
    let b_base = p.b_shift + id.bi * p.b_bstride;
    let tx = lid % (BN / 4u);
    let ty = lid / (BN / 4u);
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    let nt1 = (p.k1 + BK - 1u) / BK;
    var nt = nt1;
    if (SEG2 != 0u) { nt += (p.k2 + BK - 1u) / BK; }
    if (!id.live) { nt = 0u; }
    // `nt` is uniform over the workgroup, so every thread reaches the same barriers.
    for (var t = 0u; t < nt; t++) {
        if (t < nt1) {
            let k0 = t * BK;
            for (var i = lid; i < BM * BK; i += WG) {
                let r = i / BK;
                let kk = i % BK;
                var v = 0.0;
                if (id.m0 + r < p.m && k0 + kk < p.k1) {
                    v = f32(a[a_base + (id.m0 + r) * p.lda + k0 + kk]);
                }
                As[kk * AS_ROW + r / 4u][r % 4u] = v;
            }
            for (var i = lid; i < BN * BK; i += WG) {
                var cc: u32;
                var kk: u32;
                if (TRANS_B != 0u) { cc = i / BK; kk = i % BK; } else { kk = i / BN; cc = i % BN; }
                var v = 0.0;
                if (id.n0 + cc < p.n && k0 + kk < p.k1) {
                    if (TRANS_B != 0u) {
                        v = f32(b[b_base + (id.n0 + cc) * p.ldb + k0 + kk]);
                    } else {
                        v = f32(b[b_base + (k0 + kk) * p.ldb + id.n0 + cc]);
                    }
                }
                Bs[kk * BS_ROW + cc / 4u][cc % 4u] = v;
            }
        } else {
            let k0 = (t - nt1) * BK;
            for (var i = lid; i < BM * BK; i += WG) {
                let r = i / BK;
                let kk = i % BK;
                var v = 0.0;
                if (id.m0 + r < p.m && k0 + kk < p.k2) {
                    v = f32(a2[p.a2_shift + (id.m0 + r) * p.lda2 + k0 + kk]);
                }
                As[kk * AS_ROW + r / 4u][r % 4u] = v;
            }
            for (var i = lid; i < BN * BK; i += WG) {
                let cc = i / BK;
                let kk = i % BK;
                var v = 0.0;
                if (id.n0 + cc < p.n && k0 + kk < p.k2) {
                    v = f32(b2[p.b2_shift + (id.n0 + cc) * p.ldb2 + k0 + kk]);
                }
                Bs[kk * BS_ROW + cc / 4u][cc % 4u] = v;
            }
        }
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk++) {
            let av = As[kk * AS_ROW + ty];
            let bv = Bs[kk * BS_ROW + tx];
            acc0 = fma(vec4<f32>(av.x), bv, acc0);
            acc1 = fma(vec4<f32>(av.y), bv, acc1);
            acc2 = fma(vec4<f32>(av.z), bv, acc2);
            acc3 = fma(vec4<f32>(av.w), bv, acc3);
        }
        workgroupBarrier();
    }
    if (!id.live) { return; }
    let col = id.n0 + tx * 4u;
    let row = id.m0 + ty * 4u;
    let bv = vec4<f32>(bias_at(col), bias_at(col + 1u), bias_at(col + 2u), bias_at(col + 3u));
    let c_base = p.c_shift + id.bi * p.c_bstride;
    put4(c_base, row, col, acc0 + bv);
    put4(c_base, row + 1u, col, acc1 + bv);
    put4(c_base, row + 2u, col, acc2 + bv);
    put4(c_base, row + 3u, col, acc3 + bv);
}

fn put4(c_base: u32, row: u32, col: u32, v: vec4<f32>) {
    put(c_base, row, col, v.x);
    put(c_base, row, col + 1u, v.y);
    put(c_base, row, col + 2u, v.z);
    put(c_base, row, col + 3u, v.w);
}

// ==== sg kernel ==============================================================================
// Everything above this line is a complete shader on its own: the launcher builds the `tiled`
// pipelines from that part alone, so they do not need the SUBGROUP feature.
// `sg`: 32 rows x 8 columns per lane (see the opening comment).

@compute @workgroup_size(SG)
fn sg(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
      @builtin(subgroup_invocation_id) lane: u32) {
    let id = tile_id(wg, nwg, 32u * RB, 8u * SG);
    let col = id.n0 + lane * 8u;
    let r8 = lane % 8u;
    var nk = p.k1 / 4u;
    if (!id.live) { nk = 0u; }
    // Rows this lane loads for the broadcast, clamped into range (extra rows are never stored).
    let mlast = p.m - 1u;
    let ra0 = min(id.m0 + r8, mlast);
    let ra1 = min(id.m0 + 8u + r8, mlast);
    let ra2 = min(id.m0 + 16u + r8, mlast);
    let ra3 = min(id.m0 + 24u + r8, mlast);
    let ra4 = min(id.m0 + 32u + r8, mlast);
    let ra5 = min(id.m0 + 40u + r8, mlast);
    let ra6 = min(id.m0 + 48u + r8, mlast);
    let ra7 = min(id.m0 + 56u + r8, mlast);
    let a_v = (p.a_shift + id.bi * p.a_bstride) / 4u;
    let b_v = (p.b_shift + id.bi * p.b_bstride) / 4u;
    let lda4 = p.lda / 4u;
    let ldb4 = p.ldb / 4u;
    if (TRANS_B != 0u) {
        // This lane's 8 weight rows (columns of C), clamped.
        let nlast = p.n - 1u;
        let w0 = b_v + min(col, nlast) * ldb4;
        let w1 = b_v + min(col + 1u, nlast) * ldb4;
        let w2 = b_v + min(col + 2u, nlast) * ldb4;
        let w3 = b_v + min(col + 3u, nlast) * ldb4;
        let w4 = b_v + min(col + 4u, nlast) * ldb4;
        let w5 = b_v + min(col + 5u, nlast) * ldb4;
        let w6 = b_v + min(col + 6u, nlast) * ldb4;
        let w7 = b_v + min(col + 7u, nlast) * ldb4;
        for (var t = 0u; t < nk; t++) {
            let x0 = vec4<f32>(a4[a_v + ra0 * lda4 + t]);
            let x1 = vec4<f32>(a4[a_v + ra1 * lda4 + t]);
            let x2 = vec4<f32>(a4[a_v + ra2 * lda4 + t]);
            let x3 = vec4<f32>(a4[a_v + ra3 * lda4 + t]);
            let q0 = vec4<f32>(b4[w0 + t]);
            let q1 = vec4<f32>(b4[w1 + t]);
            let q2 = vec4<f32>(b4[w2 + t]);
            let q3 = vec4<f32>(b4[w3 + t]);
            let q4 = vec4<f32>(b4[w4 + t]);
            let q5 = vec4<f32>(b4[w5 + t]);
            let q6 = vec4<f32>(b4[w6 + t]);
            let q7 = vec4<f32>(b4[w7 + t]);
            let bl0 = vec4(q0.x, q1.x, q2.x, q3.x);
            let bl1 = vec4(q0.y, q1.y, q2.y, q3.y);
            let bl2 = vec4(q0.z, q1.z, q2.z, q3.z);
            let bl3 = vec4(q0.w, q1.w, q2.w, q3.w);
            let br0 = vec4(q4.x, q5.x, q6.x, q7.x);
            let br1 = vec4(q4.y, q5.y, q6.y, q7.y);
            let br2 = vec4(q4.z, q5.z, q6.z, q7.z);
            let br3 = vec4(q4.w, q5.w, q6.w, q7.w);
            mac(x0, x1, x2, x3, bl0, bl1, bl2, bl3, br0, br1, br2, br3);
            if (RB == 2u) {
                let x4 = vec4<f32>(a4[a_v + ra4 * lda4 + t]);
                let x5 = vec4<f32>(a4[a_v + ra5 * lda4 + t]);
                let x6 = vec4<f32>(a4[a_v + ra6 * lda4 + t]);
                let x7 = vec4<f32>(a4[a_v + ra7 * lda4 + t]);
                mac_hi(x4, x5, x6, x7, bl0, bl1, bl2, bl3, br0, br1, br2, br3);
            }
        }
    } else {
        // B is [K, N]: this lane's 8 columns are two vec4s of each row of B (N % 4 == 0).
        let cl = b_v + min(col, p.n - 4u) / 4u;
        let cr = b_v + min(col + 4u, p.n - 4u) / 4u;
        for (var t = 0u; t < nk; t++) {
            let x0 = vec4<f32>(a4[a_v + ra0 * lda4 + t]);
            let x1 = vec4<f32>(a4[a_v + ra1 * lda4 + t]);
            let x2 = vec4<f32>(a4[a_v + ra2 * lda4 + t]);
            let x3 = vec4<f32>(a4[a_v + ra3 * lda4 + t]);
            let k0 = 4u * t * ldb4;
            let bl0 = vec4<f32>(b4[cl + k0]);
            let bl1 = vec4<f32>(b4[cl + k0 + ldb4]);
            let bl2 = vec4<f32>(b4[cl + k0 + 2u * ldb4]);
            let bl3 = vec4<f32>(b4[cl + k0 + 3u * ldb4]);
            let br0 = vec4<f32>(b4[cr + k0]);
            let br1 = vec4<f32>(b4[cr + k0 + ldb4]);
            let br2 = vec4<f32>(b4[cr + k0 + 2u * ldb4]);
            let br3 = vec4<f32>(b4[cr + k0 + 3u * ldb4]);
            mac(x0, x1, x2, x3, bl0, bl1, bl2, bl3, br0, br1, br2, br3);
            if (RB == 2u) {
                let x4 = vec4<f32>(a4[a_v + ra4 * lda4 + t]);
                let x5 = vec4<f32>(a4[a_v + ra5 * lda4 + t]);
                let x6 = vec4<f32>(a4[a_v + ra6 * lda4 + t]);
                let x7 = vec4<f32>(a4[a_v + ra7 * lda4 + t]);
                mac_hi(x4, x5, x6, x7, bl0, bl1, bl2, bl3, br0, br1, br2, br3);
            }
        }
    }
    if (SEG2 != 0u) {
        var nk2 = p.k2 / 4u;
        if (!id.live) { nk2 = 0u; }
        let a2_v = p.a2_shift / 4u;
        let b2_v = p.b2_shift / 4u;
        let lda24 = p.lda2 / 4u;
        let ldb24 = p.ldb2 / 4u;
        let nlast = p.n - 1u;
        let w0 = b2_v + min(col, nlast) * ldb24;
        let w1 = b2_v + min(col + 1u, nlast) * ldb24;
        let w2 = b2_v + min(col + 2u, nlast) * ldb24;
        let w3 = b2_v + min(col + 3u, nlast) * ldb24;
        let w4 = b2_v + min(col + 4u, nlast) * ldb24;
        let w5 = b2_v + min(col + 5u, nlast) * ldb24;
        let w6 = b2_v + min(col + 6u, nlast) * ldb24;
        let w7 = b2_v + min(col + 7u, nlast) * ldb24;
        for (var t = 0u; t < nk2; t++) {
            let x0 = vec4<f32>(a24[a2_v + ra0 * lda24 + t]);
            let x1 = vec4<f32>(a24[a2_v + ra1 * lda24 + t]);
            let x2 = vec4<f32>(a24[a2_v + ra2 * lda24 + t]);
            let x3 = vec4<f32>(a24[a2_v + ra3 * lda24 + t]);
            let q0 = vec4<f32>(b24[w0 + t]);
            let q1 = vec4<f32>(b24[w1 + t]);
            let q2 = vec4<f32>(b24[w2 + t]);
            let q3 = vec4<f32>(b24[w3 + t]);
            let q4 = vec4<f32>(b24[w4 + t]);
            let q5 = vec4<f32>(b24[w5 + t]);
            let q6 = vec4<f32>(b24[w6 + t]);
            let q7 = vec4<f32>(b24[w7 + t]);
            let bl0 = vec4(q0.x, q1.x, q2.x, q3.x);
            let bl1 = vec4(q0.y, q1.y, q2.y, q3.y);
            let bl2 = vec4(q0.z, q1.z, q2.z, q3.z);
            let bl3 = vec4(q0.w, q1.w, q2.w, q3.w);
            let br0 = vec4(q4.x, q5.x, q6.x, q7.x);
            let br1 = vec4(q4.y, q5.y, q6.y, q7.y);
            let br2 = vec4(q4.z, q5.z, q6.z, q7.z);
            let br3 = vec4(q4.w, q5.w, q6.w, q7.w);
            mac(x0, x1, x2, x3, bl0, bl1, bl2, bl3, br0, br1, br2, br3);
            if (RB == 2u) {
                let x4 = vec4<f32>(a24[a2_v + ra4 * lda24 + t]);
                let x5 = vec4<f32>(a24[a2_v + ra5 * lda24 + t]);
                let x6 = vec4<f32>(a24[a2_v + ra6 * lda24 + t]);
                let x7 = vec4<f32>(a24[a2_v + ra7 * lda24 + t]);
                mac_hi(x4, x5, x6, x7, bl0, bl1, bl2, bl3, br0, br1, br2, br3);
            }
        }
    }
    if (!id.live) { return; }
    let bl = vec4<f32>(bias_at(col), bias_at(col + 1u), bias_at(col + 2u), bias_at(col + 3u));
    let br = vec4<f32>(bias_at(col + 4u), bias_at(col + 5u), bias_at(col + 6u), bias_at(col + 7u));
    sg_store_all(p.c_shift + id.bi * p.c_bstride, id.m0, col, bl, br);
    if (RB == 2u) {
        sg_store_all_hi(p.c_shift + id.bi * p.c_bstride, id.m0, col, bl, br);
    }
}

fn sg_store(c_base: u32, row: u32, col: u32, l: vec4<f32>, r: vec4<f32>) {
    if (row >= p.m) { return; }
    put4(c_base, row, col, l);
    put4(c_base, row, col + 4u, r);
}

// `sg` accumulators: row RR of the tile, this lane's columns 0-3 (accRRl) and 4-7 (accRRr). The code
// below is regular by construction: one block per row, identical up to the row index.
var<private> acc00l: vec4<f32>;
var<private> acc00r: vec4<f32>;
var<private> acc01l: vec4<f32>;
var<private> acc01r: vec4<f32>;
var<private> acc02l: vec4<f32>;
var<private> acc02r: vec4<f32>;
var<private> acc03l: vec4<f32>;
var<private> acc03r: vec4<f32>;
var<private> acc04l: vec4<f32>;
var<private> acc04r: vec4<f32>;
var<private> acc05l: vec4<f32>;
var<private> acc05r: vec4<f32>;
var<private> acc06l: vec4<f32>;
var<private> acc06r: vec4<f32>;
var<private> acc07l: vec4<f32>;
var<private> acc07r: vec4<f32>;
var<private> acc08l: vec4<f32>;
var<private> acc08r: vec4<f32>;
var<private> acc09l: vec4<f32>;
var<private> acc09r: vec4<f32>;
var<private> acc10l: vec4<f32>;
var<private> acc10r: vec4<f32>;
var<private> acc11l: vec4<f32>;
var<private> acc11r: vec4<f32>;
var<private> acc12l: vec4<f32>;
var<private> acc12r: vec4<f32>;
var<private> acc13l: vec4<f32>;
var<private> acc13r: vec4<f32>;
var<private> acc14l: vec4<f32>;
var<private> acc14r: vec4<f32>;
var<private> acc15l: vec4<f32>;
var<private> acc15r: vec4<f32>;
var<private> acc16l: vec4<f32>;
var<private> acc16r: vec4<f32>;
var<private> acc17l: vec4<f32>;
var<private> acc17r: vec4<f32>;
var<private> acc18l: vec4<f32>;
var<private> acc18r: vec4<f32>;
var<private> acc19l: vec4<f32>;
var<private> acc19r: vec4<f32>;
var<private> acc20l: vec4<f32>;
var<private> acc20r: vec4<f32>;
var<private> acc21l: vec4<f32>;
var<private> acc21r: vec4<f32>;
var<private> acc22l: vec4<f32>;
var<private> acc22r: vec4<f32>;
var<private> acc23l: vec4<f32>;
var<private> acc23r: vec4<f32>;
var<private> acc24l: vec4<f32>;
var<private> acc24r: vec4<f32>;
var<private> acc25l: vec4<f32>;
var<private> acc25r: vec4<f32>;
var<private> acc26l: vec4<f32>;
var<private> acc26r: vec4<f32>;
var<private> acc27l: vec4<f32>;
var<private> acc27r: vec4<f32>;
var<private> acc28l: vec4<f32>;
var<private> acc28r: vec4<f32>;
var<private> acc29l: vec4<f32>;
var<private> acc29r: vec4<f32>;
var<private> acc30l: vec4<f32>;
var<private> acc30r: vec4<f32>;
var<private> acc31l: vec4<f32>;
var<private> acc31r: vec4<f32>;
var<private> acc32l: vec4<f32>;
var<private> acc32r: vec4<f32>;
var<private> acc33l: vec4<f32>;
var<private> acc33r: vec4<f32>;
var<private> acc34l: vec4<f32>;
var<private> acc34r: vec4<f32>;
var<private> acc35l: vec4<f32>;
var<private> acc35r: vec4<f32>;
var<private> acc36l: vec4<f32>;
var<private> acc36r: vec4<f32>;
var<private> acc37l: vec4<f32>;
var<private> acc37r: vec4<f32>;
var<private> acc38l: vec4<f32>;
var<private> acc38r: vec4<f32>;
var<private> acc39l: vec4<f32>;
var<private> acc39r: vec4<f32>;
var<private> acc40l: vec4<f32>;
var<private> acc40r: vec4<f32>;
var<private> acc41l: vec4<f32>;
var<private> acc41r: vec4<f32>;
var<private> acc42l: vec4<f32>;
var<private> acc42r: vec4<f32>;
var<private> acc43l: vec4<f32>;
var<private> acc43r: vec4<f32>;
var<private> acc44l: vec4<f32>;
var<private> acc44r: vec4<f32>;
var<private> acc45l: vec4<f32>;
var<private> acc45r: vec4<f32>;
var<private> acc46l: vec4<f32>;
var<private> acc46r: vec4<f32>;
var<private> acc47l: vec4<f32>;
var<private> acc47r: vec4<f32>;
var<private> acc48l: vec4<f32>;
var<private> acc48r: vec4<f32>;
var<private> acc49l: vec4<f32>;
var<private> acc49r: vec4<f32>;
var<private> acc50l: vec4<f32>;
var<private> acc50r: vec4<f32>;
var<private> acc51l: vec4<f32>;
var<private> acc51r: vec4<f32>;
var<private> acc52l: vec4<f32>;
var<private> acc52r: vec4<f32>;
var<private> acc53l: vec4<f32>;
var<private> acc53r: vec4<f32>;
var<private> acc54l: vec4<f32>;
var<private> acc54r: vec4<f32>;
var<private> acc55l: vec4<f32>;
var<private> acc55r: vec4<f32>;
var<private> acc56l: vec4<f32>;
var<private> acc56r: vec4<f32>;
var<private> acc57l: vec4<f32>;
var<private> acc57r: vec4<f32>;
var<private> acc58l: vec4<f32>;
var<private> acc58r: vec4<f32>;
var<private> acc59l: vec4<f32>;
var<private> acc59r: vec4<f32>;
var<private> acc60l: vec4<f32>;
var<private> acc60r: vec4<f32>;
var<private> acc61l: vec4<f32>;
var<private> acc61r: vec4<f32>;
var<private> acc62l: vec4<f32>;
var<private> acc62r: vec4<f32>;
var<private> acc63l: vec4<f32>;
var<private> acc63r: vec4<f32>;

// acc += x·b for 4 values of k: row r's 4 k-values come from lane r % 8 of x{r / 8}; bl{s}/br{s} are
// this lane's columns 0-3 / 4-7 at k + s.
fn mac(x0: vec4<f32>, x1: vec4<f32>, x2: vec4<f32>, x3: vec4<f32>,
       bl0: vec4<f32>, bl1: vec4<f32>, bl2: vec4<f32>, bl3: vec4<f32>,
       br0: vec4<f32>, br1: vec4<f32>, br2: vec4<f32>, br3: vec4<f32>) {
    let v00 = subgroupBroadcast(x0, 0u);
    acc00l = fma(vec4(v00.w), bl3, fma(vec4(v00.z), bl2, fma(vec4(v00.y), bl1, fma(vec4(v00.x), bl0, acc00l))));
    acc00r = fma(vec4(v00.w), br3, fma(vec4(v00.z), br2, fma(vec4(v00.y), br1, fma(vec4(v00.x), br0, acc00r))));
    let v01 = subgroupBroadcast(x0, 1u);
    acc01l = fma(vec4(v01.w), bl3, fma(vec4(v01.z), bl2, fma(vec4(v01.y), bl1, fma(vec4(v01.x), bl0, acc01l))));
    acc01r = fma(vec4(v01.w), br3, fma(vec4(v01.z), br2, fma(vec4(v01.y), br1, fma(vec4(v01.x), br0, acc01r))));
    let v02 = subgroupBroadcast(x0, 2u);
    acc02l = fma(vec4(v02.w), bl3, fma(vec4(v02.z), bl2, fma(vec4(v02.y), bl1, fma(vec4(v02.x), bl0, acc02l))));
    acc02r = fma(vec4(v02.w), br3, fma(vec4(v02.z), br2, fma(vec4(v02.y), br1, fma(vec4(v02.x), br0, acc02r))));
    let v03 = subgroupBroadcast(x0, 3u);
    acc03l = fma(vec4(v03.w), bl3, fma(vec4(v03.z), bl2, fma(vec4(v03.y), bl1, fma(vec4(v03.x), bl0, acc03l))));
    acc03r = fma(vec4(v03.w), br3, fma(vec4(v03.z), br2, fma(vec4(v03.y), br1, fma(vec4(v03.x), br0, acc03r))));
    let v04 = subgroupBroadcast(x0, 4u);
    acc04l = fma(vec4(v04.w), bl3, fma(vec4(v04.z), bl2, fma(vec4(v04.y), bl1, fma(vec4(v04.x), bl0, acc04l))));
    acc04r = fma(vec4(v04.w), br3, fma(vec4(v04.z), br2, fma(vec4(v04.y), br1, fma(vec4(v04.x), br0, acc04r))));
    let v05 = subgroupBroadcast(x0, 5u);
    acc05l = fma(vec4(v05.w), bl3, fma(vec4(v05.z), bl2, fma(vec4(v05.y), bl1, fma(vec4(v05.x), bl0, acc05l))));
    acc05r = fma(vec4(v05.w), br3, fma(vec4(v05.z), br2, fma(vec4(v05.y), br1, fma(vec4(v05.x), br0, acc05r))));
    let v06 = subgroupBroadcast(x0, 6u);
    acc06l = fma(vec4(v06.w), bl3, fma(vec4(v06.z), bl2, fma(vec4(v06.y), bl1, fma(vec4(v06.x), bl0, acc06l))));
    acc06r = fma(vec4(v06.w), br3, fma(vec4(v06.z), br2, fma(vec4(v06.y), br1, fma(vec4(v06.x), br0, acc06r))));
    let v07 = subgroupBroadcast(x0, 7u);
    acc07l = fma(vec4(v07.w), bl3, fma(vec4(v07.z), bl2, fma(vec4(v07.y), bl1, fma(vec4(v07.x), bl0, acc07l))));
    acc07r = fma(vec4(v07.w), br3, fma(vec4(v07.z), br2, fma(vec4(v07.y), br1, fma(vec4(v07.x), br0, acc07r))));
    let v08 = subgroupBroadcast(x1, 0u);
    acc08l = fma(vec4(v08.w), bl3, fma(vec4(v08.z), bl2, fma(vec4(v08.y), bl1, fma(vec4(v08.x), bl0, acc08l))));
    acc08r = fma(vec4(v08.w), br3, fma(vec4(v08.z), br2, fma(vec4(v08.y), br1, fma(vec4(v08.x), br0, acc08r))));
    let v09 = subgroupBroadcast(x1, 1u);
    acc09l = fma(vec4(v09.w), bl3, fma(vec4(v09.z), bl2, fma(vec4(v09.y), bl1, fma(vec4(v09.x), bl0, acc09l))));
    acc09r = fma(vec4(v09.w), br3, fma(vec4(v09.z), br2, fma(vec4(v09.y), br1, fma(vec4(v09.x), br0, acc09r))));
    let v10 = subgroupBroadcast(x1, 2u);
    acc10l = fma(vec4(v10.w), bl3, fma(vec4(v10.z), bl2, fma(vec4(v10.y), bl1, fma(vec4(v10.x), bl0, acc10l))));
    acc10r = fma(vec4(v10.w), br3, fma(vec4(v10.z), br2, fma(vec4(v10.y), br1, fma(vec4(v10.x), br0, acc10r))));
    let v11 = subgroupBroadcast(x1, 3u);
    acc11l = fma(vec4(v11.w), bl3, fma(vec4(v11.z), bl2, fma(vec4(v11.y), bl1, fma(vec4(v11.x), bl0, acc11l))));
    acc11r = fma(vec4(v11.w), br3, fma(vec4(v11.z), br2, fma(vec4(v11.y), br1, fma(vec4(v11.x), br0, acc11r))));
    let v12 = subgroupBroadcast(x1, 4u);
    acc12l = fma(vec4(v12.w), bl3, fma(vec4(v12.z), bl2, fma(vec4(v12.y), bl1, fma(vec4(v12.x), bl0, acc12l))));
    acc12r = fma(vec4(v12.w), br3, fma(vec4(v12.z), br2, fma(vec4(v12.y), br1, fma(vec4(v12.x), br0, acc12r))));
    let v13 = subgroupBroadcast(x1, 5u);
    acc13l = fma(vec4(v13.w), bl3, fma(vec4(v13.z), bl2, fma(vec4(v13.y), bl1, fma(vec4(v13.x), bl0, acc13l))));
    acc13r = fma(vec4(v13.w), br3, fma(vec4(v13.z), br2, fma(vec4(v13.y), br1, fma(vec4(v13.x), br0, acc13r))));
    let v14 = subgroupBroadcast(x1, 6u);
    acc14l = fma(vec4(v14.w), bl3, fma(vec4(v14.z), bl2, fma(vec4(v14.y), bl1, fma(vec4(v14.x), bl0, acc14l))));
    acc14r = fma(vec4(v14.w), br3, fma(vec4(v14.z), br2, fma(vec4(v14.y), br1, fma(vec4(v14.x), br0, acc14r))));
    let v15 = subgroupBroadcast(x1, 7u);
    acc15l = fma(vec4(v15.w), bl3, fma(vec4(v15.z), bl2, fma(vec4(v15.y), bl1, fma(vec4(v15.x), bl0, acc15l))));
    acc15r = fma(vec4(v15.w), br3, fma(vec4(v15.z), br2, fma(vec4(v15.y), br1, fma(vec4(v15.x), br0, acc15r))));
    let v16 = subgroupBroadcast(x2, 0u);
    acc16l = fma(vec4(v16.w), bl3, fma(vec4(v16.z), bl2, fma(vec4(v16.y), bl1, fma(vec4(v16.x), bl0, acc16l))));
    acc16r = fma(vec4(v16.w), br3, fma(vec4(v16.z), br2, fma(vec4(v16.y), br1, fma(vec4(v16.x), br0, acc16r))));
    let v17 = subgroupBroadcast(x2, 1u);
    acc17l = fma(vec4(v17.w), bl3, fma(vec4(v17.z), bl2, fma(vec4(v17.y), bl1, fma(vec4(v17.x), bl0, acc17l))));
    acc17r = fma(vec4(v17.w), br3, fma(vec4(v17.z), br2, fma(vec4(v17.y), br1, fma(vec4(v17.x), br0, acc17r))));
    let v18 = subgroupBroadcast(x2, 2u);
    acc18l = fma(vec4(v18.w), bl3, fma(vec4(v18.z), bl2, fma(vec4(v18.y), bl1, fma(vec4(v18.x), bl0, acc18l))));
    acc18r = fma(vec4(v18.w), br3, fma(vec4(v18.z), br2, fma(vec4(v18.y), br1, fma(vec4(v18.x), br0, acc18r))));
    let v19 = subgroupBroadcast(x2, 3u);
    acc19l = fma(vec4(v19.w), bl3, fma(vec4(v19.z), bl2, fma(vec4(v19.y), bl1, fma(vec4(v19.x), bl0, acc19l))));
    acc19r = fma(vec4(v19.w), br3, fma(vec4(v19.z), br2, fma(vec4(v19.y), br1, fma(vec4(v19.x), br0, acc19r))));
    let v20 = subgroupBroadcast(x2, 4u);
    acc20l = fma(vec4(v20.w), bl3, fma(vec4(v20.z), bl2, fma(vec4(v20.y), bl1, fma(vec4(v20.x), bl0, acc20l))));
    acc20r = fma(vec4(v20.w), br3, fma(vec4(v20.z), br2, fma(vec4(v20.y), br1, fma(vec4(v20.x), br0, acc20r))));
    let v21 = subgroupBroadcast(x2, 5u);
    acc21l = fma(vec4(v21.w), bl3, fma(vec4(v21.z), bl2, fma(vec4(v21.y), bl1, fma(vec4(v21.x), bl0, acc21l))));
    acc21r = fma(vec4(v21.w), br3, fma(vec4(v21.z), br2, fma(vec4(v21.y), br1, fma(vec4(v21.x), br0, acc21r))));
    let v22 = subgroupBroadcast(x2, 6u);
    acc22l = fma(vec4(v22.w), bl3, fma(vec4(v22.z), bl2, fma(vec4(v22.y), bl1, fma(vec4(v22.x), bl0, acc22l))));
    acc22r = fma(vec4(v22.w), br3, fma(vec4(v22.z), br2, fma(vec4(v22.y), br1, fma(vec4(v22.x), br0, acc22r))));
    let v23 = subgroupBroadcast(x2, 7u);
    acc23l = fma(vec4(v23.w), bl3, fma(vec4(v23.z), bl2, fma(vec4(v23.y), bl1, fma(vec4(v23.x), bl0, acc23l))));
    acc23r = fma(vec4(v23.w), br3, fma(vec4(v23.z), br2, fma(vec4(v23.y), br1, fma(vec4(v23.x), br0, acc23r))));
    let v24 = subgroupBroadcast(x3, 0u);
    acc24l = fma(vec4(v24.w), bl3, fma(vec4(v24.z), bl2, fma(vec4(v24.y), bl1, fma(vec4(v24.x), bl0, acc24l))));
    acc24r = fma(vec4(v24.w), br3, fma(vec4(v24.z), br2, fma(vec4(v24.y), br1, fma(vec4(v24.x), br0, acc24r))));
    let v25 = subgroupBroadcast(x3, 1u);
    acc25l = fma(vec4(v25.w), bl3, fma(vec4(v25.z), bl2, fma(vec4(v25.y), bl1, fma(vec4(v25.x), bl0, acc25l))));
    acc25r = fma(vec4(v25.w), br3, fma(vec4(v25.z), br2, fma(vec4(v25.y), br1, fma(vec4(v25.x), br0, acc25r))));
    let v26 = subgroupBroadcast(x3, 2u);
    acc26l = fma(vec4(v26.w), bl3, fma(vec4(v26.z), bl2, fma(vec4(v26.y), bl1, fma(vec4(v26.x), bl0, acc26l))));
    acc26r = fma(vec4(v26.w), br3, fma(vec4(v26.z), br2, fma(vec4(v26.y), br1, fma(vec4(v26.x), br0, acc26r))));
    let v27 = subgroupBroadcast(x3, 3u);
    acc27l = fma(vec4(v27.w), bl3, fma(vec4(v27.z), bl2, fma(vec4(v27.y), bl1, fma(vec4(v27.x), bl0, acc27l))));
    acc27r = fma(vec4(v27.w), br3, fma(vec4(v27.z), br2, fma(vec4(v27.y), br1, fma(vec4(v27.x), br0, acc27r))));
    let v28 = subgroupBroadcast(x3, 4u);
    acc28l = fma(vec4(v28.w), bl3, fma(vec4(v28.z), bl2, fma(vec4(v28.y), bl1, fma(vec4(v28.x), bl0, acc28l))));
    acc28r = fma(vec4(v28.w), br3, fma(vec4(v28.z), br2, fma(vec4(v28.y), br1, fma(vec4(v28.x), br0, acc28r))));
    let v29 = subgroupBroadcast(x3, 5u);
    acc29l = fma(vec4(v29.w), bl3, fma(vec4(v29.z), bl2, fma(vec4(v29.y), bl1, fma(vec4(v29.x), bl0, acc29l))));
    acc29r = fma(vec4(v29.w), br3, fma(vec4(v29.z), br2, fma(vec4(v29.y), br1, fma(vec4(v29.x), br0, acc29r))));
    let v30 = subgroupBroadcast(x3, 6u);
    acc30l = fma(vec4(v30.w), bl3, fma(vec4(v30.z), bl2, fma(vec4(v30.y), bl1, fma(vec4(v30.x), bl0, acc30l))));
    acc30r = fma(vec4(v30.w), br3, fma(vec4(v30.z), br2, fma(vec4(v30.y), br1, fma(vec4(v30.x), br0, acc30r))));
    let v31 = subgroupBroadcast(x3, 7u);
    acc31l = fma(vec4(v31.w), bl3, fma(vec4(v31.z), bl2, fma(vec4(v31.y), bl1, fma(vec4(v31.x), bl0, acc31l))));
    acc31r = fma(vec4(v31.w), br3, fma(vec4(v31.z), br2, fma(vec4(v31.y), br1, fma(vec4(v31.x), br0, acc31r))));
}

// Rows 32-63 of an RB = 2 tile: `mac` for the second block of accumulators.
fn mac_hi(x0: vec4<f32>, x1: vec4<f32>, x2: vec4<f32>, x3: vec4<f32>,
       bl0: vec4<f32>, bl1: vec4<f32>, bl2: vec4<f32>, bl3: vec4<f32>,
       br0: vec4<f32>, br1: vec4<f32>, br2: vec4<f32>, br3: vec4<f32>) {
    let v32 = subgroupBroadcast(x0, 0u);
    acc32l = fma(vec4(v32.w), bl3, fma(vec4(v32.z), bl2, fma(vec4(v32.y), bl1, fma(vec4(v32.x), bl0, acc32l))));
    acc32r = fma(vec4(v32.w), br3, fma(vec4(v32.z), br2, fma(vec4(v32.y), br1, fma(vec4(v32.x), br0, acc32r))));
    let v33 = subgroupBroadcast(x0, 1u);
    acc33l = fma(vec4(v33.w), bl3, fma(vec4(v33.z), bl2, fma(vec4(v33.y), bl1, fma(vec4(v33.x), bl0, acc33l))));
    acc33r = fma(vec4(v33.w), br3, fma(vec4(v33.z), br2, fma(vec4(v33.y), br1, fma(vec4(v33.x), br0, acc33r))));
    let v34 = subgroupBroadcast(x0, 2u);
    acc34l = fma(vec4(v34.w), bl3, fma(vec4(v34.z), bl2, fma(vec4(v34.y), bl1, fma(vec4(v34.x), bl0, acc34l))));
    acc34r = fma(vec4(v34.w), br3, fma(vec4(v34.z), br2, fma(vec4(v34.y), br1, fma(vec4(v34.x), br0, acc34r))));
    let v35 = subgroupBroadcast(x0, 3u);
    acc35l = fma(vec4(v35.w), bl3, fma(vec4(v35.z), bl2, fma(vec4(v35.y), bl1, fma(vec4(v35.x), bl0, acc35l))));
    acc35r = fma(vec4(v35.w), br3, fma(vec4(v35.z), br2, fma(vec4(v35.y), br1, fma(vec4(v35.x), br0, acc35r))));
    let v36 = subgroupBroadcast(x0, 4u);
    acc36l = fma(vec4(v36.w), bl3, fma(vec4(v36.z), bl2, fma(vec4(v36.y), bl1, fma(vec4(v36.x), bl0, acc36l))));
    acc36r = fma(vec4(v36.w), br3, fma(vec4(v36.z), br2, fma(vec4(v36.y), br1, fma(vec4(v36.x), br0, acc36r))));
    let v37 = subgroupBroadcast(x0, 5u);
    acc37l = fma(vec4(v37.w), bl3, fma(vec4(v37.z), bl2, fma(vec4(v37.y), bl1, fma(vec4(v37.x), bl0, acc37l))));
    acc37r = fma(vec4(v37.w), br3, fma(vec4(v37.z), br2, fma(vec4(v37.y), br1, fma(vec4(v37.x), br0, acc37r))));
    let v38 = subgroupBroadcast(x0, 6u);
    acc38l = fma(vec4(v38.w), bl3, fma(vec4(v38.z), bl2, fma(vec4(v38.y), bl1, fma(vec4(v38.x), bl0, acc38l))));
    acc38r = fma(vec4(v38.w), br3, fma(vec4(v38.z), br2, fma(vec4(v38.y), br1, fma(vec4(v38.x), br0, acc38r))));
    let v39 = subgroupBroadcast(x0, 7u);
    acc39l = fma(vec4(v39.w), bl3, fma(vec4(v39.z), bl2, fma(vec4(v39.y), bl1, fma(vec4(v39.x), bl0, acc39l))));
    acc39r = fma(vec4(v39.w), br3, fma(vec4(v39.z), br2, fma(vec4(v39.y), br1, fma(vec4(v39.x), br0, acc39r))));
    let v40 = subgroupBroadcast(x1, 0u);
    acc40l = fma(vec4(v40.w), bl3, fma(vec4(v40.z), bl2, fma(vec4(v40.y), bl1, fma(vec4(v40.x), bl0, acc40l))));
    acc40r = fma(vec4(v40.w), br3, fma(vec4(v40.z), br2, fma(vec4(v40.y), br1, fma(vec4(v40.x), br0, acc40r))));
    let v41 = subgroupBroadcast(x1, 1u);
    acc41l = fma(vec4(v41.w), bl3, fma(vec4(v41.z), bl2, fma(vec4(v41.y), bl1, fma(vec4(v41.x), bl0, acc41l))));
    acc41r = fma(vec4(v41.w), br3, fma(vec4(v41.z), br2, fma(vec4(v41.y), br1, fma(vec4(v41.x), br0, acc41r))));
    let v42 = subgroupBroadcast(x1, 2u);
    acc42l = fma(vec4(v42.w), bl3, fma(vec4(v42.z), bl2, fma(vec4(v42.y), bl1, fma(vec4(v42.x), bl0, acc42l))));
    acc42r = fma(vec4(v42.w), br3, fma(vec4(v42.z), br2, fma(vec4(v42.y), br1, fma(vec4(v42.x), br0, acc42r))));
    let v43 = subgroupBroadcast(x1, 3u);
    acc43l = fma(vec4(v43.w), bl3, fma(vec4(v43.z), bl2, fma(vec4(v43.y), bl1, fma(vec4(v43.x), bl0, acc43l))));
    acc43r = fma(vec4(v43.w), br3, fma(vec4(v43.z), br2, fma(vec4(v43.y), br1, fma(vec4(v43.x), br0, acc43r))));
    let v44 = subgroupBroadcast(x1, 4u);
    acc44l = fma(vec4(v44.w), bl3, fma(vec4(v44.z), bl2, fma(vec4(v44.y), bl1, fma(vec4(v44.x), bl0, acc44l))));
    acc44r = fma(vec4(v44.w), br3, fma(vec4(v44.z), br2, fma(vec4(v44.y), br1, fma(vec4(v44.x), br0, acc44r))));
    let v45 = subgroupBroadcast(x1, 5u);
    acc45l = fma(vec4(v45.w), bl3, fma(vec4(v45.z), bl2, fma(vec4(v45.y), bl1, fma(vec4(v45.x), bl0, acc45l))));
    acc45r = fma(vec4(v45.w), br3, fma(vec4(v45.z), br2, fma(vec4(v45.y), br1, fma(vec4(v45.x), br0, acc45r))));
    let v46 = subgroupBroadcast(x1, 6u);
    acc46l = fma(vec4(v46.w), bl3, fma(vec4(v46.z), bl2, fma(vec4(v46.y), bl1, fma(vec4(v46.x), bl0, acc46l))));
    acc46r = fma(vec4(v46.w), br3, fma(vec4(v46.z), br2, fma(vec4(v46.y), br1, fma(vec4(v46.x), br0, acc46r))));
    let v47 = subgroupBroadcast(x1, 7u);
    acc47l = fma(vec4(v47.w), bl3, fma(vec4(v47.z), bl2, fma(vec4(v47.y), bl1, fma(vec4(v47.x), bl0, acc47l))));
    acc47r = fma(vec4(v47.w), br3, fma(vec4(v47.z), br2, fma(vec4(v47.y), br1, fma(vec4(v47.x), br0, acc47r))));
    let v48 = subgroupBroadcast(x2, 0u);
    acc48l = fma(vec4(v48.w), bl3, fma(vec4(v48.z), bl2, fma(vec4(v48.y), bl1, fma(vec4(v48.x), bl0, acc48l))));
    acc48r = fma(vec4(v48.w), br3, fma(vec4(v48.z), br2, fma(vec4(v48.y), br1, fma(vec4(v48.x), br0, acc48r))));
    let v49 = subgroupBroadcast(x2, 1u);
    acc49l = fma(vec4(v49.w), bl3, fma(vec4(v49.z), bl2, fma(vec4(v49.y), bl1, fma(vec4(v49.x), bl0, acc49l))));
    acc49r = fma(vec4(v49.w), br3, fma(vec4(v49.z), br2, fma(vec4(v49.y), br1, fma(vec4(v49.x), br0, acc49r))));
    let v50 = subgroupBroadcast(x2, 2u);
    acc50l = fma(vec4(v50.w), bl3, fma(vec4(v50.z), bl2, fma(vec4(v50.y), bl1, fma(vec4(v50.x), bl0, acc50l))));
    acc50r = fma(vec4(v50.w), br3, fma(vec4(v50.z), br2, fma(vec4(v50.y), br1, fma(vec4(v50.x), br0, acc50r))));
    let v51 = subgroupBroadcast(x2, 3u);
    acc51l = fma(vec4(v51.w), bl3, fma(vec4(v51.z), bl2, fma(vec4(v51.y), bl1, fma(vec4(v51.x), bl0, acc51l))));
    acc51r = fma(vec4(v51.w), br3, fma(vec4(v51.z), br2, fma(vec4(v51.y), br1, fma(vec4(v51.x), br0, acc51r))));
    let v52 = subgroupBroadcast(x2, 4u);
    acc52l = fma(vec4(v52.w), bl3, fma(vec4(v52.z), bl2, fma(vec4(v52.y), bl1, fma(vec4(v52.x), bl0, acc52l))));
    acc52r = fma(vec4(v52.w), br3, fma(vec4(v52.z), br2, fma(vec4(v52.y), br1, fma(vec4(v52.x), br0, acc52r))));
    let v53 = subgroupBroadcast(x2, 5u);
    acc53l = fma(vec4(v53.w), bl3, fma(vec4(v53.z), bl2, fma(vec4(v53.y), bl1, fma(vec4(v53.x), bl0, acc53l))));
    acc53r = fma(vec4(v53.w), br3, fma(vec4(v53.z), br2, fma(vec4(v53.y), br1, fma(vec4(v53.x), br0, acc53r))));
    let v54 = subgroupBroadcast(x2, 6u);
    acc54l = fma(vec4(v54.w), bl3, fma(vec4(v54.z), bl2, fma(vec4(v54.y), bl1, fma(vec4(v54.x), bl0, acc54l))));
    acc54r = fma(vec4(v54.w), br3, fma(vec4(v54.z), br2, fma(vec4(v54.y), br1, fma(vec4(v54.x), br0, acc54r))));
    let v55 = subgroupBroadcast(x2, 7u);
    acc55l = fma(vec4(v55.w), bl3, fma(vec4(v55.z), bl2, fma(vec4(v55.y), bl1, fma(vec4(v55.x), bl0, acc55l))));
    acc55r = fma(vec4(v55.w), br3, fma(vec4(v55.z), br2, fma(vec4(v55.y), br1, fma(vec4(v55.x), br0, acc55r))));
    let v56 = subgroupBroadcast(x3, 0u);
    acc56l = fma(vec4(v56.w), bl3, fma(vec4(v56.z), bl2, fma(vec4(v56.y), bl1, fma(vec4(v56.x), bl0, acc56l))));
    acc56r = fma(vec4(v56.w), br3, fma(vec4(v56.z), br2, fma(vec4(v56.y), br1, fma(vec4(v56.x), br0, acc56r))));
    let v57 = subgroupBroadcast(x3, 1u);
    acc57l = fma(vec4(v57.w), bl3, fma(vec4(v57.z), bl2, fma(vec4(v57.y), bl1, fma(vec4(v57.x), bl0, acc57l))));
    acc57r = fma(vec4(v57.w), br3, fma(vec4(v57.z), br2, fma(vec4(v57.y), br1, fma(vec4(v57.x), br0, acc57r))));
    let v58 = subgroupBroadcast(x3, 2u);
    acc58l = fma(vec4(v58.w), bl3, fma(vec4(v58.z), bl2, fma(vec4(v58.y), bl1, fma(vec4(v58.x), bl0, acc58l))));
    acc58r = fma(vec4(v58.w), br3, fma(vec4(v58.z), br2, fma(vec4(v58.y), br1, fma(vec4(v58.x), br0, acc58r))));
    let v59 = subgroupBroadcast(x3, 3u);
    acc59l = fma(vec4(v59.w), bl3, fma(vec4(v59.z), bl2, fma(vec4(v59.y), bl1, fma(vec4(v59.x), bl0, acc59l))));
    acc59r = fma(vec4(v59.w), br3, fma(vec4(v59.z), br2, fma(vec4(v59.y), br1, fma(vec4(v59.x), br0, acc59r))));
    let v60 = subgroupBroadcast(x3, 4u);
    acc60l = fma(vec4(v60.w), bl3, fma(vec4(v60.z), bl2, fma(vec4(v60.y), bl1, fma(vec4(v60.x), bl0, acc60l))));
    acc60r = fma(vec4(v60.w), br3, fma(vec4(v60.z), br2, fma(vec4(v60.y), br1, fma(vec4(v60.x), br0, acc60r))));
    let v61 = subgroupBroadcast(x3, 5u);
    acc61l = fma(vec4(v61.w), bl3, fma(vec4(v61.z), bl2, fma(vec4(v61.y), bl1, fma(vec4(v61.x), bl0, acc61l))));
    acc61r = fma(vec4(v61.w), br3, fma(vec4(v61.z), br2, fma(vec4(v61.y), br1, fma(vec4(v61.x), br0, acc61r))));
    let v62 = subgroupBroadcast(x3, 6u);
    acc62l = fma(vec4(v62.w), bl3, fma(vec4(v62.z), bl2, fma(vec4(v62.y), bl1, fma(vec4(v62.x), bl0, acc62l))));
    acc62r = fma(vec4(v62.w), br3, fma(vec4(v62.z), br2, fma(vec4(v62.y), br1, fma(vec4(v62.x), br0, acc62r))));
    let v63 = subgroupBroadcast(x3, 7u);
    acc63l = fma(vec4(v63.w), bl3, fma(vec4(v63.z), bl2, fma(vec4(v63.y), bl1, fma(vec4(v63.x), bl0, acc63l))));
    acc63r = fma(vec4(v63.w), br3, fma(vec4(v63.z), br2, fma(vec4(v63.y), br1, fma(vec4(v63.x), br0, acc63r))));
}

fn sg_store_all(c_base: u32, row0: u32, col: u32, bl: vec4<f32>, br: vec4<f32>) {
    sg_store(c_base, row0 + 0u, col, acc00l + bl, acc00r + br);
    sg_store(c_base, row0 + 1u, col, acc01l + bl, acc01r + br);
    sg_store(c_base, row0 + 2u, col, acc02l + bl, acc02r + br);
    sg_store(c_base, row0 + 3u, col, acc03l + bl, acc03r + br);
    sg_store(c_base, row0 + 4u, col, acc04l + bl, acc04r + br);
    sg_store(c_base, row0 + 5u, col, acc05l + bl, acc05r + br);
    sg_store(c_base, row0 + 6u, col, acc06l + bl, acc06r + br);
    sg_store(c_base, row0 + 7u, col, acc07l + bl, acc07r + br);
    sg_store(c_base, row0 + 8u, col, acc08l + bl, acc08r + br);
    sg_store(c_base, row0 + 9u, col, acc09l + bl, acc09r + br);
    sg_store(c_base, row0 + 10u, col, acc10l + bl, acc10r + br);
    sg_store(c_base, row0 + 11u, col, acc11l + bl, acc11r + br);
    sg_store(c_base, row0 + 12u, col, acc12l + bl, acc12r + br);
    sg_store(c_base, row0 + 13u, col, acc13l + bl, acc13r + br);
    sg_store(c_base, row0 + 14u, col, acc14l + bl, acc14r + br);
    sg_store(c_base, row0 + 15u, col, acc15l + bl, acc15r + br);
    sg_store(c_base, row0 + 16u, col, acc16l + bl, acc16r + br);
    sg_store(c_base, row0 + 17u, col, acc17l + bl, acc17r + br);
    sg_store(c_base, row0 + 18u, col, acc18l + bl, acc18r + br);
    sg_store(c_base, row0 + 19u, col, acc19l + bl, acc19r + br);
    sg_store(c_base, row0 + 20u, col, acc20l + bl, acc20r + br);
    sg_store(c_base, row0 + 21u, col, acc21l + bl, acc21r + br);
    sg_store(c_base, row0 + 22u, col, acc22l + bl, acc22r + br);
    sg_store(c_base, row0 + 23u, col, acc23l + bl, acc23r + br);
    sg_store(c_base, row0 + 24u, col, acc24l + bl, acc24r + br);
    sg_store(c_base, row0 + 25u, col, acc25l + bl, acc25r + br);
    sg_store(c_base, row0 + 26u, col, acc26l + bl, acc26r + br);
    sg_store(c_base, row0 + 27u, col, acc27l + bl, acc27r + br);
    sg_store(c_base, row0 + 28u, col, acc28l + bl, acc28r + br);
    sg_store(c_base, row0 + 29u, col, acc29l + bl, acc29r + br);
    sg_store(c_base, row0 + 30u, col, acc30l + bl, acc30r + br);
    sg_store(c_base, row0 + 31u, col, acc31l + bl, acc31r + br);
}

fn sg_store_all_hi(c_base: u32, row0: u32, col: u32, bl: vec4<f32>, br: vec4<f32>) {
    sg_store(c_base, row0 + 32u, col, acc32l + bl, acc32r + br);
    sg_store(c_base, row0 + 33u, col, acc33l + bl, acc33r + br);
    sg_store(c_base, row0 + 34u, col, acc34l + bl, acc34r + br);
    sg_store(c_base, row0 + 35u, col, acc35l + bl, acc35r + br);
    sg_store(c_base, row0 + 36u, col, acc36l + bl, acc36r + br);
    sg_store(c_base, row0 + 37u, col, acc37l + bl, acc37r + br);
    sg_store(c_base, row0 + 38u, col, acc38l + bl, acc38r + br);
    sg_store(c_base, row0 + 39u, col, acc39l + bl, acc39r + br);
    sg_store(c_base, row0 + 40u, col, acc40l + bl, acc40r + br);
    sg_store(c_base, row0 + 41u, col, acc41l + bl, acc41r + br);
    sg_store(c_base, row0 + 42u, col, acc42l + bl, acc42r + br);
    sg_store(c_base, row0 + 43u, col, acc43l + bl, acc43r + br);
    sg_store(c_base, row0 + 44u, col, acc44l + bl, acc44r + br);
    sg_store(c_base, row0 + 45u, col, acc45l + bl, acc45r + br);
    sg_store(c_base, row0 + 46u, col, acc46l + bl, acc46r + br);
    sg_store(c_base, row0 + 47u, col, acc47l + bl, acc47r + br);
    sg_store(c_base, row0 + 48u, col, acc48l + bl, acc48r + br);
    sg_store(c_base, row0 + 49u, col, acc49l + bl, acc49r + br);
    sg_store(c_base, row0 + 50u, col, acc50l + bl, acc50r + br);
    sg_store(c_base, row0 + 51u, col, acc51l + bl, acc51r + br);
    sg_store(c_base, row0 + 52u, col, acc52l + bl, acc52r + br);
    sg_store(c_base, row0 + 53u, col, acc53l + bl, acc53r + br);
    sg_store(c_base, row0 + 54u, col, acc54l + bl, acc54r + br);
    sg_store(c_base, row0 + 55u, col, acc55l + bl, acc55r + br);
    sg_store(c_base, row0 + 56u, col, acc56l + bl, acc56r + br);
    sg_store(c_base, row0 + 57u, col, acc57l + bl, acc57r + br);
    sg_store(c_base, row0 + 58u, col, acc58l + bl, acc58r + br);
    sg_store(c_base, row0 + 59u, col, acc59l + bl, acc59r + br);
    sg_store(c_base, row0 + 60u, col, acc60l + bl, acc60r + br);
    sg_store(c_base, row0 + 61u, col, acc61l + bl, acc61r + br);
    sg_store(c_base, row0 + 62u, col, acc62l + bl, acc62r + br);
    sg_store(c_base, row0 + 63u, col, acc63l + bl, acc63r + br);
}
