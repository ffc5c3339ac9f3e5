"""Precision, memory-bounded scoring and model families, as far as a CPU allows."""

import pytest
import torch

from fedrag.data import load_corpus, load_qa
from fedrag.generate import Generator
from fedrag.rag import RAGSystem
from fedrag.retrieve import KnowledgeStore, Retriever, Searcher
from fedrag.train import LSRStage, RAGSequenceStage, RAGTokenStage, RALTStage, TrainConfig, get_state, train_stage

from test_cli import run


def _rag(tiny_models, demo_dir, generator=None):
    retriever = Retriever.load(tiny_models["retriever"])
    store = KnowledgeStore.build(load_corpus(demo_dir / "corpus.jsonl"), retriever)
    return RAGSystem(Searcher(store, retriever), Generator.load(generator or tiny_models["generator"], lora=True), top_k=3)


@pytest.fixture(scope="module")
def batch(demo_dir):
    return load_qa(demo_dir / "train.jsonl")[:4]


def _loss_and_grads(rag, stage, batch, chunk):
    rag.generator.score_batch_size = chunk
    params = {**rag.retriever.trainable_parameters(), **rag.generator.trainable_parameters()}
    for p in params.values():
        p.requires_grad_(True)
        p.grad = None
    loss = stage.loss(rag, batch).loss
    loss.backward()
    return float(loss.detach()), {n: p.grad.clone() for n, p in params.items() if p.grad is not None}


@pytest.mark.parametrize("stage", [LSRStage(top_k=3), RAGSequenceStage(top_k=3)], ids=["lsr", "rag-sequence"])
def test_score_batch_size_gives_the_loss_and_gradients_of_one_forward(tiny_models, demo_dir, batch, stage):
    rag = _rag(tiny_models, demo_dir)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in rag.generator.trainable_parameters().values():
            p.copy_(torch.randn_like(p) * 0.1)
    full, g_full = _loss_and_grads(rag, stage, batch, None)
    chunked, g_chunked = _loss_and_grads(rag, stage, batch, 1)
    assert chunked == pytest.approx(full, rel=1e-5)
    assert g_full.keys() == g_chunked.keys() and g_full
    for n in g_full:
        assert torch.allclose(g_full[n], g_chunked[n], atol=1e-6, rtol=1e-4), n


def test_bf16_autocast_trains_and_matches_float32(tiny_models, demo_dir, batch):
    losses = {}
    for dtype in ("float32", "bfloat16"):
        rag = _rag(tiny_models, demo_dir)
        cfg = TrainConfig(steps=2, batch_size=4, lr_generator=1e-3, warmup_ratio=0, dtype=dtype)
        before = get_state(rag, ("generator",))
        res = train_stage(RALTStage(top_k=2), rag, batch, cfg)
        after = get_state(rag, ("generator",))
        assert any(not torch.equal(before[k], after[k]) for k in before), "the adapter trained"
        assert all(t.dtype == torch.float32 for t in after.values()), "weights stay float32 under autocast"
        losses[dtype] = res.history[0]["loss"]
    # stated tolerance: bf16 keeps 8 bits of mantissa, ~0.4% relative error per op
    assert losses["bfloat16"] == pytest.approx(losses["float32"], rel=2e-2), losses


