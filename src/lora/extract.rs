//! `lora extract`: a kohya LoRA/LoCon from two checkpoints of one family, by truncated SVD of
//! ΔW = W_tuned − W_base per adaptable module (kohya `extract_lora_from_models.py`'s choices).
//!
//! Modules: the UNet's transformer blocks (attention, feed-forward, 1×1 / linear proj_in/out)
//! and the text encoders' attention and MLP linears; with a conv rank also the resnets and
//! down/upsamplers (3×3 kernels flattened to `[out, in·kh·kw]`, 1×1 convs as linears at the
//! linear rank). A text encoder whose every |ΔW| stays at or below `min_diff` is left out
//! whole, as kohya does (fine-tunes often freeze it); a module whose ΔW is exactly zero too.
//! kohya decides that for SDXL's two encoders together; here each encoder is judged alone, so a
//! fine-tune that froze one of them does not carry its rounding noise.
//!
//! Names and metadata are those kohya's own tools write (see [`kohya_key`], [`metadata`]), so
//! other programs read the file as an SD1 or SDXL LoRA.

use std::collections::BTreeMap;

use super::keys::{ldm_kohya_name, naming_layout, ModuleIndex, Target};
use super::lowrank::{LowRankFile, LowRankModule, ModuleError, SvdReport};
use super::svd::{svd, svd_top};
use crate::error::{Error, Result};
use crate::weights::detect::{detect, Family, ModelConfig};
use crate::weights::names::LdmLayout;
use crate::weights::{Component, ModelFiles};

const OP: &str = "lora_extract";

/// How to truncate.
#[derive(Clone, Debug)]
pub struct ExtractOptions {
    /// Rank of linear / 1×1 modules; with `energy`, the cap.
    pub rank: Option<usize>,
    /// Rank of 3×3 convs; `None` leaves the convs out (kohya's default without `--conv_dim`).
    pub conv_rank: Option<usize>,
    /// Per module, the smallest rank that retains this fraction of ‖ΔW‖²_F.
    pub energy: Option<f64>,
    /// A text encoder whose largest |ΔW| is at most this is left out (kohya's `min_diff`).
    pub min_diff: f32,
    /// Always the full SVD (as kohya's script), not the randomized top-rank one for large
    /// modules.
    pub exact: bool,
}

impl Default for ExtractOptions {
    fn default() -> Self {
        ExtractOptions { rank: Some(4), conv_rank: None, energy: None, min_diff: 0.01, exact: false }
    }
}

/// One module to extract.
struct Job {
    target: Target,
    key: String,
    rows: usize,
    cols: usize,
    /// Rank to keep, or the cap under `energy`.
    rank: Option<usize>,
}

/// The module name kohya's own tools write for a weight. kohya converts an SD1 UNet to
/// diffusers' and names its modules that way, but trains SDXL on the original (LDM) UNet, so an
/// SDXL LoRA names UNet modules by LDM path (`lora_unet_input_blocks_4_1_…`, `middle_block_1`,
/// `output_blocks_…`); text encoders go by transformers' CLIP path under `lora_te_` (SD1) or
/// `lora_te1_` / `lora_te2_` (SDXL). Without a layout (a LoRA read with no model) an SDXL UNet
/// module keeps its diffusers path, which lorafuse's loader accepts as well.
pub(crate) fn kohya_key(family: Family, c: Component, weight: &str, lay: Option<&LdmLayout>) -> Result<String> {
    if let (Family::Sdxl, Component::Unet, Some(l)) = (family, c, lay) {
        return ldm_kohya_name(weight, l)
            .ok_or_else(|| Error::invalid(OP, format!("unet {weight}: no original (LDM) module name in this layout")));
    }
    let module = weight.strip_suffix(".weight").unwrap_or(weight).replace('.', "_");
    let prefix = match (c, family) {
        (Component::Unet, _) => "lora_unet_",
        (Component::TextEncoder2, _) => "lora_te2_",
        (_, Family::Sdxl) => "lora_te1_",
        _ => "lora_te_",
    };
    Ok(format!("{prefix}{module}"))
}

/// Whether kohya's LoRA network adapts this weight, and if so whether as a k×k conv.
fn selected(t: &Target, with_conv: bool) -> Option<bool> {
    let w = &t.weight;
    let kxk = t.shape.len() == 4 && t.shape[2] * t.shape[3] > 1;
    match t.component {
        Component::Unet if w.contains(".attentions.") => (!kxk).then_some(false),
        Component::Unet
            if with_conv && (w.contains(".resnets.") || w.contains(".downsamplers.") || w.contains(".upsamplers.")) =>
        {
            Some(kxk)
        }
        Component::TextEncoder | Component::TextEncoder2 if w.contains(".self_attn.") || w.contains(".mlp.") => {
            Some(false)
        }
        _ => None,
    }
}

