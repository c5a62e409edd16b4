"""Goldens for `lorafuse lora merge` (tests/lora_merge.rs), from numpy.

Inputs: tests/fixtures/sd15-tiny/loras/{kohya_lora, kohya_locon, lycoris_loha}.safetensors at
weights 0.7, -0.4, 0.5. Per module (kohya key), numpy's Σ wᵢ·ΔWᵢ with ΔW = alpha/rank · up @ down
(kohya LoRA/LoCon, conv kernels flattened to [out, in·kh·kw]) or alpha/rank · (w1a@w1b)⊙(w2a@w2b)
(LoHa), in float64. Writes tests/fixtures/lora-merge/
  golden.json: per module rows, cols, whether a k×k conv, ‖ΣwΔW‖_F, its first 8 singular values and
               the relative error √(tail energy / total) of the best rank-RANK (CONV_RANK for k×k
               convs) truncation;
  golden.safetensors: for a few modules, the dense Σ wΔW (`sum__KEY`) and numpy's rank-R
               truncation U_r·S_r·V_rᵀ (`trunc__KEY`), float32.

Pinned: numpy 2.4.6, safetensors 0.8.0 (venv /tmp/venv-taesd).
Rerun: /tmp/venv-taesd/bin/python tools/goldens/make_lora_merge_goldens.py
"""

import json
import os

import numpy as np
from safetensors.numpy import load_file, save_file

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
LORAS = os.path.join(ROOT, "tests", "fixtures", "sd15-tiny", "loras")
OUT = os.path.join(ROOT, "tests", "fixtures", "lora-merge")
INPUTS = [("kohya_lora", 0.7), ("kohya_locon", -0.4), ("lycoris_loha", 0.5)]
RANK, CONV_RANK = 3, 2
DENSE = [
    "lora_unet_down_blocks_0_attentions_0_proj_in",
    "lora_unet_down_blocks_0_resnets_0_conv1",
    "lora_unet_up_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k",
    "lora_te_text_model_encoder_layers_0_self_attn_q_proj",
]


def deltas(tensors):
    """kohya key -> (ΔW as [out, in·kh·kw] float64, kernel size)."""
    keys = sorted({k.rsplit(".", 2)[0] if ".lora_" in k else k.rsplit(".", 1)[0] for k in tensors})
    out = {}
    for key in keys:
        t = {k[len(key) + 1 :]: v.astype(np.float64) for k, v in tensors.items() if k.startswith(key + ".")}
        if "lora_down.weight" in t:
            down, up = t["lora_down.weight"], t["lora_up.weight"]
            r = down.shape[0]
            kernel = down.shape[2] * down.shape[3] if down.ndim == 4 else 1
            d = up.reshape(up.shape[0], r) @ down.reshape(r, -1)
        else:
            r = t["hada_w1_b"].shape[0]
            d = (t["hada_w1_a"] @ t["hada_w1_b"]) * (t["hada_w2_a"] @ t["hada_w2_b"])
            kernel = None
        alpha = float(t["alpha"]) if "alpha" in t else r
        out[key] = (d * (alpha / r), kernel)
    return out


def main():
    total = {}
    kernels = {}
    for name, w in INPUTS:
        for key, (d, kernel) in deltas(load_file(os.path.join(LORAS, name + ".safetensors"))).items():
            total[key] = total.get(key, 0.0) + w * d
            if kernel is not None:
                kernels[key] = max(kernels.get(key, 1), kernel)
    modules = {}
    arrays = {}
    for key, d in sorted(total.items()):
        conv = kernels.get(key, 1) > 1
        u, s, vt = np.linalg.svd(d, full_matrices=False)
        r = CONV_RANK if conv else RANK
        e2 = float(np.sum(s**2))
        tail = float(np.sum(s[r:] ** 2))
        modules[key] = {
            "rows": d.shape[0],
            "cols": d.shape[1],
            "conv": conv,
            "norm": float(np.sqrt(e2)),
            "s": [float(v) for v in s[:8]],
            "rank_error": float(np.sqrt(tail / e2)) if e2 > 0 else 0.0,
        }
        if key in DENSE:
            arrays["sum__" + key] = d.astype(np.float32)
            arrays["trunc__" + key] = ((u[:, :r] * s[:r]) @ vt[:r]).astype(np.float32)
    os.makedirs(OUT, exist_ok=True)
    meta = {"inputs": [[n, w] for n, w in INPUTS], "rank": RANK, "conv_rank": CONV_RANK, "modules": modules}
    with open(os.path.join(OUT, "golden.json"), "w") as f:
        json.dump(meta, f, indent=1)
    save_file(arrays, os.path.join(OUT, "golden.safetensors"))
    print(len(modules), "modules;", len(arrays), "arrays")


if __name__ == "__main__":
    main()
