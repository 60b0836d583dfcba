"""The blockrank stage on tiny randomly initialised Llama / Qwen2 / Mistral models built here (word-level tokenizer, CPU):
scores equal transformers' own eager attention (full and block-sparse), the blocked prefill equals the masked one,
a document block does not see the other documents, a planted attention head ranks and is found by calibration,
and every bad input fails before scoring. The slow test runs the packaged SmolLM2 on nq-open-oracle-dev."""

from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pytest

from ragopt.errors import ConfigError, StageError
from ragopt.kernels.blockrank import (
    allowed_mask,
    block_ids,
    block_scores,
    candidates_that_fit,
    max_position,
    ndcg_at_k,
    position_ids,
    tile_pattern,
)
from ragopt.llm.scripted import ScriptedLLM
from ragopt.llm.transformers_backend import TransformersLLM
from ragopt.rerankers.blockrank import (
    FLEX_PAD,
    INSTRUCTION,
    LAYOUT_FILE,
    QUESTION,
    BlockRankReranker,
    attention_pairs,
    calibrate_layers,
    flex_block_mask,
    flex_mask_mod,
    label_bias,
    order_bias,
    position_counts,
)
from ragopt.store import ArtifactStore
from ragopt.types import Batch, Corpus, Queries

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

WORDS = [
    "the",
    "a",
    "of",
    "in",
    "on",
    "and",
    "river",
    "mountain",
    "desert",
    "ocean",
    "forest",
    "glacier",
    "volcano",
    "island",
    "city",
    "lake",
    "valley",
    "bridge",
    "tower",
    "castle",
    "garden",
    "road",
    "field",
    "stone",
    "gold",
    "silver",
    "north",
    "south",
    "east",
    "west",
    "old",
    "new",
    "tall",
    "small",
    "blue",
    "red",
    "green",
    "what",
    "where",
    "is",
    "which",
    "about",
    "tell",
    "me",
]
TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
N_DOCS = 5
DOC_LEN = 6  # words (= tokens) per document: equal lengths, so uniform attention favours no document


def _save(
    folder,
    family: str,
    layers: int = 3,
    max_pos: int = 512,
    seed: int = 0,
    planted: int | None = None,
    planted_token: str = "Ġgold",
):
    """A tiny causal LM (+ word-level tokenizer) in ``folder``; ``planted``: that layer's heads attend from every
    query token to ``planted_token`` ('gold'; '1' is the digit of the label [1], a pure position head) (q/k live on
    the RoPE pair whose rotation is ~0 at theta 1e9)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    texts = [" " + " ".join(WORDS)] * 4 + [INSTRUCTION, QUESTION, "Passages: Answer: assistant user"]
    texts += [" ".join(f"[{i}]" for i in range(1, 21))]
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    tk.train_from_iterator(
        texts,
        trainers.BpeTrainer(vocab_size=600, special_tokens=special, initial_alphabet=alphabet, show_progress=False),
    )
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tok.chat_template = TEMPLATE
    tok.save_pretrained(folder)
    cfg_file = folder / "tokenizer_config.json"  # a byte-level BPE, whatever the model family's default tokenizer
    cfg_file.write_text(json.dumps({**json.loads(cfg_file.read_text()), "tokenizer_class": "GPT2Tokenizer"}))
    vocab = tk.get_vocab()
    gold = vocab[planted_token]
    common = dict(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        max_position_embeddings=max_pos,
        rope_parameters={"rope_type": "default", "rope_theta": 1e9},
        tie_word_embeddings=False,
        initializer_range=0.2,  # attention far from uniform: a leak between blocks shows
    )
    torch.manual_seed(seed)
    if family == "llama":
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(attention_bias=True, **common))
    elif family == "qwen2":
        model = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**common))
    elif family == "mistral":
        model = transformers.MistralForCausalLM(transformers.MistralConfig(sliding_window=None, **common))
    else:  # an unsupported family
        model = transformers.GPT2LMHeadModel(
            transformers.GPT2Config(vocab_size=len(vocab), n_embd=32, n_layer=2, n_head=2, n_positions=max_pos)
        )
    with torch.no_grad():
        if family in ("llama", "qwen2", "mistral"):
            emb = model.model.embed_tokens.weight
            emb.normal_(0.0, 4.0, generator=torch.Generator().manual_seed(seed))  # dominates the residual
            if planted is not None:
                u = torch.zeros(32)
                u[0] = 1.0
                emb[:, 0] = 0.0  # no token but gold has a component along u
                emb[gold] = 24.0 * u
                att = model.model.layers[planted].self_attn
                att.q_proj.weight.zero_()
                att.k_proj.weight.zero_()
                att.q_proj.bias.zero_()
                att.k_proj.bias.zero_()
                for h in range(2):
                    att.q_proj.bias[h * 16 + 7] = 3.0  # every query: the same (unrotated) direction
                att.k_proj.weight[7] = 3.0 * u  # keys: how much the token is 'gold'
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return {
        fam: _save(tmp_path_factory.mktemp(f"tiny-{fam}"), fam, planted=2 if fam == "llama" else None)
        for fam in ("llama", "qwen2", "mistral")
    }


@pytest.fixture(scope="module")
def tiny_label(tmp_path_factory):
    """A llama whose layer 2 attends to the label [1]: it ranks the first candidate first, whatever it says."""
    return _save(tmp_path_factory.mktemp("tiny-label"), "llama", planted=2, planted_token="1")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return ArtifactStore(tmp_path_factory.mktemp("store"))


def docs_corpus(n_queries: int = 6, seed: int = 3):
    """Each query has N_DOCS candidates of DOC_LEN words; exactly one (never the first) holds 'gold'."""
    rng = np.random.default_rng(seed)
    plain = [w for w in WORDS if w != "gold"]
    texts, ids, rows, gold = [], [], [], []
    for q in range(n_queries):
        g = int(rng.integers(1, N_DOCS))
        row = []
        for d in range(N_DOCS):
            words = list(rng.choice(plain, DOC_LEN))
            if d == g:
                words[int(rng.integers(0, DOC_LEN))] = "gold"
            ids.append(f"q{q}d{d}")
            texts.append(" ".join(words))
            row.append(len(texts) - 1)
        rows.append(row)
        gold.append(row[g])
    corpus = Corpus(ids, texts, name="tiny-gold")
    queries = Queries([f"q{q}" for q in range(n_queries)], ["what is the old stone tower"] * n_queries)
    idx = np.array(rows, dtype=np.int64)
    sc = np.tile(np.arange(N_DOCS, 0, -1, dtype=np.float32), (n_queries, 1))
    qrels = {f"q{q}": {ids[gold[q]]: 1} for q in range(n_queries)}
    return Batch(queries, corpus, idx, sc), gold, qrels


def stage(folder, store, **kw) -> BlockRankReranker:
    llm = TransformersLLM(model=str(folder), device="cpu").use_store(store)
    kw.setdefault("chat", False)
    kw.setdefault("with_title", False)
    return BlockRankReranker(llm=llm, **kw)


def reference_scores(folder, prompt, layer, sparse, query_position="after_longest", rows=None, agg="sum", norm="docs"):
    """The same scores from transformers' eager attention with output_attentions (its own masks and softmax)."""
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
    lengths = prompt.lengths
    ids = torch.tensor([prompt.ids])
    kw = {}
    if sparse:
        allowed = torch.as_tensor(allowed_mask(lengths, True))
        kw["attention_mask"] = torch.zeros(allowed.shape).masked_fill(~allowed, torch.finfo(torch.float32).min)[
            None, None
        ]
        kw["position_ids"] = torch.as_tensor(position_ids(lengths, True, query_position))[None]
    with torch.no_grad():
        att = model(input_ids=ids, output_attentions=True, **kw).attentions[layer][0]
    r = rows or lengths[-1]
    return block_scores(att[:, -r:, :].numpy(), lengths, agg, norm).mean(0), model


