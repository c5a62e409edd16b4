//! `generate --from-png IMAGE.png`: the settings of an image's `parameters` chunk (ours or
//! A1111's) as `generate` options, with the options given on the command line taking precedence.

use std::path::Path;

use anyhow::{bail, Context as _, Result};
use lorafuse::lora::{extract_extra_networks, resolve_in_dir};
use lorafuse::pipeline::image::read_parameters;
use lorafuse::pipeline::infotext::{fmt_num, Settings};
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
    take!("width", width, s.size.map(|(w, _)| Some(w)));
    take!("height", height, s.size.map(|(_, h)| Some(h)));
    if let Some(seed) = s.seed {
        if !given("seed") {
            out.seed = Some(seed);
        }
    }
    init_and_hires(out, &s, png, given)?;
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

/// Hires fix comes back whole from the infotext (A1111's own strings too); img2img and
/// inpainting need the init image (and mask) again, which only the command line can give.
fn init_and_hires(out: &mut GenerateArgs, s: &Settings, png: &Path, given: &dyn Fn(&str) -> bool) -> Result<()> {
    let i = &mut out.init;
    if s.hires_enabled() && i.init_image.is_none() {
        if !given("hires_scale") && !given("hires_size") {
            let (w, h) = s.size.unwrap_or((out.width.unwrap_or(512), out.height.unwrap_or(512)));
            let hires = s.hires(w, h).with_context(|| format!("reading the hires fix of {}", png.display()))?;
            if let Some(h) = hires {
                match h.scale {
                    Some(f) => i.hires_scale = Some(f),
                    None => i.hires_size = Some((h.width, h.height)),
                }
            }
        }
        if !given("hires_denoise") {
            i.hires_denoise = s.denoising_strength;
        }
        if !given("hires_steps") {
            i.hires_steps = s.hires_steps.or(i.hires_steps);
        }
        if !given("hires_upscaler") {
            i.hires_upscaler = s.hires_upscaler.or(i.hires_upscaler);
        }
        return Ok(());
    }
    if !s.hires_enabled() {
        // A1111 turns hires fix on only with a denoising strength; say what is not used.
        let mut unused = Vec::new();
        if let Some(f) = s.hires_scale {
            unused.push(format!("Hires upscale: {}", fmt_num(f)));
        }
        if let Some((w, h)) = s.hires_resize {
            unused.push(format!("Hires resize: {w}x{h}"));
        }
        if let Some(u) = s.hires_upscaler {
            unused.push(format!("Hires upscaler: {}", u.a1111_name()));
        }
        if !unused.is_empty() {
            eprintln!(
                "warning: {}: {} ignored: hires fix was off (no Denoising strength)",
                png.display(),
                unused.join(", ")
            );
        }
    }
    let Some(strength) = s.denoising_strength.filter(|_| s.is_img2img()) else {
        return Ok(());
    };
    let inpaint = s.has_inpaint_fields();
    if i.init_image.is_none() {
        bail!(
            "{} was made with img2img{} (Denoising strength: {strength}): give the same --init-image{}",
            png.display(),
            if inpaint { " or inpainting" } else { "" },
            if inpaint { " (and --mask MASK.png if it was inpainted)" } else { "" }
        );
    }
    if !given("strength") {
        i.strength = Some(strength);
    }
    if i.mask.is_none() {
        if s.inpaint_only_masked == Some(true) {
            bail!("{} was inpainted (Inpaint area: Only masked): give its --mask too", png.display());
        }
        if s.mask_blur.is_some() {
            eprintln!(
                "warning: {} records a mask blur; without --mask it is regenerated as plain img2img",
                png.display()
            );
        }
        return Ok(());
    }
    if !given("mask_blur") {
        i.mask_blur = s.mask_blur.or(i.mask_blur);
    }
    if !given("inpaint_full_res") && s.inpaint_only_masked == Some(true) {
        i.inpaint_full_res = true;
    }
    if !given("inpaint_full_res_padding") && i.inpaint_full_res {
        i.inpaint_full_res_padding = s.masked_padding.or(i.inpaint_full_res_padding);
    }
    Ok(())
}
