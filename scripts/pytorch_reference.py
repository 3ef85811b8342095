#!/usr/bin/env python3
"""The same DDPM training step in PyTorch, as the baseline the engine is measured against.

The model is the engine's U-Net (models/unet/unet.h; the DDPM paper's CIFAR-10 network):
ch 128, mult (1, 2, 2, 2), 2 res blocks per level, attention at 16x16, dropout 0.1, GroupNorm
32 groups (eps 1e-6), 4ch time MLP, TF-'SAME' stride-2 downsampling, nearest 2x + conv
upsampling. The script checks that it has exactly 35,746,307 parameters, the engine's count
(`ddpm info --config configs/cifar10_ddpm.json`), and stops otherwise: a timing of a
different model would compare nothing.

One step: uniform timesteps, Gaussian noise, x_t, the epsilon prediction, MSE, backward,
global-norm clipping at 1, Adam (lr 2e-4), EMA 0.9999, as the engine's step with
configs/cifar10_ddpm.json. Timing: CUDA events over `--steps` steps after `--warmup` steps;
ms/step, img/s and peak allocated memory are printed and written as JSON.

    python3 scripts/pytorch_reference.py [--batch 128] [--steps 30] [--tf32] [--json OUT]

--tf32 lets cuDNN and cuBLAS use TF32 tensor cores (PyTorch's default for convolutions);
without it the step is plain fp32, the engine's default precision (`cuda_conv: tiled`);
compare --tf32 with `--set cuda_conv=tensor_core`. channels_last (NHWC) memory format, the
engine's layout. Needs PyTorch with CUDA; not a dependency of the engine.
"""
import argparse
import json
import math
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

EXPECTED_PARAMETERS = 35_746_307


def group_norm(c):
    return nn.GroupNorm(32, c, eps=1e-6)


class ResBlock(nn.Module):
    def __init__(self, cin, cout, temb, dropout):
        super().__init__()
        self.norm1, self.conv1 = group_norm(cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.temb = nn.Linear(temb, cout)
        self.norm2, self.conv2 = group_norm(cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.dropout = nn.Dropout(dropout)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x, temb_act):
        h = self.conv1(F.silu(self.norm1(x))) + self.temb(temb_act)[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.norm, self.qkv, self.proj = group_norm(c), nn.Linear(c, 3 * c), nn.Linear(c, c)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x):
        n, c, h, w = x.shape
        tokens = self.norm(x).permute(0, 2, 3, 1).reshape(n, h * w, c)
        q, k, v = self.qkv(tokens).chunk(3, dim=-1)
        out = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])[:, 0]
        return x + self.proj(out).reshape(n, h, w, c).permute(0, 3, 1, 2)


class Downsample(nn.Module):
    """3x3 stride-2 conv with TensorFlow 'SAME' padding on an even map: 0 before, 1 after."""

    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, stride=2)

    def forward(self, x):
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class Stage(nn.Module):
    """A ResBlock with an optional Attention after it, or a resampling conv: one skip each."""

    def __init__(self, *layers):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, h, temb):
        for layer in self.layers:
            h = layer(h, temb) if isinstance(layer, ResBlock) else layer(h)
        return h


