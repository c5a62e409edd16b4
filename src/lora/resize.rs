//! `lora resize`: a LoRA refactored to another rank by SVD of each module's ΔW, with kohya
//! `resize_lora.py`'s four rules (fixed rank, `sv_ratio`, `sv_fro`, `sv_cumulative`).
//!
//! LoRA/LoCon modules are factored from `up @ down` without their scale and keep it in the new
//! alpha (`alpha/rank × new_rank`), as kohya does; LoHa/LoKr (and Tucker `lora_mid`) modules
//! are turned into their dense ΔW (scale included) first and written with alpha = rank.

use std::path::Path;

use super::delta::Mat;
use super::lowrank::{LowRankFile, LowRankModule, ModuleError, SvdReport};
use super::module::{LoraKind, LoraModule};
use super::svd::{svd, svd_factored, Spectrum};
use super::{group_tensors, lora_base, split_key, LoraFile};
use crate::error::{Error, Result};
use crate::weights::{Component, ModelFiles, SafeTensorsFile, StDType};

const OP: &str = "lora_resize";

/// Singular values at or below this mean a zero matrix (kohya's `MIN_SV`).
const MIN_SV: f64 = 1e-6;

/// How the new rank of a module is chosen.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ResizeRule {
    /// The given rank for every module.
    Rank,
    /// Keep singular values above s_max / X.
    SvRatio(f64),
    /// Keep the fewest whose √(Σ s²) reaches this fraction of the Frobenius norm.
    SvFro(f64),
    /// Keep the fewest whose Σ s reaches this fraction of the sum.
    SvCumulative(f64),
}

#[derive(Clone, Debug)]
pub struct ResizeOptions {
    pub rule: ResizeRule,
    /// The rank under [`ResizeRule::Rank`], the cap otherwise (kohya `--new_rank`). Without it a
    /// dynamic rule is capped by the module's own rank (the dense rank for LoHa/LoKr).
    pub rank: Option<usize>,
    /// Rank of conv modules (kohya `--new_conv_rank`; defaults to `rank`).
    pub conv_rank: Option<usize>,
}

/// Running sums of `f(s_i)` as fractions of the total (kohya's `cumsum / sum`).
fn cumulative_fraction(s: &[f64], f: impl Fn(f64) -> f64) -> Vec<f64> {
    let total: f64 = s.iter().map(|&v| f(v)).sum();
    s.iter()
        .scan(0.0, |acc, &v| {
            *acc += f(v);
            Some(*acc)
        })
        .map(|c| c / total)
        .collect()
}

/// kohya `rank_resize`: the new rank for singular values `s` (non-increasing) and a cap.
pub fn kohya_rank(s: &[f64], rule: ResizeRule, cap: usize) -> usize {
    let n = s.len();
    if n == 0 {
        return 1;
    }
    let clamp = |i: usize| i.min(n - 1);
    // searchsorted (left): the first index whose value reaches the target.
    let first_reaching = |cum: &[f64], target: f64| cum.iter().position(|&c| c >= target).unwrap_or(n);
    let new_rank = match rule {
        ResizeRule::Rank => cap,
        ResizeRule::SvRatio(x) => {
            let min = s[0] / x;
            let count = s.iter().filter(|&&v| v > min).count();
            clamp(count.saturating_sub(1)) + 1
        }
        ResizeRule::SvCumulative(c) => clamp(first_reaching(&cumulative_fraction(s, |v| v), c)) + 1,
        ResizeRule::SvFro(f) => clamp(first_reaching(&cumulative_fraction(s, |v| v * v), f * f)) + 1,
    };
    if s[0] <= MIN_SV {
        1
    } else {
        new_rank.min(cap)
    }
}

fn component_of(key: &str) -> Component {
    if key.starts_with("lora_unet_") || key.starts_with("unet.") {
        Component::Unet
    } else if key.starts_with("lora_te2_") || key.starts_with("text_encoder_2.") {
        Component::TextEncoder2
    } else {
        Component::TextEncoder
    }
}

