//! The sampling loop shared by text to image, img2img and inpainting: each image starts where
//! [`super::img2img`] put it, every step replays the recorded UNet graph, and the finished
//! latents are decoded (by the VAE or TAESD) and, for inpainting, composited over the input.

use crate::kernels::binary::{add, add_scaled, mul, sub};
use crate::kernels::cfg_rescale::cfg_rescale;
use crate::kernels::unary::{unary, unary_into, UnaryOp};
use crate::models::vae::postprocess;
use crate::pipeline::img2img::{apply_overlay, request_schedule, ImageStart};
use crate::pipeline::init::FinalDecoder;
use crate::pipeline::request::Request;
use crate::pipeline::txt2img::{check_noise, Output, Pipeline, Progress, Watch};
use crate::weights::detect::Family;
use crate::{Context, Error, GpuTensor, HostTensor, Recorder, Result};

/// What happens after sampling.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Finish {
    /// Decode the latents (hires fix's latent upscalers need only the latents of the first pass).
    pub decode: bool,
    /// Composite inpainted pixels over the input (not inside "only masked", which composites
    /// once at full size).
    pub overlay: bool,
}

impl Default for Finish {
    fn default() -> Self {
        Finish { decode: true, overlay: true }
    }
}

impl Pipeline {
    /// Runs `req` (already validated; no hires, no only-masked crop) to the end.
    pub(crate) fn sample(
        &self,
        ctx: &Context,
        req: &Request,
        progress: &mut dyn FnMut(Progress),
        watch: &mut Watch<'_>,
        finish: Finish,
    ) -> Result<Output> {
        let cancelled = watch.cancelled;
        let schedule = request_schedule(req, &req.scheduler_config(&self.scheduler_config))?;
        let [lc, lh, lw] = req.latent_shape();
        let per = lc * lh * lw;
        let in_ch = self.config.unet.in_channels;
        let in_per = in_ch * lh * lw;
        check_noise(&req.noise, req.batch, per, schedule.len())?;
        if req.decoder == FinalDecoder::Taesd && finish.decode && self.taesd().is_none() {
            return Err(Error::invalid(
                "generate",
                "the TAESD decoder was asked for but none is loaded (--taesd FILE)",
            ));
        }
        let resolved = req.resolve()?;
        let (loras, lora_report) = self.set_loras(ctx, &resolved.loras, req.lora_mode, req.lora_weights_vary)?;
        let guided = req.cfg != 1.0;
        if self.family() == Family::Sdxl && req.clip_skip > 1 {
            log::warn!(
                "clip skip {} has no effect on SDXL: both text encoders give their penultimate layer, as in A1111",
                req.clip_skip
            );
        }
        let (context, pooled) = self.encode_pair(ctx, req, &resolved, guided)?;
        // Encoding the init images happens before the UNet graph holds its buffers.
        let mut starts = self.image_starts(ctx, req, &schedule)?;
        let rows = if guided { 2 } else { 1 };
        let time_ids: Vec<f32> = (0..rows).flat_map(|_| req.time_ids()).map(|v| v as f32).collect();
        let mut added_rec = Recorder::new();
        let added = match &pooled {
            Some(p) => self.unet.added_embedding(ctx, &mut added_rec, p, &time_ids)?,
            None => None,
        };
        added_rec.submit(ctx)?;

        // The recorded UNet graph and its fixed inputs.
        let x_in = GpuTensor::empty(ctx, &[rows, in_ch, lh, lw], self.dtype)?;
        let mut probe = Recorder::new();
        let temb_probe = self.unet.time_embedding(ctx, &mut probe, &vec![0.0; rows], added.as_ref())?;
        let temb = GpuTensor::empty(ctx, &temb_probe.shape, temb_probe.dtype)?;
        drop(probe);
        let mut graph = Recorder::new();
        let eps_all = {
            // Intermediates share buffers by liveness; the graph is always replayed as a whole.
            let _arena = ctx.arena();
            self.unet.forward_with_temb(ctx, &mut graph, &x_in, &temb, &context)?
        };

        if ctx.caps.is_cpu() {
            graph.warm_up(ctx, |done, total| progress(Progress::Compile { done, total }))?;
        }

        let mut images = Vec::new();
        let mut noise_all = Vec::with_capacity(req.batch * per);
        let mut latents_all = Vec::with_capacity(req.batch * per);
        let mut seeds = Vec::new();
        let mut interrupted = false;
        for (b, start) in starts.iter_mut().enumerate() {
            if cancelled() {
                if !images.is_empty() && (watch.decode_on_cancel)() {
                    interrupted = true;
                    break;
                }
                return Err(Error::Cancelled("generate"));
            }
            progress(Progress::Image { image: b, images: req.batch });
            let ImageStart { seed, stream, noise, x: x0, scale, blend, cond, overlay } = start;
            seeds.push(*seed);
            noise_all.extend_from_slice(noise);
            let mut x = GpuTensor::from_slice(ctx, &[1, lc, lh, lw], x0, self.dtype)?;
            let mut rec = Recorder::new();
            x = unary(ctx, &mut rec, &x, UnaryOp::Scale(*scale))?;
            // A 9-channel UNet's mask and masked-image latents sit after the latents of every
            // row and stay fixed for the whole image.
            if let Some(c) = cond {
                let ct = GpuTensor::from_slice(ctx, &[1, in_ch - lc, lh, lw], c, self.dtype)?;
                for r in 0..rows {
                    let dst = x_in.view(r * in_per + per, &[1, in_ch - lc, lh, lw])?;
                    unary_into(ctx, &mut rec, &ct, &dst, UnaryOp::Scale(1.0))?;
                }
            }
            let blend_gpu = match blend {
                Some(bl) => Some((
                    GpuTensor::from_slice(ctx, &[1, lc, lh, lw], &bl.image_latents, self.dtype)?,
                    GpuTensor::from_slice(ctx, &[1, lc, lh, lw], noise, self.dtype)?,
                    GpuTensor::from_slice(ctx, &[1, 1, lh, lw], &bl.mask, self.dtype)?,
                )),
                None => None,
            };
            let mut prev_x0: Option<GpuTensor> = None;
            let mut drawn = 0usize;
            let mut in_flight = None;
            for i in 0..schedule.len() {
                if cancelled() {
                    if !(watch.decode_on_cancel)() {
                        return Err(Error::Cancelled("generate"));
                    }
                    interrupted = true;
                    break;
                }
                let step = schedule.step(i).ok_or_else(|| Error::invalid("generate", "schedule index"))?;
                // Refill the graph's inputs.
                let scale = UnaryOp::Scale(step.model_scale as f32);
                for r in 0..rows {
                    unary_into(ctx, &mut rec, &x, &x_in.view(r * in_per, &[1, lc, lh, lw])?, scale)?;
                }
                self.unet.time_embedding_into(
                    ctx,
                    &mut rec,
                    &vec![step.timestep as f32; rows],
                    added.as_ref(),
                    &temb,
                )?;
                rec.dispatches.extend(graph.dispatches.iter().cloned());
                let eps = if guided {
                    let u = eps_all.view(0, &[1, lc, lh, lw])?;
                    let c = eps_all.view(per, &[1, lc, lh, lw])?;
                    let guided = add_scaled(ctx, &mut rec, &u, &c, 1.0 - req.cfg, req.cfg)?;
                    // diffusers' guidance_rescale, on the model output (v for v-pred models),
                    // recorded into the step like everything else: no readback.
                    if req.cfg_rescale != 0.0 {
                        cfg_rescale(ctx, &mut rec, &c, &guided, req.cfg_rescale)?
                    } else {
                        guided
                    }
                } else {
                    eps_all.clone()
                };
                let k = step.coeffs;
                let x0_new = if k.keeps_x0() {
                    Some(add_scaled(ctx, &mut rec, &x, &eps, k.x0_x as f32, k.x0_eps as f32)?)
                } else {
                    None
                };
                let mut next = add_scaled(ctx, &mut rec, &x, &eps, k.x as f32, k.eps as f32)?;
                if k.prev_x0 != 0.0 {
                    let p = prev_x0
                        .as_ref()
                        .ok_or_else(|| Error::invalid("generate", "sampler needs a previous x0 on its first step"))?;
                    next = add_scaled(ctx, &mut rec, &next, p, 1.0, k.prev_x0 as f32)?;
                }
                if step.needs_noise {
                    let n = match &req.noise.step_noise {
                        Some(sn) => {
                            let s = (drawn * req.batch + b) * per;
                            sn.data.get(s..s + per).map(|v| v.to_vec()).ok_or_else(|| {
                                Error::shape(
                                    "noise_file",
                                    format!("step_noise {:?} has no entry for step {}", sn.shape, drawn + 1),
                                )
                            })?
                        }
                        None => stream.next(&[lc, lh, lw]),
                    };
                    drawn += 1;
                    if k.noise != 0.0 {
                        let nt = GpuTensor::from_slice(ctx, &[1, lc, lh, lw], &n, self.dtype)?;
                        next = add_scaled(ctx, &mut rec, &next, &nt, 1.0, k.noise as f32)?;
                    }
                }
                // diffusers' inpainting with a regular UNet: outside the mask, the init latents
                // noised to the level the next step starts from (clean after the last step).
                if let Some((lat, nz, m)) = &blend_gpu {
                    let (a, s) = schedule.noise_level(i + 1).unwrap_or((1.0, 0.0));
                    let proper = add_scaled(ctx, &mut rec, lat, nz, a as f32, s as f32)?;
                    let d = sub(ctx, &mut rec, &next, &proper)?;
                    let md = mul(ctx, &mut rec, &d, m)?;
                    next = add(ctx, &mut rec, &proper, &md)?;
                }
                // Report a step when the device has finished it, keeping the next one queued
                // behind it so the device never idles on the report (the first step of a cold run
                // is where kernels get compiled, and its report shows that time).
                let submitted = rec.submit(ctx)?;
                if let Some(done) = in_flight.replace(submitted) {
                    ctx.wait_for(done)?;
                    progress(Progress::Step { step: i, steps: schedule.len() });
                    // `x` is what the finished steps produced. Reading it back waits for the
                    // step just queued too, so it is done only when the watcher asks.
                    if (watch.wants_latents)(i) {
                        (watch.on_latents)(&x.to_vec(ctx)?, [lc, lh, lw]);
                    }
                }
                x = next;
                if x0_new.is_some() {
                    prev_x0 = x0_new;
                }
            }
            if let Some(done) = in_flight.take() {
                ctx.wait_for(done)?;
                if !interrupted {
                    progress(Progress::Step { step: schedule.len(), steps: schedule.len() });
                }
            }
            latents_all.extend(x.to_vec(ctx)?);
            if b + 1 == req.batch || interrupted {
                // The UNet graph's intermediates are dead once the last image is sampled: give
                // them back before the VAE allocates its own, so the two never add up.
                graph.dispatches.clear();
                ctx.trim_pool();
            }
            if finish.decode {
                progress(Progress::Decode);
                let mut img = self.decode_latents(ctx, &mut rec, req, &x)?;
                if let (Some(o), true) = (overlay.as_ref(), finish.overlay) {
                    apply_overlay(&mut img, o);
                }
                images.push(HostTensor::new(&[3, req.height, req.width], img)?);
            }
            if interrupted {
                break;
            }
        }
        let n = seeds.len();
        Ok(Output {
            images,
            noise: HostTensor::new(&[n, lc, lh, lw], noise_all)?,
            latents: HostTensor::new(&[n, lc, lh, lw], latents_all)?,
            seeds,
            interrupted,
            loras,
            lora_report,
        })
    }

