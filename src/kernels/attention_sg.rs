//! Launcher for `shaders/attention_sg.wgsl`: the attention kernel for CPU adapters (lavapipe),
//! without workgroup memory or barriers. Same contract and layout as
//! [`attention`](crate::kernels::attention) (`q [B, Sq, H·D]`, `k, v [B, Sk, H·D]`, optional
//! causal mask, f32 math); `kernels::attention` picks it where [`default_rows`] says it runs.
//!
//! One subgroup per workgroup; each lane owns `r` query rows (so a workgroup covers `SG·r` rows
//! of one batch and head), K and V rows are loaded once per workgroup and shared by
//! subgroupBroadcast (see the shader's opening comment). The shader is a template whose marked
//! lines are expanded here, unrolled over the head dim's vec4 columns, the lanes and the rows,
//! once per (D/4, SG, r); the expansion is cached for the process.
//!
//! Needs: subgroups of one fixed size (8..=32), D % 4 == 0, D ≤ [`MAX_HEAD_DIM`], and windows
//! whose first element sits at a multiple of 4 elements (it reads vec4s). Big tensors are split
//! like the tiled kernel: whole batches per launch while q/k/v/out fit one binding, else one
//! batch's query rows.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Mutex, OnceLock};

use crate::gpu::{KernelSource, PipelineKey, Recorder};
use crate::kernels::attention_launch::{annotate, check_out, head_dim, launch_attention};
use crate::tensor::GpuTensor;
use crate::{wgsl, Context, Error, Result};

pub static SRC: KernelSource = wgsl!("attention_sg");

/// Largest head dim, as for the tiled kernel. Wider heads would run (the expansion has no limit),
/// but the VAE's 512-wide head measured no faster than its matmul + softmax path while its
/// pipeline took ~24 s (1 row per lane: 3.8 GFLOP/s) to ~70 s (2 rows: 7.5 GFLOP/s) to compile.
pub const MAX_HEAD_DIM: usize = 160;

const OP: &str = "attention_sg";

/// Lavapipe ends a shader's loops after 65535 iterations per invocation; the key loop runs
/// `sk / SG` times.
const LOOP_BUDGET: usize = 60000;

/// The subgroup width the kernel is unrolled for on this device, if it has one fixed width.
pub fn lanes(ctx: &Context) -> Option<u32> {
    let c = &ctx.caps;
    let w = c.subgroup_min_size;
    (c.subgroups && w == c.subgroup_max_size && (8..=32).contains(&w) && w <= c.max_invocations).then_some(w)
}

/// Most query rows per lane a launch may ask for.
pub const MAX_ROWS: u32 = 16;

/// Query rows per lane for head dim `d`. More rows share each loaded K/V element among more
/// multiply-adds (on lavapipe the loads, not the arithmetic, bound this kernel: 1, 2, 4, 8, 16
/// rows gave 3.5, 6.3, 10.5, 20, 22.7 GFLOP/s at d = 40), but the unrolled body grows as `d·r`
/// and LLVM's compile time faster than that (lavapipe, d·r = 320: ~1.6 s, 640: ~5.6-8 s,
/// 1280: ~22 s). So `d·r ≤ 640` for SD's level-1 head dim (40: most of the attention flops) and
/// `d·r ≤ 320` elsewhere, as a power of two, at least 1 (40: 16, 64 and 80: 4, 160: 2).
pub fn rows_for(d: usize) -> u32 {
    let budget = if d <= 48 { 640 } else { 320 };
    let mut r = 1;
    while r < MAX_ROWS as usize && d * r * 2 <= budget {
        r *= 2;
    }
    r as u32
}

/// The rows per lane `kernels::attention` uses for head dim `d` on this device, or `None` where
/// this kernel should not run: not a CPU adapter, no fixed subgroup width, or a head dim it cannot
/// take.
pub fn default_rows(ctx: &Context, d: usize) -> Option<u32> {
    (ctx.caps.is_cpu() && lanes(ctx).is_some() && d.is_multiple_of(4) && (4..=MAX_HEAD_DIM).contains(&d))
        .then(|| rows_for(d))
}

