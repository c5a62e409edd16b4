//! TEMPORARY stubs (replaced by the cli13 branch's implementation at merge).
use crate::{HostTensor, Result};
pub fn crop(_: &HostTensor, _: [usize; 4]) -> Result<HostTensor> {
    todo!()
}
pub fn crop_region(_: &HostTensor, _: usize, _: usize, _: usize) -> Result<[usize; 4]> {
    todo!()
}
pub fn paste(_: &mut HostTensor, _: &HostTensor, _: [usize; 4]) -> Result<()> {
    todo!()
}
pub fn resize_image(_: &HostTensor, _: usize, _: usize) -> Result<HostTensor> {
    todo!()
}
pub fn resize_mask(_: &HostTensor, _: usize, _: usize) -> Result<HostTensor> {
    todo!()
}
pub fn upscale_latents(_: &HostTensor, _: usize, _: usize, _: bool) -> Result<HostTensor> {
    todo!()
}
pub fn decode_image(_: &[u8], _: &str) -> Result<HostTensor> {
    todo!()
}
pub fn decode_mask(_: &[u8], _: &str) -> Result<HostTensor> {
    todo!()
}
pub fn fit_image(_: &HostTensor, _: usize, _: usize, _: ResizeMode) -> Result<HostTensor> {
    todo!()
}
pub fn fit_mask(_: &HostTensor, _: usize, _: usize, _: ResizeMode) -> Result<HostTensor> {
    todo!()
}
pub fn blur_mask(_: &HostTensor, _: f32) -> Result<HostTensor> {
    todo!()
}
#[derive(Clone, Copy)]
pub enum ResizeMode {
    JustResize,
    CropAndResize,
    ResizeAndFill,
}
