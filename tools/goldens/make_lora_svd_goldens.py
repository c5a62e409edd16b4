"""Goldens for `lorafuse lora extract` / `lora resize` (tests/lora_extract.rs), from numpy's SVD.

Writes tests/fixtures/lora-svd/golden.json with
  random: matrices with a known spectrum (U, V random orthonormal, s given), their f32 values,
          numpy's singular values of the f32 matrix and the relative Frobenius error of the best
          rank-r truncation = sqrt(tail energy / total) for every r;
  locon:  per module of tests/fixtures/sd15-tiny/loras/kohya_locon.safetensors, ΔW = alpha/rank ·
          up @ down (kohya layout, conv kernels flattened to [out, in·kh·kw]), its singular values
          and truncation errors at ranks 1..4 (what extract must report for a "tuned" model =
          base + that ΔW);
  resize: kohya resize_lora.py's rules (sv_ratio, sv_fro, sv_cumulative; cap = new_rank 4) applied
          to kohya_lora.safetensors' up @ down, the chosen rank per module (modules whose cumulative
          value lies within 1e-6 of a threshold are left out: f32 vs f64 could pick either side).

Pinned: numpy 2.4.6, safetensors 0.8.0 (venv /tmp/venv-taesd).
Rerun: /tmp/venv-taesd/bin/python tools/goldens/make_lora_svd_goldens.py
"""

import json
import os

import numpy as np
from safetensors.numpy import load_file

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
LORAS = os.path.join(ROOT, "tests", "fixtures", "sd15-tiny", "loras")
OUT = os.path.join(ROOT, "tests", "fixtures", "lora-svd", "golden.json")


def rel_errors(s):
    e = s.astype(np.float64) ** 2
    total = e.sum()
    return [float(np.sqrt(e[r:].sum() / total)) for r in range(len(s) + 1)]


def random_cases():
    rng = np.random.default_rng(14)
    cases = []
    for rows, cols, spectrum in [
        (24, 40, [10.0, 5.0, 2.0, 1.0, 0.5, 0.25, 0.1, 0.01]),
        (48, 16, list(np.geomspace(3.0, 1e-3, 16))),
        (30, 30, [1.0] * 3 + [0.1] * 3 + [0.001] * 4),
    ]:
        k = len(spectrum)
        u, _ = np.linalg.qr(rng.standard_normal((rows, k)))
        v, _ = np.linalg.qr(rng.standard_normal((cols, k)))
        m = (u * np.array(spectrum)) @ v.T
        m32 = m.astype(np.float32)
        s = np.linalg.svd(m32.astype(np.float64), compute_uv=False)
        cases.append(
            {
                "rows": rows,
                "cols": cols,
                "spectrum": [float(x) for x in spectrum],
                "data": [float(x) for x in m32.reshape(-1)],
                "numpy_s": [float(x) for x in s],
                "rel_error": rel_errors(s),
            }
        )
    return cases


def modules(sd):
    out = {}
    for k in sd:
        if k.endswith(".lora_down.weight"):
            key = k[: -len(".lora_down.weight")]
            down = sd[k].astype(np.float64)
            up = sd[key + ".lora_up.weight"].astype(np.float64)
            rank = down.shape[0]
            alpha = float(sd[key + ".alpha"]) if key + ".alpha" in sd else rank
            w = up.reshape(up.shape[0], -1) @ down.reshape(rank, -1)
            out[key] = (w, alpha / rank, rank)
    return out


def locon_cases():
    sd = load_file(os.path.join(LORAS, "kohya_locon.safetensors"))
    cases = {}
    for key, (w, scale, rank) in sorted(modules(sd).items()):
        s = np.linalg.svd(w * scale, compute_uv=False)
        cases[key] = {
            "shape": list(w.shape),
            "rank": rank,
            "s": [float(x) for x in s[:6]],
            "rel_error": rel_errors(s)[:5],
        }
    return cases


# kohya resize_lora.py's indexing (networks/resize_lora.py), in numpy.
def kohya_rank(s, method, param, cap):
    n = len(s)
    if method == "sv_ratio":
        idx = int(np.sum(s > s[0] / param)) - 1
        margin = float(np.min(np.abs(s - s[0] / param)) / s[0])
    elif method == "sv_cumulative":
        cum = np.cumsum(s) / np.sum(s)
        idx = int(np.searchsorted(cum, param))
        margin = float(np.min(np.abs(cum - param)))
    else:
        cum = np.cumsum(s**2) / np.sum(s**2)
        idx = int(np.searchsorted(cum, param**2))
        margin = float(np.min(np.abs(cum - param**2)))
    idx = max(0, min(idx, n - 1))
    r = idx + 1
    if s[0] <= 1e-6:
        r = 1
    elif r > cap:
        r = cap
    return r, margin


def resize_cases():
    sd = load_file(os.path.join(LORAS, "kohya_lora.safetensors"))
    mods = modules(sd)
    out = {}
    for method, params in [("sv_ratio", [1.5, 3.0]), ("sv_fro", [0.7, 0.9]), ("sv_cumulative", [0.5, 0.8])]:
        for p in params:
            ranks = {}
            for key, (w, _scale, _rank) in sorted(mods.items()):
                s = np.linalg.svd(w, compute_uv=False)
                r, margin = kohya_rank(s, method, p, 4)
                if margin > 1e-6:
                    ranks[key] = r
            out[f"{method}={p}"] = ranks
    return out


def main():
    golden = {"random": random_cases(), "locon": locon_cases(), "resize": resize_cases()}
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(golden, f)
    hist = {k: sorted(set(v.values())) for k, v in golden["resize"].items()}
    print(f"wrote {OUT}: {len(golden['locon'])} LoCon modules; resize ranks used {hist}")


if __name__ == "__main__":
    main()