# -- kernels ---------------------------------------------------------------------------------------------------
def test_mask_positions_and_pair_counts():
    lengths = [3, 2, 4, 2]
    full, sparse = allowed_mask(lengths, False), allowed_mask(lengths, True)
    assert (full == np.tril(np.ones((11, 11), bool))).all()
    assert not sparse[5:9, 3:5].any()  # document 2 does not see document 1
    assert sparse[5:9, :3].all() and sparse[9:, :].sum() == 2 * 9 + 3  # query rows see everything before
    assert (sparse <= full).all()
    assert position_ids(lengths, True, "after_longest").tolist() == [0, 1, 2, 3, 4, 3, 4, 5, 6, 7, 8]
    assert position_ids(lengths, True, "after_all").tolist() == [0, 1, 2, 3, 4, 3, 4, 5, 6, 9, 10]
    for sp in (False, True):
        assert attention_pairs(lengths, sp) == allowed_mask(lengths, sp).sum()
        assert max_position(lengths, sp) == position_ids(lengths, sp).max()
    # 10 documents of 5 tokens: full attention grows quadratically, block-sparse linearly
    many = [4] + [5] * 10 + [3]
    assert attention_pairs(many, True) < attention_pairs(many, False) / 3
    assert candidates_that_fit([4] + [5] * 10 + [3], 30, False) == 4  # 4 + 4*5 + 3 = 27 positions < 30
    assert candidates_that_fit([4] + [5] * 10 + [3], 30, True) == 10  # positions do not grow with documents


def test_block_scores_aggregations():
    attn = np.zeros((1, 1, 8))
    attn[0, 0, 1:3] = [0.1, 0.1]  # doc 1 (2 tokens)
    attn[0, 0, 3:6] = [0.3, 0.05, 0.05]  # doc 2 (3 tokens)
    lengths = [1, 2, 3, 2]
    assert np.allclose(block_scores(attn, lengths, "sum", "all")[0], [0.2, 0.4])
    assert np.allclose(block_scores(attn, lengths, "sum", "docs")[0], [1 / 3, 2 / 3])
    assert np.allclose(block_scores(attn, lengths, "mean", "all")[0], [0.1, 0.4 / 3])
    assert np.allclose(block_scores(attn, lengths, "max", "all")[0], [0.1, 0.3])
    assert ndcg_at_k(np.array([0.1, 0.9]), np.array([1, 0]), 10) == pytest.approx(1 / np.log2(3))
    assert ndcg_at_k(np.array([0.1, 0.9]), np.array([1, 0]), 10, [1, 1]) < 1 / np.log2(3)


