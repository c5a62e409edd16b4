//! Text to image: prompt → CLIP → UNet sampling loop with classifier-free guidance → VAE → pixels.
//!
//! The UNet graph is recorded once per latent size into a [`Recorder`] that reads fixed input
//! tensors (scaled latents, time embedding, text context); every step only records the few
//! dispatches that refill those inputs and apply the sampler's update, then replays the graph, so
//! bind groups are built once per resolution and nothing is read back until the image is done.

use std::path::{Path, PathBuf};

use crate::kernels::concat::concat_channels;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::lora::{ApplyReport, LoraFile, LoraMode, LoraRuntime, LoraSpec, ModuleIndex};
use crate::models::clip::prompt::{chunk_fragments, parse_prompt, ParsedPrompt};
use crate::models::clip::sdxl::encode_prompt_sdxl;
use crate::models::clip::text_model::ClipTextModel;
use crate::models::clip::tokenizer::Tokenizer;
use crate::models::unet::UNet;
use crate::models::vae::{TaesdDecoder, Vae};
use crate::nn::AdaptableWeights;
use crate::pipeline::request::{NoiseOverride, Precision, Request, Resolved, UsedLora};
use crate::pipeline::rng::{randn, RngKind};
use crate::pipeline::sample::Finish;
pub use crate::pipeline::watch::Watch;
use crate::schedulers::SchedulerConfig;
use crate::weights::detect::{detect, Family, ModelConfig};
use crate::weights::ModelFiles;
use crate::{Context, DType, Error, GpuTensor, HostTensor, Recorder, Result};

enum Tok {
    Embedded(&'static Tokenizer),
    Owned(Box<Tokenizer>),
}

/// A loaded checkpoint, ready to generate.
pub struct Pipeline {
    pub model_path: PathBuf,
    pub config: ModelConfig,
    pub dtype: DType,
    pub scheduler_config: SchedulerConfig,
    tokenizer: Tok,
    pub clip: ClipTextModel,
    /// SDXL's second text encoder (OpenCLIP ViT-bigG with its projection).
    pub clip2: Option<ClipTextModel>,
    pub unet: UNet,
    pub vae: Vae,
    /// Where the UNet's and text encoder's adaptable weights live (for LoRAs).
    pub adaptable: AdaptableWeights,
    loras: Mutex<LoraRuntime>,
    /// The tiny autoencoder for previews and `FinalDecoder::Taesd` (see [`Pipeline::set_taesd`]).
    taesd: Mutex<Option<Arc<TaesdDecoder>>>,
}

/// Progress of a generation, reported to the caller's callback.
#[derive(Clone, Copy, Debug)]
pub enum Progress {
    /// Text encoded; sampling image `image` of `images` starts.
    Image { image: usize, images: usize },
    /// Step `step` of `steps` done for the current image.
    Step { step: usize, steps: usize },
    /// Decoding the latents.
    Decode,
    /// Kernels compiled ahead of sampling on drivers that compile at first use (CPU adapters):
    /// `done` of `total` new pipeline variants of the UNet graph.
    Compile { done: usize, total: usize },
}

/// What a generation produced.
pub struct Output {
    /// Per image, [3, H, W] values in [0, 1].
    pub images: Vec<HostTensor>,
    /// Initial unit-normal noise [B, 4, h, w] (before scaling by the sampler's initial sigma).
    pub noise: HostTensor,
    /// Final latents [B, 4, h, w] (before division by the VAE scaling factor).
    pub latents: HostTensor,
    pub seeds: Vec<u64>,
    /// Stopped early by [`Watch::cancelled`] with [`Watch::decode_on_cancel`]: the last image is
    /// decoded from the latents its sampling had reached, and later images were not started.
    pub interrupted: bool,
    /// The LoRAs that were applied (CLI and prompt tags), with their hashes.
    pub loras: Vec<UsedLora>,
    pub lora_report: ApplyReport,
}

impl Pipeline {
    /// Load a single-file checkpoint or a diffusers folder.
    pub fn load(ctx: &Context, path: &Path, precision: Precision) -> Result<Pipeline> {
        Self::load_with_vae(ctx, path, precision, None)
    }

    /// [`Pipeline::load`] with the VAE taken from a separate file (`--vae`, e.g. an fp16-fixed
    /// SDXL VAE), for either family; the scaling factor stays the model family's.
    pub fn load_with_vae(ctx: &Context, path: &Path, precision: Precision, vae: Option<&Path>) -> Result<Pipeline> {
        Self::load_files_with_vae(ctx, &ModelFiles::open(path)?, precision, vae)
    }

