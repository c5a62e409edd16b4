//! The checks shared by the normalizations (`layer_norm`, `group_norm`): per-channel scale γ and
//! shift β of `[C]` in x's dtype, and a finite ε ≥ 0.

use crate::tensor::GpuTensor;
use crate::{Error, Result};

/// Check `gamma`, `beta` (`[c]`, x's dtype) and `eps`, naming `op` in the error.
pub(crate) fn check_affine(
    op: &'static str,
    x: &GpuTensor,
    c: usize,
    gamma: &GpuTensor,
    beta: &GpuTensor,
    eps: f32,
) -> Result<()> {
    for (name, t) in [("gamma", gamma), ("beta", beta)] {
        if t.shape.len() != 1 || t.shape[0] != c {
            return Err(Error::shape(op, format!("{name} {:?} must be [{c}] for x {:?}", t.shape, x.shape)));
        }
        if t.dtype != x.dtype {
            return Err(Error::dtype(op, format!("{name} is {}, x is {}", t.dtype.name(), x.dtype.name())));
        }
    }
    if !eps.is_finite() || eps < 0.0 {
        return Err(Error::invalid(op, format!("eps = {eps} must be finite and ≥ 0")));
    }
    Ok(())
}
