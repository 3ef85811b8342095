#!/usr/bin/env python3
"""Writes tests/data/pytorch_unet_small.safetensors: scripts/pytorch_reference.py's U-Net (the
model every "engine vs PyTorch" figure of this project times) evaluated by PyTorch on random
weights, for tests/test_unet_pytorch.cpp to hold the engine's U-Net to: the same function and
the same gradients, not only the same parameter count.

The file holds, in the engine's names and layouts (models/unet/unet.cpp):
  model.<name>         every parameter, drawn at random (none zero: a fresh network's
                       zero-initialised conv2, proj and conv_out would hide most of the wiring)
  input.x, input.g     x_t and the output's weight g of the loss sum(out * g), (N, H, W, C)
  input.t              the timesteps, as floats
  expect.out           PyTorch's output, (N, H, W, C)
  expect.grad.x        d loss / d x_t
  expect.grad.<name>   d loss / d parameter, for every parameter
and the configuration as metadata ("config": the engine's config keys, as JSON).

PyTorch computes in float64 (the model .double(), the timestep embedding too), so the file's
values are the exact function to float32's last rounding and the test's differences are the
engine's fp32 arithmetic alone. Layouts: a convolution's weight (Cout, Cin, kh, kw) in PyTorch
is (kh, kw, Cin, Cout) in the engine, a linear's (out, in) is (in, out), the 1x1 skip
convolution is a linear (Cin, Cout), GroupNorm's weight / bias are gamma / beta.

    /usr/bin/python3 scripts/pytorch_unet_match.py [OUT]   # needs torch (Debian: python3-torch)
"""
import json
import math
import os
import struct
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pytorch_reference as ref  # noqa: E402

# Every kind of stage, small: two levels (a downsample and an upsample), 1x1 skips where the
# channels change, attention at the 4x4 level and in the middle with 2 heads (PyTorch's head
# split against the engine's), 2 images at distinct timesteps.
CONFIG = {"image_size": 8, "in_channels": 3, "base_channels": 8, "channel_mult": [1, 2],
          "num_res_blocks": 2, "attention_resolutions": [4], "attention_heads": 2,
          "dropout": 0.0, "groups": 4}
TIMESTEPS = [17, 803]


def embed_double(self, t):
    """The engine's timestep embedding (kernels/cpu/random.cpp), in double as it computes it."""
    half = self.ch // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float64) / (half - 1))
    args = t.double()[:, None] * freqs[None]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=1)


def engine_parameters(model, c):
    """(engine name, PyTorch parameter, how to lay it out) for every parameter, in the order
    the engine's U-Net walks its stages."""
    out = []

    def conv(name, m):
        out.append((name + ".w", m.weight, "conv"))
        out.append((name + ".b", m.bias, None))

    def dense(name, m, kind="linear"):
        out.append((name + ".w", m.weight, kind))
        out.append((name + ".b", m.bias, None))

    def norm(name, m):
        out.append((name + ".gamma", m.weight, None))
        out.append((name + ".beta", m.bias, None))

    def res(name, b):
        norm(name + ".norm1", b.norm1)
        conv(name + ".conv1", b.conv1)
        dense(name + ".temb_proj", b.temb)
        norm(name + ".norm2", b.norm2)
        conv(name + ".conv2", b.conv2)
        if isinstance(b.skip, torch.nn.Conv2d):
            dense(name + ".skip", b.skip, "skip")

    def attn(name, a):
        norm(name + ".norm", a.norm)
        dense(name + ".qkv", a.qkv)
        dense(name + ".proj", a.proj)

    dense("temb.dense0", model.temb0)
    dense("temb.dense1", model.temb1)
    conv("conv_in", model.conv_in)
    mult, blocks = c["channel_mult"], c["num_res_blocks"]
    stages = iter(model.down)
    for level in range(len(mult)):
        for i in range(blocks):
            layers = next(stages).layers
            res(f"down.{level}.res{i}", layers[0])
            if len(layers) > 1:
                attn(f"down.{level}.attn{i}", layers[1])
        if level != len(mult) - 1:
            conv(f"down.{level}.downsample", next(stages).layers[0].conv)
    res("mid.res1", model.mid.layers[0])
    attn("mid.attn", model.mid.layers[1])
    res("mid.res2", model.mid.layers[2])
    stages = iter(model.up)
    for level in reversed(range(len(mult))):
        for i in range(blocks + 1):
            layers = next(stages).layers
            res(f"up.{level}.res{i}", layers[0])
            if len(layers) > 1:
                attn(f"up.{level}.attn{i}", layers[1])
        if level != 0:
            conv(f"up.{level}.upsample", next(stages).layers[0].conv)
    norm("norm_out", model.norm_out)
    conv("conv_out", model.conv_out)
    assert len(out) == len(list(model.parameters())), "a PyTorch parameter has no engine name"
    return out


