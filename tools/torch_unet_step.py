"""PyTorch's side of tools/gpu-bench.sh: one SD1.5 UNet step with CFG (batch 2) and one VAE decode
through diffusers, f16, random weights of the real architecture, on the GPU; the same work
`lorafuse bench pipeline` times. Prints milliseconds (median of timed runs after warm-up)."""

import argparse
import statistics
import time

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel


def timed(fn, warmup=3, runs=10):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    ms = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        ms.append((time.perf_counter() - t) * 1e3)
    return statistics.median(ms)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=512)
    args = ap.parse_args()
    torch.manual_seed(0)
    dev, dt = "cuda", torch.float16
    unet = UNet2DConditionModel(
        sample_size=args.size // 8,
        block_out_channels=(320, 640, 1280, 1280),
        cross_attention_dim=768,
        attention_head_dim=8,
        layers_per_block=2,
    ).to(dev, dt).eval()
    vae = AutoencoderKL(
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=2,
        sample_size=args.size,
    ).to(dev, dt).eval()
    s = args.size // 8
    x = torch.randn(2, 4, s, s, device=dev, dtype=dt)
    ctx = torch.randn(2, 77, 768, device=dev, dtype=dt)
    t = torch.tensor([500, 500], device=dev)
    z = torch.randn(1, 4, s, s, device=dev, dtype=dt)
    with torch.inference_mode():
        step = timed(lambda: unet(x, t, encoder_hidden_states=ctx).sample)
        dec = timed(lambda: vae.decode(z).sample)
    print(f"gpu: {torch.cuda.get_device_name()}  torch {torch.__version__}")
    print(f"torch f16 {args.size}x{args.size}: UNet step with CFG (batch 2) {step:.2f} ms, VAE decode {dec:.2f} ms")


if __name__ == "__main__":
    main()
