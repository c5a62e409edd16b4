//! Text-to-image orchestration.

pub mod rng;
