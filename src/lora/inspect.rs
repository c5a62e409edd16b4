//! `lorafuse inspect`: what a LoRA file is without a model at hand (kind, ranks, alpha, targets,
//! the base it was trained for), from its keys, shapes and metadata only.

use std::collections::{BTreeMap, BTreeSet};

use super::{split_key, LoraKind, LoraSummary};
use crate::weights::SafeTensorsFile;

/// The kind of a module from the roles of its tensors.
fn module_kind(roles: &BTreeSet<&str>, peft: bool, conv: bool) -> LoraKind {
    if roles.contains("dora") {
        LoraKind::Dora
    } else if roles.iter().any(|r| matches!(*r, "w1a" | "w1b" | "t1")) {
        LoraKind::LoHa
    } else if roles.iter().any(|r| matches!(*r, "w1" | "k1a" | "k1b")) {
        LoraKind::LoKr
    } else if peft {
        LoraKind::Peft
    } else if conv || roles.contains("mid") {
        LoraKind::LoCon
    } else {
        LoraKind::Lora
    }
}

/// Summary of `file` from keys, shapes and metadata (no matching against a model).
pub fn summarize(file: &SafeTensorsFile) -> LoraSummary {
    let mut modules: BTreeMap<String, BTreeSet<&'static str>> = BTreeMap::new();
    let mut ranks = Vec::new();
    let mut alpha = None;
    let mut conv = BTreeSet::new();
    let mut unmatched = 0;
    let mut ctx_dim = None;
    for (name, info) in file.tensors() {
        let Some((module, role)) = split_key(name) else {
            unmatched += 1;
            continue;
        };
        modules.entry(module.to_string()).or_default().insert(role);
        match role {
            "down" | "w1b" | "k1b" => {
                ranks.push(info.shape.first().copied().unwrap_or(0));
                if info.shape.len() == 4 && info.shape[2] * info.shape[3] > 1 {
                    conv.insert(module.to_string());
                }
                if role == "down" && (module.contains("attn2_to_k") || module.contains("attn2.to_k")) {
                    ctx_dim = info.shape.get(1).copied();
                }
            }
            "alpha" if alpha.is_none() => alpha = file.read_f32(name).ok().and_then(|v| v.first().copied()),
            _ => {}
        }
    }
    if alpha.is_none() {
        alpha = modules.keys().find(|k| !k.starts_with("lora_")).and_then(|k| super::peft_alpha(file.metadata(), k));
    }
    let kinds: Vec<LoraKind> =
        modules.iter().map(|(m, roles)| module_kind(roles, !m.starts_with("lora_"), conv.contains(m))).collect();
    let has = |k: LoraKind| kinds.contains(&k);
    let kind = [LoraKind::Dora, LoraKind::LoHa, LoraKind::LoKr, LoraKind::Peft, LoraKind::LoCon]
        .into_iter()
        .find(|&k| has(k))
        .unwrap_or(LoraKind::Lora);
    let meta = file.metadata();
    let base_meta = meta.get("ss_base_model_version").map(String::as_str).unwrap_or("");
    let arch = meta.get("modelspec.architecture").map(String::as_str).unwrap_or("");
    let sdxl_keys = modules.keys().any(|k| super::keys::sdxl_only_key(k));
    let base_guess = if base_meta.starts_with("sdxl") || arch.contains("-xl-") || sdxl_keys || ctx_dim == Some(2048) {
        "sdxl"
    } else if base_meta.starts_with("sd_v2") || meta.get("ss_v2").is_some_and(|v| v == "True") || ctx_dim == Some(1024)
    {
        "sd_v2"
    } else if !modules.is_empty() {
        "sd_v1"
    } else {
        "unknown"
    };
    let unet = modules.keys().filter(|k| k.starts_with("lora_unet_") || k.starts_with("unet.")).count();
    let te = modules
        .keys()
        .filter(|k| k.starts_with("lora_te") || k.starts_with("text_encoder.") || k.starts_with("text_model."))
        .count();
    LoraSummary {
        kind,
        min_rank: ranks.iter().copied().min().unwrap_or(0),
        max_rank: ranks.iter().copied().max().unwrap_or(0),
        alpha,
        targets: modules.len(),
        unet_targets: unet,
        text_encoder_targets: te,
        unmatched,
        base_guess: base_guess.to_string(),
    }
}