def to_engine(t, kind):
    """A PyTorch parameter (or its gradient) in the engine's layout."""
    if kind == "conv":  # (Cout, Cin, kh, kw) -> (kh, kw, Cin, Cout)
        return t.permute(2, 3, 1, 0)
    if kind == "linear":  # (out, in) -> (in, out)
        return t.t()
    if kind == "skip":  # a 1x1 convolution (Cout, Cin, 1, 1) -> a linear (Cin, Cout)
        return t[:, :, 0, 0].t()
    return t


def nhwc(t):
    return t.permute(0, 2, 3, 1)


def write_safetensors(path, tensors, metadata):
    """The format engine/safetensors.h reads: F32 tensors, then the raw little-endian data."""
    header, offset, blobs = {"__metadata__": metadata}, 0, []
    for name, t in tensors:
        data = t.detach().to(torch.float32).contiguous().numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    with open(path + ".tmp", "wb") as f:
        f.write(struct.pack("<Q", len(head)) + head + b"".join(blobs))
    os.replace(path + ".tmp", path)


def main():
    out_path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data",
        "pytorch_unet_small.safetensors")
    torch.manual_seed(0)
    ref.GROUPS = CONFIG["groups"]
    c = CONFIG
    model = ref.UNet(ch=c["base_channels"], mult=tuple(c["channel_mult"]),
                     blocks=c["num_res_blocks"], attn_res=tuple(c["attention_resolutions"]),
                     dropout=c["dropout"], size=c["image_size"], channels=c["in_channels"],
                     heads=c["attention_heads"]).double().eval()
    model.embed = embed_double.__get__(model)
    names = engine_parameters(model, c)
    with torch.no_grad():  # every parameter random, GroupNorm's gamma around 1
        for name, p, _ in names:
            if name.endswith(".gamma"):
                p.copy_(1 + 0.2 * torch.randn_like(p))
            else:
                fan_in = p[0].numel() if p.dim() > 1 else 4
                p.copy_(torch.randn_like(p) / math.sqrt(fan_in))
    n, s, ch = len(TIMESTEPS), c["image_size"], c["in_channels"]
    x = torch.randn(n, ch, s, s, dtype=torch.float64, requires_grad=True)
    g = torch.randn(n, ch, s, s, dtype=torch.float64)
    y = model(x, torch.tensor(TIMESTEPS))
    (y * g).sum().backward()
    tensors = [("model." + name, to_engine(p, kind)) for name, p, kind in names]
    tensors += [("input.x", nhwc(x)), ("input.g", nhwc(g)),
                ("input.t", torch.tensor(TIMESTEPS, dtype=torch.float64)),
                ("expect.out", nhwc(y)), ("expect.grad.x", nhwc(x.grad))]
    tensors += [("expect.grad." + name, to_engine(p.grad, kind)) for name, p, kind in names]
    write_safetensors(out_path, tensors, {
        "config": json.dumps(CONFIG),
        "made_by": f"scripts/pytorch_unet_match.py, PyTorch {torch.__version__}, float64"})
    print(f"wrote {out_path}: {len(names)} parameters "
          f"({sum(p.numel() for _, p, _ in names)} values), output {tuple(nhwc(y).shape)}")


if __name__ == "__main__":
    main()
