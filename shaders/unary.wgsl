// Elementwise unary ops: y = f(x) for SiLU, GELU (erf form, as torch), quick-GELU (x·σ(1.702x),
// CLIP), scale (y = alpha·x), ReLU and the soft clamp alpha·tanh(x/alpha) (TAESD's latent input). One invocation per element; f32 math whatever the storage type.
// Dispatch: ceil(n/WG) workgroups, folded over x and y (see kernels::registry::fold_groups).
// `in_shift`/`out_shift` are the element offsets of the windows inside their bindings.
// `main4` is the same op with one vec4 per invocation (n, shifts in vec4s), for CPU adapters where
// each storage access costs a per-lane loop whatever its width; the launcher uses it when the
// element count and both shifts are multiples of 4.

alias ST = f32;

override WG: u32 = 256u;
// 0 = silu, 1 = gelu, 2 = quick_gelu, 3 = scale, 4 = relu, 5 = soft clamp
override OP: u32 = 0u;

struct Params {
    n: u32,
    in_shift: u32,
    out_shift: u32,
    alpha: f32,
}

@group(0) @binding(0) var<storage, read> x: array<ST>;
@group(0) @binding(1) var<storage, read_write> y: array<ST>;
@group(0) @binding(2) var<uniform> p: Params;

@group(0) @binding(0) var<storage, read> x4: array<vec4<ST>>;
@group(0) @binding(1) var<storage, read_write> y4: array<vec4<ST>>;

// 1 + erf(u) without the cancellation of adding -0.99999 to 1 for negative u: there it is
// erfc(|u|), which the rational form computes directly (GELU of x = -4 is then exact to f32).
fn one_plus_erf(u: f32) -> f32 {
    let a = abs(u);
    let t = 1.0 / (1.0 + 0.5 * a);
    let c = t * exp(-a * a - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 +
        t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 +
        t * (-0.82215223 + t * 0.17087277)))))))));
    return select(2.0 - c, c, u < 0.0);
}

// tanh from exp(-2|u|) only: the textbook (e^2u - 1)/(e^2u + 1) overflows to Inf/Inf = NaN for
// large |u| on some backends, and the builtin's accuracy is not specified by WGSL.
fn tanh_stable(u: f32) -> f32 {
    let e = exp(-2.0 * abs(u));
    return sign(u) * (1.0 - e) / (1.0 + e);
}

fn apply(v: f32) -> f32 {
    switch OP {
        case 0u: { return v / (1.0 + exp(-v)); }
        case 1u: { return 0.5 * v * one_plus_erf(v * 0.70710678118654752); }
        case 2u: { return v / (1.0 + exp(-1.702 * v)); }
        case 4u: { return max(v, 0.0); }
        case 5u: { return p.alpha * tanh_stable(v / p.alpha); }
        default: { return p.alpha * v; }
    }
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let i = (wg.x + wg.y * nwg.x) * WG + li;
    if (i >= p.n) { return; }
    y[p.out_shift + i] = ST(apply(f32(x[p.in_shift + i])));
}

@compute @workgroup_size(WG)
fn main4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) li: u32) {
    let i = (wg.x + wg.y * nwg.x) * WG + li;
    if (i >= p.n) { return; }
    let v = vec4<f32>(x4[p.in_shift + i]);
    y4[p.out_shift + i] = vec4<ST>(vec4<f32>(apply(v.x), apply(v.y), apply(v.z), apply(v.w)));
}
