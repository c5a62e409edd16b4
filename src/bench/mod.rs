//! Kernel benchmarks at Stable Diffusion shapes.