class UNet(nn.Module):
    def __init__(self, ch=128, mult=(1, 2, 2, 2), blocks=2, attn_res=(16,), dropout=0.1, size=32):
        super().__init__()
        self.ch, temb = ch, 4 * ch
        self.temb0, self.temb1 = nn.Linear(ch, temb), nn.Linear(temb, temb)
        self.conv_in = nn.Conv2d(3, ch, 3, padding=1)
        # down: every stage's output is a skip (as conv_in's is)
        self.down, chans, c, res = nn.ModuleList(), [ch], ch, size
        for level, m in enumerate(mult):
            for _ in range(blocks):
                block = ResBlock(c, ch * m, temb, dropout)
                c = ch * m
                self.down.append(Stage(block, Attention(c)) if res in attn_res else Stage(block))
                chans.append(c)
            if level != len(mult) - 1:
                self.down.append(Stage(Downsample(c)))
                chans.append(c)
                res //= 2
        self.mid = Stage(ResBlock(c, c, temb, dropout), Attention(c), ResBlock(c, c, temb, dropout))
        # up: every ResBlock stage takes the latest skip; upsampling stages take none
        self.up = nn.ModuleList()
        for level, m in reversed(list(enumerate(mult))):
            for _ in range(blocks + 1):
                block = ResBlock(c + chans.pop(), ch * m, temb, dropout)
                c = ch * m
                self.up.append(Stage(block, Attention(c)) if res in attn_res else Stage(block))
            if level != 0:
                self.up.append(Stage(Upsample(c)))
                res *= 2
        self.norm_out, self.conv_out = group_norm(c), nn.Conv2d(c, 3, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def embed(self, t):
        half = self.ch // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device) / (half - 1))
        args = t.float()[:, None] * freqs[None]
        return torch.cat([torch.sin(args), torch.cos(args)], dim=1)

    def forward(self, x, t):
        temb = F.silu(self.temb1(F.silu(self.temb0(self.embed(t)))))
        skips = [self.conv_in(x)]
        h = skips[-1]
        for stage in self.down:
            h = stage(h, temb)
            skips.append(h)
        h = self.mid(h, temb)
        for stage in self.up:
            if isinstance(stage.layers[0], ResBlock):
                h = torch.cat([h, skips.pop()], dim=1)
            h = stage(h, temb)
        return self.conv_out(F.silu(self.norm_out(h)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--tf32", action="store_true")
    ap.add_argument("--json")
    a = ap.parse_args()
    if not torch.cuda.is_available():
        print("pytorch_reference: no CUDA device; nothing to measure")
        return 0
    torch.backends.cudnn.allow_tf32 = a.tf32
    torch.backends.cuda.matmul.allow_tf32 = a.tf32
    torch.backends.cudnn.benchmark = True
    dev = torch.device("cuda")
    model = UNet().to(dev).to(memory_format=torch.channels_last)
    params = sum(p.numel() for p in model.parameters())
    if params != EXPECTED_PARAMETERS:
        print(f"pytorch_reference: {params} parameters, the engine's model has {EXPECTED_PARAMETERS}")
        return 1
    ema = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.Adam(model.parameters(), lr=2e-4)
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    abar = torch.cumprod(1 - betas, 0).float().to(dev)
    x0 = torch.rand(a.batch, 3, 32, 32, device=dev) * 2 - 1
    x0 = x0.contiguous(memory_format=torch.channels_last)

    def step():
        t = torch.randint(0, 1000, (a.batch,), device=dev)
        eps = torch.randn_like(x0)
        s = abar[t].sqrt()[:, None, None, None]
        n = (1 - abar[t]).sqrt()[:, None, None, None]
        loss = F.mse_loss(model(s * x0 + n * eps, t), eps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            torch._foreach_mul_(ema, 0.9999)
            torch._foreach_add_(ema, [p.detach() for p in model.parameters()], alpha=1e-4)
        return loss

    model.train()
    for _ in range(a.warmup):
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(a.steps):
        loss = step()
    stop.record()
    torch.cuda.synchronize()
    ms = start.elapsed_time(stop) / a.steps
    result = {"framework": f"pytorch {torch.__version__}", "device": torch.cuda.get_device_name(),
              "precision": "tf32" if a.tf32 else "fp32", "batch": a.batch, "parameters": params,
              "ms_per_step": ms, "images_per_second": a.batch * 1000.0 / ms,
              "peak_memory_bytes": torch.cuda.max_memory_allocated(), "last_loss": loss.item(),
              "date": time.strftime("%Y-%m-%d")}
    print(json.dumps(result, indent=2))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
