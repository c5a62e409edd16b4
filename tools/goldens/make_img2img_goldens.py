#!/usr/bin/env python3
"""Goldens for lorafuse's img2img, inpainting (4- and 9-channel UNet), hires fix and LCM-LoRA,
computed with diffusers itself on the tiny SD1.x fixture (tests/fixtures/sd15-tiny).

Pinned (as generated): python 3.11, torch 2.15.0, diffusers==0.35.2, transformers==5.25.0,
peft==0.21.2, safetensors 0.8.0, numpy 2.4.6, pillow 13.0.0 (float32, CPU, deterministic algorithms).
Rerun (from the repository root):
    python3 -m venv /tmp/venv-taesd
    /tmp/venv-taesd/bin/pip install torch==2.15.0 diffusers==0.35.2 transformers==5.25.0 peft==0.21.2 \
        safetensors==0.8.0 numpy==2.4.6 pillow==13.0.0
    /tmp/venv-taesd/bin/python tools/goldens/make_img2img_goldens.py

Written to tests/fixtures/img2img/ (see its README.md):
  init.png, mask.png                 inputs (64x64 RGB u8; 64x64 L u8, 255 = repaint)
  inpaint_conv_in.safetensors        conv_in.weight [32,9,3,3] / conv_in.bias [32] of the 9-channel UNet
  lcm_lora.safetensors               random LoRA in the layout of latent-consistency/lcm-lora-sdv1-5
  golden.safetensors, runs.json      outputs, every random draw in order, and the settings of each run

Every run: batch 1, the run_euler prompt / negative prompt of sd15-tiny, generator =
torch.Generator("cpu").manual_seed(seed), float32 CPU, no safety checker. Every call of diffusers'
randn_tensor (pipelines, VAE DiagonalGaussianDistribution.sample, schedulers) is recorded in order.
"""
import copy
import inspect
import json
import math
import os
import sys

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

import diffusers
import diffusers.utils.torch_utils as tu
from diffusers import (DDIMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler,
                       EulerDiscreteScheduler, LCMScheduler, StableDiffusionImg2ImgPipeline,
                       StableDiffusionInpaintPipeline, StableDiffusionPipeline, UNet2DConditionModel)

torch.set_grad_enabled(False)
torch.use_deterministic_algorithms(True)

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
TINY = os.path.join(ROOT, "tests", "fixtures", "sd15-tiny")
MODEL = os.path.join(TINY, "model")
OUT = os.path.join(ROOT, "tests", "fixtures", "img2img")

# exactly the scheduler constructions of tools/make_fixtures.py (the sd15-tiny goldens)
SD15_SCHEDULER = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                      beta_schedule="scaled_linear", steps_offset=1, prediction_type="epsilon",
                      timestep_spacing="leading")
SCHEDULERS = {
    "euler": lambda c: EulerDiscreteScheduler(**c),
    "euler_a": lambda c: EulerAncestralDiscreteScheduler(**c),
    "dpmpp_2m_karras": lambda c: DPMSolverMultistepScheduler(**c, algorithm_type="dpmsolver++", solver_order=2,
                                                             use_karras_sigmas=True),
    "dpmpp_2m": lambda c: DPMSolverMultistepScheduler(**c, algorithm_type="dpmsolver++", solver_order=2),
    "ddim": lambda c: DDIMScheduler(**c, set_alpha_to_one=False, clip_sample=False),
    "lcm": lambda c: LCMScheduler(**c, set_alpha_to_one=False, clip_sample=False),
}

MASK_BOX = (13, 9, 45, 38)  # x0, y0, x1, y1 (exclusive): 255 inside
LORA_RANK, LORA_ALPHA = 4, 4.0

TINY_RUNS = json.load(open(os.path.join(TINY, "runs.json"), encoding="utf-8"))
PROMPT = TINY_RUNS["run_euler"]["prompt"]
NEGATIVE = TINY_RUNS["run_euler"]["negative_prompt"]


# ---------------------------------------------------------------- inputs

