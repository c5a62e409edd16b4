//! Model code, mirroring checkpoint key names.

pub mod clip;
pub mod unet;
pub mod vae;
