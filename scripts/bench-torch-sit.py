#!/usr/bin/env python3
"""The PyTorch peer for `ppsample bench-forward`: a SiT-B/2-shaped forward (D 768, depth 12, 12 heads,
32x32x4 latents, batch 8, random weights) in eager PyTorch on the CPU with a given thread count.

    python3 scripts/bench-torch-sit.py [--threads 2] [--repeats 3]

Needs torch (a virtual environment outside the repository; never in CI). The network is written here
from the architecture description in docs/ (adaLN-Zero blocks, GELU-tanh MLP, fused attention), so the
arithmetic is the same as the toolkit's forward; the official SiT code would run the same operations.
"""
import argparse, math, time
import torch
import torch.nn as nn
import torch.nn.functional as F

p = argparse.ArgumentParser()
p.add_argument("--threads", type=int, default=2)
p.add_argument("--repeats", type=int, default=3)
a = p.parse_args()
torch.set_num_threads(a.threads)
D, L, H, C, S, P, B = 768, 12, 12, 4, 32, 2, 8
T = (S // P) ** 2

class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv, self.proj = nn.Linear(D, 3 * D), nn.Linear(D, D)
        self.fc1, self.fc2 = nn.Linear(D, 4 * D), nn.Linear(4 * D, D)
        self.ada = nn.Linear(D, 6 * D)
    def forward(self, x, c):
        s1, g1, a1, s2, g2, a2 = self.ada(F.silu(c)).unsqueeze(1).chunk(6, dim=2)
        h = F.layer_norm(x, (D,), eps=1e-6) * (1 + g1) + s1
        q, k, v = self.qkv(h).reshape(B, T, 3, H, D // H).permute(2, 0, 3, 1, 4)
        h = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, T, D)
        x = x + a1 * self.proj(h)
        h = F.layer_norm(x, (D,), eps=1e-6) * (1 + g2) + s2
        return x + a2 * self.fc2(F.gelu(self.fc1(h), approximate="tanh"))

class SiT(nn.Module):
    def __init__(self):
        super().__init__()
        self.patch = nn.Conv2d(C, D, P, P)
        self.t1, self.t2, self.y = nn.Linear(256, D), nn.Linear(D, D), nn.Embedding(1001, D)
        self.blocks = nn.ModuleList(Block() for _ in range(L))
        self.fada, self.out = nn.Linear(D, 2 * D), nn.Linear(D, P * P * 2 * C)
        self.register_buffer("pos", torch.randn(1, T, D))
    def forward(self, x, t, y):
        freqs = torch.exp(-math.log(10000) * torch.arange(128) / 128)
        tf = torch.cat([torch.cos(t[:, None] * freqs), torch.sin(t[:, None] * freqs)], 1)
        c = self.t2(F.silu(self.t1(tf))) + self.y(y)
        x = self.patch(x).flatten(2).transpose(1, 2) + self.pos
        for b in self.blocks:
            x = b(x, c)
        sh, sc = self.fada(F.silu(c)).unsqueeze(1).chunk(2, dim=2)
        x = self.out(F.layer_norm(x, (D,), eps=1e-6) * (1 + sc) + sh)
        x = x.reshape(B, S // P, S // P, P, P, 2 * C).permute(0, 5, 1, 3, 2, 4)
        return x.reshape(B, 2 * C, S, S)

m = SiT().eval()
x, t, y = torch.randn(B, C, S, S), torch.rand(B), torch.randint(0, 1000, (B,))
with torch.no_grad():
    m(x, t, y)
    best = float("inf")
    for _ in range(a.repeats):
        start = time.perf_counter(); m(x, t, y); best = min(best, time.perf_counter() - start)
# FLOPs: the same analytic count as ForwardBenchmark (2·m·n·k per product, attention included).
rows = B * T
flops = 2 * rows * C * P * P * D + 2 * B * (256 * D + D * D)
flops += L * (2 * B * D * 6 * D + 2 * rows * D * 3 * D + 4 * B * T * T * D + 2 * rows * D * D + 4 * rows * D * 4 * D)
flops += 2 * B * D * 2 * D + 2 * rows * D * P * P * 2 * C
print(f"torch {torch.__version__}, {a.threads} threads: SiT-B/2 forward batch {B}: {best * 1000:.1f} ms = {flops / best / 1e9:.1f} GFLOP/s ({flops / 1e9:.1f} GFLOP)")
