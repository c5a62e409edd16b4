// 2-D convolution (cross-correlation, as PyTorch) as an implicit GEMM, no im2col buffer.
//
// Per launch:  y[img, co, oy, ox] (+)= bias[co] + Σ_{ci,ky,kx} w[co, ci, ky, kx] · x[img, ci, iy, ix]
// with iy = (oy0 + oy)·SD + ky − pad_t, ix = ox·SD + kx − pad_l, and zeros outside [0,H)×[0,W).
// GEMM view: C[M = Cout, P = imgs·rows·Wo] = A[M, K = Cin·KH·KW] · B[K, P]; B is gathered from x
// on the fly and A is the weight, prepacked by conv_pack.wgsl as
//     wp[blk][ci][ky][kx][r] = w[blk·TM + r, ci, ky, kx]   (zero for blk·TM + r ≥ Cout)
// so the TM weights that one tap contributes to a block of output channels are aligned vec4s.
//
// Work split: a workgroup computes TM output channels (channel block `blk`) × TN·WG output pixels;
// invocation li owns TN consecutive pixels (columns TN·li.. of the tile) for all TM channels, held
// in vec4 accumulators acc[r·4 + j] (channel r < TM, pixels 4j..4j+3 of its TN), indexed only by
// values that are literals once the helpers are inlined, so they are registers. For each tap,
// lane q of the subgroup loads the vec4 of weights of channels 4q..4q+3 and subgroupBroadcast hands
// it to every lane (BCAST = 1; needs subgroup size ≥ TM/4), so a weight is loaded once per subgroup
// rather than once per invocation. BCAST = 0 (no usable subgroups): every invocation loads all TM
// weights. There is no workgroup memory and no barrier: each pixel value is loaded by the one
// invocation that uses it and reused from registers for all TM channels; weights are reused across
// the subgroup's lanes and the invocation's TN pixels. Accumulation is f32 for both storage types.
//
// Entry points (override constants WG, TM, TN, KH, KW, SD, PL, BCAST):
//   main_vec: pixels read as aligned vec4 blocks of input rows. Needs W % 4 == 0, Wo % TN == 0,
//             16-byte aligned x and y windows (shift % 4 == 0), KH, KW ≤ 3 and NB ≤ 12. Per input
//             channel an invocation loads, for each of the KH rows, the NB blocks holding every
//             column its TN pixels need, and picks all KH·KW taps out of registers.
//   main_any: any shape; TN scalar loads per tap, scalar stores.
//
// Bindings: 0 x (read, NCHW, scalar view), 1 wp (read, packed weights as vec4), 2 bias (read; any
// buffer when has_bias = 0), 3 y (read_write, NCHW, scalar view), 4 Params (uniform), 5 x4 (read,
// vec4 view of binding 0's window), 6 y4 (read_write, vec4 view of binding 3's window). main_vec
// uses 1, 2, 4, 5, 6; main_any uses 0–4.
// Every binding is a window of its tensor: `*_shift` is the element index of the window's first
// element inside the binding. Launchers split big tensors into (images, output-channel,
// input-channel, output-row) blocks; a launch continuing an earlier input-channel block has
// `accumulate` = 1 and adds into y (the bias came with the first block). A launch's output
// channels 0..cout are block channels co_lo..co_lo + cout of its packed-weight window.
// Grid: tiles_m · tiles_n workgroups folded over x and y; tile = wg.x + wg.y·nwg.x, channel block
// fastest (neighbouring workgroups read the same pixels). Every invocation of a live workgroup runs
// the whole K loop (its weight share feeds the other lanes); only its loads and stores are guarded.
//
// Why this shape: on Mesa lavapipe every storage load is a per-lane loop (~100 cycles for 8 lanes,
// whatever the width), while subgroupBroadcast is one permute and an FMA two vector ops; a lane
// must therefore reuse each loaded value as often as possible. Per input channel, main_vec does
// KH·NB pixel loads and KH·KW weight-share loads for TM·TN·KH·KW FMAs (TM = 32, TN = 16 on CPU
// adapters; launchers pick smaller tiles for GPUs, where the accumulators must fit registers).
// The per-channel-quad code (fma_taps, quad9, quad1, the stores) is written out for TM ≤ 32 and
// TN ≤ 16, each block guarded by an override test that is constant per pipeline.

alias ST = f32;

override WG: u32 = 64u;     // invocations per workgroup (multiple of 8)
override TM: u32 = 32u;     // output channels per workgroup: 4, 8, ..., 32
override TN: u32 = 4u;      // pixels per invocation: 4, ..., 16
override KH: u32 = 3u;
override KW: u32 = 3u;
override SD: u32 = 1u;      // stride
override PL: u32 = 1u;      // left padding (main_vec's window offsets; equals p.pad_l)
override BCAST: u32 = 1u;   // 1: weights shared through subgroupBroadcast
override PB: u32 = (PL + 3u) / 4u;                                   // window blocks left of SD·ox0
override NB: u32 = (SD * (TN - 1u) + KW - 1u + 4u * PB - PL) / 4u + 1u;   // blocks in the window

struct Params {
    cin: u32,        // input channels in this launch
    cout: u32,       // output channels in this launch
    co_lo: u32,      // block channel (blk·TM + r) of the launch's first output channel
    h: u32,          // input height (bounds of iy)
    w: u32,          // input width
    rows: u32,       // output rows in this launch
    wo: u32,         // output width
    p: u32,          // pixels (GEMM columns) = imgs·rows·wo
    oy0: u32,        // global output row of local row 0
    iy0: u32,        // global input row at the start of the x window
    pad_t: u32,
    pad_l: u32,
    x_img: u32,      // elements per image in x
    x_ch: u32,       // elements per channel in x (H·W)
    y_img: u32,      // elements per image in y
    y_ch: u32,       // elements per channel in y (Ho·Wo)
    w_blk: u32,      // packed elements per channel block (cin_total·KH·KW·TM)
    x_shift: u32,
    w_shift: u32,
    b_shift: u32,
    y_shift: u32,
    has_bias: u32,
    accumulate: u32,
    tiles_m: u32,
    n_tiles: u32,    // tiles_m · tiles_n
}

@group(0) @binding(0) var<storage, read> x: array<ST>;
@group(0) @binding(1) var<storage, read> wp: array<vec4<ST>>;
@group(0) @binding(2) var<storage, read> bias: array<ST>;
@group(0) @binding(3) var<storage, read_write> y: array<ST>;
@group(0) @binding(4) var<uniform> p: Params;
@group(0) @binding(5) var<storage, read> x4: array<vec4<ST>>;
@group(0) @binding(6) var<storage, read_write> y4: array<vec4<ST>>;

// Accumulators: acc[r·4 + j] = channel r, pixels 4j..4j+3 of this invocation. Only ever indexed
// by values that are literals after inlining, so they are registers, not memory.
var<private> acc: array<vec4<f32>, 128>;

