//! Text-to-image orchestration.

pub mod image;
pub mod loras;
pub mod rng;
pub mod txt2img;
