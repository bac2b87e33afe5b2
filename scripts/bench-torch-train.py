#!/usr/bin/env python3
"""The PyTorch peer for a fine-tuning step: one 2-level PPFlow training step (forward, backward, AdamW, EMA)
in eager PyTorch on the CPU, for the digits recipe's shape (default) or PPFlow-B-2.

    python3 scripts/bench-torch-train.py [--shape digits|b2] [--threads 2] [--steps 10]

Compare with `ppfinetune validate --recipe recipes/digits-ppf2.json --threads 2 --timed-steps 10`
(digits) and `ppfinetune bench-step` (b2). Needs torch (a virtual environment outside the repository;
never in CI). The network is written here from docs/ and ../shared/docs/model-facts.md (adaLN-Zero blocks,
GELU-tanh MLP, fused attention; level 0 = down_square with proj1/linear1, level 1 = the full patch size),
so the arithmetic is the toolkit's; each level's half of the batch runs as its own forward pass, which is
the per-sample attention the toolkit uses by default. Random weights and data: speed only.
"""
import argparse, copy, math, time
import torch
import torch.nn as nn
import torch.nn.functional as F

p = argparse.ArgumentParser()
p.add_argument("--shape", choices=["digits", "b2"], default="digits")
p.add_argument("--threads", type=int, default=2)
p.add_argument("--steps", type=int, default=10)
a = p.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(0)
# hidden, depth, heads, channels, side, patch, batch, classes
D, L, H, C, S, P, B, K = (96, 4, 4, 1, 16, 2, 32, 10) if a.shape == "digits" else (768, 12, 12, 4, 32, 2, 8, 1000)


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv, self.proj = nn.Linear(D, 3 * D), nn.Linear(D, D)
        self.fc1, self.fc2 = nn.Linear(D, 4 * D), nn.Linear(4 * D, D)
        self.ada = nn.Linear(D, 6 * D)

    def forward(self, x, c):
        n, t, _ = x.shape
        s1, g1, a1, s2, g2, a2 = self.ada(F.silu(c)).unsqueeze(1).chunk(6, dim=2)
        h = F.layer_norm(x, (D,), eps=1e-6) * (1 + g1) + s1
        q, k, v = self.qkv(h).reshape(n, t, 3, H, D // H).permute(2, 0, 3, 1, 4)
        h = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, t, D)
        x = x + a1 * self.proj(h)
        h = F.layer_norm(x, (D,), eps=1e-6) * (1 + g2) + s2
        return x + a2 * self.fc2(F.gelu(self.fc1(h), approximate="tanh"))


class PPFlow2(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.ModuleList([nn.Conv2d(4 * C, D, P, P), nn.Conv2d(C, D, P, P)])       # level 0, level 1
        self.out = nn.ModuleList([nn.Linear(D, 4 * P * P * 2 * C), nn.Linear(D, P * P * 2 * C)])
        self.level = nn.Embedding(2, D)
        self.t1, self.t2, self.y = nn.Linear(256, D), nn.Linear(D, D), nn.Embedding(K + 1, D)
        self.blocks = nn.ModuleList(Block() for _ in range(L))
        self.fada = nn.Linear(D, 2 * D)
        self.register_buffer("pos0", torch.randn(1, (S // 2 // P) ** 2, D))
        self.register_buffer("pos1", torch.randn(1, (S // P) ** 2, D))

    def forward(self, x, t, y, level):
        n = x.shape[0]
        if level == 0:   # down_square: (c, 2h+a, 2w+b) -> channel 4c + 2a + b
            x = x.reshape(n, C, S // 2, 2, S // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(n, 4 * C, S // 2, S // 2)
        freqs = torch.exp(-math.log(10000) * torch.arange(128) / 128)
        tf = torch.cat([torch.cos(t[:, None] * 1000 * freqs), torch.sin(t[:, None] * 1000 * freqs)], 1)
        c = self.t2(F.silu(self.t1(tf))) + self.y(y) + self.level.weight[level]
        h = self.proj[level](x).flatten(2).transpose(1, 2) + (self.pos0 if level == 0 else self.pos1)
        for b in self.blocks:
            h = b(h, c)
        sh, sc = self.fada(F.silu(c)).unsqueeze(1).chunk(2, dim=2)
        return self.out[level](F.layer_norm(h, (D,), eps=1e-6) * (1 + sc) + sh)   # [n, T, p·p·Cout·f]


model = PPFlow2()
ema = copy.deepcopy(model).requires_grad_(False)
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0)
x1 = torch.randn(B, C, S, S)


def step():
    half = B // 2
    x0 = torch.randn(B, C, S, S)
    t = torch.cat([torch.rand(half) * 0.5, 0.5 + torch.rand(B - half) * 0.5])
    xt = t[:, None, None, None] * x1 + (1 - t[:, None, None, None]) * x0
    y = torch.randint(0, K, (B,))
    target = x1 - x0
    loss = 0
    for level, rows in ((0, slice(0, half)), (1, slice(half, B))):
        out = model(xt[rows], t[rows], y[rows], level)
        # The loss is on the prediction half of the output (speed only: the layout is not unpatchified).
        loss = loss + (out[..., : out.shape[-1] // 2] - target[rows].reshape(out.shape[0], out.shape[1], -1)).pow(2).mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        for e, w in zip(ema.parameters(), model.parameters()):
            e.mul_(0.99).add_(w, alpha=0.01)


step()                                   # warm-up
start = time.perf_counter()
for _ in range(a.steps):
    step()
seconds = (time.perf_counter() - start) / a.steps
print(f"torch {torch.__version__}, {a.threads} threads: PPFlow-2 training step ({a.shape}: D {D}, depth {L}, "
      f"{C}x{S}x{S}, batch {B} = {B // 2} coarse + {B - B // 2} full): {seconds * 1000:.1f} ms/step = {1 / seconds:.2f} steps/s")
