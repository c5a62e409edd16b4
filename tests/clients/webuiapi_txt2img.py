"""Drive `lorafuse serve` with webuiapi, the PyPI client for AUTOMATIC1111's API, exactly as its
users do: txt2img with LoRA tags, then read the images and info back. Exits non-zero on any
mismatch (tests/serve_clients.rs runs it). Usage: webuiapi_txt2img.py HOST PORT"""

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

print("webuiapi", webuiapi.__version__ if hasattr(webuiapi, "__version__") else "?", "ok:", text.splitlines()[-1])
