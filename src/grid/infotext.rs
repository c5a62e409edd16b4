//! Reading an A1111 infotext (the PNG `parameters` chunk, ours or A1111's) back into generation
//! settings, for `generate --from-png`.
//!
//! The layout, as A1111's `parse_generation_parameters` reads it: the last line is the settings
//! line when it holds at least three `key: value` pairs; the lines before are the prompt, up to
//! a line starting with `Negative prompt:`, after which they are the negative prompt. A value is
//! either plain text up to the next comma or a JSON-style quoted string.

use crate::pipeline::image::Infotext;
use crate::pipeline::rng::RngKind;
use crate::pipeline::txt2img::Request;
use crate::schedulers::{SamplerKind, Spacing};
use crate::{Error, Result};

const OP: &str = "infotext";

/// Split a settings line into `key: value` pairs. `None` when the line is not one (fewer than
/// three pairs, or text that no pair explains), so it is read as part of the prompt instead.
fn parse_fields(line: &str) -> Option<Vec<(String, String)>> {
    let chars: Vec<char> = line.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    let skip_ws = |i: &mut usize| {
        while *i < chars.len() && chars[*i].is_whitespace() {
            *i += 1;
        }
    };
    loop {
        skip_ws(&mut i);
        if i >= chars.len() {
            break;
        }
        // A key: a word character, then word characters, spaces, '-' or '/' (A1111's regex).
        let start = i;
        if !(chars[i].is_alphanumeric() || chars[i] == '_') {
            return None;
        }
        while i < chars.len() && (chars[i].is_alphanumeric() || matches!(chars[i], '_' | ' ' | '-' | '/')) {
            i += 1;
        }
        if i >= chars.len() || chars[i] != ':' {
            return None;
        }
        let key: String = chars[start..i].iter().collect::<String>().trim().to_string();
        i += 1;
        skip_ws(&mut i);
        let value = if i < chars.len() && chars[i] == '"' {
            i += 1;
            let mut v = String::new();
            let mut closed = false;
            while i < chars.len() {
                match chars[i] {
                    '\\' if i + 1 < chars.len() => {
                        i += 1;
                        v.push(match chars[i] {
                            'n' => '\n',
                            't' => '\t',
                            'r' => '\r',
                            c => c,
                        });
                    }
                    '"' => {
                        closed = true;
                        i += 1;
                        break;
                    }
                    c => v.push(c),
                }
                i += 1;
            }
            if !closed {
                return None;
            }
            skip_ws(&mut i);
            if i < chars.len() && chars[i] != ',' {
                return None;
            }
            v
        } else {
            let s = i;
            while i < chars.len() && chars[i] != ',' {
                i += 1;
            }
            chars[s..i].iter().collect::<String>().trim().to_string()
        };
        out.push((key, value));
        if i < chars.len() {
            i += 1; // the comma
        }
    }
    (out.len() >= 3).then_some(out)
}

/// Parse A1111's infotext layout (see the module docs). A text without a settings line is all
/// prompt (A1111 does the same).
pub fn parse_infotext(text: &str) -> Infotext {
    let text = text.replace("\r\n", "\n");
    let mut lines: Vec<&str> = text.split('\n').collect();
    let mut fields = Vec::new();
    if let Some(last) = lines.last() {
        if let Some(f) = parse_fields(last) {
            fields = f;
            lines.pop();
        }
    }
    let mut prompt = Vec::new();
    let mut negative = Vec::new();
    let mut in_negative = false;
    for l in lines {
        if let Some(rest) = l.strip_prefix("Negative prompt:") {
            in_negative = true;
            negative.push(rest.strip_prefix(' ').unwrap_or(rest));
        } else if in_negative {
            negative.push(l);
        } else {
            prompt.push(l);
        }
    }
    Infotext { prompt: prompt.join("\n").trim().to_string(), negative_prompt: negative.join("\n"), fields }
}

/// A1111 sampler names (with the separate `Schedule type` of newer versions) to ours.
pub fn sampler_from_a1111(name: &str, schedule: Option<&str>) -> Result<SamplerKind> {
    let karras = schedule.is_some_and(|s| s.eq_ignore_ascii_case("karras"));
    let n = name.trim();
    if let Ok(k) = n.parse::<SamplerKind>() {
        return Ok(k);
    }
    let k = match n {
        "Euler" => SamplerKind::Euler,
        "Euler a" => SamplerKind::EulerA,
        "DPM++ 2M" if karras => SamplerKind::DpmPP2MKarras,
        "DPM++ 2M" => SamplerKind::DpmPP2M,
        "DPM++ 2M Karras" => SamplerKind::DpmPP2MKarras,
        "DDIM" => SamplerKind::Ddim,
        "LCM" => SamplerKind::Lcm,
        _ => {
            return Err(Error::invalid(
                OP,
                format!("sampler {n:?} is not supported (Euler, Euler a, DPM++ 2M, DPM++ 2M Karras, DDIM, LCM)"),
            ))
        }
    };
    Ok(k)
}