def make_init_png(path):
    rng = np.random.default_rng(20261213)
    y, x = np.mgrid[0:64, 0:64].astype(np.float64)
    r = 40 + 170 * x / 63 + 20 * np.sin(y / 7.0)
    g = 30 + 150 * y / 63 + 25 * np.cos(x / 9.0)
    b = 200 - 120 * (x + y) / 126
    img = np.stack([r, g, b], -1)
    # a disc, a bar and a triangle with hard edges
    disc = (x - 22) ** 2 + (y - 24) ** 2 < 11 ** 2
    img[disc] = [230, 210, 60]
    bar = (x >= 38) & (x < 58) & (y >= 40) & (y < 47)
    img[bar] = [20, 40, 150]
    tri = (y > 48) & (y < 62) & (np.abs(x - 15) < (y - 48) * 0.8)
    img[tri] = [200, 30, 40]
    img += rng.normal(0, 6, img.shape)
    img = np.clip(np.round(img), 0, 255).astype(np.uint8)
    Image.fromarray(img, "RGB").save(path)
    return img


def make_mask_png(path):
    m = np.zeros((64, 64), np.uint8)
    x0, y0, x1, y1 = MASK_BOX
    m[y0:y1, x0:x1] = 255
    Image.fromarray(m, "L").save(path)
    return m


# ---------------------------------------------------------------- random draws

ORIG_RANDN = tu.randn_tensor


class DrawLog:
    """Replaces randn_tensor in every diffusers module that imported it; logs each draw and what it was for."""

    def __init__(self):
        self.draws, self.labels = [], []
        self.patched = []

    def _label(self):
        fns = [(f.function, f.frame) for f in inspect.stack()[2:]]
        names = [n for n, _ in fns]
        loop_i = None
        for n, fr in fns:
            if n == "__call__" and "i" in fr.f_locals and "timesteps" in fr.f_locals:
                loop_i = fr.f_locals["i"]
                break
        if "sample" in names and any("encode" in n or "retrieve_latents" in n for n in names):
            if "prepare_mask_latents" in names:
                return "vae encode sample of masked image"
            return "vae encode sample of init image"
        if names[0] == "step":
            return f"step noise {loop_i}"
        if "prepare_latents" in names:
            return "initial noise"
        return "other: " + "/".join(names[:4])

    def __call__(self, shape, generator=None, device=None, dtype=None, layout=None, **kw):
        out = ORIG_RANDN(shape, generator=generator, device=device, dtype=dtype, layout=layout, **kw)
        self.draws.append(out.detach().clone().float())
        self.labels.append(self._label())
        return out

    def __enter__(self):
        for name, mod in list(sys.modules.items()):
            if name.startswith("diffusers") and getattr(mod, "randn_tensor", None) is ORIG_RANDN:
                setattr(mod, "randn_tensor", self)
                self.patched.append(mod)
        return self

    def __exit__(self, *a):
        for mod in self.patched:
            mod.randn_tensor = ORIG_RANDN


# ---------------------------------------------------------------- models

def load_components():
    base = StableDiffusionPipeline.from_pretrained(MODEL, torch_dtype=torch.float32, safety_checker=None,
                                                   requires_safety_checker=False)
    base.set_progress_bar_config(disable=True)
    return base


def make_scheduler(name):
    return SCHEDULERS[name](dict(SD15_SCHEDULER))


def make_conv_in(base, path):
    g = torch.Generator("cpu").manual_seed(909)
    w4 = base.unet.conv_in.weight.detach().float()
    b = base.unet.conv_in.bias.detach().float()
    extra = torch.randn(w4.shape[0], 5, 3, 3, generator=g) * 0.05
    w = torch.cat([w4, extra], 1).half().float()
    b = b.half().float()
    assert torch.equal(w[:, :4], w4)
    save_file({"conv_in.weight": w.contiguous(), "conv_in.bias": b.contiguous()}, path)
    return w, b


def make_unet9(base, w, b):
    cfg = dict(base.unet.config)
    cfg["in_channels"] = 9
    unet = UNet2DConditionModel.from_config(cfg)
    sd = {k: v for k, v in base.unet.state_dict().items() if not k.startswith("conv_in.")}
    sd["conv_in.weight"], sd["conv_in.bias"] = w, b
    unet.load_state_dict(sd, strict=True)
    return unet.float().eval()


def lora_targets(unet):
    out = []
    for name, mod in unet.named_modules():
        leaf = name.split(".")[-1]
        if ".attentions." in name and (leaf in ("to_q", "to_k", "to_v", "proj_in", "proj_out")
                                       or name.endswith("to_out.0") or name.endswith("ff.net.0.proj")
                                       or name.endswith("ff.net.2")):
            out.append(name)
    return out


