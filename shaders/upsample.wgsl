// Nearest-neighbour resize of NCHW planes with PyTorch's index rule (F.interpolate(mode="nearest")
// with an output size): per axis, src = dst when out == in, dst >> 1 when out == 2·in, otherwise
// min(floor(f32(dst) · scale), in − 1) with scale = f32(in) / f32(out) computed on the CPU (as
// torch does in f32), so the GPU and the reference pick the same source for every size.
//
// One invocation per output element of the launch: planes × rows × out_w elements, row-major.
// Bindings: 0 x (read), 1 y (read_write), 2 Params (uniform). The x window starts at input row
// iy0 of the launch's first plane; the y window at output row oy0 of that plane (launchers split
// big tensors into plane blocks, or into row blocks of one plane). `*_shift` are the element
// offsets of the windows inside their bindings.
// Grid: ceil(n / WG) workgroups folded over x and y; index = wg.x + wg.y·nwg.x.

alias ST = f32;

override WG: u32 = 256u;

struct Params {
    n: u32,          // output elements in this launch
    rows: u32,       // output rows per plane in this launch
    out_w: u32,
    in_h: u32,       // full input height and width
    in_w: u32,
    out_h: u32,      // full output height
    oy0: u32,        // global output row of local row 0
    iy0: u32,        // global input row at the start of the x window
    x_plane: u32,    // elements per input plane (H·W)
    y_plane: u32,    // elements per output plane (OH·OW)
    x_shift: u32,
    y_shift: u32,
    scale_h: f32,
    scale_w: f32,
}

@group(0) @binding(0) var<storage, read> x: array<ST>;
@group(0) @binding(1) var<storage, read_write> y: array<ST>;
@group(0) @binding(2) var<uniform> p: Params;

fn src_index(d: u32, n_in: u32, n_out: u32, scale: f32) -> u32 {
    if (n_out == n_in) { return d; }
    if (n_out == 2u * n_in) { return d >> 1u; }
    return min(u32(floor(f32(d) * scale)), n_in - 1u);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let i = (wg.x + wg.y * nwg.x) * WG + li;
    if (i >= p.n) { return; }
    let per_plane = p.rows * p.out_w;
    let plane = i / per_plane;
    let rem = i % per_plane;
    let r = rem / p.out_w;
    let ox = rem % p.out_w;
    let iy = src_index(p.oy0 + r, p.in_h, p.out_h, p.scale_h) - p.iy0;
    let ix = src_index(ox, p.in_w, p.out_w, p.scale_w);
    y[p.y_shift + plane * p.y_plane + r * p.out_w + ox] = x[p.x_shift + plane * p.x_plane + iy * p.in_w + ix];
}
