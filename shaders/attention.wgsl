// Multi-head attention, flash style: out = softmax(scale · q·kᵀ [+ causal mask]) · v per head,
// with an online softmax, so the [Sq, Sk] score matrix never exists. f32 math, running max and
// sums whatever the storage type.
//
// Bindings: 0 q [nb, sq, H·D] (read), 1 k [nb, sk, H·D] (read), 2 v [nb, sk, H·D] (read),
// 3 out [nb, sq, H·D] (read_write), 4 Params (uniform). Head h uses columns h·D..(h+1)·D of a row.
// A launch may cover query rows row0..row0+nr of each batch (a binding window): rows are counted
// from the window, and `row0` only serves the causal mask (key j > query i is masked).
//
// One workgroup computes BQ query rows of one (batch, head) and walks the keys in tiles of BK.
// Workgroup memory holds the Q tile ([BQ][QSTR4] vec4, loaded once), one K-or-V tile
// ([BK][KSTR4] vec4) and the P tile ([BQ][PSTR4] vec4 of f32). Per key tile:
//   1. stage K;
//   2. S phase: thread (rgs, kg) computes SR×4 scores, rows rgs + RG_S·i and keys 4·kg..4·kg+3,
//      with vec4 dot products over the head dim (K rows are staged permuted so that neighbouring
//      lanes read neighbouring rows; odd vec4 strides avoid bank conflicts). It scales them to
//      log2 units, masks keys ≥ sk or after the query (causal) to −1e30 and publishes per-row
//      partial maxima;
//   3. each S thread derives the new running max m of its rows, the rescale α = 2^(m_old − m_new)
//      and P = 2^(s − m_new) (one whole vec4 of the P tile per thread and row), while all threads
//      stage V over the K tile, which nobody reads any more;
//   4. O phase: thread (rgo, cg) owns OR rows (rgo + RG_O·i) × OC4 vec4 columns (cg + CG·j) of the
//      output accumulator in registers (named a<i><j>, at most 16 vec4, unrolled by hand so no
//      private array is indexed dynamically): it rescales them by α and adds P·V, reading P as
//      vec4 over 4 keys, and sums P into the row sums l.
// Four barriers per key tile. The head dim is padded to C4 vec4s with zeros in the tiles, and
// lanes whose vec4 column cg + CG·j is ≥ C4 skip it; rows and keys out of range are staged as
// zeros and masked keys get P = 0. Causal workgroups stop at the last key their rows can see.
// At the end out = O / l for rows < nr and columns < D.
// Grid: groups = nb·H·nqt workgroups, query tile fastest (workgroups sharing K/V run together),
// folded over x and y (kernels::registry::fold_groups); whole workgroups past the end return.
// The launcher (src/kernels/attention.rs, `Tiling`) sets the overrides so that the arrays fit
// the device's workgroup memory and BQ = NT/CG·OR = NT/KG·SR.

alias ST = f32;

override NT: u32 = 64u;     // threads per workgroup
override BQ: u32 = 64u;     // query rows per workgroup (= NT/CG·OR = NT/KG·SR)
override BK: u32 = 16u;     // keys per tile (multiple of 4)
override C4: u32 = 10u;     // ceil(D/4) (D itself is p.d)
override CG: u32 = 4u;      // O phase: column lanes per row
override OC4: u32 = 3u;     // O phase: vec4 columns per lane (1..4, CG·OC4 ≥ C4)
override OR: u32 = 4u;      // O phase: rows per thread (1, 2 or 4)
override SR: u32 = 4u;      // S phase: rows per thread (1, 2 or 4)
override QSTR4: u32 = 11u;  // Q tile row stride in vec4 (≥ C4)
override KSTR4: u32 = 11u;  // K and V tile row stride in vec4 (≥ C4)
override PSTR4: u32 = 5u;   // P tile row stride in vec4 (≥ BK/4)

const NEG: f32 = -1e30;
const SC: u32 = 4u;         // S phase: keys per thread (one vec4 of P)

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

