// Elementwise binary ops with NumPy broadcasting: out = a + b, a - b, a · b, or alpha·a + beta·b.
// Bindings: 0 = a (read), 1 = b (read), 2 = out (read_write, contiguous), 3 = Params (uniform).
// One invocation per output element of the dispatch's chunk; f32 math whatever the storage type.
// Dispatch: ceil(n/WG) workgroups folded over x and y (kernels::registry::fold_groups).
// Layout: the launcher merges dimensions, then hands each dispatch a chunk of the output that is a
// box [shape[0], ..., shape[NDIM-1]] (row-major, contiguous in `out`). The element at chunk
// coordinates c reads a[a_shift + Σ c_d·sa_d] and b[b_shift + Σ c_d·sb_d]; a stride of 0 is a
// broadcast dimension. `*_shift` also absorb where the chunk starts inside each window, so all
// indices here are chunk-local and fit u32.
// `main4` computes 4 consecutive outputs per invocation with vec4 accesses, for CPU adapters (a
// storage access costs a per-lane loop whatever its width). The launcher uses it when the
// innermost extent and every window length and shift are multiples of 4 and each operand's
// innermost stride is 1 (then its other strides are multiples of 4) or 0 (one value, picked from
// its vec4). n and o_shift count vec4s there; a_shift, b_shift and strides count elements.

alias ST = f32;

override WG: u32 = 256u;
// Number of (merged) dimensions of the chunk, 1..=8.
override NDIM: u32 = 1u;
// 0 = add, 1 = sub, 2 = mul, 3 = alpha·a + beta·b
override OP: u32 = 0u;

struct Params {
    n: u32,
    a_shift: u32,
    b_shift: u32,
    o_shift: u32,
    alpha: f32,
    beta: f32,
    pad0: u32,
    pad1: u32,
    shape: array<vec4<u32>, 2>,
    sa: array<vec4<u32>, 2>,
    sb: array<vec4<u32>, 2>,
}

@group(0) @binding(0) var<storage, read> a: array<ST>;
@group(0) @binding(1) var<storage, read> b: array<ST>;
@group(0) @binding(2) var<storage, read_write> out: array<ST>;
@group(0) @binding(3) var<uniform> p: Params;

@group(0) @binding(0) var<storage, read> a4: array<vec4<ST>>;
@group(0) @binding(1) var<storage, read> b4: array<vec4<ST>>;
@group(0) @binding(2) var<storage, read_write> out4: array<vec4<ST>>;

fn apply(x: f32, y: f32) -> f32 {
    switch OP {
        case 0u: { return x + y; }
        case 1u: { return x - y; }
        case 2u: { return x * y; }
        default: { return p.alpha * x + p.beta * y; }
    }
}

// Chunk-local offsets into a and b of output element i.
fn offsets(i: u32) -> vec2<u32> {
    var ia = 0u;
    var ib = 0u;
    var rest = i;
    // Innermost dimension first; dimension 0 takes what is left (no modulo needed).
    for (var d = NDIM - 1u; d > 0u; d = d - 1u) {
        let ext = p.shape[d / 4u][d % 4u];
        let c = rest % ext;
        rest = rest / ext;
        ia = ia + c * p.sa[d / 4u][d % 4u];
        ib = ib + c * p.sb[d / 4u][d % 4u];
    }
    return vec2<u32>(ia + rest * p.sa[0].x, ib + rest * p.sb[0].x);
}

@compute @workgroup_size(WG)
fn main4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) li: u32) {
    let i = (wg.x + wg.y * nwg.x) * WG + li;
    if (i >= p.n) { return; }
    let o = offsets(4u * i);
    let last = (NDIM - 1u) % 8u;
    let ea = p.a_shift + o.x;
    let eb = p.b_shift + o.y;
    var va = vec4<f32>(a4[ea / 4u]);
    var vb = vec4<f32>(b4[eb / 4u]);
    if (p.sa[last / 4u][last % 4u] == 0u) { va = vec4<f32>(va[ea % 4u]); }
    if (p.sb[last / 4u][last % 4u] == 0u) { vb = vec4<f32>(vb[eb % 4u]); }
    out4[p.o_shift + i] =
        vec4<ST>(vec4<f32>(apply(va.x, vb.x), apply(va.y, vb.y), apply(va.z, vb.z),
                           apply(va.w, vb.w)));
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let i = (wg.x + wg.y * nwg.x) * WG + li;
    if (i >= p.n) { return; }
    var ia = 0u;
    var ib = 0u;
    var rest = i;
    // Innermost dimension first; dimension 0 takes what is left (no modulo needed).
    for (var d = NDIM - 1u; d > 0u; d = d - 1u) {
        let ext = p.shape[d / 4u][d % 4u];
        let c = rest % ext;
        rest = rest / ext;
        ia = ia + c * p.sa[d / 4u][d % 4u];
        ib = ib + c * p.sb[d / 4u][d % 4u];
    }
    ia = ia + rest * p.sa[0].x;
    ib = ib + rest * p.sb[0].x;
    let v = apply(f32(a[p.a_shift + ia]), f32(b[p.b_shift + ib]));
    out[p.o_shift + i] = ST(v);
}
