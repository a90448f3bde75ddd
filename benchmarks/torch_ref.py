"""The trainer's dense model in plain PyTorch: the reference the benchmarks time beside the JAX step.

RMSNorm pre-norm blocks, rotary embeddings (rotate-half), causal attention through
`F.scaled_dot_product_attention`, SwiGLU MLP, untied output layer, AdamW (betas 0.9/0.95, weight decay
0.1) with global-norm clipping at 1: the recipe of `scalefit.training.model` with fused projections
(Q/K/V as one matmul, gate and up as one), as a PyTorch user would write it. Optional: bf16 autocast,
`torch.compile`, a CUDA device. Benchmark-only: torch is never needed by the package or its tests.
"""

from __future__ import annotations

from typing import Callable

import numpy as np


def torch_stepper(cfg, batches: list[tuple[np.ndarray, np.ndarray]], *, device: str = "cpu", bf16: bool = False,
                  compile: bool = False) -> Callable[[], None]:
    """A closure running one AdamW training step of ``cfg`` (a scalefit ModelConfig, MHA) to completion,
    cycling through ``batches`` ([B, T] int arrays: tokens, targets)."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    d, n_layer, h, f, v = cfg.d_model, cfg.n_layer, cfg.n_head, cfg.d_ff, cfg.vocab_size
    hd = d // h
    t_max = batches[0][0].shape[1]

    def p(*shape, std):
        return torch.nn.Parameter(torch.randn(*shape, device=device) * std)

    params = {"embed": p(v, d, std=0.02), "unembed": p(d, v, std=0.02),
              "final_norm": torch.nn.Parameter(torch.ones(d, device=device))}
    layers = []
    for _ in range(n_layer):
        layers.append({"attn_norm": torch.nn.Parameter(torch.ones(d, device=device)),
                       "mlp_norm": torch.nn.Parameter(torch.ones(d, device=device)),
                       "wqkv": p(d, 3 * d, std=d**-0.5), "wo": p(d, d, std=(2 * n_layer * d) ** -0.5),
                       "w_in": p(d, 2 * f, std=d**-0.5), "w_out": p(f, d, std=(2 * n_layer * f) ** -0.5)})
    all_params = list(params.values()) + [x for lay in layers for x in lay.values()]
    inv = cfg.rope_base ** (-torch.arange(0, hd // 2, dtype=torch.float64) * 2 / hd)
    ang = torch.arange(t_max, dtype=torch.float64)[:, None] * inv[None]  # [T, hd/2]
    cos = ang.cos().float()[None, None].to(device)  # [1, 1, T, hd/2]
    sin = ang.sin().float()[None, None].to(device)

    def rms(x, g):
        return x * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + 1e-5).to(x.dtype) * g

    def rope(x):  # x [B, H, T, hd], rotate-half layout
        x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
        return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1).to(x.dtype)

    def loss_fn(x, y):
        b, t = x.shape
        z = F.embedding(x.reshape(-1), params["embed"])  # [B*T, d]
        for lay in layers:
            qkv = (rms(z, lay["attn_norm"]) @ lay["wqkv"]).view(b, t, 3, h, hd).permute(2, 0, 3, 1, 4)
            q, k, val = rope(qkv[0]), rope(qkv[1]), qkv[2]  # each [B, H, T, hd]
            a = F.scaled_dot_product_attention(q, k, val, is_causal=True)  # [B, H, T, hd]
            z = z + a.transpose(1, 2).reshape(b * t, d) @ lay["wo"]
            hid = rms(z, lay["mlp_norm"]) @ lay["w_in"]  # [B*T, 2F]
            z = z + (F.silu(hid[:, :f]) * hid[:, f:]) @ lay["w_out"]
        logits = rms(z, params["final_norm"]) @ params["unembed"]  # [B*T, V]
        return F.cross_entropy(logits.float(), y.reshape(-1))

    if compile:
        loss_fn = torch.compile(loss_fn)
    fused = {"fused": True} if device != "cpu" else {}
    opt = torch.optim.AdamW(all_params, lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1, **fused)
    on_device = [tuple(torch.from_numpy(a.astype(np.int64)).to(device) for a in xy) for xy in batches]
    it = iter(range(10**12))
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def run():
        x, y = on_device[next(it) % len(on_device)]
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(all_params, 1.0)
        opt.step()
        loss.item()  # one host sync per step, as the JAX trainer does
        sync()

    return run
