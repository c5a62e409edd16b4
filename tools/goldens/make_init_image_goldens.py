#!/usr/bin/env python3
"""Goldens for lorafuse's img2img / inpainting pixel work (src/pipeline/init_image.rs), made with
the libraries A1111 and diffusers use for it: PIL (LANCZOS resize, A1111's resize modes, image
decoding), cv2 (A1111's mask blur), diffusers (`VaeImageProcessor.get_crop_region`, A1111's
"only masked" box) and torch (`interpolate`, hires fix's latent upscalers).

Pinned (as generated): python 3.11, Pillow 13.0.0, numpy 2.4.6, opencv-python-headless 5.1.0,
torch 2.15.0, diffusers 0.35.2, safetensors 0.8.0.
Rerun (from the repository root):
    python3 -m venv /tmp/venv-taesd
    /tmp/venv-taesd/bin/pip install torch==2.15.0 diffusers==0.35.2 safetensors==0.8.0 \
        Pillow==13.0.0 numpy==2.4.6 opencv-python-headless==5.1.0
    /tmp/venv-taesd/bin/python tools/goldens/make_init_image_goldens.py

Written to tests/fixtures/init-image/:
  goldens.safetensors   inputs and outputs as f32 (images [3,H,W] / masks [H,W] in [0,1])
  crop_regions.json     get_crop_region cases (mask tensor name, width, height, padding, box)
  tiny.png (RGBA), tiny-gray.png (L), tiny-palette.png (P), tiny.webp (lossless RGB),
  tiny.jpg (RGB, quality 95): decoded by PIL (`convert("RGB")`) into `decoded_*`
"""
import json
import os

import cv2
import numpy as np
import torch
from diffusers.image_processor import VaeImageProcessor
from PIL import Image
from safetensors.numpy import save_file

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "init-image")
os.makedirs(OUT, exist_ok=True)
rng = np.random.default_rng(20261204)
t = {}


def chw(a):
    """uint8 HWC (or HW) -> f32 CHW (or HW) in [0,1]."""
    a = np.asarray(a).astype(np.float32) / 255.0
    return np.ascontiguousarray(a.transpose(2, 0, 1) if a.ndim == 3 else a)


