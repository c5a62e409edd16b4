//! TAESD / TAESDXL as the pipeline uses it: loading a published file for the model's family,
//! and decoding latents to pixels for previews and `FinalDecoder::Taesd`.
//!
//! TAESD (SD1.x / SD2) and TAESDXL have the same architecture and the same shapes: only their
//! weights differ, and a TAESD decoder on SDXL latents gives a plausible but wrong-coloured
//! image rather than an error. So the family is read from what the files say about themselves:
//! safetensors metadata, a diffusers `config.json`'s `_name_or_path`, then the file name and the
//! folders above it (madebyollin publishes `taesd_decoder.safetensors` and
//! `taesdxl_decoder.safetensors`; the Hugging Face cache keeps the repository name in a folder,
//! `models--madebyollin--taesdxl`). When nothing says, the file is accepted with a log line.
//! TAESD3 and TAEF1 differ in shape (16 latent channels) and are refused by their channels too.

use std::path::{Path, PathBuf};

use crate::models::vae::{postprocess, TaesdDecoder, TaesdEncoder};
use crate::nn::{AdaptableWeights, Loader};
use crate::weights::detect::Family;
use crate::weights::safetensors::SafeTensorsFile;
use crate::weights::{Component, VarBuilder};
use crate::{Context, DType, Error, GpuTensor, HostTensor, Recorder, Result};

const OP: &str = "taesd";
/// The latent channels of every family lorafuse runs (SD1.x, SDXL).
const LATENT_CHANNELS: usize = 4;
/// diffusers' weight file names, full and fp16 variant.
const DIFFUSERS_FILES: [&str; 2] = ["diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors"];
/// Folders above the file that are asked for a family (the Hugging Face cache puts the repository
/// name three levels up: `models--owner--name/snapshots/HASH/file`).
const FOLDERS_ASKED: usize = 3;

/// Which tiny autoencoder a file says it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaesdKind {
    /// madebyollin/taesd: SD1.x and SD2.
    Taesd,
    /// madebyollin/taesdxl.
    Taesdxl,
    /// madebyollin/taesd3 (16 latent channels).
    Taesd3,
    /// madebyollin/taef1 (FLUX.1, 16 latent channels).
    Taef1,
}

impl TaesdKind {
    pub fn name(self) -> &'static str {
        match self {
            TaesdKind::Taesd => "TAESD",
            TaesdKind::Taesdxl => "TAESDXL",
            TaesdKind::Taesd3 => "TAESD3",
            TaesdKind::Taef1 => "TAEF1",
        }
    }

    /// The one that decodes `family`'s latents.
    pub fn for_family(family: Family) -> TaesdKind {
        match family {
            Family::Sd1 => TaesdKind::Taesd,
            Family::Sdxl => TaesdKind::Taesdxl,
        }
    }

    /// What a name says, from its lower-case alphanumeric words (`taesd_xl` → `taesd`, `xl`):
    /// `None` when it names no family.
    pub fn from_name(name: &str) -> Option<TaesdKind> {
        let lower = name.to_lowercase();
        let words: Vec<&str> = lower.split(|c: char| !c.is_ascii_alphanumeric()).filter(|w| !w.is_empty()).collect();
        let any = |f: &dyn Fn(&str) -> bool| words.iter().any(|w| f(w));
        if any(&|w| w.contains("taef1") || w == "flux" || w.starts_with("flux1")) {
            Some(TaesdKind::Taef1)
        } else if any(&|w| w.contains("sd3")) {
            Some(TaesdKind::Taesd3)
        } else if any(&|w| w == "xl" || w.contains("sdxl")) {
            Some(TaesdKind::Taesdxl)
        } else if any(&|w| matches!(w, "taesd" | "sd1" | "sd15" | "sd14" | "sdv1" | "sd2" | "sd21")) {
            Some(TaesdKind::Taesd)
        } else {
            None
        }
    }
}

/// What the files say a TAESD file is, and which of them said it (for messages).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KindEvidence {
    pub kind: TaesdKind,
    /// e.g. `the file name "taesdxl_decoder.safetensors"`.
    pub source: String,
}

/// Which half of the autoencoder is being looked for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Half {
    Decoder,
    Encoder,
}

