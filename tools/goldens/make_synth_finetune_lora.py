"""A high-rank kohya LoRA whose ΔW per module has a decaying spectrum, as a real fine-tune's has.

Baked into a full-size SD1.5 base it makes a synthetic "fine-tune" pair for the `lora extract`
rank sweep in BENCHMARKS.md (the pair of two random checkpoints there has a flat, full-rank ΔW,
which says nothing about how much a given rank keeps).

Per module the extract picks (UNet transformer linears and 1×1 proj_in/out, text encoder
self_attn/mlp; read from the base file's LDM keys, written with LDM-style kohya names, which
lorafuse resolves for a single-file base): ΔW = U diag(s) Vᵀ with U, V orthonormal (QR of
Gaussian matrices), r = min(--rank, rows, cols), s_i = c · i^(−power) and c chosen so that
‖ΔW‖_F = --rel · ‖W‖_F. Stored as `lora_up = U diag(s)`, `lora_down = Vᵀ`, alpha = r (scale 1),
float32.

numpy 2.4.6, safetensors 0.8.0 (the versions it was run with). Rerun:

    /tmp/venv-taesd/bin/python tools/goldens/make_synth_finetune_lora.py base.safetensors \
        synth.safetensors --rank 256 --power 1.0 --rel 0.03 --seed 0
    lorafuse lora bake -m base.safetensors --lora synth.safetensors:1 -o tuned.safetensors
"""

import argparse
import json

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

UNET = "model.diffusion_model."
TEXT = "cond_stage_model.transformer."
ATTN = (".attn1.", ".attn2.", ".ff.net.")


def modules(f):
    """(kohya name, LDM key) of every weight `lora extract` adapts."""
    for key in f.keys():
        if not key.endswith(".weight"):
            continue
        m = key[: -len(".weight")]
        if key.startswith(UNET):
            m = m[len(UNET):]
            if (".transformer_blocks." in m and any(a in m for a in ATTN)) or m.endswith((".proj_in", ".proj_out")):
                yield "lora_unet_" + m.replace(".", "_"), key
        elif key.startswith(TEXT) and (".self_attn." in m or ".mlp." in m) and "layer_norm" not in m:
            yield "lora_te_" + m[len(TEXT):].replace(".", "_"), key


def main():
    p = argparse.ArgumentParser()
    p.add_argument("base")
    p.add_argument("out")
    p.add_argument("--rank", type=int, default=256)
    p.add_argument("--power", type=float, default=1.0)
    p.add_argument("--rel", type=float, default=0.03)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    rng = np.random.default_rng(a.seed)
    out = {}
    with safe_open(a.base, "np") as f:
        names = sorted(modules(f))
        for name, key in names:
            w = f.get_tensor(key).astype(np.float32)
            rows, cols = w.shape[0], int(np.prod(w.shape[1:]))
            r = min(a.rank, rows, cols)
            u, _ = np.linalg.qr(rng.standard_normal((rows, r)))
            v, _ = np.linalg.qr(rng.standard_normal((cols, r)))
            s = np.arange(1, r + 1, dtype=np.float64) ** -a.power
            s *= a.rel * np.linalg.norm(w) / np.linalg.norm(s)
            up = (u * s).astype(np.float32)
            down = v.T.astype(np.float32)
            if w.ndim == 4:
                up, down = up.reshape(rows, r, 1, 1), down.reshape(r, *w.shape[1:])
            out[name + ".lora_up.weight"] = np.ascontiguousarray(up)
            out[name + ".lora_down.weight"] = np.ascontiguousarray(down)
            out[name + ".alpha"] = np.array(float(r), dtype=np.float32)
    meta = {
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(a.rank),
        "ss_network_alpha": str(float(a.rank)),
        "ss_base_model_version": "sd_v1",
        "synth": json.dumps({"rank": a.rank, "power": a.power, "rel": a.rel, "seed": a.seed}),
    }
    save_file(out, a.out, metadata=meta)
    print(f"{len(names)} modules, rank ≤ {a.rank}, s_i ∝ i^-{a.power}, ‖ΔW‖/‖W‖ = {a.rel}: {a.out}")


if __name__ == "__main__":
    main()
