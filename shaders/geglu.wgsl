// GEGLU (diffusers): x [rows, 2N] → out [rows, N], out[r, j] = x[r, j] · gelu(x[r, N + j]) with
// the exact erf GELU; the first half of each row is the value, the second half the gate.
// Bindings: 0 = hidden window of x (read), 1 = gate window of x (read; the same buffer bound again,
// N elements further on), 2 = out (read_write), 3 = Params (uniform).
// One invocation per output element of the dispatch's chunk: a box of `rows` rows × `cols`
// columns. Local (r, c) reads hidden[h_shift + r·2N + c] and gate[g_shift + r·2N + c] and writes
// out[o_shift + r·N + c]; the launcher splits rows (and columns, for absurdly wide rows) so every
// window fits one binding. f32 math whatever the storage type.
// Dispatch: ceil(rows·cols/WG) workgroups folded over x and y (kernels::registry::fold_groups).
// `main4`: the same with one vec4 per invocation and every count and shift in vec4s, for CPU
// adapters (a storage access costs a per-lane loop whatever its width); the launcher uses it when
// N, the chunk's columns and all shifts are multiples of 4.

alias ST = f32;

override WG: u32 = 256u;

struct Params {
    n: u32,
    cols: u32,
    half: u32,
    h_shift: u32,
    g_shift: u32,
    o_shift: u32,
}

@group(0) @binding(0) var<storage, read> hidden: array<ST>;
@group(0) @binding(1) var<storage, read> gate: array<ST>;
@group(0) @binding(2) var<storage, read_write> out: array<ST>;
@group(0) @binding(3) var<uniform> p: Params;

@group(0) @binding(0) var<storage, read> hidden4: array<vec4<ST>>;
@group(0) @binding(1) var<storage, read> gate4: array<vec4<ST>>;
@group(0) @binding(2) var<storage, read_write> out4: array<vec4<ST>>;

// 1 + erf(u), computed as erfc(|u|) for negative u so a strongly negative gate keeps its
// relative precision (same rational form and reasoning as shaders/unary.wgsl).
fn one_plus_erf(u: f32) -> f32 {
    let a = abs(u);
    let t = 1.0 / (1.0 + 0.5 * a);
    let c = t * exp(-a * a - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 +
        t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 +
        t * (-0.82215223 + t * 0.17087277)))))))));
    return select(2.0 - c, c, u < 0.0);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let i = (wg.x + wg.y * nwg.x) * WG + li;
    if (i >= p.n) { return; }
    let r = i / p.cols;
    let c = i - r * p.cols;
    let src = r * 2u * p.half + c;
    let h = f32(hidden[p.h_shift + src]);
    let g = f32(gate[p.g_shift + src]);
    out[p.o_shift + r * p.half + c] = ST(h * 0.5 * g * one_plus_erf(g * 0.70710678118654752));
}

fn gelu_mul(h: f32, g: f32) -> f32 {
    return h * 0.5 * g * one_plus_erf(g * 0.70710678118654752);
}

@compute @workgroup_size(WG)
fn main4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) li: u32) {
    let i = (wg.x + wg.y * nwg.x) * WG + li;
    if (i >= p.n) { return; }
    let r = i / p.cols;
    let c = i - r * p.cols;
    let src = r * 2u * p.half + c;
    let h = vec4<f32>(hidden4[p.h_shift + src]);
    let g = vec4<f32>(gate4[p.g_shift + src]);
    out4[p.o_shift + r * p.half + c] =
        vec4<ST>(vec4<f32>(gelu_mul(h.x, g.x), gelu_mul(h.y, g.y), gelu_mul(h.z, g.z),
                           gelu_mul(h.w, g.w)));
}
