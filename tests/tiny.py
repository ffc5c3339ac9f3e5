"""Tiny real models for tests: seeded random-weight BERT (retriever) and Llama (generator)
with tokenizers made here from the demo corpus (a WordPiece vocabulary of its words, a BPE
trained with ``tokenizers``), identical in every build. No downloads."""

from __future__ import annotations

from pathlib import Path

from fedrag.data import demo

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def _texts() -> list[str]:
    passages, train, test = demo.generate(n_people=40, seed=1)
    return [p.as_text() for p in passages] + [e.question + " " + e.answers[0] for e in train + test]


def _wordpiece_vocab(normalizer, pre_tokenizer) -> dict[str, int]:
    """The tiny BERT's vocabulary, the same in every build: the special tokens, every
    character alone and as a continuation, then the corpus's words by count (ties in
    alphabetical order). `tokenizers`' WordPiece trainer breaks ties by a per-process hash
    order, so its vocabulary (and the retriever's behaviour) differed from build to build."""
    from collections import Counter

    words = Counter(w for t in _texts() for w, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(t)))
    chars = sorted({c for w in words for c in w})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *(f"##{c}" for c in chars)]
    vocab += sorted(set(words) - set(vocab), key=lambda w: (-words[w], w))
    return {t: i for i, t in enumerate(vocab)}


def st_modules():
    """sentence-transformers' module classes (Transformer, Pooling, ...): where version 6 moved
    them, or the old path (which warns in 6) before."""
    try:
        from sentence_transformers.sentence_transformer import modules
    except ImportError:
        from sentence_transformers import models as modules
    return modules


def build_tiny_bert(out: Path) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordPiece
    from transformers import BertConfig, BertModel, BertTokenizerFast

    from fedrag.models import import_sentence_transformers

    import_sentence_transformers()  # as fedrag's processes import it, without scikit-learn
    from sentence_transformers import SentenceTransformer

    models = st_modules()
    normalizer, pre_tokenizer = normalizers.BertNormalizer(lowercase=True), pre_tokenizers.BertPreTokenizer()
    tok = Tokenizer(WordPiece(_wordpiece_vocab(normalizer, pre_tokenizer), unk_token="[UNK]"))
    tok.normalizer, tok.pre_tokenizer = normalizer, pre_tokenizer
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))],
    )
    tok.decoder = decoders.WordPiece()
    hf_tok = BertTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=128,
    )
    torch.manual_seed(0)
    bert = BertModel(
        BertConfig(
            vocab_size=tok.get_vocab_size(),
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=128,
        )
    )
    raw = out / "bert-raw"
    bert.save_pretrained(raw)
    hf_tok.save_pretrained(raw)
    word = models.Transformer(str(raw), max_seq_length=128)
    st = SentenceTransformer(modules=[word, models.Pooling(32, "mean")], device="cpu")
    st.save(str(out / "bert"))
    return out / "bert"


def build_tiny_llama(out: Path) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, pre_tokenizers, trainers
    from tokenizers.models import BPE
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<pad>", "<eos>", "<unk>", "<|system|>", "<|user|>", "<|assistant|>"]
    tok = Tokenizer(BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        _texts(),
        trainers.BpeTrainer(vocab_size=700, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()),
    )
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")
    hf_tok.chat_template = CHAT_TEMPLATE
    torch.manual_seed(0)
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=tok.get_vocab_size(),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=1024,
            pad_token_id=hf_tok.pad_token_id,
            eos_token_id=hf_tok.eos_token_id,
            bos_token_id=hf_tok.eos_token_id,
        )
    )
    model.save_pretrained(out / "llama")
    hf_tok.save_pretrained(out / "llama")
    return out / "llama"