    /// [`Pipeline::load`] from opened files, so the caller can ask them afterwards what was
    /// never read (`ModelFiles::unused_keys`; the VAE encoder's weights are among those, since
    /// text-to-image does not load it).
    pub fn load_files(ctx: &Context, files: &ModelFiles, precision: Precision) -> Result<Pipeline> {
        Self::load_files_with_vae(ctx, files, precision, None)
    }

    fn load_files_with_vae(
        ctx: &Context,
        files: &ModelFiles,
        precision: Precision,
        vae: Option<&Path>,
    ) -> Result<Pipeline> {
        let dtype = precision.resolve(ctx)?;
        let path = files.path();
        let mut config = detect(files)?;
        let vae_files = match vae {
            Some(v) => {
                let vf = ModelFiles::open_vae(v)?;
                let cfg = crate::weights::detect::vae_file_config(&vf, config.family)?;
                if cfg.latent_channels != config.unet.in_channels {
                    return Err(Error::invalid(
                        "load",
                        format!(
                            "{}: VAE with {} latent channels, the UNet takes {}",
                            v.display(),
                            cfg.latent_channels,
                            config.unet.in_channels
                        ),
                    ));
                }
                config.vae = crate::weights::VaeConfig { scaling_factor: config.vae.scaling_factor, ..cfg };
                Some(vf)
            }
            None => None,
        };
        if config.unet.in_channels != 4 && config.unet.in_channels != 9 {
            return Err(Error::invalid(
                "load",
                format!(
                    "{}: UNet has {} input channels; only regular (4) and inpainting (9) models are supported",
                    path.display(),
                    config.unet.in_channels
                ),
            ));
        }
        let folder_tok = path.join("tokenizer");
        // A diffusers folder ships its vocabulary; single files carry none, so the embedded one.
        let tokenizer = if folder_tok.join("vocab.json").exists() && folder_tok.join("merges.txt").exists() {
            Tok::Owned(Box::new(Tokenizer::from_files(&folder_tok.join("vocab.json"), &folder_tok.join("merges.txt"))?))
        } else {
            Tok::Embedded(Tokenizer::embedded()?)
        };
        let sched_json = path.join("scheduler").join("scheduler_config.json");
        let mut scheduler_config = if sched_json.exists() {
            SchedulerConfig::from_diffusers_json(&sched_json)?
        } else {
            SchedulerConfig::sd15()
        };
        // A single file marks v-prediction with a `v_pred` key and zero terminal SNR with a
        // `ztsnr` key (NoobAI v-pred, SD2-v merges); a request may override both.
        if config.v_prediction {
            scheduler_config.prediction_type = crate::schedulers::PredictionType::VPrediction;
        }
        if config.zero_terminal_snr {
            scheduler_config.rescale_betas_zero_snr = true;
        }
        Self::build(ctx, path, config, scheduler_config, tokenizer, files, vae_files.as_ref(), dtype, None)
    }

    /// A pipeline with `config`'s sizes whose weights are seeded synthetic values: the structure
    /// comes from `files` (any checkpoint with the same architecture, e.g. the tiny fixture),
    /// the sizes from `config`. For benchmarks at full model size without a checkpoint.
    pub fn synthetic(ctx: &Context, files_path: &Path, config: ModelConfig, precision: Precision) -> Result<Pipeline> {
        let dtype = precision.resolve(ctx)?;
        let files = ModelFiles::open(files_path)?;
        let tokenizer = Tok::Embedded(Tokenizer::embedded()?);
        Self::build(ctx, files_path, config, SchedulerConfig::sd15(), tokenizer, &files, None, dtype, Some(0))
    }