/// The generation settings an infotext records. Fields it lacks stay `None`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Settings {
    pub prompt: String,
    pub negative_prompt: String,
    pub steps: Option<usize>,
    pub sampler: Option<SamplerKind>,
    pub cfg: Option<f32>,
    pub seed: Option<u64>,
    pub size: Option<(usize, usize)>,
    pub clip_skip: Option<usize>,
    pub rng: Option<RngKind>,
    pub spacing: Option<Spacing>,
    pub model: Option<String>,
    pub model_hash: Option<String>,
    /// `Lora hashes: "NAME: HASH, …"` as (NAME, HASH).
    pub lora_hashes: Vec<(String, String)>,
    /// Fields that change the image but that lorafuse does not do (hires fix, variation
    /// seeds, …), for a warning.
    pub ignored: Vec<String>,
}

fn num<T: std::str::FromStr>(key: &str, v: &str) -> Result<T> {
    v.trim().parse().map_err(|_| Error::invalid(OP, format!("{key}: {v:?} is not a valid number")))
}

/// Fields that only describe the image (names, hashes, versions) and so are never "ignored".
const DESCRIPTIVE: [&str; 8] =
    ["Model", "Model hash", "Lora hashes", "TI hashes", "Version", "VAE", "VAE hash", "Schedule type"];

impl Settings {
    /// Read the settings of a parsed infotext; a malformed value of a field we use is an error
    /// naming the field.
    pub fn from_infotext(info: &Infotext) -> Result<Settings> {
        let mut s = Settings {
            prompt: info.prompt.clone(),
            negative_prompt: info.negative_prompt.clone(),
            ..Settings::default()
        };
        let schedule = info.get("Schedule type");
        for (k, v) in &info.fields {
            match k.as_str() {
                "Steps" => s.steps = Some(num(k, v)?),
                "Sampler" => s.sampler = Some(sampler_from_a1111(v, schedule)?),
                "CFG scale" => {
                    let c: f32 = num(k, v)?;
                    if !c.is_finite() {
                        return Err(Error::invalid(OP, format!("CFG scale {v:?} is not finite")));
                    }
                    s.cfg = Some(c);
                }
                "Seed" => s.seed = Some(num(k, v)?),
                "Size" => {
                    let (w, h) = v
                        .split_once('x')
                        .ok_or_else(|| Error::invalid(OP, format!("Size {v:?} is not WIDTHxHEIGHT")))?;
                    s.size = Some((num(k, w)?, num(k, h)?));
                }
                "Clip skip" => s.clip_skip = Some(num(k, v)?),
                "RNG" => {
                    s.rng = Some(match v.as_str() {
                        "GPU" => RngKind::Philox,
                        "CPU" => RngKind::TorchCpu,
                        other => {
                            return Err(Error::invalid(OP, format!("RNG {other:?} is not supported (GPU or CPU)")))
                        }
                    })
                }
                "Timestep spacing" => s.spacing = Some(v.parse()?),
                "Model" => s.model = Some(v.clone()),
                "Model hash" => s.model_hash = Some(v.clone()),
                "Lora hashes" => {
                    for item in v.split(',').map(str::trim).filter(|i| !i.is_empty()) {
                        let (n, h) = item.rsplit_once(':').ok_or_else(|| {
                            Error::invalid(OP, format!("Lora hashes entry {item:?} is not NAME: HASH"))
                        })?;
                        s.lora_hashes.push((n.trim().to_string(), h.trim().to_string()));
                    }
                }
                other if DESCRIPTIVE.contains(&other) => {}
                other => s.ignored.push(format!("{other}: {v}")),
            }
        }
        Ok(s)
    }

    /// Parse infotext text straight to settings.
    pub fn parse(text: &str) -> Result<Settings> {
        Settings::from_infotext(&parse_infotext(text))
    }

    /// Write every recorded setting into `req` (prompt and negative prompt always).
    pub fn apply(&self, req: &mut Request) {
        req.prompt = self.prompt.clone();
        req.negative_prompt = self.negative_prompt.clone();
        if let Some(v) = self.steps {
            req.steps = v;
        }
        if let Some(v) = self.sampler {
            req.sampler = v;
        }
        if let Some(v) = self.cfg {
            req.cfg = v;
        }
        if let Some(v) = self.seed {
            req.seed = v;
        }
        if let Some((w, h)) = self.size {
            req.width = w;
            req.height = h;
        }
        if let Some(v) = self.clip_skip {
            req.clip_skip = v;
        }
        if let Some(v) = self.rng {
            req.rng = v;
        }
        if let Some(v) = self.spacing {
            req.spacing = v;
        }
    }
}
