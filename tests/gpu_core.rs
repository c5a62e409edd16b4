//! The GPU core: device creation and adoption, tensors, views and binding windows, the buffer pool,
//! and recorder replay.

mod common;
use common::*;
use lorafuse::kernels::unary::{unary, UnaryOp};
use lorafuse::{reference, Context, ContextOptions, DType, Error, GpuTensor, Recorder};

#[test]
fn context_records_requested_features() {
    let ctx = ctx();
    let f = ctx.device.features();
    assert_eq!(ctx.caps.shader_f16, f.contains(wgpu::Features::SHADER_F16));
    assert_eq!(ctx.caps.subgroups, f.contains(wgpu::Features::SUBGROUP));
    assert_eq!(ctx.caps.timestamps, f.contains(wgpu::Features::TIMESTAMP_QUERY));
    // The device got the adapter's real limits, not the WebGPU defaults.
    assert_eq!(
        ctx.caps.max_binding,
        ctx.device.limits().max_storage_buffer_binding_size.min(ctx.device.limits().max_buffer_size)
    );
    assert!(ctx.caps.max_binding >= 128 << 20);
}

#[test]
fn unknown_adapter_name_is_a_clear_error() {
    let e =
        Context::new(&ContextOptions { adapter: Some("no-such-gpu-0x7f".into()), ..Default::default() }).err().unwrap();
    assert!(matches!(e, Error::NoAdapter(_)));
    let s = e.to_string();
    assert!(s.contains("no-such-gpu-0x7f") && s.contains("available"), "{s}");
}

#[test]
fn host_application_device_can_be_adopted() {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
    let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions::default())).unwrap();
    let info = adapter.get_info();
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor::default())).unwrap();
    let ctx = Context::from_device(device, queue, &info);
    assert!(!ctx.caps.shader_f16, "default descriptor requests no f16");
    let x: Vec<f32> = (0..100).map(|i| i as f32 / 10.0 - 5.0).collect();
    let xt = GpuTensor::from_slice(&ctx, &[100], &x, DType::F32).unwrap();
    let mut rec = Recorder::new();
    let y = unary(&ctx, &mut rec, &xt, UnaryOp::Silu).unwrap();
    rec.submit(&ctx).unwrap();
    assert_close("adopted device silu", &y.to_vec(&ctx).unwrap(), &reference::unary::unary(&x, UnaryOp::Silu), TOL_F32);
    // Without SHADER_F16 an f16 tensor is a typed error, not a panic.
    assert!(matches!(GpuTensor::zeros(&ctx, &[4], DType::F16), Err(Error::DType { .. })));
}

#[test]
fn roundtrip_and_unaligned_views() {
    let ctx = ctx();
    let mut r = rng("views");
    for dt in dtypes() {
        let x = rand_vec(&mut r, 1001, 3.0, dt);
        let t = GpuTensor::from_slice(ctx, &[7, 143], &x, dt).unwrap();
        assert_eq!(t.to_vec(ctx).unwrap(), x);
        // A view at an odd element offset binds at an aligned offset with a nonzero shift.
        let v = t.view(3 * 143 + 5, &[300]).unwrap();
        assert_eq!(v.to_vec(ctx).unwrap(), &x[3 * 143 + 5..3 * 143 + 305]);
        let mut rec = Recorder::new();
        let y = unary(ctx, &mut rec, &v, UnaryOp::Scale(2.0)).unwrap();
        rec.submit(ctx).unwrap();
        let want = reference::unary::unary(&x[3 * 143 + 5..3 * 143 + 305], UnaryOp::Scale(2.0));
        assert_close(&format!("unary on view {dt:?}"), &y.to_vec(ctx).unwrap(), &want, tol(dt));
    }
    assert!(t_err(GpuTensor::from_slice(ctx, &[2, 2], &[1.0; 3], DType::F32)));
    let t = GpuTensor::zeros(ctx, &[10], DType::F32).unwrap();
    assert!(t_err(t.view(8, &[3])));
    assert!(t_err(t.reshape(&[3, 3])));
}

fn t_err<T>(r: lorafuse::Result<T>) -> bool {
    matches!(r, Err(Error::Shape { .. }))
}

#[test]
fn huge_or_overflowing_sizes_are_errors() {
    let ctx = ctx();
    assert!(matches!(GpuTensor::empty(ctx, &[usize::MAX / 2, 4], DType::F32), Err(Error::Limit { .. })));
    assert!(matches!(GpuTensor::empty(ctx, &[1 << 40, 1 << 10], DType::F32), Err(Error::Limit { .. })));
}

#[test]
fn pool_reuses_dropped_buffers() {
    let ctx = ctx();
    // A size class no other test in this binary uses.
    let shape = [1234567usize];
    let a = GpuTensor::zeros(ctx, &shape, DType::F32).unwrap();
    let id = a.buffer().clone();
    drop(a);
    let b = GpuTensor::zeros(ctx, &shape, DType::F32).unwrap();
    assert!(*b.buffer() == id, "the dropped buffer is handed out again");
}

#[test]
fn recorder_replays_the_same_dispatches() {
    let ctx = ctx();
    let x: Vec<f32> = (0..5000).map(|i| (i as f32).sin()).collect();
    let xt = GpuTensor::from_slice(ctx, &[5000], &x, DType::F32).unwrap();
    let mut rec = Recorder::new();
    let y = unary(ctx, &mut rec, &xt, UnaryOp::Gelu).unwrap();
    rec.replay(ctx).unwrap();
    let first = y.to_vec(ctx).unwrap();
    // Overwrite the output, replay: the recorded dispatch writes it again.
    let zero = GpuTensor::zeros(ctx, &[5000], DType::F32).unwrap();
    let mut copy = ctx.device.create_command_encoder(&Default::default());
    copy.copy_buffer_to_buffer(zero.buffer(), 0, y.buffer(), 0, 20000);
    ctx.queue.submit([copy.finish()]);
    rec.replay(ctx).unwrap();
    assert_eq!(y.to_vec(ctx).unwrap(), first);
    assert_close("gelu", &first, &reference::unary::unary(&x, UnaryOp::Gelu), TOL_F32);
    if ctx.caps.timestamps {
        let ms = rec.time_gpu(ctx, 3).unwrap().unwrap();
        assert!(ms > 0.0);
    }
}