impl Half {
    fn name(self) -> &'static str {
        match self {
            Half::Decoder => "decoder",
            Half::Encoder => "encoder",
        }
    }
}

/// The weight file for `half` at `path`: the file itself, or in a folder the diffusers file or a
/// standalone `taesd*_<half>.safetensors`. An encoder asked for with a standalone decoder's path
/// takes its `_encoder` sibling (madebyollin ships them side by side).
fn weight_file(path: &Path, half: Half) -> Result<PathBuf> {
    if path.is_file() {
        if half == Half::Encoder {
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if let Some(stem) = name.strip_suffix("_decoder.safetensors") {
                let sibling = path.with_file_name(format!("{stem}_encoder.safetensors"));
                if sibling.is_file() {
                    return Ok(sibling);
                }
            }
        }
        return Ok(path.to_path_buf());
    }
    if !path.is_dir() {
        return Err(Error::invalid(OP, format!("{} does not exist", path.display())));
    }
    for name in DIFFUSERS_FILES {
        if path.join(name).is_file() {
            return Ok(path.join(name));
        }
    }
    let suffix = format!("_{}.safetensors", half.name());
    let mut standalone: Vec<PathBuf> = std::fs::read_dir(path)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.file_name().is_some_and(|n| n.to_string_lossy().ends_with(&suffix)))
        .collect();
    standalone.sort();
    match standalone.len() {
        1 => Ok(standalone.remove(0)),
        0 => Err(Error::invalid(
            OP,
            format!(
                "{}: no TAESD {} in this folder (expected diffusion_pytorch_model.safetensors of a diffusers \
                 AutoencoderTiny, or taesd{suffix} / taesdxl{suffix})",
                path.display(),
                half.name()
            ),
        )),
        _ => Err(Error::invalid(
            OP,
            format!(
                "{}: several TAESD {}s in this folder ({}); name the file",
                path.display(),
                half.name(),
                standalone
                    .iter()
                    .filter_map(|p| p.file_name())
                    .map(|n| n.to_string_lossy())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

/// What `file` (a TAESD weight file) and its surroundings say it is, most specific first:
/// its metadata, a diffusers `config.json` beside it (`_name_or_path`), its name (unless it is
/// diffusers' generic one), then the folders above it. `None` when nothing says.
pub fn kind_evidence(file: &Path, st: &SafeTensorsFile) -> Option<KindEvidence> {
    let mut sources: Vec<(String, String)> = Vec::new();
    for (k, v) in st.metadata() {
        sources.push((format!("the metadata {k:?}"), v.clone()));
    }
    let config = file.with_file_name("config.json");
    if let Some(name) = std::fs::read_to_string(&config)
        .ok()
        .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
        .and_then(|v| v.get("_name_or_path").and_then(|n| n.as_str()).map(str::to_string))
    {
        sources.push((format!("{}'s _name_or_path", config.display()), name));
    }
    let file_name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    if !DIFFUSERS_FILES.contains(&file_name.as_str()) {
        sources.push(("the file name".into(), file_name));
    }
    for dir in file.ancestors().skip(1).take(FOLDERS_ASKED) {
        if let Some(n) = dir.file_name() {
            sources.push(("the folder name".into(), n.to_string_lossy().into_owned()));
        }
    }
    sources.into_iter().find_map(|(source, text)| {
        TaesdKind::from_name(&text).map(|kind| KindEvidence { kind, source: format!("{source} {text:?}") })
    })
}

/// Refuses a file that says it is for another family; says so in the log when nothing says.
fn check_kind(path: &Path, file: &Path, st: &SafeTensorsFile, family: Family, half: Half) -> Result<()> {
    let want = TaesdKind::for_family(family);
    match kind_evidence(file, st) {
        Some(e) if e.kind != want => Err(Error::invalid(
            OP,
            format!(
                "{}: a {} {} for an {} model ({} says so); {} latents need {} (madebyollin/{})",
                path.display(),
                e.kind.name(),
                half.name(),
                family.name(),
                e.source,
                family.name(),
                want.name(),
                want.name().to_lowercase()
            ),
        )),
        Some(e) => {
            log::debug!("{}: {} {} ({})", path.display(), e.kind.name(), half.name(), e.source);
            Ok(())
        }
        None => {
            log::info!(
                "{}: nothing in its names or metadata says TAESD or TAESDXL; using it as the {} {} for this {} \
                 model (the shapes cannot tell them apart)",
                path.display(),
                want.name(),
                half.name(),
                family.name()
            );
            Ok(())
        }
    }
}

fn check_channels(path: &Path, family: Family, half: Half, channels: usize) -> Result<()> {
    if channels == LATENT_CHANNELS {
        return Ok(());
    }
    Err(Error::invalid(
        OP,
        format!(
            "{}: a TAESD {} with {channels} latent channels (TAESD3 and TAEF1 have 16) for an {} model, whose \
             latents have {LATENT_CHANNELS}",
            path.display(),
            half.name(),
            family.name()
        ),
    ))
}

/// The file for `half`, checked against `family` by name, opened as a loader.
fn open<'a>(ctx: &'a Context, path: &Path, family: Family, half: Half, dtype: DType) -> Result<(PathBuf, Loader<'a>)> {
    let file = weight_file(path, half)?;
    let st = SafeTensorsFile::open(&file)?;
    check_kind(path, &file, &st, family, half)?;
    drop(st);
    let vb = VarBuilder::open_file(&file, Component::Vae)?;
    Ok((file, Loader::new(ctx, vb, &AdaptableWeights::default(), dtype)))
}

/// A TAESD decoder for `family`'s latents from `path`: `taesd_decoder.safetensors` /
/// `taesdxl_decoder.safetensors`, a diffusers `AutoencoderTiny` `diffusion_pytorch_model.safetensors`,
/// or a folder holding one. A file that says it is for the other family, or has another number of
/// latent channels, is refused with the reason.
pub fn load_taesd(ctx: &Context, path: &Path, family: Family, dtype: DType) -> Result<TaesdDecoder> {
    let (file, l) = open(ctx, path, family, Half::Decoder, dtype)?;
    let dec = TaesdDecoder::load(&l).map_err(|e| Error::invalid(OP, format!("{}: {e}", file.display())))?;
    check_channels(path, family, Half::Decoder, dec.latent_channels)?;
    Ok(dec)
}

/// The encoder half, found and checked as [`load_taesd`] does (a standalone decoder's path finds
/// its `_encoder` sibling).
pub fn load_taesd_encoder(ctx: &Context, path: &Path, family: Family, dtype: DType) -> Result<TaesdEncoder> {
    let (file, l) = open(ctx, path, family, Half::Encoder, dtype)?;
    let enc = TaesdEncoder::load(&l).map_err(|e| Error::invalid(OP, format!("{}: {e}", file.display())))?;
    check_channels(path, family, Half::Encoder, enc.latent_channels)?;
    Ok(enc)
}

/// Latents `[B, C, h, w]` (or one image's `[C, h, w]`) as the UNet produced them (TAESD takes
/// them unscaled) → one `[3, 8h, 8w]` image in [0, 1] per batch element, decoded one at a time so
/// the activations of one image are the most held at once.
pub fn decode_latents_host(ctx: &Context, dec: &TaesdDecoder, latents: &HostTensor) -> Result<Vec<HostTensor>> {
    let (b, [c, h, w]) = match latents.shape[..] {
        [b, c, h, w] => (b, [c, h, w]),
        [c, h, w] => (1, [c, h, w]),
        _ => return Err(Error::shape(OP, format!("latents {:?} are not [B, C, h, w]", latents.shape))),
    };
    if c != dec.latent_channels {
        return Err(Error::shape(
            OP,
            format!("latents {:?} have {c} channels; the decoder takes {}", latents.shape, dec.latent_channels),
        ));
    }
    let per = c * h * w;
    let mut out = Vec::with_capacity(b);
    for i in 0..b {
        let z = GpuTensor::from_slice(ctx, &[1, c, h, w], &latents.data[i * per..(i + 1) * per], dec.dtype)?;
        let mut rec = Recorder::new();
        let y = dec.forward(ctx, &mut rec, &z)?;
        rec.submit(ctx)?;
        let raw = y.to_vec(ctx)?;
        out.push(HostTensor::new(&[dec.out_channels, 8 * h, 8 * w], postprocess(&raw))?);
    }
    Ok(out)
}
