//! Text-to-image orchestration.

pub mod image;
pub mod rng;
pub mod txt2img;
