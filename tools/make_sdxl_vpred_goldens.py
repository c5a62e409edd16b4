#!/usr/bin/env python3
"""Goldens for v-prediction, zero terminal SNR and CFG rescale on the sdxl-tiny fixture.

diffusers' StableDiffusionXLPipeline (float32, CPU) runs the fixture model of
tests/fixtures/sdxl-tiny/model with its scheduler switched to `prediction_type="v_prediction"`,
`rescale_betas_zero_snr=True` and `timestep_spacing="trailing"` (what diffusers recommends with
zero SNR), with and without `guidance_rescale`. The model is epsilon-trained random weights; that
does not matter, the goldens check the arithmetic.

Conventions are those of the fixture's original runs (the sd15/sdxl fixture script): `latents=` is
the fixture's unit-normal `pipe_noise` (the pipeline itself multiplies it by the scheduler's
`init_noise_sigma`), and ancestral samplers draw their step noise from a seeded generator that
is recorded as `<run>_step_noise` [steps, 1, 4, 8, 8] so an engine can replay it.

Also written: zero-SNR scheduler cases (timesteps, sigmas, init_noise_sigma, and the final x of a
deterministic fake-model sampling loop run through each scheduler's own step()) for every
sampler lorafuse has.

Needs: pip install "diffusers==0.42.*" torch transformers safetensors
Usage: tools/make_sdxl_vpred_goldens.py [--fixture tests/fixtures/sdxl-tiny]
Writes: <fixture>/golden_vpred.safetensors, <fixture>/runs_vpred.json,
        <fixture>/scheduler_cases_vpred.json
"""
import argparse
import json
import math
import os

import torch
from safetensors.torch import load_file, save_file

import diffusers
from diffusers import (DDIMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler,
                       EulerDiscreteScheduler, LCMScheduler, StableDiffusionXLPipeline)
from transformers import CLIPTokenizer

torch.set_grad_enabled(False)
torch.use_deterministic_algorithms(True)

# The fixture's scheduler (SDXL's values), then what v-pred zero-SNR models (NoobAI v-pred) ship.
BASE = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
            steps_offset=1)
VPRED_ZSNR = dict(prediction_type="v_prediction", rescale_betas_zero_snr=True, timestep_spacing="trailing")

SCHEDULERS = {
    "euler": lambda c: EulerDiscreteScheduler(**c),
    "euler_a": lambda c: EulerAncestralDiscreteScheduler(**c),
    "dpmpp_2m": lambda c: DPMSolverMultistepScheduler(**c, algorithm_type="dpmsolver++", solver_order=2),
    "dpmpp_2m_karras": lambda c: DPMSolverMultistepScheduler(**c, algorithm_type="dpmsolver++", solver_order=2,
                                                             use_karras_sigmas=True),
    "ddim": lambda c: DDIMScheduler(**c, set_alpha_to_one=False, clip_sample=False),
    "lcm": lambda c: LCMScheduler(**c, set_alpha_to_one=False, clip_sample=False),
}

# (run name, sampler, scheduler overrides, guidance_rescale)
RUNS = [
    # v-prediction alone (the `v_pred` marker without `ztsnr`): the fixture's leading spacing.
    ("run_vpred_euler", "euler", dict(prediction_type="v_prediction", timestep_spacing="leading"), 0.0),
    ("run_vpred_ztsnr_euler", "euler", VPRED_ZSNR, 0.0),
    ("run_vpred_ztsnr_euler_rescale", "euler", VPRED_ZSNR, 0.7),
    ("run_vpred_ztsnr_euler_a_rescale", "euler_a", VPRED_ZSNR, 0.7),
    ("run_vpred_ztsnr_dpmpp_2m_rescale", "dpmpp_2m", VPRED_ZSNR, 0.7),
    # DDIM keeps alphas_cumprod[-1] = 0 (no 2**-24 stand-in): a different code path at t = 999.
    ("run_vpred_ztsnr_ddim_rescale", "ddim", VPRED_ZSNR, 0.5),
]


