"""LoRA through peft on a causal LM as the text model: tiny random Llama and Qwen3 models that the tests build and save
(weights, config and a tokenizer without a pad token, as these models ship), loaded the way a Hub model is."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from affectlab.lab.meld import main
from affectlab.models.errors import ModelError
from affectlab.models.text_classifier import create_text_classifier

WORDS = ("so happy today this is awful what a surprise i am angry sad okay fine oh my god no yes really "
         "you must have had your hands full").split()
TEXTS = ["so happy today", "this is awful", "what a surprise", "i am angry"]
LABELS = torch.tensor([0, 1, 2, 1])


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def save_tiny_causal_lm(folder: Path, kind: str) -> Path:
    """A word-level tokenizer whose only special tokens are <unk> and </s> (no pad token, like Llama's) and a
    2-layer random causal LM of ``kind`` (llama | qwen3), saved as a pretrained model folder."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

    vocab = {token: i for i, token in enumerate(["<unk>", "</s>", *dict.fromkeys(WORDS)])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", eos_token="</s>")
    sizes = dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, eos_token_id=1,
                 bos_token_id=1, pad_token_id=None, tie_word_embeddings=False)
    torch.manual_seed(0)
    if kind == "llama":
        model = LlamaForCausalLM(LlamaConfig(**sizes))
    else:
        model = Qwen3ForCausalLM(Qwen3Config(**sizes, head_dim=8))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


LORA = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": None}


@pytest.mark.parametrize("kind", ["llama", "qwen3"])
def test_lora_trains_adapters_and_head_only_and_learns_a_batch(tmp_path, kind):
    from safetensors.torch import load_file

    folder = save_tiny_causal_lm(tmp_path / kind, kind)
    net = create_text_classifier(str(folder), 3, lora=LORA, max_length=16)
    assert net.tokenizer.pad_token == "</s>" and net.model.config.pad_token_id == 1  # padded with the end token

    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or ".score." in n for n in trainable), trainable
    assert any("q_proj.lora_A" in n for n in trainable) and any("v_proj.lora_B" in n for n in trainable)
    assert any(".score." in n for n in trainable)  # the new classification head trains too
    frozen = {n: p.detach().clone() for n, p in net.named_parameters() if not p.requires_grad}
    adapters = {n: p.detach().clone() for n, p in net.named_parameters() if "lora_" in n}

    optimizer = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=2e-2)
    losses = []
    for _ in range(15):
        loss = torch.nn.functional.cross_entropy(net(TEXTS), LABELS)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses

    for name, parameter in net.named_parameters():
        if name in frozen:
            assert torch.equal(parameter, frozen[name]), f"frozen {name} changed"
    assert any(not torch.equal(p, adapters[n]) for n, p in net.named_parameters() if n in adapters)
    # the frozen base is exactly the saved model
    saved = load_file(str(folder / "model.safetensors"))
    base = net.model.get_base_model().model
    assert torch.equal(base.embed_tokens.weight, saved["model.embed_tokens.weight"])
    weight = base.layers[0].self_attn.q_proj.base_layer.weight
    assert torch.equal(weight, saved["model.layers.0.self_attn.q_proj.weight"])


def test_the_causal_lm_head_reads_the_last_real_token_not_the_padding(tmp_path):
    net = create_text_classifier(str(save_tiny_causal_lm(tmp_path / "llama", "llama")), 3, lora=LORA).eval()
    with torch.no_grad():
        alone = net(["oh my god"])
        padded = net(["oh my god", "you must have had your hands full"])  # the first is padded on the right
    assert net.tokenize(["oh my god", "you must have had your hands full"])["attention_mask"][0].sum() == 3
    assert torch.allclose(alone[0], padded[0], atol=1e-5)
    assert "token_type_ids" not in net.tokenize(["oh"])  # the tokenizer makes them; Llama's forward takes none


def test_lora_options_are_checked(tmp_path):
    folder = save_tiny_causal_lm(tmp_path / "llama", "llama")
    with pytest.raises(ModelError, match=r"LoRA option \['rank'\] is unknown"):
        create_text_classifier(str(folder), 3, lora={"rank": 4})
    with pytest.raises(ModelError, match=r"target_modules=\['no_such_layer'\]"):
        create_text_classifier(str(folder), 3, lora={"target_modules": ["no_such_layer"]})


def test_experiment_fine_tunes_a_causal_lm_with_lora(workdir, tmp_path):
    folder = save_tiny_causal_lm(tmp_path / "qwen3", "qwen3")
    tracking = f"sqlite:///{workdir / 'mlflow.db'}"
    summary = main([
        f"model.text.name={folder}", "model.text.lora.enabled=true", "model.text.lora.r=4",
        "model.text.max_length=32", "tasks=[meld]", "data.meld.dir=null", "data.meld.train_size=24",
        "data.meld.dev_size=12", "trainer.max_epochs=1", "data.batch_size=12", "model.features.dim=16",
        "model.features.heads=2", f"mlflow.tracking_uri={tracking}",
    ])
    assert 0.0 <= summary["meld/text/f1_weighted"] <= 1.0 and 0.0 <= summary["meld/features/f1_weighted"] <= 1.0
    client = MlflowClient(tracking_uri=tracking)
    runs = client.search_runs([client.get_experiment_by_name("meld").experiment_id])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert parent.data.params["model.text.lora.enabled"] == "True"
    text_run = next(r for r in runs if r.info.run_name == "meld/text")
    assert "train/loss" in text_run.data.metrics


def test_a_gpt2_folder_is_pooled_as_a_decoder_as_the_probes_pool_it(tmp_path):
    """GPT-2's saved architecture is GPT2LMHeadModel (no "ForCausalLM"): it is still a decoder, classified from its
    last real token by its own head, the rule affectlab.probing.is_decoder applies to the same model."""
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from affectlab.probing import is_decoder

    save_tiny_causal_lm(tmp_path / "llama", "llama")  # its tokenizer, for a GPT-2 of the same vocabulary
    tokenizer_files = tmp_path / "llama"
    torch.manual_seed(0)
    vocab = len(AutoTokenizer.from_pretrained(tokenizer_files))
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_embd=32, n_layer=1, n_head=2, n_positions=64,
                                      eos_token_id=1, bos_token_id=1))
    gpt2.save_pretrained(tmp_path / "gpt2")
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (tokenizer_files / name).exists():
            (tmp_path / "gpt2" / name).write_bytes((tokenizer_files / name).read_bytes())
    assert gpt2.config.architectures == ["GPT2LMHeadModel"] and is_decoder(gpt2)
    net = create_text_classifier(str(tmp_path / "gpt2"), 3, max_length=16, pooling="auto")
    assert type(net.model).__name__ == "GPT2ForSequenceClassification" and net.head is None
    assert net(["I am so happy today"]).shape == (1, 3)