// main_vec's row windows: NB aligned blocks of input rows iy + ky, ky < KH ≤ 3 (only ever indexed
// by constants, so they live in registers).
var<private> win: array<array<vec4<f32>, 12>, 3>;
// main_vec's tap vectors: bt[(ky·3 + kx)·4 + j] = pixels 4j..4j+3 of tap (ky, kx).
var<private> bt: array<vec4<f32>, 36>;
// main_vec's weight shares: sh<ky><kx> is this lane's share of tap (ky, kx).
var<private> sh00: vec4<f32>;
var<private> sh01: vec4<f32>;
var<private> sh02: vec4<f32>;
var<private> sh10: vec4<f32>;
var<private> sh11: vec4<f32>;
var<private> sh12: vec4<f32>;
var<private> sh20: vec4<f32>;
var<private> sh21: vec4<f32>;
var<private> sh22: vec4<f32>;

fn clear_acc() {
    acc = array<vec4<f32>, 128>();
}

// Weights of channels 4q..4q+3 of one tap: `v` is lane q's share broadcast through the subgroup
// (BCAST = 1; the lane index is a literal at every call site, as subgroupBroadcast requires), else
// every invocation loads them from wp (wq = vec4 index of the tap's TM weights).
fn rows4(v: vec4<f32>, wq: u32, q: u32) -> vec4<f32> {
    if (BCAST == 1u) {
        return v;
    }
    return vec4<f32>(wp[wq + q]);
}

// Stand-in for subgroupBroadcast in the no-subgroup variant of this file (see the launcher).
fn no_bcast(v: vec4<f32>, q: u32) -> vec4<f32> {
    return v;
}

// This lane's share of the TM weights of the tap at vec4 index wq (lane sl holds channels
// 4·sl..4·sl+3; lanes past TM/4 repeat the last share).
fn lane_share(wq: u32, sl: u32) -> vec4<f32> {
    if (BCAST == 1u) {
        return vec4<f32>(wp[wq + min(sl, TM / 4u - 1u)]);
    }
    return vec4<f32>(0.0);
}

// Element e of row window ky (ky and e are constant once the overrides are fixed).
fn wv(ky: u32, e: u32) -> f32 {
    return win[ky][e >> 2u][e & 3u];
}

// Pixels 4j..4j+3 for tap (ky, kx): input columns SD·(ox0 + n) + kx − PL, n = 4j..4j+3.
fn win_tap(ky: u32, kx: u32, j: u32) -> vec4<f32> {
    let e = SD * 4u * j + kx + 4u * PB - PL;
    return vec4<f32>(wv(ky, e), wv(ky, e + SD), wv(ky, e + 2u * SD), wv(ky, e + 3u * SD));
}

// acc[i] += Σ_{ky,kx} a<ky><kx> · (pixels 4j..4j+3 of tap (ky, kx)) for one channel; the
// accumulator is read and written once for all KH·KW taps.
fn row9(i: u32, j: u32, a00: f32, a01: f32, a02: f32, a10: f32, a11: f32, a12: f32, a20: f32,
        a21: f32, a22: f32) {
    var t = fma(vec4<f32>(a00), bt[0u * 4u + j], acc[i]);
    if (KW > 1u) { t = fma(vec4<f32>(a01), bt[1u * 4u + j], t); }
    if (KW > 2u) { t = fma(vec4<f32>(a02), bt[2u * 4u + j], t); }
    if (KH > 1u) {
        t = fma(vec4<f32>(a10), bt[3u * 4u + j], t);
        if (KW > 1u) { t = fma(vec4<f32>(a11), bt[4u * 4u + j], t); }
        if (KW > 2u) { t = fma(vec4<f32>(a12), bt[5u * 4u + j], t); }
    }
    if (KH > 2u) {
        t = fma(vec4<f32>(a20), bt[6u * 4u + j], t);
        if (KW > 1u) { t = fma(vec4<f32>(a21), bt[7u * 4u + j], t); }
        if (KW > 2u) { t = fma(vec4<f32>(a22), bt[8u * 4u + j], t); }
    }
    acc[i] = t;
}

// Channels r0..r0+3 (a<ky><kx> = their weights for tap (ky, kx)) over all TN pixels.
fn quad9(r0: u32, a00: vec4<f32>, a01: vec4<f32>, a02: vec4<f32>, a10: vec4<f32>, a11: vec4<f32>,
         a12: vec4<f32>, a20: vec4<f32>, a21: vec4<f32>, a22: vec4<f32>) {
    row9((r0 + 0u) * 4u + 0u, 0u, a00.x, a01.x, a02.x, a10.x, a11.x, a12.x, a20.x, a21.x, a22.x);
    if (TN > 4u) { row9((r0 + 0u) * 4u + 1u, 1u, a00.x, a01.x, a02.x, a10.x, a11.x, a12.x, a20.x, a21.x, a22.x); }
    if (TN > 8u) { row9((r0 + 0u) * 4u + 2u, 2u, a00.x, a01.x, a02.x, a10.x, a11.x, a12.x, a20.x, a21.x, a22.x); }
    if (TN > 12u) { row9((r0 + 0u) * 4u + 3u, 3u, a00.x, a01.x, a02.x, a10.x, a11.x, a12.x, a20.x, a21.x, a22.x); }
    row9((r0 + 1u) * 4u + 0u, 0u, a00.y, a01.y, a02.y, a10.y, a11.y, a12.y, a20.y, a21.y, a22.y);
    if (TN > 4u) { row9((r0 + 1u) * 4u + 1u, 1u, a00.y, a01.y, a02.y, a10.y, a11.y, a12.y, a20.y, a21.y, a22.y); }
    if (TN > 8u) { row9((r0 + 1u) * 4u + 2u, 2u, a00.y, a01.y, a02.y, a10.y, a11.y, a12.y, a20.y, a21.y, a22.y); }
    if (TN > 12u) { row9((r0 + 1u) * 4u + 3u, 3u, a00.y, a01.y, a02.y, a10.y, a11.y, a12.y, a20.y, a21.y, a22.y); }
    row9((r0 + 2u) * 4u + 0u, 0u, a00.z, a01.z, a02.z, a10.z, a11.z, a12.z, a20.z, a21.z, a22.z);
    if (TN > 4u) { row9((r0 + 2u) * 4u + 1u, 1u, a00.z, a01.z, a02.z, a10.z, a11.z, a12.z, a20.z, a21.z, a22.z); }
    if (TN > 8u) { row9((r0 + 2u) * 4u + 2u, 2u, a00.z, a01.z, a02.z, a10.z, a11.z, a12.z, a20.z, a21.z, a22.z); }
    if (TN > 12u) { row9((r0 + 2u) * 4u + 3u, 3u, a00.z, a01.z, a02.z, a10.z, a11.z, a12.z, a20.z, a21.z, a22.z); }
    row9((r0 + 3u) * 4u + 0u, 0u, a00.w, a01.w, a02.w, a10.w, a11.w, a12.w, a20.w, a21.w, a22.w);
    if (TN > 4u) { row9((r0 + 3u) * 4u + 1u, 1u, a00.w, a01.w, a02.w, a10.w, a11.w, a12.w, a20.w, a21.w, a22.w); }
    if (TN > 8u) { row9((r0 + 3u) * 4u + 2u, 2u, a00.w, a01.w, a02.w, a10.w, a11.w, a12.w, a20.w, a21.w, a22.w); }
    if (TN > 12u) { row9((r0 + 3u) * 4u + 3u, 3u, a00.w, a01.w, a02.w, a10.w, a11.w, a12.w, a20.w, a21.w, a22.w); }
}