    /// Final latents `[1, 4, h, w]` (scaled space) → pixels `[3, H, W]` in [0, 1] on the host,
    /// by the request's decoder.
    pub(crate) fn decode_latents(
        &self,
        ctx: &Context,
        rec: &mut Recorder,
        req: &Request,
        x: &GpuTensor,
    ) -> Result<Vec<f32>> {
        let raw = match req.decoder {
            FinalDecoder::Taesd => {
                let dec = self.taesd().ok_or_else(|| Error::invalid("generate", "no TAESD decoder is loaded"))?;
                let z = if x.dtype == dec.dtype {
                    x.clone()
                } else {
                    GpuTensor::from_slice(ctx, &x.shape, &x.to_vec(ctx)?, dec.dtype)?
                };
                let out = dec.forward(ctx, rec, &z)?;
                rec.submit(ctx)?;
                out.to_vec(ctx)?
            }
            FinalDecoder::Vae => {
                let inv = 1.0 / self.config.vae.scaling_factor;
                let z = unary(ctx, rec, x, UnaryOp::Scale(inv))?;
                match &req.vae_tiling {
                    Some(t) => self.vae.decode_tiled(ctx, rec, &z, t)?.data,
                    None => self.vae.decode_checked_host(ctx, rec, &z)?,
                }
            }
        };
        Ok(postprocess(&raw))
    }
}
