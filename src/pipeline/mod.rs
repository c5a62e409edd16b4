//! Text-to-image orchestration.

pub mod image;
pub mod txt2img;
pub mod rng;