// One input channel of main_vec: all TM channels × TN pixels × KH·KW taps. sh<ky><kx> holds this
// lane's share of tap (ky, kx)'s weights; wq is the vec4 index of tap (0, 0)'s weights in wp.
fn fma_taps(wq: u32) {
    bt[0] = win_tap(0u, 0u, 0u);
    if (TN > 4u) { bt[1] = win_tap(0u, 0u, 1u); }
    if (TN > 8u) { bt[2] = win_tap(0u, 0u, 2u); }
    if (TN > 12u) { bt[3] = win_tap(0u, 0u, 3u); }
    if (KW > 1u) { bt[4] = win_tap(0u, 1u, 0u); }
    if (KW > 1u && TN > 4u) { bt[5] = win_tap(0u, 1u, 1u); }
    if (KW > 1u && TN > 8u) { bt[6] = win_tap(0u, 1u, 2u); }
    if (KW > 1u && TN > 12u) { bt[7] = win_tap(0u, 1u, 3u); }
    if (KW > 2u) { bt[8] = win_tap(0u, 2u, 0u); }
    if (KW > 2u && TN > 4u) { bt[9] = win_tap(0u, 2u, 1u); }
    if (KW > 2u && TN > 8u) { bt[10] = win_tap(0u, 2u, 2u); }
    if (KW > 2u && TN > 12u) { bt[11] = win_tap(0u, 2u, 3u); }
    if (KH > 1u) { bt[12] = win_tap(1u, 0u, 0u); }
    if (KH > 1u && TN > 4u) { bt[13] = win_tap(1u, 0u, 1u); }
    if (KH > 1u && TN > 8u) { bt[14] = win_tap(1u, 0u, 2u); }
    if (KH > 1u && TN > 12u) { bt[15] = win_tap(1u, 0u, 3u); }
    if (KH > 1u && KW > 1u) { bt[16] = win_tap(1u, 1u, 0u); }
    if (KH > 1u && KW > 1u && TN > 4u) { bt[17] = win_tap(1u, 1u, 1u); }
    if (KH > 1u && KW > 1u && TN > 8u) { bt[18] = win_tap(1u, 1u, 2u); }
    if (KH > 1u && KW > 1u && TN > 12u) { bt[19] = win_tap(1u, 1u, 3u); }
    if (KH > 1u && KW > 2u) { bt[20] = win_tap(1u, 2u, 0u); }
    if (KH > 1u && KW > 2u && TN > 4u) { bt[21] = win_tap(1u, 2u, 1u); }
    if (KH > 1u && KW > 2u && TN > 8u) { bt[22] = win_tap(1u, 2u, 2u); }
    if (KH > 1u && KW > 2u && TN > 12u) { bt[23] = win_tap(1u, 2u, 3u); }
    if (KH > 2u) { bt[24] = win_tap(2u, 0u, 0u); }
    if (KH > 2u && TN > 4u) { bt[25] = win_tap(2u, 0u, 1u); }
    if (KH > 2u && TN > 8u) { bt[26] = win_tap(2u, 0u, 2u); }
    if (KH > 2u && TN > 12u) { bt[27] = win_tap(2u, 0u, 3u); }
    if (KH > 2u && KW > 1u) { bt[28] = win_tap(2u, 1u, 0u); }
    if (KH > 2u && KW > 1u && TN > 4u) { bt[29] = win_tap(2u, 1u, 1u); }
    if (KH > 2u && KW > 1u && TN > 8u) { bt[30] = win_tap(2u, 1u, 2u); }
    if (KH > 2u && KW > 1u && TN > 12u) { bt[31] = win_tap(2u, 1u, 3u); }
    if (KH > 2u && KW > 2u) { bt[32] = win_tap(2u, 2u, 0u); }
    if (KH > 2u && KW > 2u && TN > 4u) { bt[33] = win_tap(2u, 2u, 1u); }
    if (KH > 2u && KW > 2u && TN > 8u) { bt[34] = win_tap(2u, 2u, 2u); }
    if (KH > 2u && KW > 2u && TN > 12u) { bt[35] = win_tap(2u, 2u, 3u); }
    {
        let a00 = rows4(subgroupBroadcast(sh00, 0u), wq + (0u * KW + 0u) * (TM / 4u), 0u);
        var a01 = vec4<f32>(0.0);
        if (KW > 1u) { a01 = rows4(subgroupBroadcast(sh01, 0u), wq + (0u * KW + 1u) * (TM / 4u), 0u); }
        var a02 = vec4<f32>(0.0);
        if (KW > 2u) { a02 = rows4(subgroupBroadcast(sh02, 0u), wq + (0u * KW + 2u) * (TM / 4u), 0u); }
        var a10 = vec4<f32>(0.0);
        if (KH > 1u) { a10 = rows4(subgroupBroadcast(sh10, 0u), wq + (1u * KW + 0u) * (TM / 4u), 0u); }
        var a11 = vec4<f32>(0.0);
        if (KH > 1u && KW > 1u) { a11 = rows4(subgroupBroadcast(sh11, 0u), wq + (1u * KW + 1u) * (TM / 4u), 0u); }
        var a12 = vec4<f32>(0.0);
        if (KH > 1u && KW > 2u) { a12 = rows4(subgroupBroadcast(sh12, 0u), wq + (1u * KW + 2u) * (TM / 4u), 0u); }
        var a20 = vec4<f32>(0.0);
        if (KH > 2u) { a20 = rows4(subgroupBroadcast(sh20, 0u), wq + (2u * KW + 0u) * (TM / 4u), 0u); }
        var a21 = vec4<f32>(0.0);
        if (KH > 2u && KW > 1u) { a21 = rows4(subgroupBroadcast(sh21, 0u), wq + (2u * KW + 1u) * (TM / 4u), 0u); }
        var a22 = vec4<f32>(0.0);
        if (KH > 2u && KW > 2u) { a22 = rows4(subgroupBroadcast(sh22, 0u), wq + (2u * KW + 2u) * (TM / 4u), 0u); }
        quad9(0u, a00, a01, a02, a10, a11, a12, a20, a21, a22);
    }
    if (TM > 4u) {
        let a00 = rows4(subgroupBroadcast(sh00, 1u), wq + (0u * KW + 0u) * (TM / 4u), 1u);
        var a01 = vec4<f32>(0.0);
        if (KW > 1u) { a01 = rows4(subgroupBroadcast(sh01, 1u), wq + (0u * KW + 1u) * (TM / 4u), 1u); }
        var a02 = vec4<f32>(0.0);
        if (KW > 2u) { a02 = rows4(subgroupBroadcast(sh02, 1u), wq + (0u * KW + 2u) * (TM / 4u), 1u); }
        var a10 = vec4<f32>(0.0);
        if (KH > 1u) { a10 = rows4(subgroupBroadcast(sh10, 1u), wq + (1u * KW + 0u) * (TM / 4u), 1u); }
        var a11 = vec4<f32>(0.0);
        if (KH > 1u && KW > 1u) { a11 = rows4(subgroupBroadcast(sh11, 1u), wq + (1u * KW + 1u) * (TM / 4u), 1u); }
        var a12 = vec4<f32>(0.0);
        if (KH > 1u && KW > 2u) { a12 = rows4(subgroupBroadcast(sh12, 1u), wq + (1u * KW + 2u) * (TM / 4u), 1u); }
        var a20 = vec4<f32>(0.0);
        if (KH > 2u) { a20 = rows4(subgroupBroadcast(sh20, 1u), wq + (2u * KW + 0u) * (TM / 4u), 1u); }
        var a21 = vec4<f32>(0.0);
        if (KH > 2u && KW > 1u) { a21 = rows4(subgroupBroadcast(sh21, 1u), wq + (2u * KW + 1u) * (TM / 4u), 1u); }
        var a22 = vec4<f32>(0.0);
        if (KH > 2u && KW > 2u) { a22 = rows4(subgroupBroadcast(sh22, 1u), wq + (2u * KW + 2u) * (TM / 4u), 1u); }
        quad9(4u, a00, a01, a02, a10, a11, a12, a20, a21, a22);
    }
    if (TM > 8u) {
        let a00 = rows4(subgroupBroadcast(sh00, 2u), wq + (0u * KW + 0u) * (TM / 4u), 2u);
        var a01 = vec4<f32>(0.0);
        if (KW > 1u) { a01 = rows4(subgroupBroadcast(sh01, 2u), wq + (0u * KW + 1u) * (TM / 4u), 2u); }
        var a02 = vec4<f32>(0.0);
        if (KW > 2u) { a02 = rows4(subgroupBroadcast(sh02, 2u), wq + (0u * KW + 2u) * (TM / 4u), 2u); }
        var a10 = vec4<f32>(0.0);
        if (KH > 1u) { a10 = rows4(subgroupBroadcast(sh10, 2u), wq + (1u * KW + 0u) * (TM / 4u), 2u); }
        var a11 = vec4<f32>(0.0);
        if (KH > 1u && KW > 1u) { a11 = rows4(subgroupBroadcast(sh11, 2u), wq + (1u * KW + 1u) * (TM / 4u), 2u); }
        var a12 = vec4<f32>(0.0);
        if (KH > 1u && KW > 2u) { a12 = rows4(subgroupBroadcast(sh12, 2u), wq + (1u * KW + 2u) * (TM / 4u), 2u); }
        var a20 = vec4<f32>(0.0);
        if (KH > 2u) { a20 = rows4(subgroupBroadcast(sh20, 2u), wq + (2u * KW + 0u) * (TM / 4u), 2u); }
        var a21 = vec4<f32>(0.0);
        if (KH > 2u && KW > 1u) { a21 = rows4(subgroupBroadcast(sh21, 2u), wq + (2u * KW + 1u) * (TM / 4u), 2u); }
        var a22 = vec4<f32>(0.0);
        if (KH > 2u && KW > 2u) { a22 = rows4(subgroupBroadcast(sh22, 2u), wq + (2u * KW + 2u) * (TM / 4u), 2u); }
        quad9(8u, a00, a01, a02, a10, a11, a12, a20, a21, a22);
    }
    if (TM > 12u) {
        let a00 = rows4(subgroupBroadcast(sh00, 3u), wq + (0u * KW + 0u) * (TM / 4u), 3u);
        var a01 = vec4<f32>(0.0);
        if (KW > 1u) { a01 = rows4(subgroupBroadcast(sh01, 3u), wq + (0u * KW + 1u) * (TM / 4u), 3u); }
        var a02 = vec4<f32>(0.0);
        if (KW > 2u) { a02 = rows4(subgroupBroadcast(sh02, 3u), wq + (0u * KW + 2u) * (TM / 4u), 3u); }
        var a10 = vec4<f32>(0.0);
        if (KH > 1u) { a10 = rows4(subgroupBroadcast(sh10, 3u), wq + (1u * KW + 0u) * (TM / 4u), 3u); }
        var a11 = vec4<f32>(0.0);
        if (KH > 1u && KW > 1u) { a11 = rows4(subgroupBroadcast(sh11, 3u), wq + (1u * KW + 1u) * (TM / 4u), 3u); }
        var a12 = vec4<f32>(0.0);
        if (KH > 1u && KW > 2u) { a12 = rows4(subgroupBroadcast(sh12, 3u), wq + (1u * KW + 2u) * (TM / 4u), 3u); }
        var a20 = vec4<f32>(0.0);
        if (KH > 2u) { a20 = rows4(subgroupBroadcast(sh20, 3u), wq + (2u * KW + 0u) * (TM / 4u), 3u); }
        var a21 = vec4<f32>(0.0);
        if (KH > 2u && KW > 1u) { a21 = rows4(subgroupBroadcast(sh21, 3u), wq + (2u * KW + 1u) * (TM / 4u), 3u); }
        var a22 = vec4<f32>(0.0);
        if (KH > 2u && KW > 2u) { a22 = rows4(subgroupBroadcast(sh22, 3u), wq + (2u * KW + 2u) * (TM / 4u), 3u); }
        quad9(12u, a00, a01, a02, a10, a11, a12, a20, a21, a22);
    }
    if (TM > 16u) {
        let a00 = rows4(subgroupBroadcast(sh00, 4u), wq + (0u * KW + 0u) * (TM / 4u), 4u);
        var a01 = vec4<f32>(0.0);
        if (KW > 1u) { a01 = rows4(subgroupBroadcast(sh01, 4u), wq + (0u * KW + 1u) * (TM / 4u), 4u); }
        var a02 = vec4<f32>(0.0);
        if (KW > 2u) { a02 = rows4(subgroupBroadcast(sh02, 4u), wq + (0u * KW + 2u) * (TM / 4u), 4u); }
        var a10 = vec4<f32>(0.0);
        if (KH > 1u) { a10 = rows4(subgroupBroadcast(sh10, 4u), wq + (1u * KW + 0u) * (TM / 4u), 4u); }
        var a11 = vec4<f32>(0.0);
        if (KH > 1u && KW > 1u) { a11 = rows4(subgroupBroadcast(sh11, 4u), wq + (1u * KW + 1u) * (TM / 4u), 4u); }
        var a12 = vec4<f32>(0.0);
        if (KH > 1u && KW > 2u) { a12 = rows4(subgroupBroadcast(sh12, 4u), wq + (1u * KW + 2u) * (TM / 4u), 4u); }
        var a20 = vec4<f32>(0.0);
        if (KH > 2u) { a20 = rows4(subgroupBroadcast(sh20, 4u), wq + (2u * KW + 0u) * (TM / 4u), 4u); }
        var a21 = vec4<f32>(0.0);
        if (KH > 2u && KW > 1u) { a21 = rows4(subgroupBroadcast(sh21, 4u), wq + (2u * KW + 1u) * (TM / 4u), 4u); }
        var a22 = vec4<f32>(0.0);
        if (KH > 2u && KW > 2u) { a22 = rows4(subgroupBroadcast(sh22, 4u), wq + (2u * KW + 2u) * (TM / 4u), 4u); }
        quad9(16u, a00, a01, a02, a10, a11, a12, a20, a21, a22);
    }
    if (TM > 20u) {
        let a00 = rows4(subgroupBroadcast(sh00, 5u), wq + (0u * KW + 0u) * (TM / 4u), 5u);
        var a01 = vec4<f32>(0.0);
        if (KW > 1u) { a01 = rows4(subgroupBroadcast(sh01, 5u), wq + (0u * KW + 1u) * (TM / 4u), 5u); }
        var a02 = vec4<f32>(0.0);
        if (KW > 2u) { a02 = rows4(subgroupBroadcast(sh02, 5u), wq + (0u * KW + 2u) * (TM / 4u), 5u); }
        var a10 = vec4<f32>(0.0);
        if (KH > 1u) { a10 = rows4(subgroupBroadcast(sh10, 5u), wq + (1u * KW + 0u) * (TM / 4u), 5u); }
        var a11 = vec4<f32>(0.0);
        if (KH > 1u && KW > 1u) { a11 = rows4(subgroupBroadcast(sh11, 5u), wq + (1u * KW + 1u) * (TM / 4u), 5u); }
        var a12 = vec4<f32>(0.0);
        if (KH > 1u && KW > 2u) { a12 = rows4(subgroupBroadcast(sh12, 5u), wq + (1u * KW + 2u) * (TM / 4u), 5u); }
        var a20 = vec4<f32>(0.0);
        if (KH > 2u) { a20 = rows4(subgroupBroadcast(sh20, 5u), wq + (2u * KW + 0u) * (TM / 4u), 5u); }
        var a21 = vec4<f32>(0.0);
        if (KH > 2u && KW > 1u) { a21 = rows4(subgroupBroadcast(sh21, 5u), wq + (2u * KW + 1u) * (TM / 4u), 5u); }
        var a22 = vec4<f32>(0.0);
        if (KH > 2u && KW > 2u) { a22 = rows4(subgroupBroadcast(sh22, 5u), wq + (2u * KW + 2u) * (TM / 4u), 5u); }
        quad9(20u, a00, a01, a02, a10, a11, a12, a20, a21, a22);
    }
    if (TM > 24u) {
        let a00 = rows4(subgroupBroadcast(sh00, 6u), wq + (0u * KW + 0u) * (TM / 4u), 6u);
        var a01 = vec4<f32>(0.0);
        if (KW > 1u) { a01 = rows4(subgroupBroadcast(sh01, 6u), wq + (0u * KW + 1u) * (TM / 4u), 6u); }
        var a02 = vec4<f32>(0.0);
        if (KW > 2u) { a02 = rows4(subgroupBroadcast(sh02, 6u), wq + (0u * KW + 2u) * (TM / 4u), 6u); }
        var a10 = vec4<f32>(0.0);
        if (KH > 1u) { a10 = rows4(subgroupBroadcast(sh10, 6u), wq + (1u * KW + 0u) * (TM / 4u), 6u); }
        var a11 = vec4<f32>(0.0);
        if (KH > 1u && KW > 1u) { a11 = rows4(subgroupBroadcast(sh11, 6u), wq + (1u * KW + 1u) * (TM / 4u), 6u); }
        var a12 = vec4<f32>(0.0);
        if (KH > 1u && KW > 2u) { a12 = rows4(subgroupBroadcast(sh12, 6u), wq + (1u * KW + 2u) * (TM / 4u), 6u); }
        var a20 = vec4<f32>(0.0);
        if (KH > 2u) { a20 = rows4(subgroupBroadcast(sh20, 6u), wq + (2u * KW + 0u) * (TM / 4u), 6u); }
        var a21 = vec4<f32>(0.0);
        if (KH > 2u && KW > 1u) { a21 = rows4(subgroupBroadcast(sh21, 6u), wq + (2u * KW + 1u) * (TM / 4u), 6u); }
        var a22 = vec4<f32>(0.0);
        if (KH > 2u && KW > 2u) { a22 = rows4(subgroupBroadcast(sh22, 6u), wq + (2u * KW + 2u) * (TM / 4u), 6u); }
        quad9(24u, a00, a01, a02, a10, a11, a12, a20, a21, a22);
    }
    if (TM > 28u) {
        let a00 = rows4(subgroupBroadcast(sh00, 7u), wq + (0u * KW + 0u) * (TM / 4u), 7u);
        var a01 = vec4<f32>(0.0);
        if (KW > 1u) { a01 = rows4(subgroupBroadcast(sh01, 7u), wq + (0u * KW + 1u) * (TM / 4u), 7u); }
        var a02 = vec4<f32>(0.0);
        if (KW > 2u) { a02 = rows4(subgroupBroadcast(sh02, 7u), wq + (0u * KW + 2u) * (TM / 4u), 7u); }
        var a10 = vec4<f32>(0.0);
        if (KH > 1u) { a10 = rows4(subgroupBroadcast(sh10, 7u), wq + (1u * KW + 0u) * (TM / 4u), 7u); }
        var a11 = vec4<f32>(0.0);
        if (KH > 1u && KW > 1u) { a11 = rows4(subgroupBroadcast(sh11, 7u), wq + (1u * KW + 1u) * (TM / 4u), 7u); }
        var a12 = vec4<f32>(0.0);
        if (KH > 1u && KW > 2u) { a12 = rows4(subgroupBroadcast(sh12, 7u), wq + (1u * KW + 2u) * (TM / 4u), 7u); }
        var a20 = vec4<f32>(0.0);
        if (KH > 2u) { a20 = rows4(subgroupBroadcast(sh20, 7u), wq + (2u * KW + 0u) * (TM / 4u), 7u); }
        var a21 = vec4<f32>(0.0);
        if (KH > 2u && KW > 1u) { a21 = rows4(subgroupBroadcast(sh21, 7u), wq + (2u * KW + 1u) * (TM / 4u), 7u); }
        var a22 = vec4<f32>(0.0);
        if (KH > 2u && KW > 2u) { a22 = rows4(subgroupBroadcast(sh22, 7u), wq + (2u * KW + 2u) * (TM / 4u), 7u); }
        quad9(28u, a00, a01, a02, a10, a11, a12, a20, a21, a22);
    }
}