fn check_options(o: &ExtractOptions) -> Result<()> {
    if o.rank == Some(0) || o.conv_rank == Some(0) {
        return Err(Error::invalid(OP, "rank must be at least 1"));
    }
    if o.rank.is_none() && o.energy.is_none() {
        return Err(Error::invalid(OP, "give a rank or an energy fraction"));
    }
    if let Some(e) = o.energy {
        if !(e > 0.0 && e <= 1.0) {
            return Err(Error::invalid(OP, format!("energy must be in (0, 1], got {e}")));
        }
    }
    if o.min_diff.is_nan() || o.min_diff < 0.0 {
        return Err(Error::invalid(OP, format!("min_diff must be ≥ 0, got {}", o.min_diff)));
    }
    Ok(())
}

/// The modules to extract, after checking that the two models match and every rank fits.
fn plan(base: &ModelFiles, tuned: &ModelFiles, o: &ExtractOptions) -> Result<(ModelConfig, Vec<Job>)> {
    let fb = detect(base).map_err(|e| Error::invalid(OP, format!("base {}: {e}", base.path().display())))?;
    let ft = detect(tuned).map_err(|e| Error::invalid(OP, format!("tuned {}: {e}", tuned.path().display())))?;
    if fb.family != ft.family {
        return Err(Error::invalid(
            OP,
            format!(
                "base {} is {} but tuned {} is {}: both must be the same family",
                base.path().display(),
                fb.family.name(),
                tuned.path().display(),
                ft.family.name()
            ),
        ));
    }
    let family = fb.family;
    let index = ModuleIndex::new(base);
    let lay = naming_layout(base, Some(&fb));
    if family == Family::Sdxl && lay.is_none() {
        return Err(Error::invalid(
            OP,
            format!("{}: no original (LDM) UNet layout to name SDXL modules by", base.path().display()),
        ));
    }
    let mut jobs = Vec::new();
    for t in index.targets() {
        let Some(conv) = selected(t, o.conv_rank.is_some()) else { continue };
        match tuned.builder(t.component).shape(&t.weight) {
            Some(s) if s.iter().product::<usize>() == t.shape.iter().product::<usize>() && s[0] == t.shape[0] => {}
            Some(s) => {
                return Err(Error::shape(
                    OP,
                    format!("{} {}: base has {:?}, tuned has {s:?}", t.component.name(), t.weight, t.shape),
                ))
            }
            None => {
                return Err(Error::invalid(
                    OP,
                    format!("{} has no {} {} (the base has)", tuned.path().display(), t.component.name(), t.weight),
                ))
            }
        }
        let rows = t.shape[0];
        let cols = t.shape.iter().skip(1).product::<usize>();
        let rank = if conv { o.conv_rank } else { o.rank };
        // Under --energy the rank is only a cap.
        if let (Some(r), None) = (rank, o.energy) {
            if r > rows.min(cols) {
                return Err(Error::invalid(
                    OP,
                    format!(
                        "rank {r} is above {} {}'s rank {} (a {rows}×{cols} matrix)",
                        t.component.name(),
                        t.weight,
                        rows.min(cols)
                    ),
                ));
            }
        }
        jobs.push(Job {
            key: kohya_key(family, t.component, &t.weight, lay.as_ref())?,
            target: t.clone(),
            rows,
            cols,
            rank,
        });
    }
    if jobs.is_empty() {
        return Err(Error::invalid(OP, format!("{}: no adaptable module found", base.path().display())));
    }
    Ok((fb, jobs))
}

fn delta(base: &ModelFiles, tuned: &ModelFiles, t: &Target) -> Result<Vec<f32>> {
    let a = base.builder(t.component).get(&t.weight, &t.shape)?;
    let b = tuned.builder(t.component).get(&t.weight, &t.shape)?;
    Ok(b.data.iter().zip(&a.data).map(|(b, a)| b - a).collect())
}

/// Below this many rows or columns the full SVD costs milliseconds, and being exact (and equal to
/// kohya's numbers) is worth more.
const RANDOMIZED_MIN_DIM: usize = 256;

/// Whether the randomized top-`rank` SVD should replace the full one for a `rows × cols` module:
/// large, and the sketch (rank + oversampling) well under the full rank.
fn randomized_pays(rows: usize, cols: usize, rank: usize) -> bool {
    let full = rows.min(cols);
    full >= RANDOMIZED_MIN_DIM && 4 * (rank + 10) <= full
}

fn max_abs(v: &[f32]) -> f32 {
    v.iter().fold(0f32, |m, x| m.max(x.abs()))
}