/// The weight shape the factors imply (kernel from a 4-D factor or core; 2-D when none says).
fn implied_shape(m: &LoraModule, out: usize, inn: usize) -> Vec<usize> {
    let p = &m.parts;
    let kernel = [p.get("mid"), p.get("t1"), p.get("kt2"), p.get("w2"), p.get("down")]
        .into_iter()
        .flatten()
        .find(|t| t.shape.len() == 4 && t.shape[2] * t.shape[3] > 1)
        .map(|t| (t.shape[2], t.shape[3]));
    match kernel {
        Some((kh, kw)) if inn.is_multiple_of(kh * kw) => vec![out, inn / (kh * kw), kh, kw],
        _ if p.get("down").is_some_and(|d| d.shape.len() == 4) => vec![out, inn, 1, 1],
        _ => vec![out, inn],
    }
}

/// A file's modules parsed without a model: keys kept as they are, shapes implied by the factors.
pub(crate) struct Standalone {
    pub modules: Vec<LoraModule>,
    /// Tensor names that belong to no module.
    pub other: Vec<String>,
    /// The base family its metadata or keys name, with the evidence (see `lora_base`).
    pub base: Option<(&'static str, String)>,
}

/// The modules of a file without a model: keys are kept as they are.
pub(crate) fn parse_standalone(path: &Path, file: &SafeTensorsFile) -> Result<Standalone> {
    let (groups, other) = group_tensors(path, file)?;
    let base = lora_base(file.metadata(), &groups);
    let mut modules = Vec::new();
    for (key, parts) in groups {
        // The DoRA magnitude is left out: the tools refuse DoRA or compare its direction only.
        let (mut m, _dora) =
            LoraModule::from_parts(key.clone(), component_of(&key), key.clone(), Vec::new(), parts, || None);
        let Some((out, inn)) = m.produced_dims() else {
            return Err(Error::invalid(OP, format!("{}: module {key} lacks factor tensors", path.display())));
        };
        m.target_shape = implied_shape(&m, out, inn);
        modules.push(m);
    }
    if modules.is_empty() {
        return Err(Error::invalid(OP, format!("{}: no LoRA module in the file", path.display())));
    }
    Ok(Standalone { modules, other, base })
}

/// ΔW of a LoHa/LoKr/Tucker module (scale included) as `[out, in·kh·kw]`.
pub(crate) fn dense(m: &LoraModule) -> Result<Mat> {
    let d = m.delta()?;
    let rows = d.shape[0];
    let cols = d.data.len() / rows.max(1);
    Ok(Mat { shape: vec![rows, cols], data: d.data })
}

/// The SVD of a module's ΔW, the scale left outside for plain low-rank modules (factored:
/// `up @ down` is never formed), with the module's rank.
fn spectrum(m: &LoraModule) -> Result<(Spectrum, f32, usize)> {
    if m.kind == LoraKind::Dora {
        return Err(Error::invalid(OP, format!("{}: DoRA modules cannot be resized (magnitude vector)", m.key)));
    }
    let at = |e: Error| Error::invalid(OP, format!("{}: {e}", m.key));
    if let Some((down, up, scale)) = m.low_rank() {
        let (r, cols) = (down.shape[0], down.shape[1]);
        let sp = svd_factored(&up.data, up.shape[0], r, &down.data, cols).map_err(at)?;
        return Ok((sp, scale, r));
    }
    let d = dense(m)?;
    let (rows, cols) = d.rows_cols();
    Ok((svd(&d.data, rows, cols).map_err(at)?, 1.0, m.factor_rank()))
}

/// Resizes the LoRA at `path`; `model` (optional) resolves module shapes exactly.
pub fn resize(
    path: &Path,
    model: Option<&ModelFiles>,
    o: &ResizeOptions,
    progress: &mut dyn FnMut(usize, usize, &str),
) -> Result<(LowRankFile, SvdReport)> {
    if o.rank == Some(0) || o.conv_rank == Some(0) {
        return Err(Error::invalid(OP, "rank must be at least 1"));
    }
    match o.rule {
        ResizeRule::Rank if o.rank.is_none() => return Err(Error::invalid(OP, "give a rank or a dynamic rule")),
        ResizeRule::SvRatio(x) if x.is_nan() || x < 1.0 => {
            return Err(Error::invalid(OP, format!("sv_ratio must be ≥ 1, got {x}")))
        }
        ResizeRule::SvFro(x) | ResizeRule::SvCumulative(x) if !(x > 0.0 && x <= 1.0) => {
            return Err(Error::invalid(OP, format!("the fraction must be in (0, 1], got {x}")))
        }
        _ => {}
    }
    let file = SafeTensorsFile::open(path)?;
    let (modules, _other) = match model {
        Some(mf) => (LoraFile::from_file(path, &file, &super::ModuleIndex::new(mf))?.modules, Vec::new()),
        None => {
            let s = parse_standalone(path, &file)?;
            (s.modules, s.other)
        }
    };
    // Fixed ranks are checked before any work, so a bad rank writes nothing.
    for m in &modules {
        let rows = m.target_shape.first().copied().unwrap_or(1);
        let cols = m.target_shape.iter().skip(1).product::<usize>();
        let conv = m.target_shape.len() == 4;
        let r = if conv { o.conv_rank.or(o.rank) } else { o.rank };
        if let (ResizeRule::Rank, Some(r)) = (o.rule, r) {
            if r > rows.min(cols) {
                return Err(Error::invalid(
                    OP,
                    format!("rank {r} is above {}'s rank {} (a {rows}×{cols} matrix)", m.key, rows.min(cols)),
                ));
            }
        }
    }
    let mut out = LowRankFile::default();
    let mut report = SvdReport::default();
    for (i, m) in modules.iter().enumerate() {
        progress(i, modules.len(), &m.key);
        let (sp, scale, old_rank) = spectrum(m)?;
        let (rows, cols) = (sp.rows, sp.cols);
        let conv = m.target_shape.len() == 4;
        let fixed = if conv { o.conv_rank.or(o.rank) } else { o.rank };
        let low_rank = m.low_rank().is_some();
        let cap = fixed.unwrap_or(if low_rank { old_rank } else { sp.full_rank() }).min(sp.full_rank());
        let rank = kohya_rank(&sp.s, o.rule, cap).max(1);
        let (up, down) = sp.factors(rank)?;
        let sh = &m.target_shape;
        let (down_shape, up_shape) = if conv {
            (vec![rank, sh[1], sh[2], sh[3]], vec![rows, rank, 1, 1])
        } else {
            (vec![rank, cols], vec![rows, rank])
        };
        let alpha = scale * rank as f32;
        report.modules.push(ModuleError {
            key: m.key.clone(),
            rows,
            cols,
            old_rank: Some(old_rank),
            rank,
            alpha,
            rel_error: sp.relative_error(rank),
            retained_energy: sp.retained_energy(rank),
            energy: sp.energy(),
            s_max: sp.s.first().copied().unwrap_or(0.0),
        });
        out.modules.push(LowRankModule { key: m.key.clone(), down_shape, down, up_shape, up, alpha });
    }
    progress(modules.len(), modules.len(), "");
    let mut meta = file.metadata().clone();
    meta.remove("sshs_model_hash");
    meta.remove("sshs_legacy_hash");
    if modules.iter().any(|m| m.low_rank().is_none()) {
        meta.insert("ss_network_module".into(), "networks.lora".into());
        meta.remove("ss_network_args");
    }
    let old_dim = modules.iter().map(|m| m.factor_rank()).max().unwrap_or(0);
    let comment = meta.get("ss_training_comment").cloned().unwrap_or_default();
    match (o.rule, o.rank) {
        (ResizeRule::Rank, Some(r)) => {
            meta.insert("ss_network_dim".into(), r.to_string());
            let alpha = out.modules.last().map(|m| m.alpha).unwrap_or(r as f32);
            meta.insert("ss_network_alpha".into(), alpha.to_string());
            meta.insert("ss_training_comment".into(), format!("dimension is resized from {old_dim} to {r}; {comment}"));
        }
        _ => {
            meta.insert("ss_network_dim".into(), "Dynamic".into());
            meta.insert("ss_network_alpha".into(), "Dynamic".into());
            meta.insert(
                "ss_training_comment".into(),
                format!("Dynamic resize with {:?} from {old_dim}; {comment}", o.rule),
            );
        }
    }
    out.metadata = meta;
    report.old_bytes = std::fs::metadata(path).ok().map(|m| m.len());
    report.finish(out.params());
    Ok((out, report))
}

/// The dtype the input's factors are stored in (the resized file keeps it).
pub fn stored_dtype(path: &Path) -> Result<StDType> {
    let file = SafeTensorsFile::open(path)?;
    let dt = file
        .names()
        .find(|n| split_key(n).is_some_and(|(_, r)| r != "alpha"))
        .and_then(|n| file.info(n))
        .map(|i| i.dtype)
        .unwrap_or(StDType::F32);
    Ok(match dt {
        StDType::F16 | StDType::BF16 => dt,
        _ => StDType::F32,
    })
}