// Channels r0..r0+3 (weights a) for one tap of main_any, pixels b<j>.
fn quad1(r0: u32, a: vec4<f32>, b0: vec4<f32>, b1: vec4<f32>, b2: vec4<f32>, b3: vec4<f32>) {
    acc[(r0 + 0u) * 4u + 0u] = fma(vec4<f32>(a.x), b0, acc[(r0 + 0u) * 4u + 0u]);
    if (TN > 4u) { acc[(r0 + 0u) * 4u + 1u] = fma(vec4<f32>(a.x), b1, acc[(r0 + 0u) * 4u + 1u]); }
    if (TN > 8u) { acc[(r0 + 0u) * 4u + 2u] = fma(vec4<f32>(a.x), b2, acc[(r0 + 0u) * 4u + 2u]); }
    if (TN > 12u) { acc[(r0 + 0u) * 4u + 3u] = fma(vec4<f32>(a.x), b3, acc[(r0 + 0u) * 4u + 3u]); }
    acc[(r0 + 1u) * 4u + 0u] = fma(vec4<f32>(a.y), b0, acc[(r0 + 1u) * 4u + 0u]);
    if (TN > 4u) { acc[(r0 + 1u) * 4u + 1u] = fma(vec4<f32>(a.y), b1, acc[(r0 + 1u) * 4u + 1u]); }
    if (TN > 8u) { acc[(r0 + 1u) * 4u + 2u] = fma(vec4<f32>(a.y), b2, acc[(r0 + 1u) * 4u + 2u]); }
    if (TN > 12u) { acc[(r0 + 1u) * 4u + 3u] = fma(vec4<f32>(a.y), b3, acc[(r0 + 1u) * 4u + 3u]); }
    acc[(r0 + 2u) * 4u + 0u] = fma(vec4<f32>(a.z), b0, acc[(r0 + 2u) * 4u + 0u]);
    if (TN > 4u) { acc[(r0 + 2u) * 4u + 1u] = fma(vec4<f32>(a.z), b1, acc[(r0 + 2u) * 4u + 1u]); }
    if (TN > 8u) { acc[(r0 + 2u) * 4u + 2u] = fma(vec4<f32>(a.z), b2, acc[(r0 + 2u) * 4u + 2u]); }
    if (TN > 12u) { acc[(r0 + 2u) * 4u + 3u] = fma(vec4<f32>(a.z), b3, acc[(r0 + 2u) * 4u + 3u]); }
    acc[(r0 + 3u) * 4u + 0u] = fma(vec4<f32>(a.w), b0, acc[(r0 + 3u) * 4u + 0u]);
    if (TN > 4u) { acc[(r0 + 3u) * 4u + 1u] = fma(vec4<f32>(a.w), b1, acc[(r0 + 3u) * 4u + 1u]); }
    if (TN > 8u) { acc[(r0 + 3u) * 4u + 2u] = fma(vec4<f32>(a.w), b2, acc[(r0 + 3u) * 4u + 2u]); }
    if (TN > 12u) { acc[(r0 + 3u) * 4u + 3u] = fma(vec4<f32>(a.w), b3, acc[(r0 + 3u) * 4u + 3u]); }
}

