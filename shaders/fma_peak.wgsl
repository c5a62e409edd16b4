// Multiply-add throughput microbenchmark: the device's practical f32 peak, against which every
// kernel's GFLOP/s is reported. Each invocation runs `iters` loop iterations of 8 steps over 8
// independent vec4 chains (enough independent work to hide latency), acc = acc * a + b. The body
// is unrolled 8x because lavapipe pays a large fixed cost per loop iteration; `*`+`+` rather than
// fma() because drivers that lower fma() exactly (lavapipe) make it a slow call, and the kernels
// being measured use mul+add. With |a| < 1 each chain converges to b/(1-a), so the result is
// checkable against a CPU reference and cannot be optimized away.
// Flops per invocation: iters * 8 steps * 8 chains * 4 lanes * 2.

override WG: u32 = 256u;

struct Params {
    iters: u32,
    n: u32,
    a: f32,
    b: f32,
}

@group(0) @binding(0) var<storage, read> seeds: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let i = (wg.x + wg.y * nwg.x) * WG + li;
    if (i >= p.n) { return; }
    let s = seeds[i];
    let a = vec4<f32>(p.a);
    let b = vec4<f32>(p.b);
    var c0 = vec4<f32>(s, s + 1.0, s + 2.0, s + 3.0);
    var c1 = c0 + 4.0;
    var c2 = c0 + 8.0;
    var c3 = c0 + 12.0;
    var c4 = c0 - 4.0;
    var c5 = c0 - 8.0;
    var c6 = c0 - 12.0;
    var c7 = c0 * 0.5;
    // The bound is read once: some drivers (lavapipe) reload a uniform on every loop test.
    let iters = p.iters;
    for (var k = 0u; k < iters; k++) {
        c0 = c0 * a + b; c1 = c1 * a + b; c2 = c2 * a + b; c3 = c3 * a + b;
        c4 = c4 * a + b; c5 = c5 * a + b; c6 = c6 * a + b; c7 = c7 * a + b;
        c0 = c0 * a + b; c1 = c1 * a + b; c2 = c2 * a + b; c3 = c3 * a + b;
        c4 = c4 * a + b; c5 = c5 * a + b; c6 = c6 * a + b; c7 = c7 * a + b;
        c0 = c0 * a + b; c1 = c1 * a + b; c2 = c2 * a + b; c3 = c3 * a + b;
        c4 = c4 * a + b; c5 = c5 * a + b; c6 = c6 * a + b; c7 = c7 * a + b;
        c0 = c0 * a + b; c1 = c1 * a + b; c2 = c2 * a + b; c3 = c3 * a + b;
        c4 = c4 * a + b; c5 = c5 * a + b; c6 = c6 * a + b; c7 = c7 * a + b;
        c0 = c0 * a + b; c1 = c1 * a + b; c2 = c2 * a + b; c3 = c3 * a + b;
        c4 = c4 * a + b; c5 = c5 * a + b; c6 = c6 * a + b; c7 = c7 * a + b;
        c0 = c0 * a + b; c1 = c1 * a + b; c2 = c2 * a + b; c3 = c3 * a + b;
        c4 = c4 * a + b; c5 = c5 * a + b; c6 = c6 * a + b; c7 = c7 * a + b;
        c0 = c0 * a + b; c1 = c1 * a + b; c2 = c2 * a + b; c3 = c3 * a + b;
        c4 = c4 * a + b; c5 = c5 * a + b; c6 = c6 * a + b; c7 = c7 * a + b;
        c0 = c0 * a + b; c1 = c1 * a + b; c2 = c2 * a + b; c3 = c3 * a + b;
        c4 = c4 * a + b; c5 = c5 * a + b; c6 = c6 * a + b; c7 = c7 * a + b;
    }
    let t = c0 + c1 + c2 + c3 + c4 + c5 + c6 + c7;
    out[i] = t.x + t.y + t.z + t.w;
}
