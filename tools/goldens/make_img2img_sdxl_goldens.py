#!/usr/bin/env python3
"""Goldens for lorafuse's SDXL img2img, inpainting (4- and 9-channel UNet) and hires fix, computed with
diffusers itself on the tiny SDXL fixture (tests/fixtures/sdxl-tiny). The SDXL counterpart of
make_img2img_goldens.py (same conventions, same inputs: tests/fixtures/img2img/init.png and mask.png).

Pinned (as generated): python 3.11, torch 2.15.0, diffusers==0.35.2, transformers==5.25.0,
peft==0.21.2, safetensors 0.8.0, numpy 2.4.6, pillow 13.0.0 (float32, CPU, deterministic algorithms).
Rerun (from the repository root):
    python3 -m venv /tmp/venv-taesd
    /tmp/venv-taesd/bin/pip install torch==2.15.0 diffusers==0.35.2 transformers==5.25.0 peft==0.21.2 \
        safetensors==0.8.0 numpy==2.4.6 pillow==13.0.0
    /tmp/venv-taesd/bin/python tools/goldens/make_img2img_sdxl_goldens.py

Written to tests/fixtures/img2img-sdxl/ (see its README.md):
  inpaint_conv_in.safetensors        conv_in.weight [32,9,3,3] / conv_in.bias [32] of the 9-channel UNet
  golden.safetensors, runs.json      outputs, every random draw in order, and the settings of each run

First the loading is checked: sdxl-tiny's run_euler and run_dpmpp_2m_karras (pipe_noise as latents) must
reproduce its golden latents. Every run: batch 1, 64x64, the run_euler prompt / negative prompt of sdxl-tiny,
cfg 6, generator = torch.Generator("cpu").manual_seed(seed), float32 CPU, requires_aesthetics_score False,
default time ids (original = target = image size, crop (0, 0)). Every call of diffusers' randn_tensor
(pipelines, VAE DiagonalGaussianDistribution.sample, schedulers) is recorded in order.
"""
import inspect
import json
import os
import sys

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import CLIPTokenizer

import diffusers
import diffusers.utils.torch_utils as tu
from diffusers import (DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler,
                       StableDiffusionXLImg2ImgPipeline, StableDiffusionXLInpaintPipeline,
                       StableDiffusionXLPipeline, UNet2DConditionModel)

torch.set_grad_enabled(False)
torch.use_deterministic_algorithms(True)

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
TINY = os.path.join(ROOT, "tests", "fixtures", "sdxl-tiny")
MODEL = os.path.join(TINY, "model")
SD1_DIR = os.path.join(ROOT, "tests", "fixtures", "img2img")  # init.png, mask.png (shared, not copied)
OUT = os.path.join(ROOT, "tests", "fixtures", "img2img-sdxl")

# exactly the scheduler constructions of the sdxl-tiny goldens (tools/make_sdxl_vpred_goldens.py BASE +
# epsilon / leading; the constructors of make_fixtures.py)
SDXL_SCHEDULER = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                      steps_offset=1, prediction_type="epsilon", timestep_spacing="leading")
SCHEDULERS = {
    "euler": lambda c: EulerDiscreteScheduler(**c),
    "dpmpp_2m_karras": lambda c: DPMSolverMultistepScheduler(**c, algorithm_type="dpmsolver++", solver_order=2,
                                                             use_karras_sigmas=True, final_sigmas_type="zero"),
    "ddim": lambda c: DDIMScheduler(**c, set_alpha_to_one=False, clip_sample=False),
}

TINY_RUNS = json.load(open(os.path.join(TINY, "runs.json"), encoding="utf-8"))
PROMPT = TINY_RUNS["run_euler"]["prompt"]
NEGATIVE = TINY_RUNS["run_euler"]["negative_prompt"]
CFG = 6.0
assert TINY_RUNS["run_euler"]["cfg"] == CFG


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

