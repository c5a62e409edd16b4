// Sinusoidal timestep embedding, as diffusers get_timestep_embedding(t, dim, flip_sin_to_cos=True,
// downscale_freq_shift=0, scale=1, max_period=10000): out[b, j] = cos(t_b·f_j) for j < half,
// sin(t_b·f_{j-half}) for half ≤ j < 2·half, 0 in the padding column of an odd dim.
// Bindings: 0 = aux (read, always f32: the B timesteps, then at g_base three f32 words per
// frequency), 1 = out [B, dim] (read_write, ST), 2 = Params (uniform).
// One invocation per output element of the dispatch's chunk (elements e0 .. e0+n of out).
// Precision: t·f reaches ~1000 rad, where a plain f32 product is off by ~1e-4 rad. The host passes
// each frequency in turns, g = f/2π, as three pieces g1+g2+g3 of ≤12 significant bits each (36
// bits in all); t is split by masking into t1+t2 of ≤12 bits. Every product ti·gj is then exact in
// f32 (even if fused into an fma), and the whole turns are dropped from each exactly, so the
// argument is known to ~1e-7 turns before a sin/cos evaluated here by octant and Taylor
// polynomials (|y| ≤ π/4, truncation < 2e-9), independent of the driver's sin/cos accuracy.
// Dispatch: ceil(n/WG) workgroups folded over x and y (kernels::registry::fold_groups).

alias ST = f32;

override WG: u32 = 256u;

struct Params {
    n: u32,
    e0: u32,
    dim: u32,
    half: u32,
    g_base: u32,
    o_shift: u32,
}

@group(0) @binding(0) var<storage, read> aux: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<ST>;
@group(0) @binding(2) var<uniform> p: Params;

// x minus the nearest integer, exactly (for |x| < 2^23 the difference is representable).
fn wrap(x: f32) -> f32 {
    return x - floor(x + 0.5);
}

// (sin, cos) of 2π·s for s in turns, |s| ≲ 0.5.
fn sincos_turns(s: f32) -> vec2<f32> {
    let q = floor(s * 4.0 + 0.5);
    let y = (s - q * 0.25) * 6.28318530717958648; // |y| ≤ π/4
    let z = y * y;
    let sn = y * (1.0 + z * (-1.0 / 6.0 + z * (1.0 / 120.0 + z * (-1.0 / 5040.0 + z * (1.0 / 362880.0)))));
    let cs = 1.0 + z * (-0.5 + z * (1.0 / 24.0 + z * (-1.0 / 720.0 + z * (1.0 / 40320.0 + z * (-1.0 / 3628800.0)))));
    switch ((i32(q) % 4 + 4) % 4) {
        case 0: { return vec2<f32>(sn, cs); }
        case 1: { return vec2<f32>(cs, -sn); }
        case 2: { return vec2<f32>(-sn, -cs); }
        default: { return vec2<f32>(-cs, sn); }
    }
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let i = (wg.x + wg.y * nwg.x) * WG + li;
    if (i >= p.n) { return; }
    let e = p.e0 + i;
    let row = e / p.dim;
    let j = e - row * p.dim;
    var v = 0.0;
    if (j < 2u * p.half) {
        let k = select(j, j - p.half, j >= p.half);
        let t = aux[row];
        let t1 = bitcast<f32>(bitcast<u32>(t) & 0xFFFFF000u);
        let t2 = t - t1;
        let gi = p.g_base + 3u * k;
        let g1 = aux[gi];
        let g2 = aux[gi + 1u];
        let g3 = aux[gi + 2u];
        // Largest terms first, wrapping to (-0.5, 0.5] turns after each exact-product addition.
        var s = wrap(wrap(t1 * g1) + wrap(t1 * g2));
        s = wrap(s + wrap(t2 * g1));
        s = wrap(s + (t2 * g2 + t1 * g3 + t2 * g3));
        let sc = sincos_turns(s);
        v = select(sc.x, sc.y, j < p.half);
    }
    out[p.o_shift + i] = ST(v);
}
