"""Goldens for `lorafuse lora compare` (tests/lora_compare.rs), from numpy (float64, dense ΔW).

Writes to tests/fixtures/lora-compare/:
  syn_a.safetensors     kohya LoRA, 3 modules of the sd15-tiny model (TE q_proj, a UNet attn1.to_q
                        in IN04, a 1×1-conv proj_in in OUT04), rank 4, alpha 2, random factors;
  syn_neg.safetensors   syn_a with every up matrix negated (ΔW → −ΔW: cosine −1, φ 1);
  syn_orth.safetensors  2 of syn_a's modules, up columns in the orthogonal complement of syn_a's
                        up columns and new random downs (cosine 0, φ_out 0);
  syn_dora.safetensors  syn_a plus DoRA magnitude vectors (compared by its direction update);
  syn_b.safetensors     2 of syn_a's modules (up = syn_a's up + noise, new downs) and one module
                        syn_a lacks (a generic pair with overlap, and a module counted as zero);
  golden.json           per pair of files (with their weights): per shared module the cosine of
                        the ΔWs, K = min(4, numerical ranks) and the normalized subspace
                        similarities φ_out = ‖U1ᵀU2‖²_F / K, φ_in (same with V) of the top-K
                        singular vectors; the overall cosine (modules absent in one count as
                        zero), the cosine per block (TE, IN00…, MID, OUT…) and the energy share
                        of each module in each LoRA (the model-less strength).

ΔW per module: multiplier × alpha/rank × up @ down (conv kernels flattened to [out, in·kh·kw]);
LoHa: (w1a @ w1b) ∘ (w2a @ w2b) × alpha/rank; PEFT: lora_alpha/r × B @ A with the key mapped to
kohya's name (`lora_unet_` / `lora_te_` + path with `.` → `_`). The script checks its ΔWs
against the fixture's own `delta_*` tensors (tests/fixtures/sd15-tiny/golden.safetensors).

Pinned: numpy 2.4.6, safetensors 0.8.0 (venv /tmp/venv-taesd).
Rerun: /tmp/venv-taesd/bin/python tools/goldens/make_lora_compare_goldens.py
"""

import json
import os
import re

import numpy as np
from safetensors.numpy import load_file, save_file
from safetensors import safe_open

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
SD15 = os.path.join(ROOT, "tests", "fixtures", "sd15-tiny")
LORAS = os.path.join(SD15, "loras")
OUT = os.path.join(ROOT, "tests", "fixtures", "lora-compare")
RANK_TOL = 1e-5
K_MAX = 4

SYN_MODULES = [
    ("lora_te_text_model_encoder_layers_0_self_attn_q_proj", (64, 64), False),
    ("lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q", (64, 64), False),
    ("lora_unet_up_blocks_1_attentions_1_proj_in", (64, 64), True),
]
EXTRA_MODULE = ("lora_unet_down_blocks_2_attentions_1_transformer_blocks_0_attn2_to_v", (64, 64), False)


def write_lora(name, modules):
    tensors = {}
    for key, up, down, alpha, conv in modules:
        if conv:
            up = up[:, :, None, None]
            down = down[:, :, None, None]
        tensors[f"{key}.lora_up.weight"] = up.astype(np.float32)
        tensors[f"{key}.lora_down.weight"] = down.astype(np.float32)
        tensors[f"{key}.alpha"] = np.array(alpha, dtype=np.float32)
    meta = {"ss_network_dim": "4", "ss_network_alpha": "2.0", "ss_base_model_version": "sd_v1"}
    save_file(tensors, os.path.join(OUT, name + ".safetensors"), metadata=meta)