def test_bf16_training_holds_the_frozen_base_in_bf16_and_the_adapter_in_float32(tiny_models, demo_dir, batch):
    """`TrainConfig.dtype="bfloat16"` on a LoRA run: the frozen base is loaded in bfloat16
    (half its float32 bytes), the adapter the optimizer updates stays float32 and trains,
    and the loss agrees with float32 training within bf16's precision."""
    from fedrag.pipeline import build_training_rag

    losses, base_bytes = {}, {}
    for dtype in ("float32", "bfloat16"):
        rag = build_training_rag(
            str(demo_dir / "corpus.jsonl"), tiny_models["retriever"], tiny_models["generator"], top_k=3, dtype=dtype
        )
        params = dict(rag.generator.model.named_parameters())
        frozen = {n: p for n, p in params.items() if "lora_" not in n}
        assert {p.dtype for p in frozen.values()} == {getattr(torch, dtype)}, "the frozen base in the run's dtype"
        assert {p.dtype for n, p in params.items() if "lora_" in n} == {torch.float32}, "the adapter stays float32"
        base_bytes[dtype] = sum(p.numel() * p.element_size() for p in frozen.values())
        before = get_state(rag, ("generator",))
        res = train_stage(
            RALTStage(top_k=2), rag, batch, TrainConfig(steps=2, batch_size=4, lr_generator=1e-3, warmup_ratio=0, dtype=dtype)
        )
        after = get_state(rag, ("generator",))
        assert any(not torch.equal(before[k], after[k]) for k in before), "the adapter trained"
        losses[dtype] = res.history[0]["loss"]
    assert base_bytes["bfloat16"] == base_bytes["float32"] // 2
    assert losses["bfloat16"] == pytest.approx(losses["float32"], rel=5e-2), losses


def test_float16_without_a_gpu_is_one_line(monkeypatch, capsys, tmp_path, demo_dir, tiny_models):
    code, _, err = run(
        monkeypatch,
        capsys,
        "train",
        "--stage",
        "ralt",
        "--steps",
        "1",
        "--dtype",
        "float16",
        "--corpus",
        demo_dir / "corpus.jsonl",
        "--train",
        demo_dir / "train.jsonl",
        "--retriever",
        tiny_models["retriever"],
        "--generator",
        tiny_models["generator"],
        "--out",
        tmp_path / "run",
    )
    assert code == 2 and "float16 needs a CUDA GPU" in err and "Traceback" not in err, err
    assert not (tmp_path / "run").exists()


def _family(tmp_path, llama_dir: str, family: str) -> str:
    """A tiny random model of another family, with the tiny Llama's tokenizer and chat template."""
    from transformers import AutoTokenizer, MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM

    tok = AutoTokenizer.from_pretrained(llama_dir)
    common = dict(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        bos_token_id=tok.eos_token_id,
    )
    cls, cfg = {"qwen2": (Qwen2ForCausalLM, Qwen2Config), "mistral": (MistralForCausalLM, MistralConfig)}[family]
    torch.manual_seed(0)
    out = tmp_path / family
    cls(cfg(**common)).save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


@pytest.mark.parametrize("family", ["qwen2", "mistral"])
def test_model_families_train_ralt_and_rag_token(tmp_path, tiny_models, demo_dir, batch, family):
    rag = _rag(tiny_models, demo_dir, _family(tmp_path, tiny_models["generator"], family))
    assert type(rag.generator._base()).__name__.lower().startswith(family)
    for stage in (RALTStage(top_k=2), RAGTokenStage(top_k=2)):
        before = get_state(rag, stage.trains)
        res = train_stage(
            stage, rag, batch, TrainConfig(steps=1, batch_size=2, lr_generator=1e-2, lr_retriever=1e-3, warmup_ratio=0)
        )
        after = get_state(rag, stage.trains)
        assert torch.isfinite(torch.tensor(res.final_loss))
        assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("generator.")), stage.name


def test_quantize_without_a_gpu_is_one_line(monkeypatch, capsys, tmp_path, demo_dir, tiny_models):
    import torch

    if torch.cuda.is_available():  # pragma: no cover - this checks the CPU-only message
        pytest.skip("a GPU is present")
    code, _, err = run(
        monkeypatch,
        capsys,
        "eval",
        "--test",
        demo_dir / "test.jsonl",
        "--corpus",
        demo_dir / "corpus.jsonl",
        "--retriever",
        tiny_models["retriever"],
        "--generator",
        tiny_models["generator"],
        "--quantize",
        "4bit",
        "--test-limit",
        "1",
    )
    assert code == 2 and "--quantize 4bit needs a CUDA GPU" in err and "Traceback" not in err, err
