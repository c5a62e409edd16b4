#!/usr/bin/env python3
"""Goldens for lorafuse's TAESD (diffusers `AutoencoderTiny`) against diffusers itself.

Pinned (as generated): python 3.11, torch 2.15.0, diffusers==0.35.2, safetensors 0.8.0 (float32 CPU).
Rerun (from the repository root):
    python3 -m venv /tmp/venv-taesd
    /tmp/venv-taesd/bin/pip install torch==2.15.0 diffusers==0.35.2 safetensors==0.8.0
    /tmp/venv-taesd/bin/python tools/goldens/make_taesd_goldens.py

The architecture is the real TAESD one (4 decoder levels of 3,3,3,1 blocks, 4 encoder levels of
1,3,3,3 blocks, ReLU, nearest x2, stride-2 convs); only the width is 16 instead of 64 so the four
weight files stay around 1 MB together. TAESDXL uses the same config (it differs only in the
weights), so one set of goldens covers both.

Written to tests/fixtures/taesd-tiny/:
  diffusers/diffusion_pytorch_model.safetensors + config.json  (keys encoder.layers.N..., decoder.layers.N...)
  taesd_decoder.safetensors, taesd_encoder.safetensors         (madebyollin's nn.Sequential indices)
  golden.safetensors: latents [2,4,9,13], decoded [2,3,72,104] (diffusers decode, [-1,1]),
                      image [2,3,70,102] in [-1,1], encoded [2,4,9,13] (diffusers encode)
"""
import json
import os

import torch
from diffusers import AutoencoderTiny
from safetensors.torch import save_file

WIDTH = 16
OUT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "taesd-tiny")

torch.manual_seed(20261204)
cfg = dict(
    in_channels=3,
    out_channels=3,
    encoder_block_out_channels=(WIDTH,) * 4,
    decoder_block_out_channels=(WIDTH,) * 4,
    act_fn="relu",
    upsample_fn="nearest",
    latent_channels=4,
    upsampling_scaling_factor=2,
    num_encoder_blocks=(1, 3, 3, 3),
    num_decoder_blocks=(3, 3, 3, 1),
    latent_magnitude=3,
    latent_shift=0.5,
    force_upcast=False,
    scaling_factor=1.0,
)
model = AutoencoderTiny(**cfg).eval()
# Default init shrinks activations through 30 ReLU convs; a mild gain keeps the output well
# away from zero so relative errors mean something.
with torch.no_grad():
    for name, p in model.named_parameters():
        if name.endswith("weight"):
            p.mul_(1.7)
        else:
            p.copy_(torch.randn_like(p) * 0.05)

os.makedirs(os.path.join(OUT, "diffusers"), exist_ok=True)
sd = {k: v.contiguous() for k, v in model.state_dict().items()}
save_file(sd, os.path.join(OUT, "diffusers", "diffusion_pytorch_model.safetensors"))
with open(os.path.join(OUT, "diffusers", "config.json"), "w") as f:
    json.dump({"_class_name": "AutoencoderTiny", **{k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()}}, f, indent=1)


def standalone(prefix, shift):
    # madebyollin's decoder starts with a parameterless Clamp() module, so its indices are one
    # higher than diffusers' (which applies the clamp in forward); the encoder's match.
    out = {}
    for k, v in sd.items():
        if k.startswith(prefix):
            idx, rest = k[len(prefix):].split(".", 1)
            out[f"{int(idx) + shift}.{rest}"] = v
    return out


save_file(standalone("decoder.layers.", 1), os.path.join(OUT, "taesd_decoder.safetensors"))
save_file(standalone("encoder.layers.", 0), os.path.join(OUT, "taesd_encoder.safetensors"))

g = torch.Generator().manual_seed(7)
latents = torch.randn(2, 4, 9, 13, generator=g) * 2.0  # past ±3 in places, so the soft clamp matters
image = torch.rand(2, 3, 70, 102, generator=g) * 2.0 - 1.0
with torch.no_grad():
    decoded = model.decode(latents).sample
    encoded = model.encode(image).latents
for n, t in [("decoded", decoded), ("encoded", encoded)]:
    print(n, tuple(t.shape), "mean", t.mean().item(), "std", t.std().item(), "absmax", t.abs().max().item())
save_file(
    {"latents": latents, "decoded": decoded.contiguous(), "image": image, "encoded": encoded.contiguous()},
    os.path.join(OUT, "golden.safetensors"),
)
