#!/usr/bin/env python3
"""The same DDPM training step in PyTorch, as the baseline the engine is measured against.

The model is the engine's U-Net (models/unet/unet.h; the DDPM paper's CIFAR-10 network):
ch 128, mult (1, 2, 2, 2), 2 res blocks per level, attention at 16x16, dropout 0.1, GroupNorm
32 groups (eps 1e-6), 4ch time MLP, TF-'SAME' stride-2 downsampling, nearest 2x + conv
upsampling. The script checks that it has exactly 35,746,307 parameters, the engine's count
(`ddpm info --config configs/cifar10_ddpm.json`), and stops otherwise: a timing of a
different model would compare nothing. That it is the same function, not only as many
parameters, tests/test_unet_pytorch.cpp checks: the engine's output and gradients against
this model's on the same weights (scripts/pytorch_unet_match.py writes PyTorch's side).

One step: uniform timesteps, Gaussian noise, x_t, the epsilon prediction, MSE, backward,
global-norm clipping at 1, Adam (lr 2e-4), EMA 0.9999, as the engine's step with
configs/cifar10_ddpm.json. Timing: CUDA events over `--steps` steps after `--warmup` steps;
ms/step, img/s and peak allocated memory are printed and written as JSON.

    python3 scripts/pytorch_reference.py [--batch 128] [--steps 30] [--tf32] [--bf16] [--json OUT]

--tf32 lets cuDNN and cuBLAS use TF32 tensor cores (PyTorch's default for convolutions);
without it the step is plain fp32, the engine's default precision (`cuda_conv: tiled`);
compare --tf32 with `--set cuda_conv=tensor_core`. --bf16 runs the forward and the loss under
torch.autocast(dtype=torch.bfloat16), the standard mixed-precision recipe (fp32 weights and
optimiser); compare it with `--set precision=bf16` (bf16 activations, the engine's default
there) and with `--set precision=bf16 --set activations=fp32` (autocast's model: fp32
activations, bf16 operands). channels_last (NHWC) memory format, the
engine's layout. Not a dependency of the engine.

On the CPU (the side-by-side in docs/cpu-path.md), any image config of the engine:

    python3 scripts/pytorch_reference.py --device cpu --threads 2 --config configs/tiny.json \
        --batch 16 --expect-params 177155

--config reads the model keys (base_channels, channel_mult, num_res_blocks,
attention_resolutions, attention_heads, groups, dropout, image_size, in_channels), lr and
ema_decay; --expect-params is the engine's count for it (`ddpm info --config FILE`). Timing
on the CPU: wall clock over --steps steps after --warmup, at --threads intra-op threads
(PyTorch 1.13's OpenMP pool, the same pool size the engine uses).
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


GROUPS = 32  # set from --config


def group_norm(c):
    return nn.GroupNorm(GROUPS, c, eps=1e-6)


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


def attend(q, k, v):
    """softmax(q k^T / sqrt(d)) v over [n, heads, tokens, d]; the fused kernel where this
    PyTorch has one (2.0+), the two products and a softmax otherwise (1.13, Debian's)."""
    if hasattr(F, "scaled_dot_product_attention"):
        return F.scaled_dot_product_attention(q, k, v)
    return torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1) @ v