def synthetic():
    rng = np.random.default_rng(1402)
    a, neg, orth, b = [], [], [], []
    for i, (key, (out, inn), conv) in enumerate(SYN_MODULES):
        up = rng.standard_normal((out, 4)) * 0.1
        down = rng.standard_normal((4, inn)) * 0.1
        a.append((key, up, down, 2.0, conv))
        neg.append((key, -up, down, 2.0, conv))
        if i < 2:
            # Columns orthogonal to col(up): project random vectors off it.
            q, _ = np.linalg.qr(up)
            r = rng.standard_normal((out, 4))
            r -= q @ (q.T @ r)
            orth.append((key, r * 0.1, rng.standard_normal((4, inn)) * 0.1, 2.0, conv))
        if i >= 1:
            b.append((key, up + 0.05 * rng.standard_normal((out, 4)), rng.standard_normal((4, inn)) * 0.1, 4.0, conv))
    key, (out, inn), conv = EXTRA_MODULE
    b.append((key, rng.standard_normal((out, 4)) * 0.1, rng.standard_normal((4, inn)) * 0.1, 4.0, conv))
    write_lora("syn_a", a)
    write_lora("syn_neg", neg)
    write_lora("syn_orth", orth)
    write_lora("syn_b", b)
    # syn_a with DoRA magnitude vectors: compared by its direction update, i.e. as syn_a.
    t = load_file(os.path.join(OUT, "syn_a.safetensors"))
    for key, (out, _), conv in SYN_MODULES:
        t[f"{key}.dora_scale"] = np.ones((out, 1, 1, 1) if conv else (out, 1), dtype=np.float32)
    save_file(t, os.path.join(OUT, "syn_dora.safetensors"), metadata={"ss_base_model_version": "sd_v1"})


def flat(t):
    t = t.astype(np.float64)
    return t.reshape(t.shape[0], -1)


def deltas(path):
    """kohya key → dense ΔW [out, in·kh·kw] (float64) at multiplier 1."""
    t = load_file(path)
    with safe_open(path, "np") as f:
        meta = f.metadata() or {}
    peft_meta = json.loads(meta["lora_adapter_metadata"]) if "lora_adapter_metadata" in meta else {}
    keys = sorted({k.rsplit(".", 2)[0] if ".lora_" in k else k.rsplit(".", 1)[0] for k in t})
    out = {}
    for k in keys:
        if f"{k}.lora_up.weight" in t:
            up, down = flat(t[f"{k}.lora_up.weight"]), flat(t[f"{k}.lora_down.weight"])
            alpha = float(t[f"{k}.alpha"]) if f"{k}.alpha" in t else down.shape[0]
            out[k] = alpha / down.shape[0] * up @ down
        elif f"{k}.hada_w1_a" in t:
            w1 = flat(t[f"{k}.hada_w1_a"]) @ flat(t[f"{k}.hada_w1_b"])
            w2 = flat(t[f"{k}.hada_w2_a"]) @ flat(t[f"{k}.hada_w2_b"])
            r = t[f"{k}.hada_w1_b"].shape[0]
            out[k] = float(t[f"{k}.alpha"]) / r * w1 * w2
    for k in sorted({k.rsplit(".", 2)[0] for k in t if k.endswith(".lora_A.weight")}):
        comp, path = k.split(".", 1)
        alpha = peft_meta[f"{comp}.lora_alpha"] / peft_meta[f"{comp}.r"]
        kk = ("lora_unet_" if comp == "unet" else "lora_te_") + path.replace(".", "_")
        out[kk] = alpha * flat(t[f"{k}.lora_B.weight"]) @ flat(t[f"{k}.lora_A.weight"])
    return out


def check_against_fixture():
    """The ΔWs above equal the fixture maker's own (diffusers-checked) deltas."""
    g = load_file(os.path.join(SD15, "golden.safetensors"))
    n = 0
    for name in ["kohya_lora", "kohya_locon", "lycoris_loha"]:
        d = deltas(os.path.join(LORAS, name + ".safetensors"))
        for k, v in g.items():
            if not k.startswith(f"delta_{name}__"):
                continue
            _, comp, path = k.split("__")
            kk = ("lora_unet_" if comp == "unet" else "lora_te_") + path.replace(".", "_")
            ref = flat(v)
            err = np.linalg.norm(d[kk] - ref) / np.linalg.norm(ref)
            assert err < 1e-5, (name, kk, err)
            n += 1
    assert n >= 20, n


