"""Decodings that match training: k = 1 agreement and slow references for both marginals."""

import pytest
import torch

from fedrag.data import load_corpus, load_qa
from fedrag.generate import Generator
from fedrag.generate.decoding import GenerationSettings, log_prior, rag_sequence_decode, rag_token_decode, resolve_settings
from fedrag.rag import RAGSystem
from fedrag.retrieve import KnowledgeStore, Retriever, Searcher


@pytest.fixture(scope="module")
def rag(tiny_models, demo_dir):
    retriever = Retriever.load(tiny_models["retriever"])
    store = KnowledgeStore.build(load_corpus(demo_dir / "corpus.jsonl"), retriever)
    gen = Generator.load(tiny_models["generator"], lora=True)
    torch.manual_seed(0)
    with torch.no_grad():  # a random adapter: answers then depend on the passage (and the LoRA path runs)
        for p in gen.trainable_parameters().values():
            p.copy_(torch.randn_like(p) * 0.5)
    return RAGSystem(Searcher(store, retriever), gen, top_k=3)


@pytest.fixture(scope="module")
def questions(demo_dir):
    return [e.question for e in load_qa(demo_dir / "test.jsonl")[:5]]


def _with(rag, decoding, top_k, **kw):
    return RAGSystem(rag.searcher, rag.generator, top_k=top_k, settings=GenerationSettings(decoding, max_new_tokens=8, **kw))


def test_with_one_passage_the_three_decodings_agree(rag, questions):
    answers = {
        d: [o.answer for o in _with(rag, d, 1).answer(questions, batch_size=4)] for d in ("concat", "rag-sequence", "rag-token")
    }
    assert answers["concat"] == answers["rag-sequence"] == answers["rag-token"]
    assert any(a for a in answers["concat"]), "the tiny model should produce some text"


def _slow_token_logp(gen, prompt: str, prefix: list[int]) -> torch.Tensor:
    """log p(next | prompt, prefix) from one unpadded, uncached forward."""
    ids = torch.tensor([gen.token_ids(prompt) + prefix])
    with torch.no_grad():
        return torch.log_softmax(gen.model(input_ids=ids).logits[0, -1].float(), -1)


def test_rag_token_steps_equal_a_slow_mixture(rag, questions):
    gen = rag.generator
    hits = rag.retrieve(questions[:3], 3)
    prompts = [[gen.prompt(q, [h.passage]) for h in hs] for q, hs in zip(questions, hits)]
    scores = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, -1.0], [-1.0, 0.5, 2.0]])  # a prior far from uniform
    settings = GenerationSettings("rag-token", max_new_tokens=6, gamma=0.5)
    answers, steps = rag_token_decode(gen, prompts, scores, settings, return_step_logp=True)
    prior = log_prior(scores, 0.5)
    chosen_total = 0
    for b in range(len(prompts)):
        chosen = [int(s.argmax()) for s in steps[b]]
        chosen_total += len(chosen)
        for t, got in enumerate(steps[b]):
            per_passage = torch.stack([_slow_token_logp(gen, p, chosen[:t]) for p in prompts[b]])
            ref = torch.logsumexp(prior[b][:, None] + per_passage, dim=0)
            assert torch.allclose(got, ref, atol=1e-4), (b, t, float((got - ref).abs().max()))
        text = gen.tokenizer.decode([c for c in chosen if c != gen.tokenizer.eos_token_id], skip_special_tokens=True).strip()
        assert answers[b] == text
    assert chosen_total >= 6 and len(set(answers)) > 1, answers


def test_rag_token_passes_its_kv_cache_by_the_name_this_transformers_takes(rag, questions):
    """transformers renamed the KV cache's keyword and output field to `cache` (5.25 warns on
    `past_key_values`, which goes in 5.40): the LoRA-wrapped model is given and read its cache
    under the name its forward declares, so no deprecated name is used."""
    import inspect
    import warnings

    from transformers import LlamaForCausalLM

    takes = set(inspect.signature(LlamaForCausalLM.forward).parameters)
    gen = rag.generator
    hits = rag.retrieve(questions[:2], 2)
    prompts = [[gen.prompt(q, [h.passage]) for h in hs] for q, hs in zip(questions, hits)]
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        rag_token_decode(gen, prompts, torch.zeros(2, 2), GenerationSettings("rag-token", max_new_tokens=3))
    said = [str(w.message) for w in seen if "past_key_values" in str(w.message)]
    assert not said, said
    assert "cache" in takes or "past_key_values" in takes, "this transformers names its cache neither way"