// acc += w · b for one tap (main_any); s is this lane's share of the tap's weights.
fn fma_tap(b0: vec4<f32>, b1: vec4<f32>, b2: vec4<f32>, b3: vec4<f32>, s: vec4<f32>, wq: u32) {
    quad1(0u, rows4(subgroupBroadcast(s, 0u), wq, 0u), b0, b1, b2, b3);
    if (TM > 4u) { quad1(4u, rows4(subgroupBroadcast(s, 1u), wq, 1u), b0, b1, b2, b3); }
    if (TM > 8u) { quad1(8u, rows4(subgroupBroadcast(s, 2u), wq, 2u), b0, b1, b2, b3); }
    if (TM > 12u) { quad1(12u, rows4(subgroupBroadcast(s, 3u), wq, 3u), b0, b1, b2, b3); }
    if (TM > 16u) { quad1(16u, rows4(subgroupBroadcast(s, 4u), wq, 4u), b0, b1, b2, b3); }
    if (TM > 20u) { quad1(20u, rows4(subgroupBroadcast(s, 5u), wq, 5u), b0, b1, b2, b3); }
    if (TM > 24u) { quad1(24u, rows4(subgroupBroadcast(s, 6u), wq, 6u), b0, b1, b2, b3); }
    if (TM > 28u) { quad1(28u, rows4(subgroupBroadcast(s, 7u), wq, 7u), b0, b1, b2, b3); }
}

