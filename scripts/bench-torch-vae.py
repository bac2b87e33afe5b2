#!/usr/bin/env python3
"""The PyTorch peer for `ppsample bench-vae`: diffusers' AutoencoderKL with the Stable Diffusion VAE
architecture (blocks 128/256/512/512, 2 layers per block, 32 groups, 4 latent channels), random weights,
float32 on the CPU, decoding [B,4,s/8,s/8] latents and encoding [B,3,s,s] images with a given thread count.

    python3 scripts/bench-torch-vae.py [--threads 2] [--batch 4] [--size 256] [--repeats 1]

Needs torch and diffusers (a virtual environment outside the repository; never in CI). Prints seconds
(best of the repeats, whole batch) and the process's peak RSS after each phase (ru_maxrss; the decode
runs first, so the encode's number includes it unless it is larger).
"""
import argparse, resource, time
import torch
from diffusers import AutoencoderKL

p = argparse.ArgumentParser()
p.add_argument("--threads", type=int, default=2)
p.add_argument("--batch", type=int, default=4)
p.add_argument("--size", type=int, default=256)
p.add_argument("--repeats", type=int, default=1)
a = p.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(0)

vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2, norm_num_groups=32,
                    latent_channels=4, down_block_types=("DownEncoderBlock2D",) * 4,
                    up_block_types=("UpDecoderBlock2D",) * 4).eval()
side = a.size // 8
z = torch.randn(a.batch, 4, side, side)
x = torch.rand(a.batch, 3, a.size, a.size) * 2 - 1

def peak_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024   # kB on Linux

def best(fn):
    times = []
    for _ in range(a.repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)

with torch.inference_mode():
    rss_weights = peak_mib()
    dec = best(lambda: vae.decode(z).sample)
    rss_dec = peak_mib()
    enc = best(lambda: vae.encode(x).latent_dist.mean)
    rss_enc = peak_mib()

print(f"torch {torch.__version__}, {a.threads} threads, batch {a.batch}, {a.size}x{a.size}")
print(f"decode [{a.batch},4,{side},{side}]: {dec:.3f} s ({dec / a.batch:.3f} s/image), peak RSS {rss_dec} MiB")
print(f"encode [{a.batch},3,{a.size},{a.size}]: {enc:.3f} s ({enc / a.batch:.3f} s/image), peak RSS {rss_enc} MiB")
print(f"peak RSS with the weights built: {rss_weights} MiB")