def test_rag_sequence_picks_the_slow_marginal_argmax(rag, questions):
    """The candidates are generated in a padded batch; the ranking is checked against a
    slow marginal over the same candidates, one (passage, answer) pair at a time, in log
    space with a 1e-4 tolerance (batched and single forwards differ in the last bits).
    A one-hot prior must then pick each passage's own best candidate: an implementation
    that ignores the prior fails wherever two passages prefer different answers. With the
    random tiny models one candidate often dominates all three passages of every question
    (it ends in EOS where the others are cut off), so that case does not arise in every
    session; requiring it failed 2 runs in 6, and the requirement is left out."""
    gen = rag.generator
    hits = rag.retrieve(questions[:5], 3)
    prompts = [[gen.prompt(q, [h.passage]) for h in hs] for q, hs in zip(questions, hits)]
    scores = torch.tensor([[-1.0, 0.0, 2.0], [0.0, 1.0, -1.0], [-1.0, 0.5, 2.0], [0.0, 0.0, 0.1], [-2.0, 1.0, 1.0]])
    settings = GenerationSettings("rag-sequence", max_new_tokens=6, gamma=0.5)
    got, candidates = rag_sequence_decode(gen, prompts, scores, settings, batch_size=3, return_candidates=True)
    logp = [
        {y: torch.tensor([float(gen.score_no_grad([p], [y])) for p in ps]) for y in candidates[b]} for b, ps in enumerate(prompts)
    ]
    for b in range(len(prompts)):
        assert got[b] in candidates[b]
        marginal = {y: float(torch.logsumexp(log_prior(scores[b], 0.5) + lp, 0)) for y, lp in logp[b].items()}
        assert marginal[got[b]] >= max(marginal.values()) - 1e-4, (marginal, got[b])
    # a one-hot prior on passage z must pick the best candidate under passage z alone
    picks = {}
    for z in (0, 2):
        onehot = torch.zeros(len(prompts), 3)
        onehot[:, z] = 10.0
        picks[z] = rag_sequence_decode(
            gen, prompts, onehot, GenerationSettings("rag-sequence", max_new_tokens=6, gamma=0.05), batch_size=3
        )
        for b in range(len(prompts)):
            best = max(float(lp[z]) for lp in logp[b].values())
            assert float(logp[b][picks[z][b]][z]) >= best - 1e-4, (z, b)


def test_fast_rag_sequence_scores_each_candidate_under_its_own_passages_only(rag, questions, monkeypatch):
    """Fast decoding = the slow marginal with p(y|x,z) = 0 where passage z did not produce
    y, and it scores k rows a question (thorough: k per distinct candidate)."""
    gen = rag.generator
    rows = []
    score = gen.score_no_grad
    monkeypatch.setattr(gen, "score_no_grad", lambda p, a, *args: rows.append(len(p)) or score(p, a, *args))
    hits = rag.retrieve(questions[:5], 3)
    prompts = [[gen.prompt(q, [h.passage]) for h in hs] for q, hs in zip(questions, hits)]
    scores = torch.tensor([[-1.0, 0.0, 2.0], [0.0, 1.0, -1.0], [-1.0, 0.5, 2.0], [0.0, 0.0, 0.1], [-2.0, 1.0, 1.0]])
    fast = GenerationSettings("rag-sequence", max_new_tokens=6, gamma=0.5, rag_sequence="fast")
    got, candidates = rag_sequence_decode(gen, prompts, scores, fast, batch_size=3, return_candidates=True)
    assert sum(rows) == 3 * len(prompts), rows
    own = [gen.generate(ps, batch_size=3, settings=fast) for ps in prompts]  # passage z's own candidate
    for b, ps in enumerate(prompts):
        marginal = {}
        for y in candidates[b]:
            lp = torch.tensor([float(gen.score_no_grad([p], [y])) if own[b][z] == y else float("-inf") for z, p in enumerate(ps)])
            marginal[y] = float(torch.logsumexp(log_prior(scores[b], 0.5) + lp, 0))
        assert marginal[got[b]] >= max(marginal.values()) - 1e-4, (marginal, got[b])
    rows.clear()
    rag_sequence_decode(gen, prompts, scores, GenerationSettings("rag-sequence", max_new_tokens=6, gamma=0.5), batch_size=3)
    assert sum(rows) == 3 * sum(len(c) for c in candidates), rows


def test_settings_are_validated_when_built():
    from fedrag.errors import FedragError

    with pytest.raises(FedragError, match="--decoding must be one of"):
        GenerationSettings("magic")
    with pytest.raises(FedragError, match="beam search"):
        GenerationSettings("rag-token", num_beams=2)


def test_the_default_retrieval_temperature_lets_the_best_passage_lead_on_cosine_scores():
    """fedrag's scores are cosines: under MiniLM, on 40 SQuAD test questions, the median
    top-1 score is 0.60, 0.048 above the second and 0.085 above the third. Training and
    every decoding share one gamma, at which the best passage clearly leads; at Lewis et
    al.'s gamma = 1, p(z|x) is nearly uniform and RAG-Token mixes the passages' words
    (docs/results.md: EM 0.05 -> 0.15 on SQuAD)."""
    from fedrag.train import LSRStage, RAGSequenceStage, RAGTokenStage, RALTStage

    gammas = {
        GenerationSettings().gamma,
        RAGSequenceStage().gamma,
        RAGTokenStage().gamma,
        LSRStage().gamma,
        RALTStage(mode="per-passage").decoding["gamma"],
        resolve_settings("rag-token", None).gamma,
    }
    assert len(gammas) == 1
    scores = torch.tensor([[0.600, 0.552, 0.515]])
    assert log_prior(scores, gammas.pop()).exp()[0, 0] > 0.45
    assert log_prior(scores, 1.0).exp()[0, 0] < 0.36  # gamma = 1: within 0.02 of uniform


@pytest.mark.parametrize(
    "raw, clean",
    [
        ("[4] NP-intermediate problems", "NP-intermediate problems"),
        ("1. 1974", "1974"),
        ("(2) Paris", "Paris"),
        ("- yes", "yes"),
        ("  Denver Broncos \n", "Denver Broncos"),
        ("1990.", "1990."),
        ("3", "3"),
        ("1990 and 1991", "1990 and 1991"),
        ("[4]", "[4]"),
    ],
)
def test_answers_lose_the_list_marker_of_the_numbered_context(raw, clean):
    from fedrag.generate.prompts import clean_answer

    assert clean_answer(raw) == clean