# -- equivalence -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["llama", "qwen2", "mistral"])
def test_sparse_off_equals_full_attention(tiny, store, family):
    batch, _, _ = docs_corpus(1)
    st = stage(tiny[family], store, sparse=False, layer=1, query_tokens=0).fit(batch.corpus, store)
    _, prompts = st.prompts(batch)
    got = st.scores(prompts[0])
    want, _ = reference_scores(tiny[family], prompts[0], 1, sparse=False)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    for rows, agg, norm in ((3, "max", "docs"), (1, "mean", "docs"), (0, "sum", "all"), (4, "max", "all")):
        st2 = st.clone(query_tokens=rows, aggregation=agg, normalize=norm).fit(batch.corpus, store)
        want, _ = reference_scores(tiny[family], prompts[0], 1, sparse=False, rows=rows, agg=agg, norm=norm)
        np.testing.assert_allclose(st2.scores(prompts[0]), want, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("family", ["llama", "qwen2", "mistral"])
@pytest.mark.parametrize("query_position", ["after_longest", "after_all"])
def test_sparse_blocked_and_masked_equal_eager_with_the_4d_mask(tiny, store, family, query_position):
    batch, _, _ = docs_corpus(1)
    kw = dict(layer=2, query_position=query_position, chat=True, kv_cache_mb=0, query_tokens=0)
    blocked = stage(tiny[family], store, prefill="blocked", doc_batch_size=2, **kw).fit(batch.corpus, store)
    masked = stage(tiny[family], store, prefill="masked", **kw).fit(batch.corpus, store)
    _, prompts = blocked.prompts(batch)
    want, _ = reference_scores(tiny[family], prompts[0], 2, sparse=True, query_position=query_position)
    np.testing.assert_allclose(masked.scores(prompts[0]), want, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(blocked.scores(prompts[0]), want, rtol=1e-5, atol=1e-7)
    want_all, _ = reference_scores(tiny[family], prompts[0], 2, True, query_position, rows=3, norm="all")
    for st in (blocked, masked):  # the model's own probabilities (query rows see no later query token)
        np.testing.assert_allclose(st.clone(normalize="all", query_tokens=3).scores(prompts[0]), want_all, rtol=1e-5)
    full = stage(tiny[family], store, sparse=False, **kw).fit(batch.corpus, store)
    assert not np.allclose(full.scores(prompts[0]), want, rtol=1e-4)  # the pattern does change the numbers


@pytest.mark.parametrize("pad", [5, 0])  # 0: a prompt whose length is already a multiple of FLEX_PAD
def test_flex_mask_mod_is_the_pattern_and_padding_is_unseen(pad):
    lengths = [3, 2, 4, 2]
    t = sum(lengths)
    block = torch.as_tensor(block_ids(lengths, pad))
    assert block.tolist() == [0] * 3 + [1] * 2 + [2] * 4 + [3] * 2 + [4] * pad
    q, k = torch.arange(t + pad)[:, None], torch.arange(t + pad)[None, :]
    for sparse in (True, False):
        grid = flex_mask_mod(block, len(lengths) - 1, sparse)(0, 0, q, k).numpy()
        assert (grid[:t, :t] == allowed_mask(lengths, sparse)).all()
        assert not grid[:t, t:].any()  # no real token attends to the padding
        assert grid[t:, t:].diagonal().all()  # every padding row has a key: no empty softmax


def _padded_mask(lengths, pad, sparse):
    """The token mask over lengths + pad from allowed_mask: padding attends causally to itself and the instruction."""
    t = sum(lengths)
    dense = np.zeros((t + pad, t + pad), bool)
    dense[:t, :t] = allowed_mask(lengths, sparse)
    dense[t:, t:] = np.tril(np.ones((pad, pad), bool))
    dense[t:, : lengths[0] if sparse else t] = True
    return dense


def test_tile_pattern_is_the_token_mask_at_tile_granularity():
    """`some` is exactly "the tile holds an allowed pair", `every` never claims a tile with a masked pair, on
    random layouts (the token mask is allowed_mask's, padded)."""
    rng = np.random.default_rng(0)
    exact_every = 0
    for _ in range(200):
        lengths = [int(x) for x in rng.integers(1, 40, size=int(rng.integers(2, 14)))]
        tile = int(rng.choice([1, 4, 8, 32]))
        pad = -sum(lengths) % tile + tile * int(rng.integers(0, 3))
        for sparse in (True, False):
            some, every = tile_pattern(lengths, pad, sparse, tile)
            n = (sum(lengths) + pad) // tile
            grid = _padded_mask(lengths, pad, sparse).reshape(n, tile, n, tile)
            assert (some == grid.any(axis=(1, 3))).all()
            assert not (every & ~grid.all(axis=(1, 3))).any()
            exact_every += int((every == grid.all(axis=(1, 3))).all())
    assert exact_every > 100  # not everything left to the token mask
    some, every = tile_pattern([32] * 2 + [32] * 4, 0, True, 32)  # one block a tile: the pattern itself
    assert (some == allowed_mask([1] * 6, True)).all() and (every == np.tri(6, k=-1, dtype=bool) & some).all()
    with pytest.raises(ConfigError, match="multiple of the tile"):
        tile_pattern([3, 4, 2], 1, True, 8)


@pytest.mark.parametrize("sparse", [True, False])
def test_flex_block_mask_equals_torch_create_block_mask(sparse):
    from torch.nn.attention.flex_attention import create_block_mask

    rng, found = np.random.default_rng(1), []
    for _ in range(10):
        lengths = [int(x) for x in rng.integers(1, 60, size=int(rng.integers(2, 30)))]
        t = sum(lengths)
        pad = -t % FLEX_PAD
        mine = flex_block_mask(lengths, pad, sparse, "cpu")
        mod = flex_mask_mod(torch.as_tensor(block_ids(lengths, pad)), len(lengths) - 1, sparse)
        ref = create_block_mask(mod, None, None, t + pad, t + pad, device="cpu", BLOCK_SIZE=mine.BLOCK_SIZE)
        assert torch.equal(mine.to_dense(), ref.to_dense())  # the same tiles computed
        # tiles computed without the token mask: only ones torch also finds wholly allowed, and most of them
        assert (_full_tiles(mine) <= _full_tiles(ref)).all()
        found += [_full_tiles(mine).sum(), _full_tiles(ref).sum()]
    found = np.array(found)
    assert found[0::2].sum() >= 0.5 * found[1::2].sum() > 0


def _full_tiles(bm):
    num, idx = bm.full_kv_num_blocks[0, 0].numpy(), bm.full_kv_indices[0, 0].numpy()
    out = np.zeros((len(num), idx.shape[1]), bool)
    for i, k in enumerate(num):
        out[i, idx[i, :k]] = True
    return out


def test_flex_prefill_errors_name_the_cause_and_the_way_out(tiny, store, monkeypatch):
    """No FlexAttention in this torch: a config error on `prefill` before loading; a compilation failure (no C++
    compiler, a backend bug): a stage error that says so and names prefill blocked."""
    import sys

    import ragopt.rerankers.blockrank.attention as br

    batch, _, _ = docs_corpus(1)
    st = stage(tiny["llama"], store, prefill="flex", layer=2, kv_cache_mb=0).fit(batch.corpus, store)
    _, prompts = st.prompts(batch)
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "torch.nn.attention.flex_attention", None)  # import fails, as in torch < 2.5
        with pytest.raises(ConfigError, match=r"prefill.*FlexAttention \(torch >= 2.5\)"):
            st.clone().scores(prompts[0])

    class InductorError(RuntimeError):  # stands for torch._inductor's failures (e.g. CppCompileError)
        __module__ = "torch._inductor.exc"

    def broken(*a, **k):
        raise InductorError("C++ compile error\ncc1plus: fatal error")

    monkeypatch.setattr(br, "compiled_flex_attention", lambda: broken)
    with pytest.raises(
        StageError, match=r"prefill flex could not compile .*InductorError: C\+\+ compile error.*prefill: blocked"
    ):
        st.scores(prompts[0])
    monkeypatch.setattr(br, "compiled_flex_attention", lambda: lambda *a, **k: 1 / 0)  # other errors are not hidden
    with pytest.raises(ZeroDivisionError):
        st.scores(prompts[0])


@pytest.mark.parametrize("family", ["llama", "qwen2"])
@pytest.mark.parametrize("sparse", [True, False])
def test_flex_prefill_equals_eager(tiny, store, family, sparse):
    """FlexAttention (compiled, the prompt padded to FLEX_PAD) gives eager attention's scores, block-sparse and full."""
    batch, _, _ = docs_corpus(2)
    kw = dict(layer=2, chat=True, kv_cache_mb=0, query_tokens=0, sparse=sparse)
    flex = stage(tiny[family], store, prefill="flex", **kw).fit(batch.corpus, store)
    _, prompts = flex.prompts(batch)
    assert sum(prompts[0].lengths) % FLEX_PAD != 0  # the pass is padded
    for p in prompts:
        want, _ = reference_scores(tiny[family], p, 2, sparse=sparse)
        np.testing.assert_allclose(flex.scores(p), want, rtol=1e-4, atol=1e-6)
    want_all, _ = reference_scores(tiny[family], prompts[0], 2, sparse, rows=3, norm="all")
    np.testing.assert_allclose(flex.clone(normalize="all", query_tokens=3).scores(prompts[0]), want_all, rtol=1e-4)


def test_document_block_does_not_see_other_documents(tiny, store):
    """Hidden states of a document block (all layers) are the same whatever documents surround it."""
    batch, _, _ = docs_corpus(1)
    st = stage(tiny["qwen2"], store, labels=False).fit(batch.corpus, store)
    _, tok = st.model()
    docs = st.doc_token_ids(tok, [batch.corpus.text(i, False) for i in batch.doc_idx[0]])
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny["qwen2"], attn_implementation="eager").eval()

    def states(doc_list, target, sparse=True):
        p = st.build_prompt(tok, "what is the old stone tower", doc_list)
        lengths = p.lengths
        allowed = torch.as_tensor(allowed_mask(lengths, sparse))
        mask = torch.zeros(allowed.shape).masked_fill(~allowed, torch.finfo(torch.float32).min)[None, None]
        pos = torch.as_tensor(position_ids(lengths, sparse, "after_longest"))[None]
        with torch.no_grad():
            hs = model(
                input_ids=torch.tensor([p.ids]), attention_mask=mask, position_ids=pos, output_hidden_states=True
            ).hidden_states
        j = [i for i, d in enumerate(doc_list) if d is target][0]
        s = int(sum(lengths[: j + 1]))
        return torch.stack([h[0, s : s + lengths[j + 1]] for h in hs])

    assert [len(d) for d in docs] == [DOC_LEN] * N_DOCS  # one token a word
    t = docs[2]
    ref = states(docs, t)
    for other in ([docs[4], t, docs[0]], [t], [docs[3], docs[1], docs[0], t], [*docs, docs[0]]):
        torch.testing.assert_close(states(other, t), ref, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(states([docs[4], t], t, sparse=False), states(docs, t, sparse=False), atol=1e-3)
    # and the scores follow the documents around (labels off, query position after the longest block)
    p = st.build_prompt(tok, "what is the old stone tower", docs)
    perm = [3, 0, 4, 2, 1]
    q = st.build_prompt(tok, "what is the old stone tower", [docs[i] for i in perm])
    np.testing.assert_allclose(st.scores(q), st.scores(p)[perm], rtol=1e-5, atol=1e-7)


def test_document_kv_is_reused_across_queries(tiny, store):
    batch, _, _ = docs_corpus(2)
    batch = Batch(batch.queries, batch.corpus, np.tile(batch.doc_idx[:1], (2, 1)), batch.scores)
    st = stage(tiny["llama"], store, layer=2, kv_cache_mb=64).fit(batch.corpus, store)
    out = st.transform(batch)
    c = out.stats.counts
    assert c["blockrank_docs_encoded"] <= N_DOCS and c["blockrank_kv_hits"] >= N_DOCS  # the second query reuses
    assert out.doc_idx[0].tolist() == out.doc_idx[1].tolist()
    fresh = Batch(batch.queries, batch.corpus, batch.doc_idx, batch.scores)  # new stats
    cold = stage(tiny["llama"], store, layer=2, kv_cache_mb=0).fit(batch.corpus, store).transform(fresh)
    np.testing.assert_allclose(out.scores, cold.scores, rtol=1e-5)
    assert cold.stats.counts["blockrank_kv_hits"] == 0 and cold.stats.counts["blockrank_docs_encoded"] == 2 * N_DOCS


def test_permutations_average_the_scores_over_cyclic_shifts(tiny, store):
    """A document's score is the mean of its scores at the labels the shifted orders give it."""
    batch, _, _ = docs_corpus(2)
    k = 3
    st = stage(tiny["qwen2"], store, depth=N_DOCS, permutations=k).fit(batch.corpus, store)
    one = stage(tiny["qwen2"], store, depth=N_DOCS).fit(batch.corpus, store)
    out = st.transform(Batch(batch.queries, batch.corpus, batch.doc_idx, batch.scores))
    _, tok = one.model()
    for r in range(2):
        docs = one.doc_token_ids(tok, [batch.corpus.text(int(i), False) for i in batch.doc_idx[r]])
        want = np.zeros(N_DOCS)
        for j in range(k):  # shift j: the candidate at label 1 is round(j * n / k), then the ones after it
            shift = round(j * N_DOCS / k)
            order = [(shift + m) % N_DOCS for m in range(N_DOCS)]
            sc = one.scores(one.build_prompt(tok, batch.queries.texts[r], [docs[o] for o in order]))
            for m, o in enumerate(order):
                want[o] += sc[m] / k
        got = dict(zip(out.doc_idx[r].tolist(), out.scores[r].tolist()))
        np.testing.assert_allclose([got[int(i)] for i in batch.doc_idx[r]], want, rtol=1e-5, atol=1e-7)
    single = one.transform(Batch(batch.queries, batch.corpus, batch.doc_idx, batch.scores)).stats.counts
    c = out.stats.counts
    assert c["blockrank_queries"] == single["blockrank_queries"] == 2
    assert c["blockrank_prompt_tokens"] == k * single["blockrank_prompt_tokens"]  # same blocks, k prompts


def test_permutations_over_every_order_make_the_labels_irrelevant(tiny, store):
    """Two candidates in both orders: the same two prompts whichever order they come in, so the same scores; one
    order alone (labels on) depends on it."""
    batch, _, _ = docs_corpus(3)
    idx = batch.doc_idx[:, :2]
    flipped = idx[:, ::-1].copy()

    def scores(permutations, rows):
        st = stage(tiny["qwen2"], store, depth=2, permutations=permutations).fit(batch.corpus, store)
        out = st.transform(Batch(batch.queries, batch.corpus, rows, batch.scores[:, :2]))
        return [dict(zip(a.tolist(), b.tolist())) for a, b in zip(out.doc_idx, out.scores)]

    for a, b in zip(scores(2, idx), scores(2, flipped)):
        assert a.keys() == b.keys()
        np.testing.assert_allclose([a[d] for d in a], [b[d] for d in a], rtol=1e-5, atol=1e-7)
    moved = [max(abs(a[d] - b[d]) for d in a) for a, b in zip(scores(1, idx), scores(1, flipped))]
    assert max(moved) > 1e-4
    with pytest.raises(ConfigError, match="permutations"):
        stage(tiny["qwen2"], store, mode="decode", permutations=2)


# -- ranking and calibration --------------------------------------------------------------------------------------
@pytest.mark.parametrize("prefill", ["blocked", "masked"])
def test_planted_head_ranks_the_gold_document_first(tiny, store, prefill):
    batch, gold, _ = docs_corpus(6)
    st = stage(tiny["llama"], store, layer=2, prefill=prefill, depth=4).fit(batch.corpus, store)
    out = st.transform(batch)
    for r, g in enumerate(gold):
        head = batch.doc_idx[r, :4].tolist()
        if g in head:
            assert out.doc_idx[r, 0] == g
        else:  # gold below depth: it keeps its place in the tail
            assert out.doc_idx[r, 4] == g
        assert sorted(out.doc_idx[r].tolist()) == sorted(batch.doc_idx[r].tolist())
        assert np.all(np.diff(out.scores[r]) < 0)
        assert out.scores[r, :4].sum() == pytest.approx(1.0, abs=1e-5)  # sum over docs of renormalised attention
    c = out.stats.counts
    assert c["blockrank_queries"] == 6 and c["blockrank_reranked"] == 24
    assert c["blockrank_attention_pairs"] > 0 and out.stats.seconds["blockrank"] > 0
    # a layer without the planted head does not find it
    other = stage(tiny["llama"], store, layer=0, prefill=prefill).fit(batch.corpus, store).transform(batch)
    assert sum(other.doc_idx[r, 0] == g for r, g in enumerate(gold)) < 4


def test_calibration_finds_the_planted_layer(tiny, store):
    batch, _, qrels = docs_corpus(6)
    st = stage(tiny["llama"], store).fit(batch.corpus, store)
    cal = calibrate_layers(st, batch, qrels, metric="p@1", select_heads=True)
    assert cal.best_layer == 2 and cal.n_queries == 6
    assert [row["layer"] for row in cal.curve] == [0, 1, 2]
    assert cal.curve[2]["p@1"] == 1.0 and cal.curve[2]["ndcg@10"] == 1.0
    assert max(cal.curve[0]["p@1"], cal.curve[1]["p@1"]) < 1.0
    assert cal.head_curve and cal.head_curve[0]["p@1"] == 1.0
    # the planted layer reads the documents: its tops sit where the relevant candidates sit, no label bias flagged
    assert cal.top_from_position == cal.gold_at_position == cal.top_relevant_from_position
    assert sum(cal.top_from_position) == 6 and cal.label_bias is None
    # ... and keeps each query's top with the candidates reversed
    assert cal.order_agreement == 1.0 and cal.reversed_order == {"p@1": 1.0, "ndcg@10": 1.0} and cal.order_bias is None
    assert json.dumps(cal.to_dict())
    with pytest.raises(ConfigError, match="layers"):
        calibrate_layers(st, batch, qrels, layers=[7])


def _gold_first(batch, gold):
    """The batch with each query's gold candidate moved to the front: a first stage that is always right."""
    idx = np.array([[g] + [i for i in row if i != g] for row, g in zip(batch.doc_idx.tolist(), gold)], np.int64)
    return Batch(batch.queries, batch.corpus, idx, batch.scores)


def test_reversing_the_order_exposes_a_position_head_that_agrees_with_a_strong_first_stage(tiny, tiny_label, store):
    batch, gold, qrels = docs_corpus(6)
    batch = _gold_first(batch, gold)
    st = stage(tiny_label, store, layer=2).fit(batch.corpus, store)
    with pytest.warns(UserWarning, match="changed for 6 of 6 queries when their candidates were reversed"):
        cal = calibrate_layers(st, batch, qrels, metric="p@1", layers=[2])
    # in the given order the label head looks perfect, and the label check cannot tell: every top is relevant
    assert cal.curve[0]["p@1"] == 1.0 and cal.top_from_position == cal.top_relevant_from_position == [6, 0, 0, 0, 0]
    assert cal.label_bias is None
    # reversed, its top is the last candidate for every query: never the gold
    assert cal.order_agreement == 0.0 and cal.reversed_order["p@1"] == 0.0 and cal.order_bias
    # the head that reads the documents, on the same batch: same top in both orders, no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reader = calibrate_layers(stage(tiny["llama"], store).fit(batch.corpus, store), batch, qrels, layers=[2])
    assert reader.order_agreement == 1.0 and reader.order_bias is None
    # a stage that scores several orders already averages positions out: no second pass
    cal = calibrate_layers(stage(tiny_label, store, permutations=2).fit(batch.corpus, store), batch, qrels, layers=[2])
    assert cal.order_agreement is None and cal.reversed_order is None and cal.order_bias is None


def test_order_bias_fires_when_most_tops_move_with_the_order():
    assert order_bias(0, 20) and "changed for 20 of 20 queries" in order_bias(0, 20)
    assert order_bias(9, 20) and order_bias(10, 20) is None  # half kept: not flagged
    assert order_bias(0, 5) is None  # too few queries to tell


def test_label_bias_flags_tops_that_pile_up_on_one_label_whatever_the_relevance():
    def query(top: int, gold: int, n: int = 10):
        s, rel = np.zeros(n), np.zeros(n)
        s[top], rel[gold] = 1.0, 1.0
        return s, rel

    # SmolLM2's layer 20 in BM25's order: [10] first for 12 queries (never relevant), [1] for 8 (relevant)
    rows = [query(9, 0) for _ in range(12)] + [query(0, 0) for _ in range(8)]
    top, hit, gold = position_counts(rows)
    assert top == [8] + [0] * 8 + [12] and hit == [8] + [0] * 9 and gold == [20] + [0] * 9
    msg = label_bias(top, hit)
    assert msg and "position 10 (label [10]) for 12 of 20 queries" in msg and "relevant for 0" in msg
    # tops where the gold is, even all on [1] (a strong first stage that the layer agrees with): not flagged
    assert label_bias(*position_counts([query(0, 0)] * 20)[:2]) is None
    # tops spread over the positions (no position holds half): not flagged, relevant or not
    assert label_bias(*position_counts([query(i % 10, (i + 3) % 10) for i in range(20)])[:2]) is None
    # half on one label, half of those relevant: the boundary is not flagged; one fewer relevant is
    half = [query(4, 4)] * 5 + [query(4, 0)] * 5 + [query(i, 0) for i in range(5, 10)] * 2
    assert label_bias(*position_counts(half)[:2]) is None
    assert label_bias(*position_counts([query(4, 4)] * 4 + half[5:] + [query(4, 0)])[:2])
    assert label_bias(*position_counts([query(9, 0)] * 5)[:2]) is None  # too few queries to tell


def test_decode_mode_generates_an_id(tiny, store):
    batch, _, _ = docs_corpus(2)
    st = stage(tiny["llama"], store, mode="decode", decode_tokens=2).fit(batch.corpus, store)
    out = st.transform(batch)
    c = out.stats.counts
    assert c["blockrank_queries"] == 2
    for r in range(2):
        assert sorted(out.doc_idx[r].tolist()) == sorted(batch.doc_idx[r].tolist())
    # a random model rarely writes a valid id: unparseable answers keep the input order
    for r in range(2):
        if c["blockrank_unparseable"] == 2:
            assert out.doc_idx[r].tolist() == batch.doc_idx[r].tolist()
    masked = stage(tiny["llama"], store, mode="decode", decode_tokens=2, prefill="masked").fit(batch.corpus, store)
    _, prompts = st.prompts(batch)
    assert st.decode(prompts[0]) == masked.decode(prompts[0])


# -- bad input -------------------------------------------------------------------------------------------------
def _no_scoring(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("scored before the input was checked")

    monkeypatch.setattr(BlockRankReranker, "attend", boom)
    monkeypatch.setattr(BlockRankReranker, "decode", boom)


def test_unsupported_family(tmp_path, store, monkeypatch):
    _no_scoring(monkeypatch)
    folder = _save(tmp_path / "gpt2", "gpt2")
    batch, _, _ = docs_corpus(1)
    with pytest.raises(ConfigError, match=r"'gpt2'.*supported: llama.*mistral.*qwen2"):
        stage(folder, store).fit(batch.corpus, store)
    with pytest.raises(ConfigError, match="needs a 'transformers' backend"):
        BlockRankReranker(llm=ScriptedLLM(default="x")).validate()


def test_layer_and_heads_out_of_range(tiny, store, monkeypatch):
    _no_scoring(monkeypatch)
    batch, _, _ = docs_corpus(1)
    with pytest.raises(ConfigError, match=r"layer 3 is out of range: .* has 3 layers \(0..2\)"):
        stage(tiny["llama"], store, layer=3).fit(batch.corpus, store)
    with pytest.raises(ConfigError, match=r"heads \[2\] are out of range"):
        stage(tiny["llama"], store, heads=[0, 2]).fit(batch.corpus, store)
    with pytest.raises(ConfigError, match="labels must be on"):
        stage(tiny["llama"], store, mode="decode", labels=False).validate()


def test_prompt_longer_than_context_says_how_many_fit(tiny, tmp_path, store, monkeypatch):
    batch, _, _ = docs_corpus(1)
    probe = stage(tiny["llama"], store, sparse=False).fit(batch.corpus, store)
    _, tok = probe.model()
    texts = [batch.corpus.text(i, False) for i in batch.doc_idx[0]]
    lengths = probe.build_prompt(tok, batch.queries.texts[0], probe.doc_token_ids(tok, texts)).lengths
    limit = lengths[0] + sum(lengths[1:3]) + lengths[-1] + 1  # room for two documents
    folder = _save(tmp_path / "short", "llama", max_pos=limit)
    st = stage(folder, store, sparse=False).fit(batch.corpus, store)
    assert candidates_that_fit(lengths, limit, False) == 2
    _no_scoring(monkeypatch)
    with pytest.raises(StageError, match=rf"beyond the context .*\({limit}\); 2 of its candidates fit"):
        st.transform(batch)
    # block-sparse positions do not grow with the number of documents: the same prompt fits
    monkeypatch.undo()
    assert (
        stage(folder, store, sparse=True).fit(batch.corpus, store).transform(batch).stats.counts["blockrank_queries"]
        == 1
    )


def test_checkpoint_with_another_block_layout(tiny, tmp_path, store, monkeypatch):
    _no_scoring(monkeypatch)
    folder = tmp_path / "ckpt"
    shutil.copytree(tiny["llama"], folder)
    batch, _, _ = docs_corpus(1)
    st = stage(folder, store)
    (folder / LAYOUT_FILE).write_text(json.dumps({"layout": {**st.layout(), "labels": False, "sparse": False}}))
    with pytest.raises(ConfigError, match=r"trained with another block layout .*labels: trained False, stage True"):
        st.fit(batch.corpus, store)
    (folder / LAYOUT_FILE).write_text(json.dumps({"layout": st.layout()}))
    assert stage(folder, store).fit(batch.corpus, store).is_fitted


def test_registered_and_round_trips():
    from ragopt.config import from_config
    from ragopt.registry import resolve

    assert resolve("blockrank") is BlockRankReranker
    st = BlockRankReranker(layer=4, heads=[0, 3], aggregation="max", depth=30)
    again = from_config(st.to_config())
    assert again.to_config() == st.to_config()
    with pytest.raises(ConfigError, match="aggregation"):
        from_config({**st.to_config(), "aggregation": "median"})
    from ragopt.pipeline_io import load_pipeline

    pipe = load_pipeline("bm25_blockrank")
    br = pipe.stages[1]
    assert isinstance(br, BlockRankReranker) and br.sparse and br.prefill == "blocked" and br.depth == 20
    assert br.llm.model == "smollm2-135m-instruct"


# -- the packaged SmolLM2 on real queries ------------------------------------------------------------------------
@pytest.mark.slow
def test_smollm2_on_nq_open(smollm2, session_store):
    from ragopt.data import load_dataset
    from ragopt.pipeline_io import load_pipeline
    from tests.conftest import shared_dataset

    ds = load_dataset(str(shared_dataset("nq-open-oracle-dev")))
    queries = ds.queries_for("test")[[0, 1, 2]]
    bm25 = load_pipeline("bm25").set_params(**{"stages.0.top_k": 20})
    bm25.fit(ds.corpus, session_store)
    base = bm25.search(queries)
    st = BlockRankReranker(llm=smollm2, depth=10, max_doc_tokens=48, layer=12).fit(base.corpus, session_store)
    out = st.transform(Batch(base.queries, base.corpus, base.doc_idx, base.scores))
    for r in range(3):
        assert sorted(out.doc_idx[r, :10].tolist()) == sorted(base.doc_idx[r, :10].tolist())
        assert out.doc_idx[r, 10:].tolist() == base.doc_idx[r, 10:].tolist()
        assert np.all(np.diff(out.scores[r]) <= 0) and out.scores[r, 9] > out.scores[r, 10]
        assert out.scores[r, :10].sum() == pytest.approx(1.0, abs=1e-4)  # renormalised over the documents
    c = out.stats.counts
    assert c["blockrank_queries"] == 3 and c["blockrank_reranked"] == 30
    full_pairs = sum(attention_pairs(p.lengths, False) for p in st.prompts(base)[1])
    assert c["blockrank_attention_pairs"] < full_pairs / 2  # 10 documents: well under half of full attention
    # the linear (blocked) prefill gives the masked prefill's numbers on the real model
    _, prompts = st.prompts(base)
    masked = st.clone(prefill="masked").fit(base.corpus, session_store)
    np.testing.assert_allclose(st.scores(prompts[0]), masked.scores(prompts[0]), rtol=1e-3, atol=1e-5)
    flex = st.clone(prefill="flex").fit(base.corpus, session_store)  # and so does FlexAttention, compiled
    np.testing.assert_allclose(flex.scores(prompts[0]), masked.scores(prompts[0]), rtol=1e-3, atol=1e-5)