    #[allow(clippy::too_many_arguments)]
    fn build(
        ctx: &Context,
        path: &Path,
        config: ModelConfig,
        scheduler_config: SchedulerConfig,
        tokenizer: Tok,
        files: &ModelFiles,
        vae_files: Option<&ModelFiles>,
        dtype: DType,
        synthetic: Option<u64>,
    ) -> Result<Pipeline> {
        let adaptable = AdaptableWeights::default();
        let load = |b: crate::weights::VarBuilder| {
            let reader = match synthetic {
                Some(seed) => b.synthetic(seed),
                None => b,
            };
            crate::nn::Loader::new(ctx, reader, &adaptable, dtype)
        };
        let clip = ClipTextModel::load(&load(files.text_encoder()), &config.clip)?;
        let clip2 = match &config.clip2 {
            Some(c2) => Some(ClipTextModel::load(&load(files.text_encoder_2()), c2)?),
            None => None,
        };
        let unet = UNet::load(&load(files.unet()), &config.unet)?;
        let vae = Vae::load_decoder(&load(vae_files.unwrap_or(files).vae()), &config.vae)?;
        // Adapter keys resolve against the file's names (LDM aliases included) or, for synthetic
        // weights, against what the model registered.
        let index = match synthetic {
            None => ModuleIndex::new(files),
            Some(_) => ModuleIndex::from_targets(adaptable.entries().into_iter().map(|((c, p), e)| (c, p, e.shape()))),
        };
        let loras = Mutex::new(LoraRuntime::new(index));
        Ok(Pipeline {
            model_path: path.to_path_buf(),
            config,
            dtype,
            scheduler_config,
            tokenizer,
            clip,
            clip2,
            unet,
            vae,
            adaptable,
            loras,
            taesd: Mutex::new(None),
        })
    }

    /// Use `dec` (a TAESD / TAESDXL decoder for this model's family, see
    /// [`crate::pipeline::fast_decode`]) for previews and `FinalDecoder::Taesd`; `None` drops it.
    pub fn set_taesd(&self, dec: Option<Arc<TaesdDecoder>>) {
        *self.taesd.lock().unwrap_or_else(|e| e.into_inner()) = dec;
    }

    /// The TAESD decoder set by [`Pipeline::set_taesd`].
    pub fn taesd(&self) -> Option<Arc<TaesdDecoder>> {
        self.taesd.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        match &self.tokenizer {
            Tok::Embedded(t) => t,
            Tok::Owned(t) => t,
        }
    }

    /// Encode the prompt pair into one CFG context [2, 77·k, C] (negative first), padding the
    /// shorter prompt with empty chunks as A1111 does; for SDXL also the pooled text embeddings
    /// [2, P] (negative first). Unguided: the prompt alone, batch 1.
    pub(crate) fn encode_pair(
        &self,
        ctx: &Context,
        req: &Request,
        prompts: &Resolved,
        guided: bool,
    ) -> Result<(GpuTensor, Option<GpuTensor>)> {
        let mut cond = parse_prompt(self.tokenizer(), &prompts.prompt)?;
        let mut uncond = parse_prompt(self.tokenizer(), &prompts.negative_prompt)?;
        let n = cond.chunks.len().max(uncond.chunks.len());
        if guided && cond.chunks.len() != uncond.chunks.len() {
            // The chunk of an empty prompt: BOS, then EOS padding.
            let empty = chunk_fragments(self.tokenizer(), &[]).0.remove(0);
            let pad = |p: &mut ParsedPrompt| p.chunks.resize(n, empty.clone());
            pad(&mut cond);
            pad(&mut uncond);
        }
        let parsed: Vec<&ParsedPrompt> = if guided { vec![&uncond, &cond] } else { vec![&cond] };
        let mut contexts = Vec::new();
        let mut pooled = Vec::new();
        for p in parsed {
            match &self.clip2 {
                Some(te2) => {
                    let out = encode_prompt_sdxl(ctx, &self.clip, te2, p)?;
                    contexts.push(out.context);
                    pooled.extend(out.pooled);
                }
                None => contexts.push(self.clip.encode_prompt(ctx, p, req.clip_skip)?),
            }
        }
        let pooled = match self.clip2 {
            Some(_) => {
                let rows = contexts.len();
                Some(GpuTensor::from_slice(ctx, &[rows, pooled.len() / rows], &pooled, self.dtype)?)
            }
            None => None,
        };
        if contexts.len() == 1 {
            return Ok((contexts.remove(0), pooled));
        }
        // [1, S, C] + [1, S, C] stacked along the batch: the same bytes as a channel concat of
        // [1, S·C, 1, 1] views.
        let (u, c) = (&contexts[0], &contexts[1]);
        let sc = u.numel();
        let mut rec = Recorder::new();
        let both = concat_channels(ctx, &mut rec, &u.reshape(&[1, sc, 1, 1])?, &c.reshape(&[1, sc, 1, 1])?)?;
        rec.submit(ctx)?;
        let mut shape = u.shape.clone();
        shape[0] = 2;
        Ok((both.reshape(&shape)?, pooled))
    }

    /// The model family.
    pub fn family(&self) -> Family {
        self.config.family
    }

