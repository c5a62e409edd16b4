// Embedding gather: out[q, :] = table[ids[q], :] for table [V, D].
// Bindings: 0 = table window (read), 1 = pairs (read, vec2<u32>: x = output row, y = table row,
// both relative to this dispatch's windows), 2 = out window (read_write), 3 = Params (uniform).
// The launcher routes the ids on the host: a table larger than one binding is cut into row ranges
// (and the output likewise), and each dispatch gets only the pairs whose rows fall in its windows,
// for a column range [c0, c0 + cols) of the D columns (all of them unless a row exceeds a binding).
// One invocation per (pair, column): n = pairs · cols; out[o_shift + x·D + c] =
// table[t_shift + y·D + c]. A plain copy, so f16 tables stay f16 bits-exact.
// Dispatch: ceil(n/WG) workgroups folded over x and y (kernels::registry::fold_groups).

alias ST = f32;

override WG: u32 = 256u;

struct Params {
    n: u32,
    cols: u32,
    d: u32,
    t_shift: u32,
    o_shift: u32,
}

@group(0) @binding(0) var<storage, read> table: array<ST>;
@group(0) @binding(1) var<storage, read> pairs: array<vec2<u32>>;
@group(0) @binding(2) var<storage, read_write> out: array<ST>;
@group(0) @binding(3) var<uniform> p: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let i = (wg.x + wg.y * nwg.x) * WG + li;
    if (i >= p.n) { return; }
    let e = i / p.cols;
    let c = i - e * p.cols;
    let pr = pairs[e];
    out[p.o_shift + pr.x * p.d + c] = table[p.t_shift + pr.y * p.d + c];
}