@group(0) @binding(0) var<storage, read> q: array<ST>;
@group(0) @binding(1) var<storage, read> k: array<ST>;
@group(0) @binding(2) var<storage, read> v: array<ST>;
@group(0) @binding(3) var<storage, read_write> o: array<ST>;
@group(0) @binding(4) var<uniform> p: Params;

var<workgroup> qs: array<vec4<ST>, BQ * QSTR4>;
var<workgroup> kvs: array<vec4<ST>, BK * KSTR4>;
var<workgroup> ps: array<vec4<f32>, BQ * PSTR4>;
var<workgroup> pm: array<f32, BQ * (BK / 4u)>;
var<workgroup> alpha: array<f32, BQ>;

// Four elements d0..d0+3 of a row of q / k / v starting at `base` (= row start + d0), zero past D
// or when `ok` is false.
fn ld_q(base: u32, d0: u32, ok: bool) -> vec4<ST> {
    var x = vec4<ST>(ST(0.0));
    if (ok) {
        if (d0 + 3u < p.d) {
            x = vec4<ST>(q[base], q[base + 1u], q[base + 2u], q[base + 3u]);
        } else {
            x.x = q[base];
            if (d0 + 1u < p.d) { x.y = q[base + 1u]; }
            if (d0 + 2u < p.d) { x.z = q[base + 2u]; }
        }
    }
    return x;
}

fn ld_k(base: u32, d0: u32, ok: bool) -> vec4<ST> {
    var x = vec4<ST>(ST(0.0));
    if (ok) {
        if (d0 + 3u < p.d) {
            x = vec4<ST>(k[base], k[base + 1u], k[base + 2u], k[base + 3u]);
        } else {
            x.x = k[base];
            if (d0 + 1u < p.d) { x.y = k[base + 1u]; }
            if (d0 + 2u < p.d) { x.z = k[base + 2u]; }
        }
    }
    return x;
}

fn ld_v(base: u32, d0: u32, ok: bool) -> vec4<ST> {
    var x = vec4<ST>(ST(0.0));
    if (ok) {
        if (d0 + 3u < p.d) {
            x = vec4<ST>(v[base], v[base + 1u], v[base + 2u], v[base + 3u]);
        } else {
            x.x = v[base];
            if (d0 + 1u < p.d) { x.y = v[base + 1u]; }
            if (d0 + 2u < p.d) { x.z = v[base + 2u]; }
        }
    }
    return x;
}

fn max4(x: vec4<f32>) -> f32 {
    return max(max(x.x, x.y), max(x.z, x.w));
}

// Output row `row` (window row; O-phase row slot i) at vec4 column c4, where in range.
fn put_o(obase: u32, row: u32, i: u32, c4: u32, x: vec4<f32>) {
    if (i >= OR || row >= p.nr || c4 >= C4) {
        return;
    }
    let b = obase + row * p.hd + 4u * c4;
    o[b] = ST(x.x);
    if (4u * c4 + 1u < p.d) { o[b + 1u] = ST(x.y); }
    if (4u * c4 + 2u < p.d) { o[b + 2u] = ST(x.z); }
    if (4u * c4 + 3u < p.d) { o[b + 3u] = ST(x.w); }
}

