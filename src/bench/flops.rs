//! Floating-point work of one UNet evaluation, counted from its configuration, so a step time
//! becomes a rate for any family and size (SD1.5's fixed 1.61 TFLOP at 512² does not scale:
//! self-attention grows with the square of the token count).
//!
//! Counted: convolutions, linear layers and the two attention products (Q·Kᵀ and P·V), at
//! 2 FLOP per multiply-add. Not counted: norms, softmax, activations, the time embedding — a
//! few percent at SD sizes. SD1.5 with CFG at 512² counts 1.606 TFLOP (the 1.61).

use crate::weights::detect::UNetConfig;

/// Text tokens the cross-attention attends to (one 75-token chunk).
const CONTEXT_TOKENS: f64 = 77.0;

/// FLOPs of one UNet forward of `batch` latents of `h`×`w`.
pub fn unet_flops(u: &UNetConfig, batch: usize, h: usize, w: usize) -> f64 {
    let ch: Vec<f64> = u.block_out_channels.iter().map(|&c| c as f64).collect();
    let levels = ch.len();
    if levels == 0 {
        return 0.0;
    }
    let d = u.cross_attention_dim as f64;
    let area = |level: usize| ((h >> level) * (w >> level)) as f64;
    let conv = |cin: f64, cout: f64, k: f64, hw: f64| 2.0 * cin * cout * k * k * hw;
    let resnet = |cin: f64, cout: f64, hw: f64| {
        let shortcut = if cin != cout { conv(cin, cout, 1.0, hw) } else { 0.0 };
        conv(cin, cout, 3.0, hw) + conv(cout, cout, 3.0, hw) + shortcut
    };
    let transformer = |c: f64, depth: usize, s: f64| {
        let block = 8.0 * s * c * c + 4.0 * s * s * c // self-attention: q, k, v, out; QKᵀ, PV
            + 4.0 * s * c * c + 4.0 * CONTEXT_TOKENS * d * c + 4.0 * s * CONTEXT_TOKENS * c // cross
            + 24.0 * s * c * c; // GEGLU feed-forward: c → 8c, 4c → c
        4.0 * s * c * c + depth as f64 * block // proj_in, proj_out
    };
    let l = u.layers_per_block;
    let mut f = conv(u.in_channels as f64, ch[0], 3.0, area(0));
    let mut skips = vec![ch[0]];
    let mut cur = ch[0];
    for (b, &c) in ch.iter().enumerate() {
        for _ in 0..l {
            f += resnet(cur, c, area(b));
            cur = c;
            if u.down_cross_attention.get(b) == Some(&true) {
                f += transformer(c, u.down_transformer_depth.get(b).copied().unwrap_or(0), area(b));
            }
            skips.push(c);
        }
        if b + 1 < levels {
            f += conv(c, c, 3.0, area(b + 1));
            skips.push(c);
        }
    }
    let bottom = area(levels - 1);
    f += 2.0 * resnet(cur, cur, bottom);
    if u.mid_cross_attention {
        f += transformer(cur, u.mid_transformer_depth, bottom);
    }
    for (i, &c) in ch.iter().rev().enumerate() {
        let b = levels - 1 - i;
        for _ in 0..=l {
            f += resnet(cur + skips.pop().unwrap_or(0.0), c, area(b));
            cur = c;
            if u.up_cross_attention.get(i) == Some(&true) {
                f += transformer(c, u.up_transformer_depth.get(i).copied().unwrap_or(0), area(b));
            }
        }
        if b > 0 {
            f += conv(c, c, 3.0, area(b - 1));
        }
    }
    f += conv(ch[0], u.out_channels as f64, 3.0, area(0));
    f * batch as f64
}