def smooth_image(h, w):
    """A smooth-ish RGB picture with some detail: gradients plus noise, so the resize filters matter."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    r = 128 + 100 * np.sin(x / 5.0) * np.cos(y / 7.0)
    g = 255 * x / max(w - 1, 1)
    b = 255 * y / max(h - 1, 1)
    img = np.stack([r, g, b], -1) + rng.normal(0, 20, (h, w, 3))
    return np.clip(img, 0, 255).round().astype(np.uint8)


# A1111 modules/images.py resize_image, with opts.upscaler_for_img2img = None (LANCZOS only).
def a1111_resize_image(resize_mode, im, width, height):
    def resize(im, w, h):
        return im.resize((w, h), resample=Image.LANCZOS)

    if resize_mode == 0:
        res = resize(im, width, height)
    elif resize_mode == 1:
        ratio = width / height
        src_ratio = im.width / im.height
        src_w = width if ratio > src_ratio else im.width * height // im.height
        src_h = height if ratio <= src_ratio else im.height * width // im.width
        resized = resize(im, src_w, src_h)
        res = Image.new("RGB", (width, height))
        res.paste(resized, box=(width // 2 - src_w // 2, height // 2 - src_h // 2))
    else:
        ratio = width / height
        src_ratio = im.width / im.height
        src_w = width if ratio < src_ratio else im.width * height // im.height
        src_h = height if ratio >= src_ratio else im.height * width // im.width
        resized = resize(im, src_w, src_h)
        res = Image.new("RGB", (width, height))
        res.paste(resized, box=(width // 2 - src_w // 2, height // 2 - src_h // 2))
        if ratio < src_ratio:
            fill_height = height // 2 - src_h // 2
            if fill_height > 0:
                res.paste(resized.resize((width, fill_height), box=(0, 0, width, 0)), box=(0, 0))
                res.paste(
                    resized.resize((width, fill_height), box=(0, resized.height, width, resized.height)),
                    box=(0, fill_height + src_h),
                )
        elif ratio > src_ratio:
            fill_width = width // 2 - src_w // 2
            if fill_width > 0:
                res.paste(resized.resize((fill_width, height), box=(0, 0, 0, height)), box=(0, 0))
                res.paste(
                    resized.resize((fill_width, height), box=(resized.width, 0, resized.width, height)),
                    box=(fill_width + src_w, 0),
                )
    return res


# 1. LANCZOS resize (down and up, odd sizes).
src = smooth_image(37, 53)
t["lanczos_src"] = chw(src)
t["lanczos_down_24x16"] = chw(Image.fromarray(src).resize((24, 16), Image.LANCZOS))
t["lanczos_up_71x45"] = chw(Image.fromarray(src).resize((71, 45), Image.LANCZOS))
# The same filter in PIL's float mode ("F": no 8-bit rounding or clamping between the passes).
for size in [(24, 16), (71, 45)]:
    planes = [np.array(Image.fromarray(src[:, :, c].astype(np.float32), "F").resize(size, Image.LANCZOS)) for c in range(3)]
    t[f"lanczos_float_{size[0]}x{size[1]}"] = np.stack(planes) / 255.0

# 2. A1111's resize modes: a 50x30 (wide) init to 32x32, a 30x50 (tall) one to 48x32.
for name, (h, w), (tw, th) in [("wide", (30, 50), (32, 32)), ("tall", (50, 30), (48, 32))]:
    im = smooth_image(h, w)
    t[f"fit_{name}_src"] = chw(im)
    for mode, mname in [(0, "just"), (1, "crop"), (2, "fill")]:
        t[f"fit_{name}_{mname}"] = chw(a1111_resize_image(mode, Image.fromarray(im), tw, th))

# 3. A1111's mask blur (modules/processing.py): x then y, each rounded to uint8.
def a1111_blur(np_mask, blur):
    k = 2 * int(2.5 * blur + 0.5) + 1
    np_mask = np.array(Image.fromarray(cv2.GaussianBlur(np_mask, (k, 1), blur)))
    k = 2 * int(2.5 * blur + 0.5) + 1
    return cv2.GaussianBlur(np_mask, (1, k), blur)


y, x = np.mgrid[0:45, 0:37]
mask = (((x - 20) ** 2 + (y - 14) ** 2) < 64) | ((x >= 3) & (x < 9) & (y >= 30) & (y < 43))
mask = (mask * 255).astype(np.uint8)
t["blur_src"] = chw(mask)
for blur in [1, 4, 16]:
    t[f"blur_{blur}"] = chw(a1111_blur(mask, blur))
    # cv2's float path (its 8-bit one is fixed point, a level or two off for wide kernels),
    # rounded to 8 bits after each pass as A1111's uint8 mask is.
    k = 2 * int(2.5 * blur + 0.5) + 1
    f = np.round(cv2.GaussianBlur(mask.astype(np.float32), (k, 1), blur))
    t[f"blur_{blur}_float"] = np.round(cv2.GaussianBlur(f, (1, k), blur)) / 255.0

# 4. diffusers' get_crop_region (A1111's "only masked" box), on a 45x37 mask.
cases = []
blobs = {
    "crop_blob": ((x >= 20) & (x < 26) & (y >= 5) & (y < 9)),  # wide blob near the top
    "crop_corner": ((x >= 33) & (y >= 40)),  # bottom-right corner
    "crop_tall": ((x >= 2) & (x < 4) & (y >= 10) & (y < 35)),  # tall thin strip at the left
    "crop_soft": (np.abs(x - 18) + np.abs(y - 22) < 4),  # a diamond, with a faint halo below
}
for name, b in blobs.items():
    m = (b * 255).astype(np.uint8)
    if name == "crop_soft":
        m[30, 18] = 1  # one almost-black pixel still counts (mask > 0)
    t[name] = chw(m)
    for width, height, pad in [(64, 64, 0), (64, 64, 4), (48, 64, 2), (64, 40, 0), (512, 512, 32), (24, 8, 1)]:
        box = VaeImageProcessor.get_crop_region(Image.fromarray(m), width, height, pad=pad)
        cases.append({"mask": name, "width": width, "height": height, "padding": pad, "box": [int(v) for v in box]})

# 5. torch interpolate (A1111 hires "Latent" = bilinear, "Latent (nearest)" = nearest).
lat = torch.from_numpy(rng.normal(0, 1, (4, 5, 7)).astype(np.float32))
t["latents_src"] = lat.numpy()
for h2, w2 in [(9, 13), (10, 14), (16, 16)]:
    up = torch.nn.functional.interpolate(lat[None], size=(h2, w2), mode="bilinear", align_corners=False, antialias=False)
    t[f"latents_bilinear_{h2}x{w2}"] = up[0].numpy()
    up = torch.nn.functional.interpolate(lat[None], size=(h2, w2), mode="nearest")
    t[f"latents_nearest_{h2}x{w2}"] = up[0].numpy()

# 6. Decoding: the same small picture in each format, as PIL reads it (convert("RGB")).
pic = smooth_image(9, 13)
alpha = (np.arange(9 * 13).reshape(9, 13) * 2).astype(np.uint8)
Image.fromarray(np.dstack([pic, alpha]), "RGBA").save(os.path.join(OUT, "tiny.png"))
Image.fromarray(pic[:, :, 1]).save(os.path.join(OUT, "tiny-gray.png"))
Image.fromarray(pic).quantize(colors=16).save(os.path.join(OUT, "tiny-palette.png"))
Image.fromarray(pic).save(os.path.join(OUT, "tiny.webp"), lossless=True)
Image.fromarray(pic).save(os.path.join(OUT, "tiny.jpg"), quality=95)
for f in ["tiny.png", "tiny-gray.png", "tiny-palette.png", "tiny.webp", "tiny.jpg"]:
    key = "decoded_" + f.replace(".", "_").replace("-", "_")
    t[key] = chw(Image.open(os.path.join(OUT, f)).convert("RGB"))

save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in t.items()}, os.path.join(OUT, "goldens.safetensors"))
with open(os.path.join(OUT, "crop_regions.json"), "w") as f:
    json.dump(cases, f, indent=1)
print(f"wrote {len(t)} tensors and {len(cases)} crop cases to {os.path.normpath(OUT)}")