struct Tile {
    blk: u32,      // channel block within this launch
    col: u32,      // first pixel of this invocation
}

fn tile_of(wg: vec3<u32>, nwg: vec3<u32>, li: u32) -> Tile {
    let t = wg.x + wg.y * nwg.x;
    return Tile(t % p.tiles_m, (t / p.tiles_m) * (TN * WG) + TN * li);
}

// Output channel (within the launch) of row r of block blk, or -1 when outside the launch.
fn out_channel(r: u32, blk: u32) -> i32 {
    let c = blk * TM + r;
    if (c < p.co_lo || c - p.co_lo >= p.cout) { return -1; }
    return i32(c - p.co_lo);
}

fn bias_of(co: u32) -> f32 {
    if (p.has_bias != 0u) {
        return f32(bias[p.b_shift + co]);
    }
    return 0.0;
}

// ---- main_vec ---------------------------------------------------------------------------------

// Aligned block bx of input row iy, whose block 0 is at vec4 index rb (zero outside the image).
fn row_block(live: bool, iy: i32, rb: i32, bx: i32, w4: i32) -> vec4<f32> {
    if (live && iy >= 0 && iy < i32(p.h) && bx >= 0 && bx < w4) {
        return vec4<f32>(x4[u32(rb + bx)]);
    }
    return vec4<f32>(0.0);
}

var<private> sv_base: u32;     // y4 index of (img, channel 0, this row, ox0)
var<private> sv_blk: u32;

fn store_vec(r: u32, j: u32, v: vec4<f32>) {
    let oc = out_channel(r, sv_blk);
    if (oc < 0) { return; }
    let co = u32(oc);
    let i = sv_base + co * (p.y_ch / 4u) + j;
    var o = v + bias_of(co);
    if (p.accumulate != 0u) {
        o += vec4<f32>(y4[i]);
    }
    y4[i] = vec4<ST>(o);
}