def module_of(root, name):
    m = root
    for part in name.split("."):
        m = getattr(m, part)
    return m


def make_lcm_lora(base, path):
    """kohya-style keys with diffusers module names, UNet only (the layout of lcm-lora-sdv1-5)."""
    g = torch.Generator("cpu").manual_seed(4242)
    sd, deltas = {}, {}
    r = LORA_RANK
    for name in lora_targets(base.unet):
        w = module_of(base.unet, name).weight
        out_c, in_c = w.shape[0], w.shape[1]
        k = tuple(w.shape[2:])
        kk = int(np.prod(k)) if k else 1
        down = (torch.randn(r, in_c, *k, generator=g) / math.sqrt(in_c * kk)).half().float()
        up = (torch.randn(out_c, r, *([1] * len(k)), generator=g) * (float(w.std()) + 1e-3) * 2.0).half().float()
        key = "lora_unet_" + name.replace(".", "_")
        sd[key + ".lora_down.weight"] = down.contiguous()
        sd[key + ".lora_up.weight"] = up.contiguous()
        sd[key + ".alpha"] = torch.tensor(LORA_ALPHA)
        deltas[name] = (up.reshape(out_c, r) @ down.reshape(r, -1)).reshape(w.shape) * (LORA_ALPHA / r)
    # stored in fp16 as the published lcm-lora-sdv1-5 is (the values are fp16-exact)
    # one metadata key only: safetensors writes a metadata map in random order, which would make reruns differ
    save_file({k: v.half() for k, v in sd.items()}, path, metadata={"format": "pt"})
    return deltas


# ---------------------------------------------------------------- runs

def decode(pipe, latents):
    im = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
    return (im / 2 + 0.5).clamp(0, 1)


class StepLog:
    def __init__(self):
        self.ts, self.latents = [], None

    def __call__(self, pipe, i, t, kw):
        self.ts.append(float(t))
        self.latents = kw["latents"].detach().clone()
        return {}


def sched_info(s):
    info = {"schedule_timesteps": [float(t) for t in s.timesteps]}
    if hasattr(s, "sigmas") and s.sigmas is not None:
        info["schedule_sigmas"] = [float(x) for x in s.sigmas]
    return info


def call(pipe, sampler, seed, capture_add_noise=True, **kw):
    """Runs pipe with a fresh scheduler and generator; returns (output, draws, labels, steplog, info)."""
    pipe.scheduler = make_scheduler(sampler)
    gen = torch.Generator("cpu").manual_seed(seed)
    steps = StepLog()
    seen = {}
    orig_add_noise = pipe.scheduler.add_noise

    def add_noise(original_samples, noise, timesteps):
        # only the call that makes the starting latents (inpaint also calls it for the per-step blend)
        if "init_latents" not in seen and inspect.stack()[1].function == "prepare_latents":
            seen["init_latents"] = original_samples.detach().clone()
            seen["add_noise_timestep"] = [float(t) for t in timesteps.flatten()]
            seen["begin_index"] = getattr(pipe.scheduler, "begin_index", None)
        return orig_add_noise(original_samples, noise, timesteps)

    pipe.scheduler.add_noise = add_noise
    if isinstance(pipe, StableDiffusionInpaintPipeline):
        enc, pml = pipe._encode_vae_image, pipe.prepare_mask_latents

        def encode_vae_image(image, generator):
            lat = enc(image=image, generator=generator)
            which = "masked" if inspect.stack()[1].function == "prepare_mask_latents" else "init"
            seen[which + "_image_latents"] = lat.detach().clone()
            return lat

        def prepare_mask_latents(*a, **k):
            mask, mil = pml(*a, **k)
            seen["mask_latent"] = mask[:1].detach().clone()
            return mask, mil

        pipe._encode_vae_image, pipe.prepare_mask_latents = encode_vae_image, prepare_mask_latents
    with DrawLog() as log:
        out = pipe(prompt=PROMPT, negative_prompt=NEGATIVE, generator=gen, callback_on_step_end=steps,
                   callback_on_step_end_tensor_inputs=["latents"], **kw)
    info = sched_info(pipe.scheduler)
    info["timesteps"] = steps.ts
    n_sched = len(info["schedule_timesteps"])
    order = getattr(pipe.scheduler, "order", 1)
    info["t_start"] = (n_sched - len(steps.ts)) // order
    info["steps_run"] = len(steps.ts)
    if "begin_index" in seen:
        info["add_noise_timestep"] = seen["add_noise_timestep"]
        info["add_noise_begin_index"] = seen["begin_index"]
        if "schedule_sigmas" in info and seen["begin_index"] is not None:
            info["add_noise_sigma"] = info["schedule_sigmas"][seen["begin_index"]]
    info["init_noise_sigma"] = float(pipe.scheduler.init_noise_sigma)
    info["draws"] = [{"for": l, "shape": list(d.shape)} for l, d in zip(log.labels, log.draws)]
    assert not any(l.startswith("other") for l in log.labels), log.labels
    if isinstance(pipe, StableDiffusionInpaintPipeline):
        del pipe._encode_vae_image, pipe.prepare_mask_latents
        info["starting_latents"] = ("noise * init_noise_sigma" if "init_latents" not in seen
                                    else "add_noise(init_image_latents, noise, timesteps[0])")
        LAST_INPAINT.clear()
        LAST_INPAINT.update(seen)
        return out, log.draws, steps, info, seen.get("init_image_latents")
    info["starting_latents"] = "add_noise(init_latents, noise, timesteps[0])" if "init_latents" in seen else \
        "noise * init_noise_sigma"
    return out, log.draws, steps, info, seen.get("init_latents")