def load_base():
    # as tools/make_sdxl_vpred_goldens.py: tokenizer_2/ holds only its config; build it from tokenizer/'s
    # files with OpenCLIP's "!" padding (the fixture README's text-encoder-2 caveat concerns from_single_file;
    # the diffusers folder loads text_encoder_2 correctly)
    tok_dir = os.path.join(MODEL, "tokenizer")
    tok2 = CLIPTokenizer(os.path.join(tok_dir, "vocab.json"), os.path.join(tok_dir, "merges.txt"), pad_token="!",
                         model_max_length=77)
    pipe = StableDiffusionXLPipeline.from_pretrained(MODEL, tokenizer_2=tok2, torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def make_scheduler(name):
    return SCHEDULERS[name](dict(SDXL_SCHEDULER))


def check_loading(base):
    """sdxl-tiny's run_euler / run_dpmpp_2m_karras: pipe_noise as latents, size_cond as recorded."""
    gin = load_file(os.path.join(TINY, "golden.safetensors"))
    res = {}
    for name in ("run_euler", "run_dpmpp_2m_karras"):
        r = TINY_RUNS[name]
        sc = r["size_cond"]
        base.scheduler = make_scheduler(r["sampler"])
        lat = base(prompt=r["prompt"], negative_prompt=r["negative_prompt"], num_inference_steps=r["steps"],
                   guidance_scale=r["cfg"], latents=gin["pipe_noise"].clone(), height=64, width=64,
                   original_size=(sc[0], sc[1]), crops_coords_top_left=(sc[2], sc[3]), target_size=(sc[4], sc[5]),
                   output_type="latent").images
        want = gin[f"{name}_latents"]
        rel = float((lat - want).norm() / want.norm())
        mx = float((lat - want).abs().max())
        assert [float(t) for t in base.scheduler.timesteps] == [float(t) for t in r["timesteps"]], name
        print(f"{name} reproduced: rel L2 {rel:.2e}, max abs {mx:.2e}", flush=True)
        assert rel < 1e-6, f"loading does not reproduce {name}: rel L2 {rel:.2e}"
        res[name] = dict(rel_l2=rel, max_abs=mx)
    return res


def make_conv_in(base, path):
    g = torch.Generator("cpu").manual_seed(909)
    w4 = base.unet.conv_in.weight.detach().float()
    b = base.unet.conv_in.bias.detach().float()
    extra = torch.randn(w4.shape[0], 5, 3, 3, generator=g) * 0.05
    w = torch.cat([w4, extra], 1).half().float()
    b = b.half().float()
    assert torch.equal(w[:, :4], w4) and torch.equal(b, base.unet.conv_in.bias.float())
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


# ---------------------------------------------------------------- runs

def decode(pipe, latents):
    im = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
    return (im / 2 + 0.5).clamp(0, 1)


class StepLog:
    def __init__(self):
        self.ts, self.latents, self.add_time_ids = [], None, None

    def __call__(self, pipe, i, t, kw):
        self.ts.append(float(t))
        self.latents = kw["latents"].detach().clone()
        self.add_time_ids = kw["add_time_ids"].detach().clone()
        return {}


def sched_info(s):
    info = {"schedule_timesteps": [float(t) for t in s.timesteps]}
    if hasattr(s, "sigmas") and s.sigmas is not None:
        info["schedule_sigmas"] = [float(x) for x in s.sigmas]
    return info


LAST_INPAINT = {}


def call(pipe, sampler, seed, **kw):
    """Runs pipe with a fresh scheduler and generator; returns (output, draws, steplog, info, init latents)."""
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
    is_inpaint = isinstance(pipe, StableDiffusionXLInpaintPipeline)
    if is_inpaint:
        enc, pml = pipe._encode_vae_image, pipe.prepare_mask_latents

        def encode_vae_image(image, generator):
            lat = enc(image=image, generator=generator)
            which = "masked" if inspect.stack()[1].function == "prepare_mask_latents" else "init"
            seen[which + "_image_latents"] = lat.detach().clone()
            return lat

        def prepare_mask_latents(*a, **k):
            mask, mil = pml(*a, **k)
            seen["mask_latent"] = mask[:1].detach().clone()
            seen["masked_image_latents"] = mil[:1].detach().clone()
            return mask, mil

        pipe._encode_vae_image, pipe.prepare_mask_latents = encode_vae_image, prepare_mask_latents
    try:
        with DrawLog() as log:
            out = pipe(prompt=PROMPT, negative_prompt=NEGATIVE, generator=gen, guidance_scale=CFG,
                       callback_on_step_end=steps, callback_on_step_end_tensor_inputs=["latents", "add_time_ids"],
                       **kw)
    finally:
        if is_inpaint:
            del pipe._encode_vae_image, pipe.prepare_mask_latents
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
    # [uncond, cond] rows as fed to the UNet (CFG batch order: negative first)
    info["add_time_ids"] = [[float(v) for v in row] for row in steps.add_time_ids]
    info["draws"] = [{"for": l, "shape": list(d.shape)} for l, d in zip(log.labels, log.draws)]
    assert not any(l.startswith("other") for l in log.labels), log.labels
    if is_inpaint:
        info["starting_latents"] = ("noise * init_noise_sigma" if "init_latents" not in seen
                                    else "add_noise(init_image_latents, noise, timesteps[0])")
        LAST_INPAINT.clear()
        LAST_INPAINT.update(seen)
        return out, log.draws, steps, info, seen.get("init_image_latents")
    info["starting_latents"] = "add_noise(init_latents, noise, timesteps[0])" if "init_latents" in seen else \
        "noise * init_noise_sigma"
    return out, log.draws, steps, info, seen.get("init_latents")


def main():
    os.makedirs(OUT, exist_ok=True)
    init_pil = Image.open(os.path.join(SD1_DIR, "init.png"))
    mask_pil = Image.open(os.path.join(SD1_DIR, "mask.png"))
    assert init_pil.mode == "RGB" and mask_pil.mode == "L" and init_pil.size == mask_pil.size == (64, 64)
    init_t = torch.from_numpy(np.array(init_pil)).permute(2, 0, 1)[None].float() / 255
    mask_t = torch.from_numpy(np.array(mask_pil))[None, None].float() / 255
    mask_bin = (mask_t >= 0.5).float()

    base = load_base()
    check = check_loading(base)
    golden = {"init_image": init_t, "mask": mask_t}
    runs = {}
    common = dict(prompt=PROMPT, negative_prompt=NEGATIVE, cfg=CFG, batch=1, precision="float32 cpu",
                  generator='torch.Generator("cpu").manual_seed(seed)', requires_aesthetics_score=False)

    def parts(pipe_cls, unet=None):
        c = dict(vae=base.vae, text_encoder=base.text_encoder, text_encoder_2=base.text_encoder_2,
                 tokenizer=base.tokenizer, tokenizer_2=base.tokenizer_2,
                 unet=unet if unet is not None else base.unet, scheduler=make_scheduler("euler"),
                 force_zeros_for_empty_prompt=base.config.force_zeros_for_empty_prompt)
        if pipe_cls is not StableDiffusionXLPipeline:
            c["requires_aesthetics_score"] = False
        p = pipe_cls(**c)
        p.set_progress_bar_config(disable=True)
        if pipe_cls is not StableDiffusionXLPipeline:
            assert p.config.requires_aesthetics_score is False
        return p

    def store(name, out_lat, draws, init_latents=None, prefix=""):
        golden[f"{name}_{prefix}latents"] = out_lat
        for k, d in enumerate(draws):
            golden[f"{name}_{prefix}draw_{k}"] = d
        if init_latents is not None:
            golden[f"{name}_{prefix}init_latents"] = init_latents

    def check_time_ids(info, size):
        want = [float(size[0]), float(size[1]), 0.0, 0.0, float(size[0]), float(size[1])]
        assert info["add_time_ids"] == [want, want], info["add_time_ids"]

    i2i = parts(StableDiffusionXLImg2ImgPipeline)
    txt = parts(StableDiffusionXLPipeline)
    inp4 = parts(StableDiffusionXLInpaintPipeline)

    # ---- img2img
    for name, sampler, steps, strength, seed in [("xl_i2i_euler", "euler", 10, 0.6, 21),
                                                 ("xl_i2i_dpmpp_2m_karras", "dpmpp_2m_karras", 10, 0.55, 22)]:
        out, draws, sl, info, il = call(i2i, sampler, seed, image=init_pil, strength=strength,
                                        num_inference_steps=steps, output_type="latent")
        lat = out.images
        assert torch.equal(lat, sl.latents)
        check_time_ids(info, (64, 64))
        store(name, lat, draws, il)
        golden[f"{name}_image"] = decode(i2i, lat)
        runs[name] = dict(kind="img2img", pipeline="StableDiffusionXLImg2ImgPipeline", sampler=sampler, steps=steps,
                          strength=strength, seed=seed, width=64, height=64, image="../img2img/init.png", **info)
        print(name, info["timesteps"], [d["for"] for d in info["draws"]], flush=True)

    # ---- inpaint
    def composite(name):
        golden[f"{name}_composite"] = mask_bin * golden[f"{name}_image"] + (1 - mask_bin) * init_t
        golden[f"{name}_masked_image_latents"] = LAST_INPAINT["masked_image_latents"]
        if "mask_latent" not in golden:
            golden["mask_latent"] = LAST_INPAINT["mask_latent"]
        assert torch.equal(LAST_INPAINT["mask_latent"], golden["mask_latent"])

    w9, b9 = make_conv_in(base, os.path.join(OUT, "inpaint_conv_in.safetensors"))
    inp9 = parts(StableDiffusionXLInpaintPipeline, make_unet9(base, w9, b9))
    inp_runs = [("xl_inp4_euler_s1", inp4, 4, "euler", 8, 1.0, 23), ("xl_inp4_ddim", inp4, 4, "ddim", 10, 0.8, 24),
                ("xl_inp9_euler", inp9, 9, "euler", 8, 1.0, 25)]
    for name, pipe, ch, sampler, steps, strength, seed in inp_runs:
        out, draws, sl, info, il = call(pipe, sampler, seed, image=init_pil, mask_image=mask_pil, height=64, width=64,
                                        strength=strength, num_inference_steps=steps, output_type="latent")
        lat = out.images
        assert torch.equal(lat, sl.latents)
        check_time_ids(info, (64, 64))
        store(name, lat, draws, il)
        golden[f"{name}_image"] = decode(pipe, lat)
        composite(name)
        r = dict(kind="inpaint", unet_in_channels=ch, pipeline="StableDiffusionXLInpaintPipeline", sampler=sampler,
                 steps=steps, strength=strength, seed=seed, width=64, height=64, image="../img2img/init.png",
                 mask="../img2img/mask.png")
        if ch == 9:
            r["conv_in"] = "inpaint_conv_in.safetensors"
        runs[name] = dict(r, **info)
        print(name, info["timesteps"], [d["for"] for d in info["draws"]], flush=True)

    # ---- hires fix (A1111 semantics, "Latent" upscaler)
    name, seed, steps1, steps2, denoise = "xl_hr_latent", 26, 6, 6, 0.6
    out, draws1, sl1, info1, _ = call(txt, "euler", seed, height=64, width=64, num_inference_steps=steps1,
                                      output_type="latent")
    first = out.images
    check_time_ids(info1, (64, 64))
    store(name, first, draws1, prefix="first_")
    up = torch.nn.functional.interpolate(first, size=(12, 12), mode="bilinear", antialias=False)
    golden[f"{name}_upscaled"] = up
    out, draws2, sl2, info2, il = call(i2i, "euler", seed, image=up, strength=denoise, num_inference_steps=steps2,
                                       original_size=(96, 96), target_size=(96, 96), output_type="latent")
    lat = out.images
    # the latents input path: used as init latents as they are (no encode, no x0.13025, no draw)
    assert torch.equal(il, up), "img2img did not take the latents as they are"
    assert not any("vae" in d["for"] for d in info2["draws"])
    check_time_ids(info2, (96, 96))
    store(name, lat, draws2, il)
    golden[f"{name}_image"] = decode(i2i, lat)
    assert golden[f"{name}_image"].shape == (1, 3, 96, 96)
    runs[name] = dict(kind="hires", upscaler="latent", sampler="euler", seed=seed,
                      first_pass=dict(pipeline="StableDiffusionXLPipeline", width=64, height=64, steps=steps1, **info1),
                      upscale='F.interpolate(latents, size=(12, 12), mode="bilinear", antialias=False)',
                      hires_size=[96, 96], hires_steps=steps2, denoising_strength=denoise,
                      second_pass=dict(pipeline="StableDiffusionXLImg2ImgPipeline", original_size=[96, 96],
                                       target_size=[96, 96], **info2))
    print(name, info1["timesteps"], info2["timesteps"], [d["for"] for d in info2["draws"]], flush=True)

    for r in runs.values():
        for k, v in common.items():
            r.setdefault(k, v)
    meta = {"_meta": {"torch": torch.__version__, "diffusers": diffusers.__version__,
                      "script": "tools/goldens/make_img2img_sdxl_goldens.py", "model": "tests/fixtures/sdxl-tiny/model",
                      "vae_scaling_factor": base.vae.config.scaling_factor,
                      "loading_check_vs_sdxl_tiny_golden": check}}
    with open(os.path.join(OUT, "runs.json"), "w", encoding="utf-8") as f:
        json.dump({**meta, **runs}, f, ensure_ascii=False, indent=1)
    save_file({k: v.detach().float().contiguous() for k, v in golden.items()}, os.path.join(OUT, "golden.safetensors"))
    print("wrote", OUT)


if __name__ == "__main__":
    main()
