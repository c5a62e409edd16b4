//! CPU truth for `kernels::unary`.

use crate::kernels::unary::UnaryOp;

pub fn erf(x: f64) -> f64 {
    // Series for small |x|, continued fraction tail otherwise; ~1e-15 relative error is far below
    // what the f32 kernels are held to.
    let a = x.abs();
    let r = if a < 2.5 {
        let mut sum: f64 = 0.0;
        let mut term = a;
        let mut n = 0.0;
        while term.abs() > 1e-17 * sum.abs().max(1e-300) || n < 3.0 {
            sum += term / (2.0 * n + 1.0);
            n += 1.0;
            term *= -a * a / n;
            if n > 200.0 {
                break;
            }
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    } else {
        // erfc continued fraction (Lentz).
        let mut f = 0.0;
        for k in (1..=60).rev() {
            f = (k as f64 / 2.0) / (a + f);
        }
        1.0 - (-a * a).exp() / std::f64::consts::PI.sqrt() / (a + f)
    };
    r.copysign(x)
}

pub fn unary(x: &[f32], op: UnaryOp) -> Vec<f32> {
    x.iter()
        .map(|&v| {
            let v = v as f64;
            (match op {
                UnaryOp::Silu => v / (1.0 + (-v).exp()),
                UnaryOp::Gelu => 0.5 * v * (1.0 + erf(v / std::f64::consts::SQRT_2)),
                UnaryOp::QuickGelu => v / (1.0 + (-1.702 * v).exp()),
                UnaryOp::Scale(a) => a as f64 * v,
                UnaryOp::Relu => v.max(0.0),
                UnaryOp::SoftClamp(c) => c as f64 * (v / c as f64).tanh(),
            }) as f32
        })
        .collect()
}
