//! A1111 extra-network tags in a prompt (`<lora:NAME:TE:UNET>`, `<lyco:…>`, others warned about
//! and dropped), mirroring `modules/extra_networks.py: parse_prompt`. Taken out once per request,
//! before the prompt syntax is parsed (`models::clip::prompt`).

use super::BlockWeights;
use crate::error::{Error, Result};

/// Errors name the prompt, where the user wrote the tag.
const OP: &str = "prompt";

/// A `<lora:NAME:TE_W:UNET_W>` tag. A missing TE weight is 1.0; a missing UNet weight equals TE.
/// `lbw=…` (or, the block weight extension's older form, a preset or value list in the UNet
/// weight's place) gives block weights.
#[derive(Clone, Debug, PartialEq)]
pub struct LoraTag {
    pub name: String,
    pub te_weight: f32,
    pub unet_weight: f32,
    pub lbw: Option<BlockWeights>,
}

/// A prompt with its extra-network tags taken out.
#[derive(Clone, Debug, PartialEq)]
pub struct ExtraNetworks {
    /// The prompt without the tags: the text the tokenizer sees.
    pub text: String,
    pub loras: Vec<LoraTag>,
    /// Tags and arguments that were removed from the text but are not acted on.
    pub warnings: Vec<String>,
}

/// Removes every `<name:args>` tag (A1111's `<(\w+):([^>]+)>`) from `prompt`. `lora` (and its
/// alias `lyco`) tags are returned; other kinds only produce a warning. A weight that is not a
/// finite number is an error naming the tag.
pub fn extract_extra_networks(prompt: &str) -> Result<ExtraNetworks> {
    let mut text = String::with_capacity(prompt.len());
    let mut loras = Vec::new();
    let mut warnings = Vec::new();
    let mut rest = prompt;
    while let Some(lt) = rest.find('<') {
        text.push_str(&rest[..lt]);
        let tail = &rest[lt..];
        match match_tag(tail) {
            Some((kind, args, used)) => {
                if kind == "lora" || kind == "lyco" {
                    loras.push(parse_lora_args(kind, args, &mut warnings)?);
                } else {
                    warnings.push(format!("ignored <{kind}:{args}>: only lora tags are supported"));
                }
                rest = &tail[used..];
            }
            None => {
                text.push('<');
                rest = &tail[1..];
            }
        }
    }
    text.push_str(rest);
    Ok(ExtraNetworks { text, loras, warnings })
}

/// Matches `<\w+:[^>]+>` at the start of `s`: (kind, args, bytes used).
fn match_tag(s: &str) -> Option<(&str, &str, usize)> {
    let body = s.strip_prefix('<')?;
    let name_len: usize = body.chars().take_while(|&c| is_word_char(c)).map(char::len_utf8).sum();
    if name_len == 0 || !body[name_len..].starts_with(':') {
        return None;
    }
    let args_start = name_len + 1;
    let args_len = body[args_start..].find('>')?;
    if args_len == 0 {
        return None;
    }
    let args = &body[args_start..args_start + args_len];
    Some((&body[..name_len], args, 1 + args_start + args_len + 1))
}

/// A1111's `ExtraNetworkParams` + `ExtraNetworkLora.activate`: items split on `:`; an item with
/// exactly one `=` is named (`te=`, `unet=`, `dyn=`), the others positional (name, te, unet, dyn).
fn parse_lora_args(kind: &str, args: &str, warnings: &mut Vec<String>) -> Result<LoraTag> {
    let tag = format!("<{kind}:{args}>");
    let mut positional = Vec::new();
    let mut named = Vec::new();
    for item in args.split(':') {
        match item.split_once('=') {
            Some((k, v)) if !v.contains('=') => named.push((k, v)),
            _ => positional.push(item),
        }
    }
    let name = match positional.first() {
        Some(n) if !n.trim().is_empty() => n.to_string(),
        _ => return Err(Error::invalid(OP, format!("LoRA tag {tag} has no name"))),
    };
    let weight = |what: &str, s: &str| -> Result<f32> {
        match s.trim().parse::<f64>() {
            Ok(w) if w.is_finite() => Ok(w as f32),
            _ => Err(Error::invalid(OP, format!("LoRA tag {tag}: {what} weight {s:?} is not a finite number"))),
        }
    };
    let named_value = |key: &str| named.iter().rev().find(|(k, _)| *k == key).map(|(_, v)| *v);
    let bad_lbw = |e: Error| Error::invalid(OP, format!("LoRA tag {tag}: {e}"));
    let mut lbw = match named_value("lbw") {
        Some(s) => Some(s.parse::<BlockWeights>().map_err(bad_lbw)?),
        None => None,
    };
    // The extension's positional form `<lora:NAME:1:INALL>`: the third item is block weights
    // when it is not a number.
    if positional.get(2).is_some_and(|s| s.trim().parse::<f64>().is_err()) {
        let s = positional.remove(2);
        let parsed = s.parse::<BlockWeights>().map_err(bad_lbw)?;
        lbw.get_or_insert(parsed);
    }
    let mut te_weight = match positional.get(1) {
        Some(s) => weight("text-encoder", s)?,
        None => 1.0,
    };
    if let Some(s) = named_value("te") {
        te_weight = weight("text-encoder", s)?;
    }
    let mut unet_weight = match positional.get(2) {
        Some(s) => weight("UNet", s)?,
        None => te_weight,
    };
    if let Some(s) = named_value("unet") {
        unet_weight = weight("UNet", s)?;
    }
    if positional.len() > 3 || named_value("dyn").is_some() {
        warnings.push(format!("{tag}: dynamic rank (dyn) is not supported and was ignored"));
    }
    for (k, _) in named.iter().filter(|(k, _)| !matches!(*k, "te" | "unet" | "dyn" | "lbw")) {
        warnings.push(format!("{tag}: unknown argument {k:?} ignored"));
    }
    Ok(LoraTag { name, te_weight, unet_weight, lbw })
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}