def block(key):
    """Row of the heat-map: TE, TE2, IN00…IN11, MID, OUT00…OUT11 or OTHER (A1111 numbering)."""
    if key.startswith("lora_te2_"):
        return "TE2"
    if key.startswith("lora_te"):
        return "TE"
    m = re.match(r"lora_unet_(down|up)_blocks_(\d+)_(attentions|resnets|downsamplers|upsamplers)_(\d+)", key)
    if m:
        level, kind, j = int(m[2]), m[3], int(m[4])
        if m[1] == "down":
            n = 3 * level + 3 if kind == "downsamplers" else 1 + 3 * level + j
            return f"IN{n:02d}"
        n = 3 * level + 2 if kind == "upsamplers" else 3 * level + j
        return f"OUT{n:02d}"
    if key.startswith("lora_unet_mid_block"):
        return "MID"
    if key.startswith("lora_unet_conv_in"):
        return "IN00"
    return "OTHER"


def nrank(s):
    return int((s > s[0] * RANK_TOL).sum()) if s[0] > 0 else 0


def pair(da, db, wa, wb):
    modules = {}
    dot = {}
    ea = {}
    eb = {}
    for k in sorted(set(da) | set(db)):
        blk = block(k)
        a = wa * da[k] if k in da else None
        b = wb * db[k] if k in db else None
        if a is not None:
            ea[blk] = ea.get(blk, 0.0) + float((a * a).sum())
        if b is not None:
            eb[blk] = eb.get(blk, 0.0) + float((b * b).sum())
        if a is None or b is None:
            continue
        d = float((a * b).sum())
        dot[blk] = dot.get(blk, 0.0) + d
        ua, sa, vta = np.linalg.svd(a, full_matrices=False)
        ub, sb, vtb = np.linalg.svd(b, full_matrices=False)
        kk = min(K_MAX, nrank(sa), nrank(sb))
        phi_out = float(np.linalg.norm(ua[:, :kk].T @ ub[:, :kk]) ** 2 / kk)
        phi_in = float(np.linalg.norm(vta[:kk] @ vtb[:kk].T) ** 2 / kk)
        modules[k] = {
            "cosine": d / np.sqrt((a * a).sum() * (b * b).sum()),
            "k": kk,
            "phi_out": phi_out,
            "phi_in": phi_in,
            "block": blk,
        }
    blocks = {
        blk: dot[blk] / np.sqrt(ea[blk] * eb[blk]) for blk in dot if ea.get(blk, 0) > 0 and eb.get(blk, 0) > 0
    }
    overall = sum(dot.values()) / np.sqrt(sum(ea.values()) * sum(eb.values()))
    sa = {k: float(((wa * v) ** 2).sum()) for k, v in da.items()}
    sb = {k: float(((wb * v) ** 2).sum()) for k, v in db.items()}
    ta, tb = sum(sa.values()), sum(sb.values())
    return {
        "modules": modules,
        "blocks": blocks,
        "overall": overall,
        "share_a": {k: v / ta for k, v in sa.items()},
        "share_b": {k: v / tb for k, v in sb.items()},
    }


def main():
    os.makedirs(OUT, exist_ok=True)
    synthetic()
    check_against_fixture()
    files = {n: os.path.join(LORAS, n + ".safetensors") for n in ["kohya_lora", "kohya_locon", "lycoris_loha", "peft_lora"]}
    files.update({n: os.path.join(OUT, n + ".safetensors") for n in ["syn_a", "syn_neg", "syn_orth", "syn_b"]})
    d = {n: deltas(p) for n, p in files.items()}
    cases = [
        ("syn_a", 1.0, "syn_a", 0.5),
        ("syn_a", 1.0, "syn_neg", 1.0),
        ("syn_a", 1.0, "syn_a", -1.0),
        ("syn_a", 1.0, "syn_orth", 1.0),
        ("syn_a", 1.0, "syn_b", 0.7),
        ("kohya_lora", 1.0, "kohya_locon", 1.0),
        ("kohya_locon", 0.8, "lycoris_loha", 1.0),
        ("kohya_lora", 1.0, "peft_lora", 1.0),
    ]
    golden = []
    for a, wa, b, wb in cases:
        r = pair(d[a], d[b], wa, wb)
        r.update({"a": a, "wa": wa, "b": b, "wb": wb})
        golden.append(r)
    with open(os.path.join(OUT, "golden.json"), "w") as f:
        json.dump({"k_max": K_MAX, "rank_tol": RANK_TOL, "pairs": golden}, f, indent=1, sort_keys=True)
    for r in golden:
        print(r["a"], r["wa"], r["b"], r["wb"], len(r["modules"]), "overall", round(r["overall"], 6))


if __name__ == "__main__":
    main()
