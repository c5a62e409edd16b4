//! Arena scopes (`Context::arena`): buffers of tensors that die while a graph is recorded are
//! reused by later tensors of the same recording, replays still compute the right values, and
//! CPU-written tensors never take part.

mod common;

use common::*;
use lorafuse::kernels::binary::add;
use lorafuse::kernels::unary::{unary, unary_into, UnaryOp};
use lorafuse::models::unet::UNet;
use lorafuse::nn::{AdaptableWeights, Loader};
use lorafuse::weights::detect::detect;
use lorafuse::weights::safetensors::SafeTensorsFile;
use lorafuse::weights::ModelFiles;
use lorafuse::{reference, Context, ContextOptions, DType, GpuTensor, Recorder};

/// The n of the elementwise tests: not a multiple of any workgroup size.
const N: usize = 1001;

fn host_add(a: &[f32], b: &[f32]) -> Vec<f32> {
    a.iter().zip(b).map(|(x, y)| x + y).collect()
}

/// `d = silu(0.5·(silu(x) + x)) + (silu(x) + x)` recorded in an arena, where the intermediate
/// `a = silu(x)` dies before `c` is allocated, so `c` reuses its buffer. Replayed twice with new
/// inputs written into `x` between the replays.
#[test]
fn dead_intermediate_is_reused_and_replay_is_correct() {
    let ctx = ctx();
    let mut r = rng("dead_intermediate_is_reused_and_replay_is_correct");
    let x0 = rand_vec(&mut r, N, 4.0, DType::F32);
    let x = GpuTensor::from_slice(ctx, &[N], &x0, DType::F32).unwrap();
    let mut graph = Recorder::new();
    let d = {
        let _g = ctx.arena();
        let _nested = ctx.arena(); // a nested scope is a no-op
        let a = unary(ctx, &mut graph, &x, UnaryOp::Silu).unwrap();
        assert!(a.in_arena() && !x.in_arena());
        let b = add(ctx, &mut graph, &a, &x).unwrap();
        let a_buf = a.buffer().clone();
        // Views and reshapes share the tensor's liveness: the buffer is not free while one lives.
        let a_view = a.view(1, &[N - 1]).unwrap();
        drop(a);
        let held = GpuTensor::empty(ctx, &[N], DType::F32).unwrap();
        assert!(held.buffer() != &a_buf, "a buffer was reused while a view of its tensor was alive");
        drop(a_view);
        let c = unary(ctx, &mut graph, &b, UnaryOp::Scale(0.5)).unwrap();
        assert!(c.buffer() == &a_buf, "c did not reuse the dead intermediate's buffer");
        let c = unary(ctx, &mut graph, &c, UnaryOp::Silu).unwrap();
        drop(held);
        add(ctx, &mut graph, &c, &b).unwrap()
    };
    assert!(d.in_arena(), "the output keeps its arena token after the scope closed");
    let want = |xv: &[f32]| {
        let b = host_add(&reference::unary::unary(xv, UnaryOp::Silu), xv);
        let c = reference::unary::unary(&reference::unary::unary(&b, UnaryOp::Scale(0.5)), UnaryOp::Silu);
        host_add(&c, &b)
    };
    let mut xv = x0;
    for round in 0..3 {
        if round > 0 {
            xv = rand_vec(&mut r, N, 4.0, DType::F32);
            let src = GpuTensor::from_slice(ctx, &[N], &xv, DType::F32).unwrap();
            let mut w = Recorder::new();
            unary_into(ctx, &mut w, &src, &x, UnaryOp::Scale(1.0)).unwrap();
            w.submit(ctx).unwrap();
        }
        graph.replay(ctx).unwrap();
        assert_close(&format!("arena graph, replay {round}"), &d.to_vec(ctx).unwrap(), &want(&xv), TOL_F32);
    }
}