class Attention(nn.Module):
    def __init__(self, c, heads=1):
        super().__init__()
        self.heads = heads
        self.norm, self.qkv, self.proj = group_norm(c), nn.Linear(c, 3 * c), nn.Linear(c, c)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x):
        n, c, h, w = x.shape
        tokens = self.norm(x).permute(0, 2, 3, 1).reshape(n, h * w, c)
        split = lambda z: z.reshape(n, h * w, self.heads, c // self.heads).transpose(1, 2)
        q, k, v = (split(z) for z in self.qkv(tokens).chunk(3, dim=-1))
        out = attend(q, k, v).transpose(1, 2).reshape(n, h * w, c)
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
    def __init__(self, ch=128, mult=(1, 2, 2, 2), blocks=2, attn_res=(16,), dropout=0.1, size=32,
                 channels=3, heads=1):
        super().__init__()
        self.ch, temb = ch, 4 * ch
        self.temb0, self.temb1 = nn.Linear(ch, temb), nn.Linear(temb, temb)
        self.conv_in = nn.Conv2d(channels, ch, 3, padding=1)
        # down: every stage's output is a skip (as conv_in's is)
        self.down, chans, c, res = nn.ModuleList(), [ch], ch, size
        for level, m in enumerate(mult):
            for _ in range(blocks):
                block = ResBlock(c, ch * m, temb, dropout)
                c = ch * m
                self.down.append(Stage(block, Attention(c, heads)) if res in attn_res else Stage(block))
                chans.append(c)
            if level != len(mult) - 1:
                self.down.append(Stage(Downsample(c)))
                chans.append(c)
                res //= 2
        self.mid = Stage(ResBlock(c, c, temb, dropout), Attention(c, heads),
                         ResBlock(c, c, temb, dropout))
        # up: every ResBlock stage takes the latest skip; upsampling stages take none
        self.up = nn.ModuleList()
        for level, m in reversed(list(enumerate(mult))):
            for _ in range(blocks + 1):
                block = ResBlock(c + chans.pop(), ch * m, temb, dropout)
                c = ch * m
                self.up.append(Stage(block, Attention(c, heads)) if res in attn_res else Stage(block))
            if level != 0:
                self.up.append(Stage(Upsample(c)))
                res *= 2
        self.norm_out, self.conv_out = group_norm(c), nn.Conv2d(c, channels, 3, padding=1)
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


def model_from_config(path):
    """The U-Net of an engine config file, and its recipe's lr and EMA decay."""
    global GROUPS
    with open(path) as f:
        c = json.load(f)
    GROUPS = c.get("groups", 32)
    model = UNet(ch=c.get("base_channels", 128), mult=tuple(c.get("channel_mult", (1, 2, 2, 2))),
                 blocks=c.get("num_res_blocks", 2), attn_res=tuple(c.get("attention_resolutions", (16,))),
                 dropout=c.get("dropout", 0.1), size=c.get("image_size", 32),
                 channels=c.get("in_channels", 3), heads=c.get("attention_heads", 1))
    return model, c.get("lr", 2e-4), c.get("ema_decay", 0.9999), c.get("image_size", 32), \
        c.get("in_channels", 3)


def known_peak_tflops(device, bf16, tf32):
    """Dense peaks (no sparsity) of the devices this project is measured on, SXM parts."""
    for name in ("H100", "H200"):
        if name in device:
            return 989.4 if bf16 else (494.7 if tf32 else 66.9)
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--tf32", action="store_true")
    ap.add_argument("--bf16", action="store_true", help="autocast to bf16 (CUDA)")
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    ap.add_argument("--threads", type=int, help="CPU: intra-op threads")
    ap.add_argument("--config", help="an engine config: its model, lr and EMA decay")
    ap.add_argument("--expect-params", type=int, help="the engine's parameter count for --config")
    ap.add_argument("--nchw", action="store_true",
                    help="PyTorch's default layout instead of channels_last (on the CPU it can be faster)")
    ap.add_argument("--sample-steps", type=int,
                    help="time sampling instead: --batch images, this many DDIM steps (eta 0)")
    ap.add_argument("--compile", action="store_true",
                    help="torch.compile the model (the warm-up steps include the compilation)")
    ap.add_argument("--peak-tflops", type=float,
                    help="the device's dense peak for the precision, for the MFU (H100/H200 known)")
    ap.add_argument("--json")
    a = ap.parse_args()
    cpu = a.device == "cpu"
    if cpu and a.bf16:
        print("pytorch_reference: --bf16 is for CUDA (PyTorch 1.13's CPU autocast cannot run this "
              "model's group norm in bf16)")
        return 1
    if not cpu and not torch.cuda.is_available():
        print("pytorch_reference: no CUDA device; nothing to measure (--device cpu times the CPU)")
        return 0
    if a.threads:
        torch.set_num_threads(a.threads)
    if not cpu:
        torch.backends.cudnn.allow_tf32 = a.tf32
        torch.backends.cuda.matmul.allow_tf32 = a.tf32
        torch.backends.cudnn.benchmark = True
    dev = torch.device(a.device)
    torch.manual_seed(0)
    if a.config:
        model, lr, ema_decay, size, channels = model_from_config(a.config)
        expected = a.expect_params
    else:
        model, lr, ema_decay, size, channels = UNet(), 2e-4, 0.9999, 32, 3
        expected = EXPECTED_PARAMETERS
    layout = torch.contiguous_format if a.nchw else torch.channels_last
    model = model.to(dev).to(memory_format=layout)
    params = sum(p.numel() for p in model.parameters())
    if expected is not None and params != expected:
        print(f"pytorch_reference: {params} parameters, the engine's model has {expected}")
        return 1
    ema = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    abar = torch.cumprod(1 - betas, 0).float().to(dev)
    x0 = torch.rand(a.batch, channels, size, size, device=dev) * 2 - 1
    x0 = x0.contiguous(memory_format=layout)

    def step():
        t = torch.randint(0, 1000, (a.batch,), device=dev)
        eps = torch.randn_like(x0)
        s = abar[t].sqrt()[:, None, None, None]
        n = (1 - abar[t]).sqrt()[:, None, None, None]
        with torch.autocast(device_type=a.device, dtype=torch.bfloat16, enabled=a.bf16):
            loss = F.mse_loss(model(s * x0 + n * eps, t).float(), eps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            torch._foreach_mul_(ema, ema_decay)
            torch._foreach_add_(ema, [p.detach() for p in model.parameters()], alpha=1 - ema_decay)
        return loss

    def sample():
        """DDIM (eta 0) from noise over sample_steps evenly spaced timesteps, x0 clipped."""
        with torch.no_grad():
            model.eval()
            x = torch.randn_like(x0)
            ts = torch.linspace(999, 0, a.sample_steps).long().tolist()
            for i, t in enumerate(ts):
                eps = model(x, torch.full((a.batch,), t, device=dev))
                pred = ((x - (1 - abar[t]).sqrt() * eps) / abar[t].sqrt()).clamp(-1, 1)
                prev = abar[ts[i + 1]] if i + 1 < len(ts) else torch.tensor(1.0, device=dev)
                x = prev.sqrt() * pred + (1 - prev).sqrt() * eps
            return x.abs().mean()

    if a.sample_steps:
        step = sample  # noqa: F811 -- the same timing loop, over whole samplings
    model.train()
    # The step's FLOPs as PyTorch's own counter sees them (convolutions, matrix products,
    # attention), on the model before compilation: the numerator of the MFU, to set beside
    # the engine's count (engine/flops.h, kernel-bench step).
    flops = None
    try:
        from torch.utils.flop_counter import FlopCounterMode
        with FlopCounterMode(display=False) as counter:
            step()
        flops = counter.get_total_flops()
    except ImportError:
        print("pytorch_reference: this PyTorch has no torch.utils.flop_counter; no MFU")
    if a.compile:
        model = torch.compile(model)
    for _ in range(a.warmup):
        step()
    if cpu:
        start = time.perf_counter()
        for _ in range(a.steps):
            loss = step()
        ms = (time.perf_counter() - start) * 1000.0 / a.steps
        device, peak = f"cpu ({torch.get_num_threads()} threads)", None
    else:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(a.steps):
            loss = step()
        stop.record()
        torch.cuda.synchronize()
        ms = start.elapsed_time(stop) / a.steps
        device, peak = torch.cuda.get_device_name(), torch.cuda.max_memory_allocated()
    result = {"framework": f"pytorch {torch.__version__}", "device": device,
              "config": a.config or "configs/cifar10_ddpm.json",
              "precision": "bf16 autocast" if a.bf16 else ("tf32" if a.tf32 else "fp32"), "layout": "NCHW" if a.nchw else "NHWC",
              "batch": a.batch, "parameters": params,
              "measured": f"sampling, {a.sample_steps} DDIM steps" if a.sample_steps else "training step",
              "ms_per_step": ms, "images_per_second": a.batch * 1000.0 / ms,
              "peak_memory_bytes": peak, "last_loss": loss.item(),
              "date": time.strftime("%Y-%m-%d")}
    if flops:
        tflops = flops / (ms * 1e-3) * 1e-12
        peak_tflops = a.peak_tflops or known_peak_tflops(device, a.bf16, a.tf32)
        result.update({"compiled": a.compile, "tflop_per_step": flops * 1e-12, "tflops": tflops,
                       "mfu": tflops / peak_tflops if peak_tflops else None})
    print(json.dumps(result, indent=2))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