@compute @workgroup_size(NT)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let wid = wg.x + wg.y * nwg.x;
    if (wid >= p.groups) { return; }
    let KG = BK / SC;
    let RG_S = NT / KG;
    let RG_O = NT / CG;

    let qt = wid % p.nqt;
    let bh = wid / p.nqt;
    let h = bh % p.heads;
    let b = bh / p.heads;
    let q0 = qt * BQ;
    let qbase = p.q_shift + b * p.sq * p.hd + h * p.d;
    let obase = p.o_shift + b * p.sq * p.hd + h * p.d;
    let kbase = p.k_shift + b * p.sk * p.hd + h * p.d;
    let vbase = p.v_shift + b * p.sk * p.hd + h * p.d;

    for (var i = li; i < BQ * C4; i = i + NT) {
        let r = i / C4;
        let c4 = i % C4;
        qs[r * QSTR4 + c4] = ld_q(qbase + (q0 + r) * p.hd + 4u * c4, 4u * c4, q0 + r < p.nr);
    }

    // S-phase coordinates: rows rs[i] (i < SR), keys 4·kg..4·kg+3 of the tile.
    let kg = li % KG;
    let rgs = li / KG;
    let rs = vec4<u32>(rgs) + RG_S * vec4<u32>(0u, 1u, 2u, 3u);
    // O-phase coordinates: rows ro[i] (i < OR), vec4 columns cg + CG·j (j < OC4).
    let cg = li % CG;
    let rgo = li / CG;
    let ro = vec4<u32>(rgo) + RG_O * vec4<u32>(0u, 1u, 2u, 3u);

    // Running max of the S-phase rows and sums of the O-phase rows, one row per component.
    var m = vec4<f32>(NEG);
    var l = vec4<f32>(0.0);
    var a00 = vec4<f32>(0.0);
    var a01 = vec4<f32>(0.0);
    var a02 = vec4<f32>(0.0);
    var a03 = vec4<f32>(0.0);
    var a10 = vec4<f32>(0.0);
    var a11 = vec4<f32>(0.0);
    var a12 = vec4<f32>(0.0);
    var a13 = vec4<f32>(0.0);
    var a20 = vec4<f32>(0.0);
    var a21 = vec4<f32>(0.0);
    var a22 = vec4<f32>(0.0);
    var a23 = vec4<f32>(0.0);
    var a30 = vec4<f32>(0.0);
    var a31 = vec4<f32>(0.0);
    var a32 = vec4<f32>(0.0);
    var a33 = vec4<f32>(0.0);

    var kend = p.sk;
    if (p.causal != 0u) {
        kend = min(p.sk, p.row0 + q0 + BQ);
    }
    for (var kt = 0u; kt < kend; kt = kt + BK) {
        workgroupBarrier(); // everyone is done with the previous V and P tiles
        for (var i = li; i < BK * C4; i = i + NT) {
            let kk = i / C4;
            let c4 = i % C4;
            // Key kk goes to slot (kk % 4)·KG + kk / 4, so that the S phase, where lane kg reads
            // keys 4·kg..4·kg+3, reads neighbouring slots in neighbouring lanes.
            let slot = (kk % 4u) * KG + kk / 4u;
            kvs[slot * KSTR4 + c4] = ld_k(kbase + (kt + kk) * p.hd + 4u * c4, 4u * c4, kt + kk < p.sk);
        }
        workgroupBarrier();

        // S phase.
        var s0 = vec4<f32>(0.0);
        var s1 = vec4<f32>(0.0);
        var s2 = vec4<f32>(0.0);
        var s3 = vec4<f32>(0.0);
        for (var d4 = 0u; d4 < C4; d4 = d4 + 1u) {
            let k0 = vec4<f32>(kvs[kg * KSTR4 + d4]);
            let k1 = vec4<f32>(kvs[(KG + kg) * KSTR4 + d4]);
            let k2 = vec4<f32>(kvs[(2u * KG + kg) * KSTR4 + d4]);
            let k3 = vec4<f32>(kvs[(3u * KG + kg) * KSTR4 + d4]);
            let x0 = vec4<f32>(qs[rs.x * QSTR4 + d4]);
            s0 = s0 + vec4<f32>(dot(x0, k0), dot(x0, k1), dot(x0, k2), dot(x0, k3));
            if (SR > 1u) {
                let x1 = vec4<f32>(qs[rs.y * QSTR4 + d4]);
                s1 = s1 + vec4<f32>(dot(x1, k0), dot(x1, k1), dot(x1, k2), dot(x1, k3));
            }
            if (SR > 2u) {
                let x2 = vec4<f32>(qs[rs.z * QSTR4 + d4]);
                let x3 = vec4<f32>(qs[rs.w * QSTR4 + d4]);
                s2 = s2 + vec4<f32>(dot(x2, k0), dot(x2, k1), dot(x2, k2), dot(x2, k3));
                s3 = s3 + vec4<f32>(dot(x3, k0), dot(x3, k1), dot(x3, k2), dot(x3, k3));
            }
        }
        // Scale to log2 units; mask keys past sk, keys after the query (causal) and unused lanes.
        let keys = vec4<u32>(kt + 4u * kg) + vec4<u32>(0u, 1u, 2u, 3u);
        let kvalid = keys < vec4<u32>(p.sk);
        let nc = vec4<bool>(p.causal == 0u);
        let grow = vec4<u32>(p.row0 + q0) + rs;
        s0 = select(vec4<f32>(NEG), s0 * p.scale_log2, kvalid & (nc | (keys <= vec4<u32>(grow.x))));
        s1 = select(vec4<f32>(NEG), s1 * p.scale_log2, kvalid & (nc | (keys <= vec4<u32>(grow.y))));
        s2 = select(vec4<f32>(NEG), s2 * p.scale_log2, kvalid & (nc | (keys <= vec4<u32>(grow.z))));
        s3 = select(vec4<f32>(NEG), s3 * p.scale_log2, kvalid & (nc | (keys <= vec4<u32>(grow.w))));
        pm[rs.x * KG + kg] = max4(s0);
        if (SR > 1u) {
            pm[rs.y * KG + kg] = max4(s1);
        }
        if (SR > 2u) {
            pm[rs.z * KG + kg] = max4(s2);
            pm[rs.w * KG + kg] = max4(s3);
        }
        workgroupBarrier(); // partial maxima published; nobody reads K any more

        var mt = vec4<f32>(NEG);
        for (var g = 0u; g < KG; g = g + 1u) {
            mt.x = max(mt.x, pm[rs.x * KG + g]);
            if (SR > 1u) {
                mt.y = max(mt.y, pm[rs.y * KG + g]);
            }
            if (SR > 2u) {
                mt.z = max(mt.z, pm[rs.z * KG + g]);
                mt.w = max(mt.w, pm[rs.w * KG + g]);
            }
        }
        let mnew = max(m, mt);
        let al = exp2(m - mnew);
        m = mnew;
        ps[rs.x * PSTR4 + kg] = exp2(s0 - mnew.x);
        if (SR > 1u) {
            ps[rs.y * PSTR4 + kg] = exp2(s1 - mnew.y);
        }
        if (SR > 2u) {
            ps[rs.z * PSTR4 + kg] = exp2(s2 - mnew.z);
            ps[rs.w * PSTR4 + kg] = exp2(s3 - mnew.w);
        }
        if (kg == 0u) {
            alpha[rs.x] = al.x;
            if (SR > 1u) {
                alpha[rs.y] = al.y;
            }
            if (SR > 2u) {
                alpha[rs.z] = al.z;
                alpha[rs.w] = al.w;
            }
        }
        // V tile over the K tile (in key order).
        for (var i = li; i < BK * C4; i = i + NT) {
            let kk = i / C4;
            let c4 = i % C4;
            kvs[kk * KSTR4 + c4] = ld_v(vbase + (kt + kk) * p.hd + 4u * c4, 4u * c4, kt + kk < p.sk);
        }
        workgroupBarrier();

        // O phase: a<i><j> = α·a<i><j> + Σ_k P[ro[i]][k] · V[k][cg + CG·j].
        var av = vec4<f32>(1.0);
        av.x = alpha[ro.x];
        if (OR > 1u) {
            av.y = alpha[ro.y];
        }
        if (OR > 2u) {
            av.z = alpha[ro.z];
            av.w = alpha[ro.w];
        }
        l = l * av;
        a00 = a00 * av.x;
        a01 = a01 * av.x;
        a02 = a02 * av.x;
        a03 = a03 * av.x;
        a10 = a10 * av.y;
        a11 = a11 * av.y;
        a12 = a12 * av.y;
        a13 = a13 * av.y;
        a20 = a20 * av.z;
        a21 = a21 * av.z;
        a22 = a22 * av.z;
        a23 = a23 * av.z;
        a30 = a30 * av.w;
        a31 = a31 * av.w;
        a32 = a32 * av.w;
        a33 = a33 * av.w;
        for (var kk4 = 0u; kk4 < BK / 4u; kk4 = kk4 + 1u) {
            let p0 = ps[ro.x * PSTR4 + kk4];
            var p1 = vec4<f32>(0.0);
            var p2 = vec4<f32>(0.0);
            var p3 = vec4<f32>(0.0);
            if (OR > 1u) {
                p1 = ps[ro.y * PSTR4 + kk4];
            }
            if (OR > 2u) {
                p2 = ps[ro.z * PSTR4 + kk4];
                p3 = ps[ro.w * PSTR4 + kk4];
            }
            let one = vec4<f32>(1.0);
            l = l + vec4<f32>(dot(p0, one), dot(p1, one), dot(p2, one), dot(p3, one));
            // key kk4·4 + 0
            {
                let vb = (kk4 * 4u + 0u) * KSTR4 + cg;
                let v0 = vec4<f32>(kvs[vb]);
                var v1 = vec4<f32>(0.0);
                if (OC4 > 1u && cg + 1u * CG < C4) { v1 = vec4<f32>(kvs[vb + 1u * CG]); }
                var v2 = vec4<f32>(0.0);
                if (OC4 > 2u && cg + 2u * CG < C4) { v2 = vec4<f32>(kvs[vb + 2u * CG]); }
                var v3 = vec4<f32>(0.0);
                if (OC4 > 3u && cg + 3u * CG < C4) { v3 = vec4<f32>(kvs[vb + 3u * CG]); }
                a00 = fma(vec4<f32>(p0.x), v0, a00);
                if (OC4 > 1u) { a01 = fma(vec4<f32>(p0.x), v1, a01); }
                if (OC4 > 2u) { a02 = fma(vec4<f32>(p0.x), v2, a02); }
                if (OC4 > 3u) { a03 = fma(vec4<f32>(p0.x), v3, a03); }
                if (OR > 1u) {
                    a10 = fma(vec4<f32>(p1.x), v0, a10);
                    if (OC4 > 1u) { a11 = fma(vec4<f32>(p1.x), v1, a11); }
                    if (OC4 > 2u) { a12 = fma(vec4<f32>(p1.x), v2, a12); }
                    if (OC4 > 3u) { a13 = fma(vec4<f32>(p1.x), v3, a13); }
                }
                if (OR > 2u) {
                    a20 = fma(vec4<f32>(p2.x), v0, a20);
                    if (OC4 > 1u) { a21 = fma(vec4<f32>(p2.x), v1, a21); }
                    if (OC4 > 2u) { a22 = fma(vec4<f32>(p2.x), v2, a22); }
                    if (OC4 > 3u) { a23 = fma(vec4<f32>(p2.x), v3, a23); }
                }
                if (OR > 3u) {
                    a30 = fma(vec4<f32>(p3.x), v0, a30);
                    if (OC4 > 1u) { a31 = fma(vec4<f32>(p3.x), v1, a31); }
                    if (OC4 > 2u) { a32 = fma(vec4<f32>(p3.x), v2, a32); }
                    if (OC4 > 3u) { a33 = fma(vec4<f32>(p3.x), v3, a33); }
                }
            }
            // key kk4·4 + 1
            {
                let vb = (kk4 * 4u + 1u) * KSTR4 + cg;
                let v0 = vec4<f32>(kvs[vb]);
                var v1 = vec4<f32>(0.0);
                if (OC4 > 1u && cg + 1u * CG < C4) { v1 = vec4<f32>(kvs[vb + 1u * CG]); }
                var v2 = vec4<f32>(0.0);
                if (OC4 > 2u && cg + 2u * CG < C4) { v2 = vec4<f32>(kvs[vb + 2u * CG]); }
                var v3 = vec4<f32>(0.0);
                if (OC4 > 3u && cg + 3u * CG < C4) { v3 = vec4<f32>(kvs[vb + 3u * CG]); }
                a00 = fma(vec4<f32>(p0.y), v0, a00);
                if (OC4 > 1u) { a01 = fma(vec4<f32>(p0.y), v1, a01); }
                if (OC4 > 2u) { a02 = fma(vec4<f32>(p0.y), v2, a02); }
                if (OC4 > 3u) { a03 = fma(vec4<f32>(p0.y), v3, a03); }
                if (OR > 1u) {
                    a10 = fma(vec4<f32>(p1.y), v0, a10);
                    if (OC4 > 1u) { a11 = fma(vec4<f32>(p1.y), v1, a11); }
                    if (OC4 > 2u) { a12 = fma(vec4<f32>(p1.y), v2, a12); }
                    if (OC4 > 3u) { a13 = fma(vec4<f32>(p1.y), v3, a13); }
                }
                if (OR > 2u) {
                    a20 = fma(vec4<f32>(p2.y), v0, a20);
                    if (OC4 > 1u) { a21 = fma(vec4<f32>(p2.y), v1, a21); }
                    if (OC4 > 2u) { a22 = fma(vec4<f32>(p2.y), v2, a22); }
                    if (OC4 > 3u) { a23 = fma(vec4<f32>(p2.y), v3, a23); }
                }
                if (OR > 3u) {
                    a30 = fma(vec4<f32>(p3.y), v0, a30);
                    if (OC4 > 1u) { a31 = fma(vec4<f32>(p3.y), v1, a31); }
                    if (OC4 > 2u) { a32 = fma(vec4<f32>(p3.y), v2, a32); }
                    if (OC4 > 3u) { a33 = fma(vec4<f32>(p3.y), v3, a33); }
                }
            }
            // key kk4·4 + 2
            {
                let vb = (kk4 * 4u + 2u) * KSTR4 + cg;
                let v0 = vec4<f32>(kvs[vb]);
                var v1 = vec4<f32>(0.0);
                if (OC4 > 1u && cg + 1u * CG < C4) { v1 = vec4<f32>(kvs[vb + 1u * CG]); }
                var v2 = vec4<f32>(0.0);
                if (OC4 > 2u && cg + 2u * CG < C4) { v2 = vec4<f32>(kvs[vb + 2u * CG]); }
                var v3 = vec4<f32>(0.0);
                if (OC4 > 3u && cg + 3u * CG < C4) { v3 = vec4<f32>(kvs[vb + 3u * CG]); }
                a00 = fma(vec4<f32>(p0.z), v0, a00);
                if (OC4 > 1u) { a01 = fma(vec4<f32>(p0.z), v1, a01); }
                if (OC4 > 2u) { a02 = fma(vec4<f32>(p0.z), v2, a02); }
                if (OC4 > 3u) { a03 = fma(vec4<f32>(p0.z), v3, a03); }
                if (OR > 1u) {
                    a10 = fma(vec4<f32>(p1.z), v0, a10);
                    if (OC4 > 1u) { a11 = fma(vec4<f32>(p1.z), v1, a11); }
                    if (OC4 > 2u) { a12 = fma(vec4<f32>(p1.z), v2, a12); }
                    if (OC4 > 3u) { a13 = fma(vec4<f32>(p1.z), v3, a13); }
                }
                if (OR > 2u) {
                    a20 = fma(vec4<f32>(p2.z), v0, a20);
                    if (OC4 > 1u) { a21 = fma(vec4<f32>(p2.z), v1, a21); }
                    if (OC4 > 2u) { a22 = fma(vec4<f32>(p2.z), v2, a22); }
                    if (OC4 > 3u) { a23 = fma(vec4<f32>(p2.z), v3, a23); }
                }
                if (OR > 3u) {
                    a30 = fma(vec4<f32>(p3.z), v0, a30);
                    if (OC4 > 1u) { a31 = fma(vec4<f32>(p3.z), v1, a31); }
                    if (OC4 > 2u) { a32 = fma(vec4<f32>(p3.z), v2, a32); }
                    if (OC4 > 3u) { a33 = fma(vec4<f32>(p3.z), v3, a33); }
                }
            }
            // key kk4·4 + 3
            {
                let vb = (kk4 * 4u + 3u) * KSTR4 + cg;
                let v0 = vec4<f32>(kvs[vb]);
                var v1 = vec4<f32>(0.0);
                if (OC4 > 1u && cg + 1u * CG < C4) { v1 = vec4<f32>(kvs[vb + 1u * CG]); }
                var v2 = vec4<f32>(0.0);
                if (OC4 > 2u && cg + 2u * CG < C4) { v2 = vec4<f32>(kvs[vb + 2u * CG]); }
                var v3 = vec4<f32>(0.0);
                if (OC4 > 3u && cg + 3u * CG < C4) { v3 = vec4<f32>(kvs[vb + 3u * CG]); }
                a00 = fma(vec4<f32>(p0.w), v0, a00);
                if (OC4 > 1u) { a01 = fma(vec4<f32>(p0.w), v1, a01); }
                if (OC4 > 2u) { a02 = fma(vec4<f32>(p0.w), v2, a02); }
                if (OC4 > 3u) { a03 = fma(vec4<f32>(p0.w), v3, a03); }
                if (OR > 1u) {
                    a10 = fma(vec4<f32>(p1.w), v0, a10);
                    if (OC4 > 1u) { a11 = fma(vec4<f32>(p1.w), v1, a11); }
                    if (OC4 > 2u) { a12 = fma(vec4<f32>(p1.w), v2, a12); }
                    if (OC4 > 3u) { a13 = fma(vec4<f32>(p1.w), v3, a13); }
                }
                if (OR > 2u) {
                    a20 = fma(vec4<f32>(p2.w), v0, a20);
                    if (OC4 > 1u) { a21 = fma(vec4<f32>(p2.w), v1, a21); }
                    if (OC4 > 2u) { a22 = fma(vec4<f32>(p2.w), v2, a22); }
                    if (OC4 > 3u) { a23 = fma(vec4<f32>(p2.w), v3, a23); }
                }
                if (OR > 3u) {
                    a30 = fma(vec4<f32>(p3.w), v0, a30);
                    if (OC4 > 1u) { a31 = fma(vec4<f32>(p3.w), v1, a31); }
                    if (OC4 > 2u) { a32 = fma(vec4<f32>(p3.w), v2, a32); }
                    if (OC4 > 3u) { a33 = fma(vec4<f32>(p3.w), v3, a33); }
                }
            }
        }
    }

    let linv = 1.0 / l;
    put_o(obase, q0 + ro.x, 0u, cg + 0u * CG, a00 * linv.x);
    put_o(obase, q0 + ro.x, 0u, cg + 1u * CG, a01 * linv.x);
    put_o(obase, q0 + ro.x, 0u, cg + 2u * CG, a02 * linv.x);
    put_o(obase, q0 + ro.x, 0u, cg + 3u * CG, a03 * linv.x);
    put_o(obase, q0 + ro.y, 1u, cg + 0u * CG, a10 * linv.y);
    put_o(obase, q0 + ro.y, 1u, cg + 1u * CG, a11 * linv.y);
    put_o(obase, q0 + ro.y, 1u, cg + 2u * CG, a12 * linv.y);
    put_o(obase, q0 + ro.y, 1u, cg + 3u * CG, a13 * linv.y);
    put_o(obase, q0 + ro.z, 2u, cg + 0u * CG, a20 * linv.z);
    put_o(obase, q0 + ro.z, 2u, cg + 1u * CG, a21 * linv.z);
    put_o(obase, q0 + ro.z, 2u, cg + 2u * CG, a22 * linv.z);
    put_o(obase, q0 + ro.z, 2u, cg + 3u * CG, a23 * linv.z);
    put_o(obase, q0 + ro.w, 3u, cg + 0u * CG, a30 * linv.w);
    put_o(obase, q0 + ro.w, 3u, cg + 1u * CG, a31 * linv.w);
    put_o(obase, q0 + ro.w, 3u, cg + 2u * CG, a32 * linv.w);
    put_o(obase, q0 + ro.w, 3u, cg + 3u * CG, a33 * linv.w);
}