    fn lora_runtime(&self) -> MutexGuard<'_, LoraRuntime> {
        self.loras.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Parse (or take from the cache) one LoRA file for this model.
    pub fn lora_file(&self, spec: &LoraSpec) -> Result<(Arc<LoraFile>, String)> {
        self.lora_runtime().file(spec)
    }

    /// How the parsed-LoRA cache was used, and what it holds.
    pub fn lora_cache_stats(&self) -> crate::lora::LoraCacheStats {
        self.lora_runtime().cache_stats()
    }

    /// Bound the parsed-LoRA cache to `bytes` of LoRA files (least recently used dropped first).
    pub fn set_lora_cache_budget(&self, bytes: u64) {
        self.lora_runtime().set_cache_budget(bytes)
    }

    /// Put exactly `specs` on the model (an empty list restores it) in `mode`.
    pub fn set_loras(
        &self,
        ctx: &Context,
        specs: &[LoraSpec],
        mode: LoraMode,
        weights_vary: bool,
    ) -> Result<(Vec<UsedLora>, ApplyReport)> {
        let (hashes, report) = self.lora_runtime().set(ctx, &self.adaptable, self.dtype, specs, mode, weights_vary)?;
        let used = specs
            .iter()
            .zip(hashes)
            .map(|(s, hash)| UsedLora { name: s.name(), hash, unet_weight: s.unet_weight, te_weight: s.te_weight })
            .collect();
        Ok((used, report))
    }

    /// The model as loaded, without any LoRA.
    pub fn clear_loras(&self, ctx: &Context) -> Result<()> {
        self.lora_runtime().clear(ctx, &self.adaptable)
    }

    /// `req` with the model's prediction type and zero-SNR setting filled in where it leaves them
    /// to the model, so an infotext records what was used.
    pub fn with_model_defaults(&self, req: &Request) -> Request {
        let c = req.scheduler_config(&self.scheduler_config);
        Request {
            prediction: Some(c.prediction_type),
            zero_terminal_snr: Some(c.rescale_betas_zero_snr),
            ..req.clone()
        }
    }

    /// Generate `req.batch` images; image i uses seed `req.seed + i`.
    pub fn generate(&self, ctx: &Context, req: &Request, progress: &mut dyn FnMut(Progress)) -> Result<Output> {
        self.generate_cancellable(ctx, req, progress, &|| false)
    }

    /// [`Pipeline::generate`] that asks `cancelled` before each image and each sampling step and
    /// stops with [`Error::Cancelled`] when it says so (a server's interrupt or timeout), so the
    /// device is free again within one step.
    pub fn generate_cancellable(
        &self,
        ctx: &Context,
        req: &Request,
        progress: &mut dyn FnMut(Progress),
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Output> {
        self.generate_watched(ctx, req, progress, &mut Watch { cancelled, ..Watch::default() })
    }

    /// [`Pipeline::generate_cancellable`] with a look at the latents while sampling (live
    /// previews) and, optionally, A1111's interrupt: the image decoded from where sampling got to.
    pub fn generate_watched(
        &self,
        ctx: &Context,
        req: &Request,
        progress: &mut dyn FnMut(Progress),
        watch: &mut Watch<'_>,
    ) -> Result<Output> {
        req.validate()?;
        if let Some(h) = &req.hires {
            return self.generate_hires(ctx, req, h, progress, watch);
        }
        if let Some(pad) = req.init.as_ref().and_then(|i| i.mask.as_ref()).and_then(|m| m.only_masked_padding) {
            return self.generate_only_masked(ctx, req, pad, progress, watch);
        }
        self.sample(ctx, req, progress, watch, Finish::default())
    }
}

pub(crate) fn check_noise(n: &NoiseOverride, batch: usize, per: usize, steps: usize) -> Result<()> {
    if let Some(t) = &n.noise {
        if t.numel() != batch * per {
            return Err(Error::shape(
                "noise_file",
                format!("noise {:?} does not match batch {batch} × {per} latent values", t.shape),
            ));
        }
    }
    if let Some(t) = &n.step_noise {
        if t.numel() % (batch * per) != 0 || t.numel() / (batch * per) > steps + 1 {
            return Err(Error::shape(
                "noise_file",
                format!("step_noise {:?} is not [S, {batch}, latent] with S ≤ {steps}", t.shape),
            ));
        }
    }
    Ok(())
}

/// Convenience for tests and simple callers: the seeded initial noise of image `i`.
pub fn initial_noise(rng: RngKind, seed: u64, width: usize, height: usize) -> Vec<f32> {
    randn(rng, seed, &[4, height / 8, width / 8])
}
