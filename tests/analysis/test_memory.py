"""The calculators: hand-checked numbers of a public model, and one count with the trainer for every preset."""

import math

import jax
import numpy as np
import pytest

from scalefit.analysis.cost import model_shape
from scalefit.analysis.memory import (GIB, PRECISION_BYTES, attention_variants, bytes_per_param, kv_cache_bytes,
                                      model_sheet, token_flops, training_bytes, weight_bytes)
from scalefit.training.config import PRESETS, ModelConfig
from scalefit.training.counting import flops_per_token, param_counts
from scalefit.training.model import init_params

# LLaMA-7B (Touvron et al. 2023, "LLaMA: Open and Efficient Foundation Language Models", Table 2: 32 layers,
# width 4096, 32 heads; the released config.json: vocabulary 32,000, SwiGLU width 11,008, untied output
# layer, RMSNorm, RoPE, multi-head attention). Hugging Face's LlamaForCausalLM of that config has
# 6,738,415,616 parameters; at 2 bytes (BF16) that is 13.48e9 bytes, the "13.5 GB" of its checkpoint.
LLAMA_7B = ModelConfig(vocab_size=32000, seq_len=4096, d_model=4096, n_layer=32, n_head=32, n_kv_head=32,
                       d_ff=11008)


def test_llama_7b_parameters_and_weights():
    c = param_counts(LLAMA_7B)
    assert c.total == 6_738_415_616 and c.embedding == 2 * 32000 * 4096 and c.active == c.non_embedding
    assert weight_bytes(LLAMA_7B, "bf16") == 2 * 6_738_415_616
    assert round(weight_bytes(LLAMA_7B, "bf16") / 1e9, 1) == 13.5
    assert weight_bytes(LLAMA_7B, "fp32") == 4 * c.total and weight_bytes(LLAMA_7B, "int4") == c.total / 2
    assert weight_bytes(LLAMA_7B, "fp8") == weight_bytes(LLAMA_7B, "int8") == c.total
    # Group-wise INT4 with one FP16 scale per 128 weights (GPTQ's layout): 1/64 more bytes.
    assert weight_bytes(LLAMA_7B, "int4", group_size=128) == pytest.approx(c.total / 2 * (1 + 2 / 64), rel=1e-9)


def test_llama_7b_kv_cache_mha_gqa_mqa():
    # 2 (K, V) x 32 layers x 32 heads x 128 channels x 4,096 tokens x 2 bytes = 2^31 bytes = 2 GiB per sequence
    # (e.g. Pope et al. 2022, "Efficiently Scaling Transformer Inference", Sec. 2: the KV cache is 2 n_layer
    # d_model bytes-per-number per token for multi-head attention).
    assert kv_cache_bytes(LLAMA_7B, 4096, batch=1, precision="bf16") == 2 * GIB
    # Grouped-query attention with 8 KV heads (Ainslie et al. 2023; LLaMA-2 70B's choice) caches a quarter;
    # multi-query attention (Shazeer 2019) 1/32.
    assert kv_cache_bytes(LLAMA_7B, 4096, n_kv_head=8) == 0.5 * GIB
    assert kv_cache_bytes(LLAMA_7B, 4096, n_kv_head=1) == 2 * GIB / 32
    assert kv_cache_bytes(LLAMA_7B, 4096, batch=8, precision="fp32") == 2 * GIB * 8 * 2
    gqa = LLAMA_7B.with_overrides(n_kv_head=8)
    assert kv_cache_bytes(gqa, 4096) == 0.5 * GIB and attention_variants(gqa) == {"MHA": 32, "GQA-8": 8, "MQA": 1}
    with pytest.raises(ValueError, match="must divide"):
        kv_cache_bytes(LLAMA_7B, 4096, n_kv_head=5)


def test_training_memory_is_sixteen_bytes_a_parameter():
    # Mixed-precision AdamW: 2 (bf16 weights) + 2 (grads) + 4 (fp32 master) + 4 + 4 (moments) = 16 bytes
    # (Rajbhandari et al. 2020, ZeRO, Sec. 3.1); fp32 training: 4 + 4 + 8, no master copy.
    n = param_counts(LLAMA_7B).total
    mixed, full = training_bytes(LLAMA_7B), training_bytes(LLAMA_7B, weights="fp32")
    assert mixed.total == 16 * n and mixed.master == 4 * n and mixed.optimizer == 8 * n
    assert full.total == 16 * n and full.master == 0
    assert training_bytes(LLAMA_7B, optimizer="bf16").total == 12 * n