LAST_INPAINT = {}


def main():
    os.makedirs(OUT, exist_ok=True)
    init_u8 = make_init_png(os.path.join(OUT, "init.png"))
    mask_u8 = make_mask_png(os.path.join(OUT, "mask.png"))
    init_pil = Image.open(os.path.join(OUT, "init.png"))
    mask_pil = Image.open(os.path.join(OUT, "mask.png"))
    assert init_pil.mode == "RGB" and mask_pil.mode == "L"
    init_t = torch.from_numpy(init_u8).permute(2, 0, 1)[None].float() / 255
    mask_t = torch.from_numpy(mask_u8)[None, None].float() / 255
    mask_bin = (mask_t >= 0.5).float()

    base = load_components()
    golden = {"init_image": init_t, "mask": mask_t}
    runs = {}
    common = dict(prompt=PROMPT, negative_prompt=NEGATIVE, batch=1, precision="float32 cpu",
                  generator='torch.Generator("cpu").manual_seed(seed)')

    def parts(pipe_cls, unet=None):
        p = pipe_cls(vae=base.vae, text_encoder=base.text_encoder, tokenizer=base.tokenizer,
                     unet=unet if unet is not None else base.unet, scheduler=make_scheduler("euler"),
                     safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        p.set_progress_bar_config(disable=True)
        return p

    def store(name, out_lat, draws, info, init_latents=None, prefix=""):
        golden[f"{name}_{prefix}latents"] = out_lat
        for k, d in enumerate(draws):
            golden[f"{name}_{prefix}draw_{k}"] = d
        if init_latents is not None:
            golden[f"{name}_{prefix}init_latents"] = init_latents

    i2i = parts(StableDiffusionImg2ImgPipeline)
    txt = parts(StableDiffusionPipeline)
    inp4 = parts(StableDiffusionInpaintPipeline)

    # ---- img2img
    i2i_runs = [("i2i_euler", "euler", 10, 0.6, 7.5, 1), ("i2i_euler_a", "euler_a", 8, 0.75, 7.5, 2),
                ("i2i_dpmpp_2m_karras", "dpmpp_2m_karras", 10, 0.55, 7.5, 3), ("i2i_dpmpp_2m", "dpmpp_2m", 7, 0.5, 7.5, 14),
                ("i2i_ddim", "ddim", 10, 0.3, 7.5, 4), ("i2i_lcm", "lcm", 4, 0.5, 1.0, 5),
                ("i2i_strength1", "euler", 6, 1.0, 7.5, 6)]
    for name, sampler, steps, strength, cfg, seed in i2i_runs:
        out, draws, sl, info, il = call(i2i, sampler, seed, image=init_pil, strength=strength,
                                        num_inference_steps=steps, guidance_scale=cfg, output_type="latent")
        lat = out.images
        assert torch.equal(lat, sl.latents)
        store(name, lat, draws, info, il)
        golden[f"{name}_image"] = decode(i2i, lat)
        runs[name] = dict(kind="img2img", pipeline="StableDiffusionImg2ImgPipeline", sampler=sampler, steps=steps,
                          strength=strength, cfg=cfg, seed=seed, image="init.png", **info)
        print(name, info["timesteps"], [d["for"] for d in info["draws"]], flush=True)

    # ---- inpaint, 4-channel UNet
    def composite(name):
        golden[f"{name}_composite"] = mask_bin * golden[f"{name}_image"] + (1 - mask_bin) * init_t
        golden[f"{name}_masked_image_latents"] = LAST_INPAINT["masked_image_latents"]
        if "mask_latent" not in golden:
            golden["mask_latent"] = LAST_INPAINT["mask_latent"]
        if name != "inp4_crop":
            assert torch.equal(LAST_INPAINT["mask_latent"], golden["mask_latent"])

    inp_runs = [("inp4_euler_s1", "euler", 8, 1.0, 7), ("inp4_dpmpp", "dpmpp_2m_karras", 10, 0.75, 8),
                ("inp4_euler_a", "euler_a", 6, 0.9, 9)]
    for name, sampler, steps, strength, seed in inp_runs:
        out, draws, sl, info, il = call(inp4, sampler, seed, image=init_pil, mask_image=mask_pil, height=64, width=64,
                                        strength=strength, num_inference_steps=steps, guidance_scale=7.5,
                                        output_type="latent")
        lat = out.images
        store(name, lat, draws, info, il)
        golden[f"{name}_image"] = decode(inp4, lat)
        composite(name)
        runs[name] = dict(kind="inpaint", unet_in_channels=4, pipeline="StableDiffusionInpaintPipeline",
                          sampler=sampler, steps=steps, strength=strength, cfg=7.5, seed=seed, image="init.png",
                          mask="mask.png", **info)
        print(name, info["timesteps"], [d["for"] for d in info["draws"]], flush=True)

    # inpaint only masked (padding_mask_crop); output_type="np" cannot be combined with padding_mask_crop in
    # diffusers 0.35.2 (apply_overlay resizes with resize_mode="crop", PIL only), so the PIL output is stored /255
    name = "inp4_crop"
    crop = inp4.mask_processor.get_crop_region(mask_pil, 64, 64, pad=8)
    out, draws, sl, info, il = call(inp4, "euler", 12, image=init_pil, mask_image=mask_pil, height=64, width=64,
                                    strength=0.75, num_inference_steps=6, guidance_scale=7.5, padding_mask_crop=8,
                                    output_type="pil")
    store(name, sl.latents, draws, info, il)
    golden[f"{name}_image"] = torch.from_numpy(np.array(out.images[0])).permute(2, 0, 1)[None].float() / 255
    golden[f"{name}_crop_mask_latent"] = LAST_INPAINT["mask_latent"]
    golden[f"{name}_crop_init"] = (inp4.image_processor.preprocess(init_pil, height=64, width=64, crops_coords=crop,
                                                                   resize_mode="fill") / 2 + 0.5)
    golden[f"{name}_crop_mask"] = inp4.mask_processor.preprocess(mask_pil, height=64, width=64, crops_coords=crop,
                                                                 resize_mode="fill")
    composite(name)
    runs[name] = dict(kind="inpaint", unet_in_channels=4, pipeline="StableDiffusionInpaintPipeline", sampler="euler",
                      steps=6, strength=0.75, cfg=7.5, seed=12, image="init.png", mask="mask.png",
                      padding_mask_crop=8, crop_box_x1y1x2y2=list(crop), **info)
    print(name, crop, info["timesteps"], [d["for"] for d in info["draws"]], flush=True)

    # ---- inpaint, 9-channel UNet
    w9, b9 = make_conv_in(base, os.path.join(OUT, "inpaint_conv_in.safetensors"))
    unet9 = make_unet9(base, w9, b9)
    inp9 = parts(StableDiffusionInpaintPipeline, unet9)
    for name, sampler, steps, strength, seed in [("inp9_euler_s1", "euler", 8, 1.0, 10), ("inp9_ddim", "ddim", 10, 0.8, 11)]:
        out, draws, sl, info, il = call(inp9, sampler, seed, image=init_pil, mask_image=mask_pil, height=64, width=64,
                                        strength=strength, num_inference_steps=steps, guidance_scale=7.5,
                                        output_type="latent")
        lat = out.images
        store(name, lat, draws, info, il)
        golden[f"{name}_image"] = decode(inp9, lat)
        composite(name)
        runs[name] = dict(kind="inpaint", unet_in_channels=9, pipeline="StableDiffusionInpaintPipeline",
                          sampler=sampler, steps=steps, strength=strength, cfg=7.5, seed=seed, image="init.png",
                          mask="mask.png", conv_in="inpaint_conv_in.safetensors", **info)
        print(name, info["timesteps"], [d["for"] for d in info["draws"]], flush=True)

    # ---- hires fix (A1111 semantics)
    hr_runs = [("hr_latent", "latent", "euler", 13, 6, 6, 0.6), ("hr_nearest", "latent-nearest", "dpmpp_2m_karras", 15, 6, 8, 0.5),
               ("hr_lanczos", "lanczos", "euler", 16, 6, 6, 0.55)]
    for name, upscaler, sampler, seed, steps1, steps2, denoise in hr_runs:
        out, draws1, sl1, info1, _ = call(txt, sampler, seed, height=64, width=64, num_inference_steps=steps1,
                                          guidance_scale=7.0, output_type="latent")
        first = out.images
        store(name, first, draws1, info1, prefix="first_")
        if upscaler == "latent":
            up = torch.nn.functional.interpolate(first, size=(12, 12), mode="bilinear", antialias=False)
            image_arg, upscaled = up, up
        elif upscaler == "latent-nearest":
            up = torch.nn.functional.interpolate(first, size=(12, 12), mode="nearest")
            image_arg, upscaled = up, up
        else:
            x = txt.vae.decode(first / txt.vae.config.scaling_factor).sample
            x = (torch.clamp(x / 2 + 0.5, 0, 1) * 255).permute(0, 2, 3, 1).numpy()[0].astype(np.uint8)
            pil = Image.fromarray(x, "RGB").resize((96, 96), Image.LANCZOS)
            image_arg = pil
            upscaled = torch.from_numpy(np.array(pil)).permute(2, 0, 1)[None].float() / 255
        golden[f"{name}_upscaled"] = upscaled
        out, draws2, sl2, info2, il = call(i2i, sampler, seed, image=image_arg, strength=denoise,
                                           num_inference_steps=steps2, guidance_scale=7.0, output_type="latent")
        lat = out.images
        if upscaler != "lanczos":
            # the latents input path: used as init latents as they are (no encode, no scaling)
            assert torch.equal(il, upscaled), "img2img did not take the latents as they are"
            assert not any("vae" in d["for"] for d in info2["draws"])
        store(name, lat, draws2, info2, il)
        golden[f"{name}_image"] = decode(i2i, lat)
        assert golden[f"{name}_image"].shape == (1, 3, 96, 96)
        runs[name] = dict(kind="hires", upscaler=upscaler, sampler=sampler, seed=seed, cfg=7.0,
                          first_pass=dict(pipeline="StableDiffusionPipeline", width=64, height=64, steps=steps1, **info1),
                          hires_size=[96, 96], hires_steps=steps2, denoising_strength=denoise,
                          second_pass=dict(pipeline="StableDiffusionImg2ImgPipeline", **info2))
        print(name, info1["timesteps"], info2["timesteps"], [d["for"] for d in info2["draws"]], flush=True)

    # ---- LCM-LoRA
    deltas = make_lcm_lora(base, os.path.join(OUT, "lcm_lora.safetensors"))
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator("cpu").manual_seed(1))
    ctx = torch.randn(2, 77, 64, generator=torch.Generator("cpu").manual_seed(2))
    tt = torch.tensor([500, 500])
    plain = base.unet(x, tt, encoder_hidden_states=ctx).sample
    merged_unet = copy.deepcopy(base.unet)
    for n, d in deltas.items():
        module_of(merged_unet, n).weight += d
    merged = merged_unet(x, tt, encoder_hidden_states=ctx).sample
    del merged_unet
    lora_txt = StableDiffusionPipeline(vae=base.vae, text_encoder=base.text_encoder, tokenizer=base.tokenizer,
                                       unet=copy.deepcopy(base.unet), scheduler=make_scheduler("lcm"),
                                       safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    lora_txt.set_progress_bar_config(disable=True)
    lora_txt.load_lora_weights(OUT, weight_name="lcm_lora.safetensors", adapter_name="lcm")
    lora_txt.set_adapters(["lcm"], [1.0])
    got = lora_txt.unet(x, tt, encoder_hidden_states=ctx).sample
    rel_merge = float((got - merged).norm() / merged.norm())
    rel_plain = float((got - plain).norm() / plain.norm())
    n_lora_layers = sum(1 for _, m in lora_txt.unet.named_modules() if hasattr(m, "lora_A") and "lcm" in m.lora_A)
    print("lcm lora: rel vs merged", rel_merge, "rel vs no-LoRA", rel_plain, "layers", n_lora_layers, "of", len(deltas))
    assert n_lora_layers == len(deltas), "diffusers did not adapt every module of the LoRA"
    assert rel_merge < 1e-4 and rel_plain > 0.05
    golden["lcm_lora_unet_x"], golden["lcm_lora_unet_ctx"], golden["lcm_lora_unet_eps_t500"] = x, ctx, got
    lora_i2i = StableDiffusionImg2ImgPipeline(**lora_txt.components)
    lora_i2i.set_progress_bar_config(disable=True)
    lora_info = dict(file="lcm_lora.safetensors", unet_weight=1.0, rank=LORA_RANK, alpha=LORA_ALPHA,
                     modules=len(deltas), check_rel_vs_merged=rel_merge, check_rel_vs_no_lora_unet=rel_plain)

    name = "lcm_lora_txt2img"
    out, draws, sl, info, _ = call(lora_txt, "lcm", 17, height=64, width=64, num_inference_steps=4,
                                   guidance_scale=1.0, output_type="latent")
    store(name, out.images, draws, info)
    golden[f"{name}_image"] = decode(lora_txt, out.images)
    # the same run without the LoRA, to show the LoRA matters
    out0, *_ = call(txt, "lcm", 17, height=64, width=64, num_inference_steps=4, guidance_scale=1.0,
                    output_type="latent")
    rel_run = float((out.images - out0.images).norm() / out0.images.norm())
    print(name, info["timesteps"], [d["for"] for d in info["draws"]], "rel vs no-LoRA", rel_run, flush=True)
    assert rel_run > 0.05
    runs[name] = dict(kind="txt2img", pipeline="StableDiffusionPipeline", sampler="lcm", steps=4, cfg=1.0, seed=17,
                      width=64, height=64, lora=lora_info, latents_rel_diff_vs_no_lora=rel_run, **info)

    name = "lcm_lora_i2i"
    out, draws, sl, info, il = call(lora_i2i, "lcm", 18, image=init_pil, strength=0.75, num_inference_steps=4,
                                    guidance_scale=1.0, output_type="latent")
    store(name, out.images, draws, info, il)
    golden[f"{name}_image"] = decode(lora_i2i, out.images)
    runs[name] = dict(kind="img2img", pipeline="StableDiffusionImg2ImgPipeline", sampler="lcm", steps=4,
                      strength=0.75, cfg=1.0, seed=18, image="init.png", lora=lora_info, **info)
    print(name, info["timesteps"], [d["for"] for d in info["draws"]], flush=True)

    for r in runs.values():
        for k, v in common.items():
            r.setdefault(k, v)
    meta = {"_meta": {"torch": torch.__version__, "diffusers": diffusers.__version__,
                      "script": "tools/goldens/make_img2img_goldens.py", "model": "tests/fixtures/sd15-tiny/model",
                      "mask_box_x0y0x1y1_exclusive": list(MASK_BOX)}}
    with open(os.path.join(OUT, "runs.json"), "w", encoding="utf-8") as f:
        json.dump({**meta, **runs}, f, ensure_ascii=False, indent=1)
    save_file({k: v.detach().float().contiguous() for k, v in golden.items()}, os.path.join(OUT, "golden.safetensors"))
    print("wrote", OUT)


if __name__ == "__main__":
    main()
