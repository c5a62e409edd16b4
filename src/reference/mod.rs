//! Plain CPU versions of every kernel, accumulating in f64: the truth the GPU is tested against.
//! Written for clarity, not speed; each mirrors the launcher of the same name in `kernels/`.

pub mod unary;
