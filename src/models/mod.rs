//! Model code, mirroring checkpoint key names.

pub mod clip;
