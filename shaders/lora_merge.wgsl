// LoRA merge into a weight: out[n, k] = ST(f32(pristine[n, k]) + Σ_r up[n, r]·down[r, k] + full[n, k]).
// One invocation per output element of a chunk of rows; the delta is accumulated in f32 and added
// to the pristine value once, so the rounding to ST happens a single time. MODE 0 copies
// pristine to out without arithmetic (bit-exact restore: -0.0 stays -0.0, f16 stays unrounded).
// Ranks too long for one loop (lavapipe stops shader loops after 65535 iterations) or whose
// `down` rows exceed one binding are split by the launcher into rank chunks summed in an f32
// scratch (MODE 2 starts it, MODE 3 adds to it, both with ST = f32); the last chunk is a MODE 1
// launch that reads the scratch as `full`. Dispatch: ceil(rows·k / WG) workgroups, folded over
// x and y.

alias ST = f32;

override WG: u32 = 256u;
// 0 = copy, 1 = merge, 2 = scratch = delta, 3 = scratch += delta
override MODE: u32 = 1u;
override HAS_LR: u32 = 1u;
override HAS_FULL: u32 = 0u;

struct Params {
    n: u32,        // elements in this chunk (rows · k)
    k: u32,
    r: u32,        // ranks summed by this launch
    ur: u32,       // row stride of up (its full rank)
    p_shift: u32,
    o_shift: u32,
    u_shift: u32,  // includes the first rank of this launch
    d_shift: u32,
    f_shift: u32,
}

@group(0) @binding(0) var<storage, read> pristine: array<ST>;
@group(0) @binding(1) var<storage, read_write> out: array<ST>;
@group(0) @binding(2) var<storage, read> up: array<f32>;
@group(0) @binding(3) var<storage, read> down: array<f32>;
@group(0) @binding(4) var<storage, read> full: array<f32>;
@group(0) @binding(5) var<uniform> p: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let i = (wg.x + wg.y * nwg.x) * WG + li;
    if (i >= p.n) { return; }
    let o = p.o_shift + i;
    if (MODE == 0u) {
        out[o] = pristine[p.p_shift + i];
        return;
    }
    let row = i / p.k;
    let col = i - row * p.k;
    var acc = 0.0;
    if (HAS_LR == 1u) {
        let ub = p.u_shift + row * p.ur;
        var di = p.d_shift + col;
        for (var j = 0u; j < p.r; j++) {
            acc += up[ub + j] * down[di];
            di += p.k;
        }
    }
    if (HAS_FULL == 1u) {
        acc += full[p.f_shift + i];
    }
    if (MODE == 1u) {
        out[o] = ST(f32(pristine[p.p_shift + i]) + acc);
    } else if (MODE == 2u) {
        out[o] = ST(acc);
    } else {
        out[o] = ST(f32(out[o]) + acc);
    }
}
