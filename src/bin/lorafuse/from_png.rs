//! `generate --from-png IMAGE.png`: the settings of an image's `parameters` chunk (ours or
//! A1111's) as `generate` options, with the options given on the command line taking precedence.

use std::path::Path;

use anyhow::{bail, Context as _, Result};
use lorafuse::lora::{extract_extra_networks, resolve_in_dir};
use lorafuse::pipeline::image::read_parameters;
use lorafuse::pipeline::infotext::Settings;
use lorafuse::weights::hash::{lora_hash, model_hash};

use crate::args::GenerateArgs;

/// Fill `a` with every setting recorded in `png`, except the options `given` on the command line
/// (by clap id).
/// Warns (stderr) about recorded settings lorafuse does not do and about a different model;
/// LoRAs recorded only by hash (no prompt tag) are looked up in `--lora-dir`.
pub fn apply(a: &mut GenerateArgs, png: &Path, given: &dyn Fn(&str) -> bool) -> Result<()> {
    let text = read_parameters(png)?
        .with_context(|| format!("{} has no `parameters` text chunk to regenerate from", png.display()))?;
    let s = Settings::parse(&text).with_context(|| format!("reading the parameters of {}", png.display()))?;
    let out = a;
    if !given("prompt") {
        out.prompt = s.prompt.clone();
    }
    if !given("negative_prompt") {
        out.negative_prompt = s.negative_prompt.clone();
    }
    macro_rules! take {
        ($id:literal, $field:ident, $value:expr) => {
            if let Some(v) = $value {
                if !given($id) {
                    out.$field = v;
                }
            }
        };
    }
    take!("steps", steps, s.steps);
    take!("cfg", cfg, s.cfg);
    take!("sampler", sampler, s.sampler);
    take!("spacing", spacing, s.spacing);
    take!("rng", rng, s.rng);
    take!("clip_skip", clip_skip, s.clip_skip);
    take!("size_cond", size_cond, s.size_cond.map(Some));
    take!("zero_terminal_snr", zero_terminal_snr, s.zero_terminal_snr.map(Some));
    take!("cfg_rescale", cfg_rescale, s.cfg_rescale);
    take!("width", width, s.size.map(|(w, _)| w));
    take!("height", height, s.size.map(|(_, h)| h));
    if let Some(seed) = s.seed {
        if !given("seed") {
            out.seed = Some(seed);
        }
    }
    for f in &s.ignored {
        eprintln!("warning: {}: setting not supported, ignored: {f}", png.display());
    }
    if let Some(want) = &s.model_hash {
        if out.model.is_file() {
            let have = model_hash(&out.model)?;
            if !have.eq_ignore_ascii_case(want) {
                eprintln!(
                    "warning: {} was made with model {} (hash {want}); {} has hash {have}",
                    png.display(),
                    s.model.as_deref().unwrap_or("?"),
                    out.model.display()
                );
            }
        }
    }
    // LoRAs: prompt tags carry the weights (A1111's way); `Lora hashes` names the files.
    if !given("prompt") && !given("loras") {
        let tags = extract_extra_networks(&out.prompt)?.loras;
        for (name, want) in &s.lora_hashes {
            let found = resolve_in_dir(&out.lora_dir, name);
            if tags.iter().any(|t| &t.name == name) {
                if let Ok(path) = found {
                    let have = lora_hash(&path)?;
                    if !have.starts_with(&want.to_ascii_lowercase()) {
                        eprintln!(
                            "warning: LoRA {name}: the image used hash {want}, {} has {}",
                            path.display(),
                            &have[..12]
                        );
                    }
                }
                continue;
            }
            let Ok(path) = found else {
                bail!(
                    "{} used LoRA {name} (hash {want}): put {name}.safetensors in --lora-dir ({}) or pass --lora",
                    png.display(),
                    out.lora_dir.display()
                );
            };
            eprintln!("warning: LoRA {name}: the image does not record its weight; using 1");
            out.loras.push(path.display().to_string());
        }
    }
    Ok(())
}