/// Extracts the LoRA; `progress(done, total, key)` is called before each module.
pub fn extract(
    base: &ModelFiles,
    tuned: &ModelFiles,
    o: &ExtractOptions,
    progress: &mut dyn FnMut(usize, usize, &str),
) -> Result<(LowRankFile, SvdReport)> {
    check_options(o)?;
    let (config, jobs) = plan(base, tuned, o)?;
    let mut report = SvdReport::default();
    // Text encoders that did not change (by kohya's threshold) are dropped whole.
    let mut te_changed: BTreeMap<Component, f32> = BTreeMap::new();
    for j in jobs.iter().filter(|j| j.target.component != Component::Unet) {
        let m = te_changed.entry(j.target.component).or_insert(0.0);
        if *m <= o.min_diff {
            *m = m.max(max_abs(&delta(base, tuned, &j.target)?));
        }
    }
    for (c, m) in &te_changed {
        if *m <= o.min_diff {
            report.skipped.push((
                c.name().to_string(),
                format!("text encoder unchanged: max |ΔW| {m:.3e} ≤ min_diff {}", o.min_diff),
            ));
        }
    }
    let mut file = LowRankFile::default();
    let total = jobs.len();
    for (i, j) in jobs.iter().enumerate() {
        progress(i, total, &j.key);
        if te_changed.get(&j.target.component).is_some_and(|m| *m <= o.min_diff) {
            continue;
        }
        let d = delta(base, tuned, &j.target)?;
        if max_abs(&d) == 0.0 {
            report.skipped.push((j.key.clone(), "unchanged (ΔW = 0)".to_string()));
            continue;
        }
        let sp = match (o.energy, j.rank) {
            // A fixed rank of a large module needs only the top triplets: the randomized SVD takes
            // a fraction of a second where the full one takes seconds (1280×5120 ff layers), and
            // the error it reports is the exact error of the factors written.
            (None, Some(r)) if !o.exact && randomized_pays(j.rows, j.cols, r) => svd_top(&d, j.rows, j.cols, r),
            _ => svd(&d, j.rows, j.cols),
        }
        .map_err(|e| Error::invalid(OP, format!("{}: {e}", j.key)))?;
        let rank = match o.energy {
            Some(e) => sp.rank_for_energy(e).min(j.rank.unwrap_or(usize::MAX)),
            None => j.rank.unwrap_or(1),
        };
        let (up, down) = sp.factors(rank)?;
        let shape = &j.target.shape;
        let (down_shape, up_shape) = if shape.len() == 4 {
            (vec![rank, shape[1], shape[2], shape[3]], vec![j.rows, rank, 1, 1])
        } else {
            (vec![rank, j.cols], vec![j.rows, rank])
        };
        report.modules.push(ModuleError {
            key: j.key.clone(),
            rows: j.rows,
            cols: j.cols,
            old_rank: None,
            rank,
            alpha: rank as f32,
            rel_error: sp.relative_error(rank),
            retained_energy: sp.retained_energy(rank),
            energy: sp.energy(),
            s_max: sp.s.first().copied().unwrap_or(0.0),
        });
        file.modules.push(LowRankModule { key: j.key.clone(), down_shape, down, up_shape, up, alpha: rank as f32 });
    }
    if file.modules.is_empty() {
        return Err(Error::invalid(
            OP,
            format!("{} and {} do not differ in any adaptable module", base.path().display(), tuned.path().display()),
        ));
    }
    progress(total, total, "");
    file.metadata = metadata(&config, o, base, tuned);
    report.finish(file.params());
    Ok((file, report))
}

/// kohya `extract_lora_from_models.py`'s metadata: its `ss_*` keys, spelt as Python prints them
/// (alpha as a float, the network args as JSON), and the SAI model-spec keys it adds by default
/// (the CLI sets `modelspec.title` to the output's name, as kohya does).
fn metadata(
    config: &ModelConfig,
    o: &ExtractOptions,
    base: &ModelFiles,
    tuned: &ModelFiles,
) -> BTreeMap<String, String> {
    let (dim, alpha) = match (o.energy, o.rank) {
        (None, Some(r)) => (r.to_string(), format!("{r}.0")),
        _ => ("Dynamic".to_string(), "Dynamic".to_string()),
    };
    let name = |f: &ModelFiles| f.path().file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let v = config.v_prediction;
    let (version, arch, implementation, resolution) = match config.family {
        Family::Sd1 => (if v { "sd_v1_v" } else { "sd_v1" }, "stable-diffusion-v1/lora", "diffusers", "512x512"),
        Family::Sdxl => (
            "sdxl_base_v1-0",
            "stable-diffusion-xl-v1-base/lora",
            "https://github.com/Stability-AI/generative-models",
            "1024x1024",
        ),
    };
    let args = match o.conv_rank {
        Some(c) => format!("{{\"conv_dim\": \"{c}\", \"conv_alpha\": \"{c}.0\"}}"),
        None => "{}".to_string(),
    };
    let title = tuned.path().file_stem().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let entries = [
        ("ss_network_module", "networks.lora".to_string()),
        ("ss_network_dim", dim),
        ("ss_network_alpha", alpha),
        ("ss_network_args", args),
        ("ss_base_model_version", version.to_string()),
        ("ss_v2", "False".to_string()),
        ("ss_sd_model_name", name(base)),
        (
            "ss_training_comment",
            format!("extracted by lorafuse from {} - {} by truncated SVD", name(tuned), name(base)),
        ),
        ("modelspec.sai_model_spec", "1.0.1".to_string()),
        ("modelspec.architecture", arch.to_string()),
        ("modelspec.implementation", implementation.to_string()),
        ("modelspec.title", title),
        ("modelspec.resolution", resolution.to_string()),
        ("modelspec.prediction_type", if v { "v" } else { "epsilon" }.to_string()),
    ];
    entries.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}