def test_attention_share_grows_with_context():
    shares = [token_flops(LLAMA_7B, t).attention_share for t in (512, 2048, 8192, 32768)]
    assert all(a < b for a, b in zip(shares, shares[1:]))
    f = token_flops(LLAMA_7B, 4096)
    # 4 L T d per token in q k^T and the weighted values (Kaplan et al. 2020, Table 1: 2 n_layer n_ctx d_attn
    # per forward pass, twice over for scores and values) against 2 FLOPs per weight of every matmul
    # (attention 4 d^2 and SwiGLU 3 d d_ff per layer, the output layer d V; norms are not matmuls).
    assert f.attention == 4 * 32 * 4096 * 4096
    matmul_weights = 32 * (4 * 4096**2 + 3 * 4096 * 11008) + 4096 * 32000
    assert f.attention_share == pytest.approx(f.attention / (f.attention + 2 * matmul_weights), rel=1e-12)
    assert token_flops(LLAMA_7B, 4096, causal=True).attention == pytest.approx(4 * 32 * (4096 + 1) / 2 * 4096)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_calculators_agree_with_the_trainer_for_every_preset(name):
    cfg = PRESETS[name]
    sheet = model_sheet(name)
    assert sheet.counts == param_counts(cfg) and sheet.config == cfg
    # The weights' bytes are those of the arrays the trainer builds (shapes only, nothing allocated).
    shapes = jax.eval_shape(lambda k: init_params(cfg, key=k), jax.random.PRNGKey(0))
    n = sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(shapes))
    assert n == sheet.counts.total and sheet.weights["fp32"] == 4 * n and sheet.weights["bf16"] == 2 * n
    # FLOPs are the trainer's own count at the context.
    fc = flops_per_token(cfg)
    assert sheet.flops[0].training == fc.exact and sheet.flops[0].forward == pytest.approx(fc.exact / 3)
    assert sheet.kv_cache["MHA"] == 2 * cfg.n_layer * cfg.n_head * cfg.head_dim * cfg.seq_len * 2


def test_moe_shapes_count_every_expert():
    dense, moe = model_shape(1e9, n_kind="active"), model_shape(1e9, n_kind="active", n_expert=8, top_k=2)
    assert abs(math.log(moe.counts.active / dense.counts.active)) < 0.1
    d, L = moe.config.d_model, moe.config.n_layer
    assert d == dense.config.d_model and moe.config.d_ff == round(dense.config.d_ff / 2 / 16) * 16
    # 8 experts of half the width and a router instead of one MLP, in every layer.
    extra = L * (8 * 3 * d * moe.config.d_ff + d * 8 - 3 * d * dense.config.d_ff)
    assert moe.counts.total - dense.counts.total == extra and moe.counts.total > 2.5 * dense.counts.total
    assert weight_bytes(moe, "bf16") == 2 * moe.counts.total
    assert token_flops(moe).training < 1.2 * token_flops(dense).training  # FLOPs follow the active count


def test_precisions_and_errors():
    assert set(PRECISION_BYTES) >= {"fp32", "bf16", "fp8", "int8", "int4"} and bytes_per_param("INT4") == 0.5
    with pytest.raises(ValueError, match="unknown precision"):
        bytes_per_param("fp6")
    with pytest.raises(ValueError, match="context must be a positive whole number"):
        kv_cache_bytes(LLAMA_7B, 0)
    with pytest.raises(TypeError, match="ModelConfig, a preset name"):
        weight_bytes(3.5)


def test_cli_calc(capsys):
    from scalefit.cli import main

    assert main(["calc", "--d-model", "4096", "--n-layer", "32", "--n-head", "32", "--d-ff", "11008",
                 "--vocab-size", "32000", "--context", "4096"]) == 0
    out = capsys.readouterr().out
    assert "total 6,738,415,616" in out and "bf16 13.48 GB" in out
    assert "MHA 2.147 GB (2 GiB)" in out and "GQA-8 0.5369 GB (0.5 GiB)" in out
    assert main(["calc", "--preset", "moe8-top2-d128-l4"]) == 0
    out = capsys.readouterr().out
    assert f"active {param_counts(PRESETS['moe8-top2-d128-l4']).active:,}" in out
    assert main(["calc", "--N", "1.3e10", "--n-kind", "active", "--experts", "8", "--top-k", "2"]) == 0
    assert "8 experts top-2" in capsys.readouterr().out
    assert main(["calc", "--d-model", "64"]) == 2
    assert "needs --d-model, --n-layer and --n-head" in capsys.readouterr().err


def test_plan_prints_memory_of_its_shape(capsys):
    from scalefit.cli import main

    args = ["plan", "--compute", "1e21"]
    for k, v in dict(E=1.817, A=482.0, B=2085.4, alpha=0.3478, beta=0.3658).items():
        args += ["--param", f"{k}={v}"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "weights: fp32" in out and "KV cache at 2,048 tokens" in out and "attention share" in out
    assert np.isfinite(float(out.split("bf16 ")[1].split(" GB")[0]))
