import pytest
import torch

from fedrag.data import demo
from fedrag.generate import Generator


@pytest.fixture(scope="module")
def gen(tiny_models):
    return Generator.load(tiny_models["generator"])


def slow_logp(gen, prompt, answer):
    """Reference: one forward per answer token over the unpadded sequence."""
    ids, aid, total = gen.token_ids(prompt), gen.answer_ids(answer), 0.0
    with torch.no_grad():
        for j in range(len(aid)):
            logits = gen.model(torch.tensor([ids + aid[:j]])).logits[0, -1]
            total += torch.log_softmax(logits.double(), -1)[aid[j]].item()
    return total


def test_batched_scorer_matches_token_by_token_reference(gen):
    passages, train, _ = demo.generate(n_people=6, seed=2)
    prompts = [
        gen.prompt(train[0].question, passages[:3]),
        gen.prompt(train[1].question, passages[:1]),
        gen.prompt(train[2].question, []),
    ]
    answers = [train[0].answers[0], "a much longer answer than the others", "x"]
    scores = gen.score(prompts, answers)
    for p, a, got in zip(prompts, answers, scores.seq_logp):
        assert got.item() == pytest.approx(slow_logp(gen, p, a), abs=1e-4)
    assert scores.mask.sum(1).tolist() == [len(gen.answer_ids(a)) for a in answers]


def test_scorer_is_independent_of_batch_padding(gen):
    p = gen.prompt("Where was Varn born?", [])
    alone = gen.score([p], ["Brellmoor"]).seq_logp
    padded = gen.score([p, p + " and a much longer prompt " * 5], ["Brellmoor", "x"]).seq_logp[:1]
    assert torch.allclose(alone, padded, atol=1e-5)


def test_generate_and_lora_save_roundtrip(tiny_models, tmp_path):
    gen = Generator.load(tiny_models["generator"], lora=True)
    assert gen.is_lora and all("lora_" in n for n in gen.trainable_parameters())
    with torch.no_grad():
        for p in gen.trainable_parameters().values():
            p.add_(0.01)
    prompt = gen.prompt("Where was Varn born?", [])
    before = gen.score([prompt], ["x"]).seq_logp
    gen.save(tmp_path / "adapter")
    again = Generator.load(str(tmp_path / "adapter"))  # for inference: the adapter is merged into the base
    assert not again.is_lora and torch.allclose(again.score([prompt], ["x"]).seq_logp, before, atol=1e-5)
    assert again.base_name == tiny_models["generator"]
    assert Generator.load(str(tmp_path / "adapter"), trainable=True).is_lora, "to train on, the adapter stays one"
    from fedrag.generate.decoding import GenerationSettings

    # batched greedy decoding of prompts of different lengths (left padding) gives what a
    # token-by-token greedy loop over each unpadded prompt gives, with the merged weights
    prompts = [prompt, gen.prompt("In which year did the long-lost Brellmoor archive of Varn open?", [])]
    out = again.generate(prompts, settings=GenerationSettings(max_new_tokens=3))
    tok = again.tokenizer
    want = []
    with torch.no_grad():
        for p in prompts:
            ids = tok(p, add_special_tokens=False).input_ids
            new = []
            for _ in range(3):
                nxt = int(again.model(torch.tensor([ids + new])).logits[0, -1].argmax())
                if nxt == tok.eos_token_id:
                    break
                new.append(nxt)
            want.append(tok.decode(new, skip_special_tokens=True).strip())
    assert len(tok(prompts[1]).input_ids) > len(tok(prompts[0]).input_ids), "precondition: the batch is padded"
    assert out == want, (out, want)