/// Uploaded tensors (`from_slice`, `from_f16`, `zeros`) neither take a dead intermediate's buffer
/// (their upload would run before the recorded pass, whose earlier writer would overwrite it) nor
/// give theirs to later arena tensors.
#[test]
fn uploaded_tensors_stay_out_of_the_arena() {
    let ctx = ctx();
    let mut r = rng("uploaded_tensors_stay_out_of_the_arena");
    let xv = rand_vec(&mut r, N, 2.0, DType::F32);
    let uv = rand_vec(&mut r, N, 2.0, DType::F32);
    let x = GpuTensor::from_slice(ctx, &[N], &xv, DType::F32).unwrap();
    let mut graph = Recorder::new();
    let out = {
        let _g = ctx.arena();
        // A dead arena intermediate, written and read by the recording, is on the free list.
        let a = unary(ctx, &mut graph, &x, UnaryOp::Scale(3.0)).unwrap();
        let b = add(ctx, &mut graph, &a, &x).unwrap();
        let a_buf = a.buffer().clone();
        drop(a);
        let u = GpuTensor::from_slice(ctx, &[N], &uv, DType::F32).unwrap();
        assert!(!u.in_arena() && u.buffer() != &a_buf, "an upload took a dead intermediate's buffer");
        let z = GpuTensor::zeros(ctx, &[N], DType::F32).unwrap();
        assert!(!z.in_arena() && z.buffer() != &a_buf, "zeros took a dead intermediate's buffer");
        if ctx.caps.shader_f16 {
            let h: Vec<half::f16> = uv.iter().map(|&v| half::f16::from_f32(v)).collect();
            let hf = GpuTensor::from_f16(ctx, &[2 * N], &h.repeat(2)).unwrap();
            assert!(!hf.in_arena() && hf.buffer() != &a_buf, "from_f16 took a dead intermediate's buffer");
        }
        let e = GpuTensor::empty(ctx, &[N], DType::F32).unwrap();
        assert!(e.in_arena() && e.buffer() == &a_buf, "the arena did not hand out the dead intermediate");
        // The upload bound by a dispatch, then dropped: it must not reach the free list.
        let uu = unary(ctx, &mut graph, &u, UnaryOp::Scale(1.0)).unwrap();
        let u_buf = u.buffer().clone();
        drop(u);
        let e2 = GpuTensor::empty(ctx, &[N], DType::F32).unwrap();
        assert!(e2.buffer() != &u_buf, "a dropped upload's buffer was handed out by the arena");
        drop((e, e2));
        add(ctx, &mut graph, &b, &uu).unwrap()
    };
    graph.submit(ctx).unwrap();
    let want: Vec<f32> = xv.iter().zip(&uv).map(|(x, u)| 4.0 * x + u).collect();
    assert_close("upload inside an arena", &out.to_vec(ctx).unwrap(), &want, TOL_F32);
}

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/sd15-tiny/{name}", env!("CARGO_MANIFEST_DIR"))
}

const TIMESTEPS: [u32; 3] = [999, 500, 1];
/// The fixture README's bound for one UNet call in float32 (as tests/models_unet.rs).
const TOL_GOLDEN_F32: f64 = 1e-3;

/// Records the tiny UNet's `forward_with_temb` graph on a fresh context (its own pool), in an
/// arena or not; replays it twice over the golden timesteps and checks every output. Returns the
/// pool bytes the recorded graph added (beyond weights and inputs) and the whole pool.
fn unet_graph_bytes(in_arena: bool) -> (u64, u64) {
    let ctx = Context::new(&ContextOptions::default()).expect("GPU tests need an adapter (lavapipe is fine)");
    ctx.set_poison(true);
    let files = ModelFiles::open(fixture("model-fp16.safetensors")).expect("open model");
    let cfg = detect(&files).expect("detect").unet;
    let l = Loader::new(&ctx, files.unet(), &AdaptableWeights::default(), DType::F32);
    let unet = UNet::load(&l, &cfg).expect("load UNet");
    let g = SafeTensorsFile::open(fixture("golden.safetensors")).expect("golden.safetensors");
    let read = |n: &str| g.read_f32(n).unwrap_or_else(|e| panic!("{n}: {e}"));
    let x = GpuTensor::from_slice(&ctx, &[2, 4, 8, 8], &read("unet_x"), DType::F32).unwrap();
    let c = GpuTensor::from_slice(&ctx, &[2, 77, 64], &read("unet_ctx"), DType::F32).unwrap();
    let mut rec = Recorder::new();
    let temb = unet.time_embedding(&ctx, &mut rec, &[999.0, 999.0], None).unwrap();
    rec.submit(&ctx).unwrap();
    ctx.sync().unwrap();
    let before = ctx.pool_bytes();
    let mut graph = Recorder::new();
    let y = {
        let _g = in_arena.then(|| ctx.arena());
        unet.forward_with_temb(&ctx, &mut graph, &x, &temb, &c).unwrap()
    };
    let graph_bytes = ctx.pool_bytes() - before;
    for round in 0..2 {
        for t in TIMESTEPS {
            let mut step = Recorder::new();
            unet.time_embedding_into(&ctx, &mut step, &[t as f32; 2], None, &temb).unwrap();
            step.submit(&ctx).unwrap();
            graph.replay(&ctx).unwrap();
            let what = format!("UNet graph (arena: {in_arena}), replay {round}, t={t}");
            assert_close(&what, &y.to_vec(&ctx).unwrap(), &read(&format!("unet_eps_t{t}")), TOL_GOLDEN_F32);
        }
    }
    (graph_bytes, ctx.pool_bytes())
}

#[test]
fn unet_graph_in_arena_matches_goldens_with_less_memory() {
    let (plain, plain_total) = unet_graph_bytes(false);
    let (arena, arena_total) = unet_graph_bytes(true);
    eprintln!(
        "tiny UNet graph (batch 2, 8x8, f32): {:.1} KiB of intermediates without the arena, {:.1} KiB with it \
         (pool {:.1} -> {:.1} KiB)",
        plain as f64 / 1024.0,
        arena as f64 / 1024.0,
        plain_total as f64 / 1024.0,
        arena_total as f64 / 1024.0
    );
    assert!(arena_total < plain_total, "the arena did not shrink the pool: {arena_total} vs {plain_total} bytes");
    assert!(arena < plain, "the arena did not shrink the graph's buffers: {arena} vs {plain} bytes");
}