class NoiseFeed:
    """Stands in for diffusers' randn_tensor in the schedulers, so step noise is known."""

    def __init__(self, g):
        self.g, self.drawn = g, []

    def __call__(self, shape, generator=None, device=None, dtype=None, layout=None):
        n = torch.randn(shape, generator=self.g, dtype=torch.float32)
        self.drawn.append(n.clone())
        return n.to(dtype or torch.float32)


def load_pipeline(model_dir):
    # tokenizer_2/ holds only its config (the vocabulary is CLIP's, as in tokenizer/); build it
    # from tokenizer/'s files with OpenCLIP's "!" padding, as the fixture README says.
    tok_dir = os.path.join(model_dir, "tokenizer")
    tok2 = CLIPTokenizer(os.path.join(tok_dir, "vocab.json"), os.path.join(tok_dir, "merges.txt"), pad_token="!",
                         model_max_length=77)
    pipe = StableDiffusionXLPipeline.from_pretrained(model_dir, tokenizer_2=tok2, torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run(pipe, sampler, sched_cfg, run_cfg, noise, guidance_rescale, step_seed):
    import diffusers.schedulers.scheduling_euler_ancestral_discrete as m_ea
    import diffusers.schedulers.scheduling_lcm as m_lcm
    pipe.scheduler = SCHEDULERS[sampler](sched_cfg)
    feed = NoiseFeed(torch.Generator("cpu").manual_seed(step_seed))
    saved = (m_ea.randn_tensor, m_lcm.randn_tensor)
    m_ea.randn_tensor = m_lcm.randn_tensor = feed
    sc = run_cfg["size_cond"]
    try:
        out = pipe(prompt=run_cfg["prompt"], negative_prompt=run_cfg["negative_prompt"],
                   num_inference_steps=run_cfg["steps"], guidance_scale=run_cfg["cfg"],
                   guidance_rescale=guidance_rescale, latents=noise.clone(),
                   height=noise.shape[2] * 8, width=noise.shape[3] * 8,
                   original_size=(sc[0], sc[1]), crops_coords_top_left=(sc[2], sc[3]), target_size=(sc[4], sc[5]),
                   output_type="latent")
        latents = out.images
    finally:
        m_ea.randn_tensor, m_lcm.randn_tensor = saved
    image = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
    image = (image / 2 + 0.5).clamp(0, 1)
    step_noise = torch.stack(feed.drawn) if feed.drawn else None
    return latents, image, step_noise, pipe.scheduler


# ---------------------------------------------------------------- scheduler cases

N = 48


def fake_model(x_in, t):
    """A fixed linear function of the UNet input and the timestep (the same as tests/schedulers.rs)."""
    j = torch.arange(N, dtype=torch.float64)
    return ((0.35 + t / 2500.0) * x_in.double() + 0.4 * torch.sin(j * 0.7) * (1.0 - t / 1200.0)).float()


def det_noise(k):
    """Deterministic unit-ish noise #k (k = 0: the initial noise), reproducible without an RNG."""
    j = torch.arange(N, dtype=torch.float64)
    return (1.3 * torch.sin(j * 1.37 + 0.71 * k + 0.3) * torch.cos(j * 0.29 + 1.1 * k)).float()


def scheduler_case(sampler, cfg, steps):
    import diffusers.schedulers.scheduling_euler_ancestral_discrete as m_ea
    import diffusers.schedulers.scheduling_lcm as m_lcm
    s = SCHEDULERS[sampler](cfg)
    s.set_timesteps(steps)
    drawn = [0]

    def feed(shape, generator=None, device=None, dtype=None, layout=None):
        drawn[0] += 1
        return det_noise(drawn[0]).reshape(shape).to(dtype or torch.float32)

    saved = (m_ea.randn_tensor, m_lcm.randn_tensor)
    m_ea.randn_tensor = m_lcm.randn_tensor = feed
    try:
        x = det_noise(0) * s.init_noise_sigma
        for t in s.timesteps:
            x_in = s.scale_model_input(x, t)
            x = s.step(fake_model(x_in, float(t)), t, x).prev_sample
    finally:
        m_ea.randn_tensor, m_lcm.randn_tensor = saved
    e = {"timesteps": [float(t) for t in s.timesteps], "init_noise_sigma": float(s.init_noise_sigma),
         "final": [float(v) for v in x], "noise_draws": drawn[0]}
    if hasattr(s, "sigmas") and sampler not in ("ddim", "lcm"):
        e["sigmas"] = [float(v) for v in s.sigmas]
    return e


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--fixture", default=os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures",
                                                      "sdxl-tiny"))
    args = ap.parse_args()
    fix = os.path.abspath(args.fixture)
    with open(os.path.join(fix, "runs.json"), encoding="utf-8") as f:
        base_runs = json.load(f)
    golden_in = load_file(os.path.join(fix, "golden.safetensors"))
    noise = golden_in["pipe_noise"]
    pipe = load_pipeline(os.path.join(fix, "model"))

    # The loading must reproduce the fixture's own euler run before anything new is trusted.
    ref = base_runs["run_euler"]
    lat, _, _, _ = run(pipe, "euler", dict(BASE, prediction_type="epsilon", timestep_spacing="leading"), ref, noise,
                       0.0, 99)
    want = golden_in["run_euler_latents"]
    rel = float((lat - want).norm() / want.norm())
    assert rel < 1e-5, f"loading does not reproduce run_euler: rel L2 {rel:.2e}"
    print(f"run_euler reproduced: rel L2 {rel:.2e}")

    golden, runs = {}, {}
    for name, sampler, over, rescale in RUNS:
        sched_cfg = dict(BASE, **over)
        lat, img, step_noise, sched = run(pipe, sampler, sched_cfg, ref, noise, rescale, 99)
        golden[f"{name}_latents"], golden[f"{name}_image"] = lat, img
        if step_noise is not None:
            golden[f"{name}_step_noise"] = step_noise
        runs[name] = dict(sampler=sampler, timestep_spacing=sched_cfg["timestep_spacing"], steps=ref["steps"],
                          cfg=ref["cfg"], prompt=ref["prompt"], negative_prompt=ref["negative_prompt"],
                          clip_skip_a1111=1, size_cond=ref["size_cond"],
                          prediction=("v" if sched_cfg.get("prediction_type") == "v_prediction" else "eps"),
                          zero_terminal_snr=bool(sched_cfg.get("rescale_betas_zero_snr", False)),
                          cfg_rescale=rescale, timesteps=[float(t) for t in sched.timesteps],
                          init_noise_sigma=float(sched.init_noise_sigma))
        print(f"{name}: latents std {float(lat.std()):.4f}, image mean {float(img.mean()):.4f}")

    save_file({k: v.contiguous().float() for k, v in golden.items()}, os.path.join(fix, "golden_vpred.safetensors"))
    with open(os.path.join(fix, "runs_vpred.json"), "w", encoding="utf-8") as f:
        json.dump(runs, f, ensure_ascii=False, indent=1)

    cases = {}
    for sampler in SCHEDULERS:
        for pred in ("v_prediction", "epsilon"):
            for spacing in ("leading", "trailing"):
                for steps in (1, 4, 20):
                    cfg = dict(BASE, prediction_type=pred, rescale_betas_zero_snr=True, timestep_spacing=spacing)
                    c = scheduler_case(sampler, cfg, steps)
                    # Epsilon at ᾱ = 0 (DDIM/LCM at t = 999) divides by zero: diffusers returns
                    # non-finite latents, which lorafuse refuses up front; record that.
                    c["finite"] = all(math.isfinite(v) for v in c["final"])
                    if not c["finite"]:
                        c["final"] = []
                    cases[f"{sampler}/{pred}/{spacing}/{steps}"] = c
    with open(os.path.join(fix, "scheduler_cases_vpred.json"), "w", encoding="utf-8") as f:
        json.dump({"diffusers": diffusers.__version__, "torch": torch.__version__, "cases": cases}, f, indent=1)
    print("wrote", fix)


if __name__ == "__main__":
    main()
