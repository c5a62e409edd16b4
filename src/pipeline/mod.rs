//! Text-to-image orchestration.

pub mod image;
pub mod rng;