@compute @workgroup_size(WG)
fn main_vec(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_id) lid: vec3<u32>,
            @builtin(subgroup_invocation_id) sl: u32) {
    if (wg.x + wg.y * nwg.x >= p.n_tiles) { return; }
    let tl = tile_of(wg, nwg, lid.x);
    // Wo % TN == 0, so the TN pixels share one output row.
    let live = tl.col < p.p;
    let col = select(0u, tl.col, live);
    let per_img = p.rows * p.wo;
    let img = col / per_img;
    let pix = col % per_img;
    let oy = pix / p.wo;
    let ox0 = pix % p.wo;
    let iy_top = i32((p.oy0 + oy) * SD) - i32(p.pad_t);
    let bx0 = i32((ox0 * SD) / 4u) - i32(PB);
    let w4 = i32(p.w / 4u);
    let x_img4 = (p.x_shift + img * p.x_img) / 4u;
    let x_ch4 = p.x_ch / 4u;
    clear_acc();
    var wq = (p.w_shift + tl.blk * p.w_blk) / 4u;
    for (var ci = 0u; ci < p.cin; ci++) {
        let rb = i32(x_img4 + ci * x_ch4) + (iy_top - i32(p.iy0)) * w4;
        if (KH > 0u) {
            if (NB > 0u) { win[0][0] = row_block(live, iy_top + 0, rb + 0 * w4, bx0 + 0, w4); }
            if (NB > 1u) { win[0][1] = row_block(live, iy_top + 0, rb + 0 * w4, bx0 + 1, w4); }
            if (NB > 2u) { win[0][2] = row_block(live, iy_top + 0, rb + 0 * w4, bx0 + 2, w4); }
            if (NB > 3u) { win[0][3] = row_block(live, iy_top + 0, rb + 0 * w4, bx0 + 3, w4); }
            if (NB > 4u) { win[0][4] = row_block(live, iy_top + 0, rb + 0 * w4, bx0 + 4, w4); }
            if (NB > 5u) { win[0][5] = row_block(live, iy_top + 0, rb + 0 * w4, bx0 + 5, w4); }
            if (NB > 6u) { win[0][6] = row_block(live, iy_top + 0, rb + 0 * w4, bx0 + 6, w4); }
            if (NB > 7u) { win[0][7] = row_block(live, iy_top + 0, rb + 0 * w4, bx0 + 7, w4); }
            if (NB > 8u) { win[0][8] = row_block(live, iy_top + 0, rb + 0 * w4, bx0 + 8, w4); }
            if (NB > 9u) { win[0][9] = row_block(live, iy_top + 0, rb + 0 * w4, bx0 + 9, w4); }
            if (NB > 10u) { win[0][10] = row_block(live, iy_top + 0, rb + 0 * w4, bx0 + 10, w4); }
            if (NB > 11u) { win[0][11] = row_block(live, iy_top + 0, rb + 0 * w4, bx0 + 11, w4); }
        }
        if (KH > 1u) {
            if (NB > 0u) { win[1][0] = row_block(live, iy_top + 1, rb + 1 * w4, bx0 + 0, w4); }
            if (NB > 1u) { win[1][1] = row_block(live, iy_top + 1, rb + 1 * w4, bx0 + 1, w4); }
            if (NB > 2u) { win[1][2] = row_block(live, iy_top + 1, rb + 1 * w4, bx0 + 2, w4); }
            if (NB > 3u) { win[1][3] = row_block(live, iy_top + 1, rb + 1 * w4, bx0 + 3, w4); }
            if (NB > 4u) { win[1][4] = row_block(live, iy_top + 1, rb + 1 * w4, bx0 + 4, w4); }
            if (NB > 5u) { win[1][5] = row_block(live, iy_top + 1, rb + 1 * w4, bx0 + 5, w4); }
            if (NB > 6u) { win[1][6] = row_block(live, iy_top + 1, rb + 1 * w4, bx0 + 6, w4); }
            if (NB > 7u) { win[1][7] = row_block(live, iy_top + 1, rb + 1 * w4, bx0 + 7, w4); }
            if (NB > 8u) { win[1][8] = row_block(live, iy_top + 1, rb + 1 * w4, bx0 + 8, w4); }
            if (NB > 9u) { win[1][9] = row_block(live, iy_top + 1, rb + 1 * w4, bx0 + 9, w4); }
            if (NB > 10u) { win[1][10] = row_block(live, iy_top + 1, rb + 1 * w4, bx0 + 10, w4); }
            if (NB > 11u) { win[1][11] = row_block(live, iy_top + 1, rb + 1 * w4, bx0 + 11, w4); }
        }
        if (KH > 2u) {
            if (NB > 0u) { win[2][0] = row_block(live, iy_top + 2, rb + 2 * w4, bx0 + 0, w4); }
            if (NB > 1u) { win[2][1] = row_block(live, iy_top + 2, rb + 2 * w4, bx0 + 1, w4); }
            if (NB > 2u) { win[2][2] = row_block(live, iy_top + 2, rb + 2 * w4, bx0 + 2, w4); }
            if (NB > 3u) { win[2][3] = row_block(live, iy_top + 2, rb + 2 * w4, bx0 + 3, w4); }
            if (NB > 4u) { win[2][4] = row_block(live, iy_top + 2, rb + 2 * w4, bx0 + 4, w4); }
            if (NB > 5u) { win[2][5] = row_block(live, iy_top + 2, rb + 2 * w4, bx0 + 5, w4); }
            if (NB > 6u) { win[2][6] = row_block(live, iy_top + 2, rb + 2 * w4, bx0 + 6, w4); }
            if (NB > 7u) { win[2][7] = row_block(live, iy_top + 2, rb + 2 * w4, bx0 + 7, w4); }
            if (NB > 8u) { win[2][8] = row_block(live, iy_top + 2, rb + 2 * w4, bx0 + 8, w4); }
            if (NB > 9u) { win[2][9] = row_block(live, iy_top + 2, rb + 2 * w4, bx0 + 9, w4); }
            if (NB > 10u) { win[2][10] = row_block(live, iy_top + 2, rb + 2 * w4, bx0 + 10, w4); }
            if (NB > 11u) { win[2][11] = row_block(live, iy_top + 2, rb + 2 * w4, bx0 + 11, w4); }
        }
        sh00 = lane_share(wq + (0u * KW + 0u) * (TM / 4u), sl);
        if (KW > 1u) { sh01 = lane_share(wq + (0u * KW + 1u) * (TM / 4u), sl); }
        if (KW > 2u) { sh02 = lane_share(wq + (0u * KW + 2u) * (TM / 4u), sl); }
        if (KH > 1u) { sh10 = lane_share(wq + (1u * KW + 0u) * (TM / 4u), sl); }
        if (KH > 1u && KW > 1u) { sh11 = lane_share(wq + (1u * KW + 1u) * (TM / 4u), sl); }
        if (KH > 1u && KW > 2u) { sh12 = lane_share(wq + (1u * KW + 2u) * (TM / 4u), sl); }
        if (KH > 2u) { sh20 = lane_share(wq + (2u * KW + 0u) * (TM / 4u), sl); }
        if (KH > 2u && KW > 1u) { sh21 = lane_share(wq + (2u * KW + 1u) * (TM / 4u), sl); }
        if (KH > 2u && KW > 2u) { sh22 = lane_share(wq + (2u * KW + 2u) * (TM / 4u), sl); }
        fma_taps(wq);
        wq += KH * KW * (TM / 4u);
    }
    if (!live) { return; }
    sv_blk = tl.blk;
    sv_base = (p.y_shift + img * p.y_img + pix) / 4u;
    store_vec_quad(0u);
    if (TM > 4u) { store_vec_quad(4u); }
    if (TM > 8u) { store_vec_quad(8u); }
    if (TM > 12u) { store_vec_quad(12u); }
    if (TM > 16u) { store_vec_quad(16u); }
    if (TM > 20u) { store_vec_quad(20u); }
    if (TM > 24u) { store_vec_quad(24u); }
    if (TM > 28u) { store_vec_quad(28u); }
}

