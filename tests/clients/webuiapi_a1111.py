"""Drive `lorafuse serve` with webuiapi, the PyPI client for AUTOMATIC1111's API, exactly as its
users do: txt2img with LoRA tags, hires fix, img2img and inpainting, then read the images and
info back. Exits non-zero on any mismatch (tests/serve_clients.rs runs it).
Usage: webuiapi_a1111.py HOST PORT"""

import sys

import webuiapi

host, port = sys.argv[1], int(sys.argv[2])
api = webuiapi.WebUIApi(host=host, port=port, sampler="Euler a", steps=2)

loras = [l["name"] for l in api.get_loras()]
assert "kohya_lora" in loras and "peft_lora" in loras, loras
assert any(s["name"] == "Euler a" for s in api.get_samplers()), api.get_samplers()
models = api.get_sd_models()
assert len(models) == 1 and models[0]["model_name"], models

prompt = "a red fox <lora:kohya_lora:0.7> <lora:peft_lora:0.4>"
r = api.txt2img(prompt=prompt, negative_prompt="blurry", seed=1234, cfg_scale=6.5,
                width=64, height=64, batch_size=2)
assert len(r.images) == 2, r.images
for im in r.images:
    assert im.size == (64, 64), im.size
    assert im.mode == "RGB", im.mode
    lo, hi = im.convert("L").getextrema()
    assert hi > lo, "a flat image"
assert r.images[0].tobytes() != r.images[1].tobytes(), "two seeds, one image"
info = r.info
assert info["all_seeds"] == [1234, 1235], info["all_seeds"]
assert info["steps"] == 2 and info["cfg_scale"] == 6.5, info
assert info["sampler_name"] == "Euler a", info["sampler_name"]
assert len(info["infotexts"]) == 2
text = info["infotexts"][0]
for want in ("Steps: 2,", "Sampler: Euler a,", "CFG scale: 6.5,", "Seed: 1234,", "Size: 64x64,",
             "Lora hashes:", "kohya_lora:", "peft_lora:"):
    assert want in text, (want, text)
# The PNG carries the infotext, as A1111's do.
assert r.images[0].info.get("parameters") == text, r.images[0].info
assert r.parameters["prompt"] == prompt, r.parameters

# A LoRA the folder does not have: webuiapi raises with A1111's error body.
try:
    api.txt2img(prompt="x <lora:no_such_lora:1>", width=64, height=64)
    raise SystemExit("an unknown LoRA was accepted")
except RuntimeError as e:
    assert e.args[0] == 400 and "no_such_lora" in e.args[1], e.args

# Hires fix: a 64x64 first pass brought to 96x96.
r = api.txt2img(prompt="a lighthouse", seed=5, width=64, height=64, enable_hr=True, hr_scale=1.5,
                hr_upscaler=webuiapi.HiResUpscaler.Latent, hr_second_pass_steps=2, denoising_strength=0.6)
assert r.image.size == (96, 96), r.image.size
for want in ("Hires upscale: 1.5", "Hires steps: 2", "Hires upscaler: Latent", "Denoising strength: 0.6"):
    assert want in r.info["infotexts"][0], (want, r.info["infotexts"][0])

# img2img from the hires image, then inpainting of its centre (white = repaint).
from PIL import Image, ImageDraw

src = r.image.resize((64, 64))
r2 = api.img2img(images=[src], prompt="a lighthouse at night", seed=6, width=64, height=64,
                 denoising_strength=0.5, steps=4)
assert r2.image.size == (64, 64) and "Denoising strength: 0.5" in r2.info["infotexts"][0], r2.info
assert r2.image.tobytes() != src.tobytes(), "img2img returned its input"
mask = Image.new("L", (64, 64), 0)
ImageDraw.Draw(mask).rectangle([16, 16, 47, 47], fill=255)
r3 = api.img2img(images=[src], mask_image=mask, prompt="a red door", seed=7, width=64, height=64,
                 denoising_strength=0.9, steps=4, mask_blur=0, inpaint_full_res=False, inpainting_fill=1)
out, orig = r3.image.load(), src.load()
assert all(out[x, y] == orig[x, y] for x in range(64) for y in range(64) if not (8 <= x < 56 and 8 <= y < 56)), \
    "inpainting changed pixels far outside the mask"
assert any(out[x, y] != orig[x, y] for x in range(16, 48) for y in range(16, 48)), "the masked area was not repainted"

print("webuiapi", webuiapi.__version__ if hasattr(webuiapi, "__version__") else "?", "ok:", text.splitlines()[-1])
