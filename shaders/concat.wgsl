// Strided block copy, the building block of concatenation: for a part of shape [rows, cols]
// (rows = product of the dims before the concat dim, cols = the rest), copy it into the output
// viewed as [rows, dst_stride] at column offset (folded into the y window):
//     y[dst_shift + r·dst_stride + c] = x[src_shift + r·cols + c]
// One invocation per element of the launch (rows × cols, row-major). Bindings: 0 x (read),
// 1 y (read_write), 2 Params (uniform); `*_shift` are the window offsets inside the bindings.
// Launchers split big parts into row blocks (or column blocks of one row) that fit a binding.
// Grid: ceil(n / WG) workgroups folded over x and y; index = wg.x + wg.y·nwg.x.

alias ST = f32;

override WG: u32 = 256u;

struct Params {
    n: u32,          // rows · cols
    cols: u32,
    dst_stride: u32,
    src_shift: u32,
    dst_shift: u32,
}

@group(0) @binding(0) var<storage, read> x: array<ST>;
@group(0) @binding(1) var<storage, read_write> y: array<ST>;
@group(0) @binding(2) var<uniform> p: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let i = (wg.x + wg.y * nwg.x) * WG + li;
    if (i >= p.n) { return; }
    let r = i / p.cols;
    let c = i % p.cols;
    y[p.dst_shift + r * p.dst_stride + c] = x[p.src_shift + i];
}