fn store_vec_quad(r0: u32) {
    store_vec(r0 + 0u, 0u, acc[(r0 + 0u) * 4u + 0u]);
    if (TN > 4u) { store_vec(r0 + 0u, 1u, acc[(r0 + 0u) * 4u + 1u]); }
    if (TN > 8u) { store_vec(r0 + 0u, 2u, acc[(r0 + 0u) * 4u + 2u]); }
    if (TN > 12u) { store_vec(r0 + 0u, 3u, acc[(r0 + 0u) * 4u + 3u]); }
    store_vec(r0 + 1u, 0u, acc[(r0 + 1u) * 4u + 0u]);
    if (TN > 4u) { store_vec(r0 + 1u, 1u, acc[(r0 + 1u) * 4u + 1u]); }
    if (TN > 8u) { store_vec(r0 + 1u, 2u, acc[(r0 + 1u) * 4u + 2u]); }
    if (TN > 12u) { store_vec(r0 + 1u, 3u, acc[(r0 + 1u) * 4u + 3u]); }
    store_vec(r0 + 2u, 0u, acc[(r0 + 2u) * 4u + 0u]);
    if (TN > 4u) { store_vec(r0 + 2u, 1u, acc[(r0 + 2u) * 4u + 1u]); }
    if (TN > 8u) { store_vec(r0 + 2u, 2u, acc[(r0 + 2u) * 4u + 2u]); }
    if (TN > 12u) { store_vec(r0 + 2u, 3u, acc[(r0 + 2u) * 4u + 3u]); }
    store_vec(r0 + 3u, 0u, acc[(r0 + 3u) * 4u + 0u]);
    if (TN > 4u) { store_vec(r0 + 3u, 1u, acc[(r0 + 3u) * 4u + 1u]); }
    if (TN > 8u) { store_vec(r0 + 3u, 2u, acc[(r0 + 3u) * 4u + 2u]); }
    if (TN > 12u) { store_vec(r0 + 3u, 3u, acc[(r0 + 3u) * 4u + 3u]); }
}

// ---- main_any ---------------------------------------------------------------------------------

// Per pixel n < TN of this invocation: live, y index of (img, channel 0, pixel), x index of
// (img, channel 0, window row 0), and the top-left input position of its receptive field.
var<private> pa_ok: array<bool, 16>;
var<private> pa_y: array<u32, 16>;
var<private> pa_x: array<u32, 16>;
var<private> pa_iy: array<i32, 16>;
var<private> pa_ix: array<i32, 16>;
var<private> sa_blk: u32;

fn store_any(r: u32, j: u32, v: vec4<f32>) {
    let oc = out_channel(r, sa_blk);
    if (oc < 0) { return; }
    let co = u32(oc);
    let off = co * p.y_ch;
    let b = bias_of(co);
    for (var c = 0u; c < 4u; c++) {
        let n = 4u * j + c;
        if (pa_ok[n]) {
            let i = pa_y[n] + off;
            var o = v[c] + b;
            if (p.accumulate != 0u) {
                o += f32(y[i]);
            }
            y[i] = ST(o);
        }
    }
}

@compute @workgroup_size(WG)
fn main_any(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_id) lid: vec3<u32>,
            @builtin(subgroup_invocation_id) sl: u32) {
    if (wg.x + wg.y * nwg.x >= p.n_tiles) { return; }
    let tl = tile_of(wg, nwg, lid.x);
    let per_img = p.rows * p.wo;
    for (var n = 0u; n < TN; n++) {
        let c = tl.col + n;
        pa_ok[n] = c < p.p;
        let cc = select(0u, c, c < p.p);
        let img = cc / per_img;
        let pix = cc % per_img;
        pa_x[n] = p.x_shift + img * p.x_img;
        pa_iy[n] = i32((p.oy0 + pix / p.wo) * SD) - i32(p.pad_t) - i32(p.iy0);
        pa_ix[n] = i32((pix % p.wo) * SD) - i32(p.pad_l);
        pa_y[n] = p.y_shift + img * p.y_img + pix;
    }
    // Rows are tested against the window: [−iy0, h − iy0).
    let ylo = -i32(p.iy0);
    let yhi = i32(p.h) - i32(p.iy0);
    clear_acc();
    var wq = (p.w_shift + tl.blk * p.w_blk) / 4u;
    for (var ci = 0u; ci < p.cin; ci++) {
        for (var ky = 0u; ky < KH; ky++) {
            for (var kx = 0u; kx < KW; kx++) {
                var b: array<vec4<f32>, 4>;
                for (var n = 0u; n < TN; n++) {
                    let iy = pa_iy[n] + i32(ky);
                    let ix = pa_ix[n] + i32(kx);
                    var v = 0.0;
                    if (pa_ok[n] && iy >= ylo && iy < yhi && ix >= 0 && ix < i32(p.w)) {
                        v = f32(x[pa_x[n] + ci * p.x_ch + u32(iy) * p.w + u32(ix)]);
                    }
                    b[n / 4u][n % 4u] = v;
                }
                fma_tap(b[0], b[1], b[2], b[3], lane_share(wq, sl), wq);
                wq += TM / 4u;
            }
        }
    }
    sa_blk = tl.blk;
    store_any_quad(0u);
    if (TM > 4u) { store_any_quad(4u); }
    if (TM > 8u) { store_any_quad(8u); }
    if (TM > 12u) { store_any_quad(12u); }
    if (TM > 16u) { store_any_quad(16u); }
    if (TM > 20u) { store_any_quad(20u); }
    if (TM > 24u) { store_any_quad(24u); }
    if (TM > 28u) { store_any_quad(28u); }
}

fn store_any_quad(r0: u32) {
    store_any(r0 + 0u, 0u, acc[(r0 + 0u) * 4u + 0u]);
    if (TN > 4u) { store_any(r0 + 0u, 1u, acc[(r0 + 0u) * 4u + 1u]); }
    if (TN > 8u) { store_any(r0 + 0u, 2u, acc[(r0 + 0u) * 4u + 2u]); }
    if (TN > 12u) { store_any(r0 + 0u, 3u, acc[(r0 + 0u) * 4u + 3u]); }
    store_any(r0 + 1u, 0u, acc[(r0 + 1u) * 4u + 0u]);
    if (TN > 4u) { store_any(r0 + 1u, 1u, acc[(r0 + 1u) * 4u + 1u]); }
    if (TN > 8u) { store_any(r0 + 1u, 2u, acc[(r0 + 1u) * 4u + 2u]); }
    if (TN > 12u) { store_any(r0 + 1u, 3u, acc[(r0 + 1u) * 4u + 3u]); }
    store_any(r0 + 2u, 0u, acc[(r0 + 2u) * 4u + 0u]);
    if (TN > 4u) { store_any(r0 + 2u, 1u, acc[(r0 + 2u) * 4u + 1u]); }
    if (TN > 8u) { store_any(r0 + 2u, 2u, acc[(r0 + 2u) * 4u + 2u]); }
    if (TN > 12u) { store_any(r0 + 2u, 3u, acc[(r0 + 2u) * 4u + 3u]); }
    store_any(r0 + 3u, 0u, acc[(r0 + 3u) * 4u + 0u]);
    if (TN > 4u) { store_any(r0 + 3u, 1u, acc[(r0 + 3u) * 4u + 1u]); }
    if (TN > 8u) { store_any(r0 + 3u, 2u, acc[(r0 + 3u) * 4u + 2u]); }
    if (TN > 12u) { store_any(r0 + 3u, 3u, acc[(r0 + 3u) * 4u + 3u]); }
}