/// The shader expanded for `d4` vec4 columns, `sg` lanes and `r` rows per lane.
pub fn expanded_source(d4: u32, sg: u32, r: u32) -> &'static KernelSource {
    type Cache = Mutex<HashMap<(u32, u32, u32), &'static KernelSource>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let mut map = cache.lock().expect("attention_sg source cache");
    map.entry((d4, sg, r)).or_insert_with(|| {
        let text = expand(SRC.source, d4, sg, r);
        Box::leak(Box::new(KernelSource { name: SRC.name, source: Box::leak(text.into_boxed_str()) }))
    })
}

/// Replace the template's `//#` lines with the unrolled code (see the shader for the names).
fn expand(template: &str, d4: u32, sg: u32, r: u32) -> String {
    let mut out = String::with_capacity(template.len() + (d4 * sg * r) as usize * 160);
    for line in template.lines() {
        match line.trim() {
            "//# rows" => rows_block(&mut out, d4, sg, r),
            "//# scores" => scores_block(&mut out, d4, sg, r),
            "//# softmax" => softmax_block(&mut out, sg, r),
            "//# pv" => pv_block(&mut out, d4, sg, r),
            "//# store" => store_block(&mut out, d4, r),
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

// `write!` into a String cannot fail; the blocks below ignore its Ok.

fn rows_block(s: &mut String, d4: u32, sg: u32, r: u32) {
    for i in 0..r {
        let _ = writeln!(s, "    let row{i} = q0 + lane + {}u;", sg * i);
        let _ = writeln!(s, "    let qa{i} = qb + min(row{i}, rlast) * hd4;");
        let _ = writeln!(s, "    let g{i} = p.row0 + row{i};");
        let _ = writeln!(s, "    var m{i} = NEG;");
        let _ = writeln!(s, "    var l{i} = 0.0;");
        for c in 0..d4 {
            let _ = writeln!(s, "    let q{i}_{c} = vec4<f32>(q[qa{i} + {c}u]) * sc;");
            let _ = writeln!(s, "    var o{i}_{c} = vec4<f32>(0.0);");
        }
    }
}

fn scores_block(s: &mut String, d4: u32, sg: u32, r: u32) {
    // Column by column: one vec4 of this lane's key row, broadcast from each lane in turn, feeds
    // the R rows' running dot products with that key (measured faster on lavapipe than loading the
    // whole key row first and then going key by key).
    for i in 0..r {
        for j in 0..sg {
            let _ = writeln!(s, "        var s{i}_{j} = 0.0;");
        }
    }
    for c in 0..d4 {
        let _ = writeln!(s, "        {{");
        let _ = writeln!(s, "            let kc = vec4<f32>(k[ka + {c}u]);");
        for j in 0..sg {
            let _ = writeln!(s, "            let k{j} = subgroupBroadcast(kc, {j}u);");
            for i in 0..r {
                let _ = writeln!(s, "            s{i}_{j} += dot(q{i}_{c}, k{j});");
            }
        }
        let _ = writeln!(s, "        }}");
    }
}

fn softmax_block(s: &mut String, sg: u32, r: u32) {
    for i in 0..r {
        for j in 0..sg {
            let _ = writeln!(s, "        s{i}_{j} = mask(s{i}_{j}, {j}u, nk, kt, g{i});");
        }
        let mut mx = format!("s{i}_0");
        for j in 1..sg {
            mx = format!("max({mx}, s{i}_{j})");
        }
        let _ = writeln!(s, "        let mn{i} = max(m{i}, {mx});");
        let _ = writeln!(s, "        let al{i} = exp2(m{i} - mn{i});");
        let _ = writeln!(s, "        m{i} = mn{i};");
        let mut sum = String::new();
        for j in 0..sg {
            let _ = writeln!(s, "        let p{i}_{j} = exp2(s{i}_{j} - mn{i});");
            if j > 0 {
                sum.push_str(" + ");
            }
            let _ = write!(sum, "p{i}_{j}");
        }
        let _ = writeln!(s, "        l{i} = l{i} * al{i} + ({sum});");
    }
}

fn pv_block(s: &mut String, d4: u32, sg: u32, r: u32) {
    for c in 0..d4 {
        let _ = writeln!(s, "        {{");
        let _ = writeln!(s, "            let vc = vec4<f32>(v[va + {c}u]);");
        // The softmax rescale of this column, folded in here so each accumulator is touched once.
        for i in 0..r {
            let _ = writeln!(s, "            o{i}_{c} = o{i}_{c} * al{i};");
        }
        for j in 0..sg {
            let _ = writeln!(s, "            let v{j} = subgroupBroadcast(vc, {j}u);");
            for i in 0..r {
                // `*` and `+`, not fma(): lavapipe lowers fma() exactly, as a slow call.
                let _ = writeln!(s, "            o{i}_{c} += p{i}_{j} * v{j};");
            }
        }
        let _ = writeln!(s, "        }}");
    }
}

fn store_block(s: &mut String, d4: u32, r: u32) {
    for i in 0..r {
        let _ = writeln!(s, "    if (row{i} < p.nr) {{");
        let _ = writeln!(s, "        let li = 1.0 / l{i};");
        let _ = writeln!(s, "        let oa = ob + row{i} * hd4;");
        for c in 0..d4 {
            let _ = writeln!(s, "        o[oa + {c}u] = vec4<ST>(o{i}_{c} * li);");
        }
        let _ = writeln!(s, "    }}");
    }
}

/// Check that this kernel can run head dim `d` with `r` rows per lane here.
fn check(ctx: &Context, d: usize, r: u32) -> Result<u32> {
    let sg = lanes(ctx).ok_or_else(|| {
        let c = &ctx.caps;
        Error::invalid(
            OP,
            format!(
                "needs subgroups of one fixed width in 8..=32; adapter: subgroups={}, sizes {}..{}",
                c.subgroups, c.subgroup_min_size, c.subgroup_max_size
            ),
        )
    })?;
    if d == 0 || !d.is_multiple_of(4) || d > MAX_HEAD_DIM {
        return Err(Error::invalid(OP, format!("head dim {d} must be a multiple of 4 in 4..={MAX_HEAD_DIM}")));
    }
    if !(1..=MAX_ROWS).contains(&r) {
        return Err(Error::invalid(OP, format!("rows per lane {r} must be in 1..={MAX_ROWS}")));
    }
    Ok(sg)
}

/// Attention into `out` with this kernel and `r` query rows per lane (for tuning and tests;
/// [`attention_into`](crate::kernels::attention::attention_into) picks the kernel and `r`). Checks
/// shapes, dtypes and aliasing as the tiled kernel does, and returns an error where this kernel
/// cannot run.
#[allow(clippy::too_many_arguments)]
pub fn attention_sg_into(
    ctx: &Context,
    rec: &mut Recorder,
    q: &GpuTensor,
    k: &GpuTensor,
    v: &GpuTensor,
    out: &GpuTensor,
    heads: usize,
    causal: bool,
    scale: f32,
    r: u32,
) -> Result<()> {
    let from = rec.len();
    attention_sg_dispatches(ctx, rec, q, k, v, out, heads, causal, scale, r)?;
    annotate(rec, from, q, k, heads);
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn attention_sg_dispatches(
    ctx: &Context,
    rec: &mut Recorder,
    q: &GpuTensor,
    k: &GpuTensor,
    v: &GpuTensor,
    out: &GpuTensor,
    heads: usize,
    causal: bool,
    scale: f32,
    r: u32,
) -> Result<()> {
    let d = head_dim(q, k, v, heads)?;
    check_out(q, k, v, out, scale)?;
    let sg = check(ctx, d, r)?;
    let (b, sq, sk) = (q.shape[0], q.shape[1], k.shape[1]);
    if b * sq == 0 {
        return Ok(());
    }
    if sk.div_ceil(sg as usize) > LOOP_BUDGET {
        return Err(Error::limit(OP, "keys (lavapipe's loop limit)", sk as u64, (LOOP_BUDGET * sg as usize) as u64));
    }
    let dt = q.dtype;
    let src = expanded_source((d / 4) as u32, sg, r);
    let key = PipelineKey::new(src, "main", dt).with("SG", sg).with("R", r).with("D4", (d / 4) as u32);
    launch_attention(ctx, rec, OP, src, &key, q, k, v, out, heads, causal, scale, d, (sg * r) as usize, true)
}
