//! Images out: [0,1] CHW floats to 8-bit RGB PNG, with the A1111 `parameters` text chunk that
//! A1111, ComfyUI, civitai and image viewers read, and the file hashes that chunk names.

use std::io::{BufWriter, Read, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// The generation settings in A1111's infotext layout:
///
/// ```text
/// <prompt>
/// Negative prompt: <negative>
/// Steps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 1, Size: 512x512, Model hash: …, …
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Infotext {
    pub prompt: String,
    pub negative_prompt: String,
    /// `key: value` pairs of the last line, in order.
    pub fields: Vec<(String, String)>,
}

/// A1111's display name of a sampler.
pub fn a1111_sampler_name(kind: crate::schedulers::SamplerKind) -> &'static str {
    use crate::schedulers::SamplerKind::*;
    match kind {
        Euler => "Euler",
        EulerA => "Euler a",
        DpmPP2M => "DPM++ 2M",
        DpmPP2MKarras => "DPM++ 2M Karras",
        Ddim => "DDIM",
        Lcm => "LCM",
    }
}

/// Format a float the way A1111 prints settings (no trailing `.0`).
pub fn fmt_num(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        let s = format!("{x:.6}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// Quote a field value that contains a comma, colon or quote, as A1111 does.
fn quote(v: &str) -> String {
    if v.contains([',', ':', '"', '\n']) {
        format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n"))
    } else {
        v.to_string()
    }
}

impl Infotext {
    pub fn new(prompt: &str, negative_prompt: &str) -> Infotext {
        Infotext { prompt: prompt.to_string(), negative_prompt: negative_prompt.to_string(), fields: Vec::new() }
    }

    pub fn field(mut self, key: &str, value: impl ToString) -> Infotext {
        self.fields.push((key.to_string(), value.to_string()));
        self
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    pub fn render(&self) -> String {
        let mut s = self.prompt.clone();
        if !self.negative_prompt.is_empty() {
            s.push_str("\nNegative prompt: ");
            s.push_str(&self.negative_prompt);
        }
        let fields: Vec<String> = self.fields.iter().map(|(k, v)| format!("{k}: {}", quote(v))).collect();
        s.push('\n');
        s.push_str(&fields.join(", "));
        s
    }
}

/// Convert [C=3, H, W] values in [0,1] to interleaved RGB8 (round to nearest, as PIL does after
/// `*255` and `.round()`).
pub fn to_rgb8(chw: &[f32], height: usize, width: usize) -> Result<Vec<u8>> {
    let plane = height * width;
    if chw.len() != 3 * plane {
        return Err(Error::shape("to_rgb8", format!("{} values for a 3x{height}x{width} image", chw.len())));
    }
    let mut out = vec![0u8; 3 * plane];
    for c in 0..3 {
        for i in 0..plane {
            let v = chw[c * plane + i];
            let v = if v.is_finite() { v.clamp(0.0, 1.0) } else { 0.0 };
            out[i * 3 + c] = (v * 255.0).round() as u8;
        }
    }
    Ok(out)
}

/// Write an RGB8 PNG with a `parameters` text chunk. The file appears whole or not at all: it is
/// written beside the target and renamed over it.
pub fn write_png(path: &Path, width: usize, height: usize, rgb: &[u8], parameters: &str) -> Result<()> {
    if rgb.len() != width * height * 3 {
        return Err(Error::shape("write_png", format!("{} bytes for a {width}x{height} RGB image", rgb.len())));
    }
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| Error::invalid("write_png", format!("{} is not a file path", path.display())))?;
    let tmp = dir.join(format!(".{}.partial", name.to_string_lossy()));
    let png_err = |e: png::EncodingError| Error::invalid("write_png", format!("{}: {e}", path.display()));
    {
        let file = std::fs::File::create(&tmp)
            .map_err(|e| Error::invalid("write_png", format!("cannot create {}: {e}", tmp.display())))?;
        let mut enc = png::Encoder::new(BufWriter::new(file), width as u32, height as u32);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        if parameters.chars().all(|c| (c as u32) < 256) {
            enc.add_text_chunk("parameters".into(), parameters.into()).map_err(png_err)?;
        } else {
            enc.add_itxt_chunk("parameters".into(), parameters.into()).map_err(png_err)?;
        }
        let mut w = enc.write_header().map_err(png_err)?;
        w.write_image_data(rgb).map_err(png_err)?;
        w.finish().map_err(png_err)?;
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::invalid("write_png", format!("cannot move the image to {}: {e}", path.display()))
    })
}

/// Read an image's `parameters` text (tEXt, zTXt or iTXt), as written by A1111 or lorafuse.
pub fn read_parameters(path: &Path) -> Result<Option<String>> {
    let file = std::fs::File::open(path).map_err(|e| Error::invalid("read_png", format!("{}: {e}", path.display())))?;
    let dec = png::Decoder::new(std::io::BufReader::new(file));
    let reader = dec.read_info().map_err(|e| Error::invalid("read_png", format!("{}: {e}", path.display())))?;
    let info = reader.info();
    for t in &info.uncompressed_latin1_text {
        if t.keyword == "parameters" {
            return Ok(Some(t.text.clone()));
        }
    }
    for t in &info.compressed_latin1_text {
        if t.keyword == "parameters" {
            return Ok(t.get_text().ok());
        }
    }
    for t in &info.utf8_text {
        if t.keyword == "parameters" {
            return Ok(t.get_text().ok());
        }
    }
    Ok(None)
}

/// Hex SHA-256 of a file's bytes from `skip` on, streamed.
pub fn sha256_hex(path: &Path, skip: u64) -> Result<String> {
    let mut f = std::fs::File::open(path)?;
    std::io::copy(&mut (&mut f).take(skip), &mut std::io::sink())?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    let mut s = String::with_capacity(64);
    for b in h.finalize() {
        s.push_str(&format!("{b:02x}"));
    }
    Ok(s)
}

/// A1111's "Model hash": the first 10 hex digits of the checkpoint file's SHA-256.
pub fn model_hash(path: &Path) -> Result<String> {
    Ok(sha256_hex(path, 0)?[..10].to_string())
}

/// Write `bytes` to `path` atomically (beside it, then renamed).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name =
        path.file_name().ok_or_else(|| Error::invalid("write", format!("{} is not a file path", path.display())))?;
    let tmp = dir.join(format!(".{}.partial", name.to_string_lossy()));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all().ok();
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// The A1111 infotext of image `i` of a generation: prompt, negative prompt and the settings
/// line (`Steps`, `Sampler`, `CFG scale`, `Seed`, `Size`, `Model hash`, `Model`, `Clip skip`,
/// `RNG`, and `Lora hashes: "NAME: HASH, …"` when LoRAs were applied).
pub fn request_infotext(
    req: &crate::pipeline::txt2img::Request,
    seed: u64,
    model_name: &str,
    model_hash: &str,
    loras: &[crate::pipeline::loras::UsedLora],
) -> Infotext {
    use crate::pipeline::rng::RngKind;
    use crate::schedulers::Spacing;
    let mut info = Infotext::new(&req.prompt, &req.negative_prompt)
        .field("Steps", req.steps)
        .field("Sampler", a1111_sampler_name(req.sampler))
        .field("CFG scale", fmt_num(req.cfg as f64))
        .field("Seed", seed)
        .field("Size", format!("{}x{}", req.width, req.height));
    if !model_hash.is_empty() {
        info = info.field("Model hash", model_hash);
    }
    info = info
        .field("Model", model_name)
        .field("Clip skip", req.clip_skip)
        .field("RNG", if req.rng == RngKind::Philox { "GPU" } else { "CPU" });
    if req.spacing != Spacing::Leading {
        info = info.field("Timestep spacing", req.spacing.name());
    }
    if !loras.is_empty() {
        let list: Vec<String> = loras.iter().map(|l| format!("{}: {}", l.name, l.short_hash())).collect();
        info = info.field("Lora hashes", list.join(", "));
    }
    info
}
