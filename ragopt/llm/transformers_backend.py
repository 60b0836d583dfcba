"""``transformers``: a local causal LM through Hugging Face transformers (CPU or CUDA).

``model`` is a packaged alias (``smollm2-135m-instruct``, ``qwen2.5-coder-0.5b-instruct``,
``qwen2.5-coder-1.5b-instruct``; see :mod:`ragopt.llm.models`), a ``.gguf`` file, a local model folder (with
``gguf_file`` for a GGUF inside it), or a hub id (with ``revision``; ``gguf_file`` for a GGUF repo).

* GGUF weights are de-quantised to torch by transformers (slow: 20-120 s). The result (float32 safetensors and
  the tokenizer read from the GGUF) is kept as an artifact of kind ``llm-converted`` in the artifact store,
  keyed by the GGUF's identity and the transformers version, and reloads in about a second
  (``convert_gguf: false`` converts on every load instead). Loaded models are shared within a process.
* Chats are rendered with the tokenizer's chat template (``apply_chat_template(..., tokenize=False)``; a chat
  ending with an assistant message is continued, not closed) and tokenised without extra special tokens. Plain
  text gets the special tokens the weights declare: for a GGUF file its ``tokenizer.ggml.add_bos_token`` and
  ``add_eos_token`` (what llama.cpp follows; transformers before 5.x added a BOS to SmolLM2's prompts although its
  GGUF says not to), else the tokenizer's default.
* :meth:`generate` runs batches of ``batch_size`` prompts of similar length, left-padded; greedy by default.
  Sampled decoding with a seed runs one prompt at a time under that seed, so a prompt's sample does not depend
  on its batch-mates. A completion ends at the end-of-turn token, a stop string or ``max_new_tokens``.
* :meth:`score` tokenises each continuation on its own (no special tokens), appends it to the prompt tokens and
  reads its log-probabilities from one forward pass (left-padded batches, explicit position ids). Rows whose
  inputs coincide (one prompt, several one-token labels) share that pass.
* With ``share_prefix`` (default), rows of one :meth:`score` call that start with the same tokens (PRP: the chat
  template's system turn, the instruction and the query, common to every comparison of a query) read that head
  once: its keys and values are computed in one pass of its own and each group's suffixes run on top of them,
  right-padded, in batches of ``batch_size`` sorted by length. Groups are chosen on the sorted token sequences to
  save the most head tokens; a head shorter than ``_MIN_SHARED`` tokens or shared by a single row is not worth
  a pass of its own: those rows take the plain path. Log-probabilities equal the plain path's up to float
  rounding (fp32: within 1e-4). Models with sliding-window layers always take the plain path.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from ragopt._imports import require
from ragopt.config import param
from ragopt.errors import ArtifactError, ConfigError, LLMError, RagoptError, first_line
from ragopt.llm.base import (
    Completion,
    ContinuationScore,
    GenerationParams,
    LLMBackend,
    Prompt,
    apply_stop,
    check_prompts,
)
from ragopt.llm.gguf_meta import read_metadata
from ragopt.llm.models import PACKAGED, ResolvedLLM, _check_file, check_name, resolve_llm, sha256_file
from ragopt.registry import register
from ragopt.store import ArtifactStore

__all__ = ["TransformersLLM", "CONVERTED_KIND", "unload_all"]

CONVERTED_KIND = "llm-converted"
CONVERTED_FORMAT = 1
_MODELS: dict[tuple[str, str, str], tuple[Any, Any, dict]] = {}  # (identity, device, dtype) -> model, tok, info
_LOCK = threading.Lock()
_END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|endoftext|>")
#: a common head shorter than this (tokens) is read with every row rather than in a pass of its own
_MIN_SHARED = 16


def unload_all() -> None:
    """Forget every model loaded in this process (the next load reads the artifact store again)."""
    with _LOCK:
        _MODELS.clear()


def _require() -> tuple[Any, Any]:
    what = "the transformers LLM backend"
    return require("torch", "llm", what), require("transformers", "llm", what)


def _gguf_specials(path: Path) -> dict[str, bool]:
    """Whether a GGUF file's tokenizer puts a BOS before and an EOS after a prompt (``tokenizer.ggml.add_bos_token``,
    ``add_eos_token``; unset: BOS yes, EOS no, as llama.cpp assumes for BPE and SentencePiece vocabularies)."""
    meta = read_metadata(path)
    return {
        "bos": bool(meta.get("tokenizer.ggml.add_bos_token", True)),
        "eos": bool(meta.get("tokenizer.ggml.add_eos_token", False)),
    }


@register("transformers")
class TransformersLLM(LLMBackend):
    """A local causal LM (packaged alias, .gguf file, model folder or hub id) run with transformers."""

    model: str = param(
        doc="packaged alias (smollm2-135m-instruct, qwen2.5-coder-0.5b-instruct, "
        "qwen2.5-coder-1.5b-instruct), a .gguf file, a local model folder, or a hub id 'org/name'"
    )
    gguf_file: str | None = param(None, doc="GGUF file name inside the folder / hub repo named by model")
    revision: str | None = param(None, doc="hub revision (commit, tag); part of the fingerprint of a hub model")
    device: Literal["auto", "cpu", "cuda", "mps"] = param("auto", doc="auto: cuda if available, else cpu")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = param(
        "auto", doc="auto: float32 on the CPU, bfloat16 (or float16) on CUDA; part of the fingerprint"
    )
    batch_size: int = param(8, doc="prompts per forward pass / generate call", ge=1)
    convert_gguf: bool = param(True, doc="keep the GGUF -> torch conversion as an artifact and reuse it")
    share_prefix: bool = param(
        True, doc="score: read the token head shared by several rows of a call once (KV cache) instead of per row"
    )

    def validate(self, path: str = "") -> None:
        at = f"{path}." if path else ""
        check_name(self.model, f"{at}model")
        if self.gguf_file is not None and not self.gguf_file.endswith(".gguf"):
            raise ConfigError(f"{at}gguf_file", f"expected a .gguf file name, got {self.gguf_file!r}")

    @property
    def chunk_size(self) -> int:  # type: ignore[override]
        return 4 * self.batch_size

    @property
    def supports_logprobs(self) -> bool:
        return True

    # -- loading -------------------------------------------------------------------------------
    def _init_runtime(self) -> None:
        super()._init_runtime()
        self._resolved_llm: ResolvedLLM | None = None
        self._device_dtype_pair: tuple[str, str] | None = None
        self._model: Any = None
        self._tokenizer: Any = None
        self._info: dict[str, Any] = {}
        self._eos: Any = None

    def resolved(self) -> ResolvedLLM:
        if self._resolved_llm is None:
            self._resolved_llm = resolve_llm(self.model, self.gguf_file, self.revision, store=self.artifact_store())
        return self._resolved_llm

    def _device_dtype(self) -> tuple[str, str]:
        if self._device_dtype_pair is None:
            torch, _ = _require()
            device = self.device
            if device == "auto":
                device = "cuda" if torch.cuda.is_available() else "cpu"
            if device == "cuda" and not torch.cuda.is_available():
                raise LLMError(f"{self.describe()}: device 'cuda' requested but CUDA is not available")
            dtype = self.dtype
            if dtype == "auto":
                dtype = (
                    "float32"
                    if device in ("cpu", "mps")
                    else ("bfloat16" if torch.cuda.is_bf16_supported() else "float16")
                )
            self._device_dtype_pair = (device, dtype)
        return self._device_dtype_pair

    def fingerprint(self) -> str:
        _, dtype = self._device_dtype()
        return f"transformers:{self.resolved().identity}:{dtype}"

    @property
    def load_info(self) -> dict[str, Any]:
        """How the model was loaded: identity, device, dtype, the converted artifact and whether this process
        created it (``artifact_created``), seconds spent loading, and for a local GGUF the special tokens its
        plain prompts get (``specials``: ``{"bos": ..., "eos": ...}``, see :meth:`encode_plain`)."""
        self.load()
        return dict(self._info)

    def load(self) -> tuple[Any, Any]:
        """``(model, tokenizer)``, loaded once per process per (weights, device, dtype)."""
        if self._model is not None:
            return self._model, self._tokenizer
        torch, transformers = _require()
        res = self.resolved()
        device, dtype = self._device_dtype()
        key = (res.identity, device, dtype)
        with _LOCK:
            if key not in _MODELS:
                t0 = time.perf_counter()
                info: dict[str, Any] = {"identity": res.identity, "device": device, "dtype": dtype}
                try:
                    if res.gguf_file and self.convert_gguf:
                        folder = self._converted(res, info)
                        source, kwargs = str(folder), {}
                    else:
                        if res.gguf_file:
                            self._require_gguf()
                            self._check_gguf(res)
                        source = res.source
                        kwargs = {"gguf_file": res.gguf_file} if res.gguf_file else {}
                        if not res.local and self.revision:
                            kwargs["revision"] = self.revision
                    tok = transformers.AutoTokenizer.from_pretrained(source, **kwargs)
                    model = transformers.AutoModelForCausalLM.from_pretrained(
                        source, dtype=getattr(torch, dtype), **kwargs
                    )
                    model.to(device).eval()
                except RagoptError:
                    raise
                except Exception as e:  # OSError (offline hub, missing files), ValueError (unknown arch) ...
                    # one line: the hub's offline error ran over two, after its retries
                    hint = "" if res.local else "; no network or hub cache here? use a packaged alias or a folder"
                    raise LLMError(
                        f"cannot load {self.describe()} from {res.source!r}"
                        f"{' (' + res.gguf_file + ')' if res.gguf_file else ''}: {first_line(e)}{hint}"
                    ) from e
                if tok.pad_token_id is None:
                    tok.pad_token = tok.eos_token
                if res.gguf_path is not None:
                    info["specials"] = _gguf_specials(res.gguf_path)
                info["load_seconds"] = round(time.perf_counter() - t0, 3)
                _MODELS[key] = (model, tok, info)
            model, tok, info = _MODELS[key]
        self._model, self._tokenizer, self._info, self._eos = model, tok, info, self._eos_ids(model, tok)
        return model, tok

    @staticmethod
    def _require_gguf() -> None:
        require("gguf", "llm", "reading GGUF weights with transformers")

    @staticmethod
    def _check_gguf(res: ResolvedLLM) -> None:
        """Check the GGUF file's sha256 against the packaged table (aliases) or its identity (local files)."""
        path = res.gguf_path
        if path is None:
            return
        if res.alias is not None:
            _check_file(PACKAGED[res.alias], path)
        elif res.identity.startswith("gguf-sha256:") and sha256_file(path) != res.identity.split(":", 1)[1]:
            raise ArtifactError(f"GGUF file {path} changed while in use (sha256 differs)")

    def _converted(self, res: ResolvedLLM, info: dict) -> Path:
        """The folder of the torch conversion of a GGUF model, converting it into the store once."""
        import transformers

        version = ".".join(transformers.__version__.split(".")[:2])
        spec = {"source": res.identity, "gguf_file": res.gguf_file, "transformers": version}
        store = ArtifactStore(self.artifact_store().root, verify_checksums=False)  # sizes checked; GBs not re-hashed

        def build(tmp: Path) -> dict:
            import torch

            self._require_gguf()
            self._check_gguf(res)
            kwargs: dict[str, Any] = {"gguf_file": res.gguf_file}
            if not res.local and self.revision:
                kwargs["revision"] = self.revision
            tok = transformers.AutoTokenizer.from_pretrained(res.source, **kwargs)
            model = transformers.AutoModelForCausalLM.from_pretrained(res.source, dtype=torch.float32, **kwargs)
            model.hf_quantizer = None  # the weights are plain float32 now: save them as such
            if hasattr(model.config, "quantization_config"):
                del model.config.quantization_config
            model.save_pretrained(tmp / "model")
            tok.save_pretrained(tmp / "model")
            return {"model": res.name, "converted_from": res.identity}

        art = store.get_or_create(CONVERTED_KIND, spec, CONVERTED_FORMAT, build)
        info.update(
            artifact=str(art.path),
            artifact_created=art.created,
            convert_seconds=art.manifest.get("build_seconds") if art.created else None,
        )
        return art.path / "model"

    @staticmethod
    def _eos_ids(model: Any, tok: Any) -> set[int]:
        ids: set[int] = set()
        for v in (tok.eos_token_id, getattr(model.generation_config, "eos_token_id", None)):
            ids.update(v if isinstance(v, (list, tuple)) else [v] if v is not None else [])
        vocab = tok.get_vocab()
        ids.update(vocab[t] for t in _END_OF_TURN if t in vocab)
        return ids

    # -- text <-> tokens ---------------------------------------------------------------------
    def render(self, prompt: Prompt) -> str:
        """The text the model reads for ``prompt`` (a chat goes through the chat template)."""
        if isinstance(prompt, str):
            return prompt
        _, tok = self.load()
        if not getattr(tok, "chat_template", None):
            raise LLMError(f"{self.describe()} has no chat template: give plain-text prompts")
        cont = prompt[-1]["role"] == "assistant"
        try:
            return tok.apply_chat_template(
                prompt, tokenize=False, add_generation_prompt=not cont, continue_final_message=cont
            )
        except Exception as e:  # jinja errors, e.g. a template without a system role
            raise LLMError(f"{self.describe()}: its chat template rejected the prompt ({type(e).__name__}: {e})") from e

    def encode(self, prompt: Prompt) -> list[int]:
        if isinstance(prompt, str):
            return self.encode_plain(prompt)
        _, tok = self.load()
        return list(tok(self.render(prompt), add_special_tokens=False)["input_ids"])

    def encode_plain(self, text: str, *, eos: bool = True) -> list[int]:
        """Token ids of plain text read as a whole prompt: with the BOS (and EOS; ``eos=False`` leaves it off, for
        the head of a longer prompt) that a GGUF file declares, else with the tokenizer's default special tokens."""
        _, tok = self.load()
        specials = self._info.get("specials")
        if specials is None:
            return list(tok(text)["input_ids"])
        ids = list(tok(text, add_special_tokens=False)["input_ids"])
        if specials["bos"] and tok.bos_token_id is not None:
            ids.insert(0, tok.bos_token_id)
        if eos and specials["eos"] and tok.eos_token_id is not None:
            ids.append(tok.eos_token_id)
        return ids

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        _, tok = self.load()
        return [len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts]

    def _check_length(self, ids: list[list[int]], extra: int) -> None:
        model, _ = self.load()
        limit = getattr(model.config, "max_position_embeddings", None)
        for i, r in enumerate(ids):
            if limit and len(r) + extra > limit:
                raise LLMError(
                    f"{self.describe()}: prompt {i} has {len(r)} tokens (+{extra}), more than the model's {limit}"
                )

    # -- generation ----------------------------------------------------------------------------
    def generate(self, prompts: Sequence[Prompt], params: GenerationParams | None = None) -> list[Completion]:
        params = params or GenerationParams()
        prompts = check_prompts(prompts)
        ids = [self.encode(p) for p in prompts]
        self._check_length(ids, params.max_new_tokens)
        out: list[Completion | None] = [None] * len(ids)
        if not params.greedy and params.seed is not None:
            groups = [[i] for i in range(len(ids))]
        else:  # similar lengths together: less padding
            order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
            groups = [order[s : s + self.batch_size] for s in range(0, len(order), self.batch_size)]
        for g in groups:
            for i, c in zip(g, self._generate_batch([ids[i] for i in g], params)):
                out[i] = c
        return out  # type: ignore[return-value]

    def _generate_batch(self, rows: list[list[int]], params: GenerationParams) -> list[Completion]:
        import torch
        from transformers import GenerationConfig

        model, tok = self.load()
        device, _ = self._device_dtype()
        eos = self._eos
        pad = tok.pad_token_id
        input_ids, attn = _left_padded(rows, pad)
        width = int(input_ids.shape[1])
        sample = not params.greedy
        gc = GenerationConfig(
            max_new_tokens=params.max_new_tokens,
            do_sample=sample,
            pad_token_id=pad,
            eos_token_id=sorted(eos),
            num_beams=1,
            **({"temperature": params.temperature, "top_p": params.top_p, "top_k": 0} if sample else {}),
        )
        kwargs: dict[str, Any] = {}
        if params.stop:  # stop strings as apply_stop reads them (not inside the completion's leading whitespace)
            from transformers import StoppingCriteria, StoppingCriteriaList

            crit = type("StopAfterText", (_StopAfterText, StoppingCriteria), {})(tok, width, params.stop)
            kwargs["stopping_criteria"] = StoppingCriteriaList([crit])
        try:
            with (
                torch.inference_mode(),
                torch.random.fork_rng(
                    devices=[] if device != "cuda" else None, enabled=sample and params.seed is not None
                ),
            ):
                if sample and params.seed is not None:
                    torch.manual_seed(params.seed)
                gen = model.generate(
                    input_ids=input_ids.to(device), attention_mask=attn.to(device), generation_config=gc, **kwargs
                )
        except RuntimeError as e:
            raise LLMError(f"{self.describe()}: generation failed: {e}") from e
        gen = gen[:, width:].tolist()
        out = []
        for r, toks in zip(rows, gen):
            end = next((j for j, t in enumerate(toks) if t in eos), None)
            if end is not None:
                kept, n, finish = toks[:end], end + 1, "stop"
            else:
                kept, n = toks, len(toks)
                finish = "length" if n >= params.max_new_tokens else "stop"
            text, stopped = apply_stop(tok.decode(kept, skip_special_tokens=True), params.stop)
            if stopped:
                finish = "stop"
                if end is not None:  # a row ended by a stop string is padded after it: the pad was not generated
                    n = end
            out.append(Completion(text, len(r), n, finish))
        return out

    # -- scoring -------------------------------------------------------------------------------
    def score(self, prompts: Sequence[Prompt], continuations: Sequence[str]) -> list[ContinuationScore]:
        prompts = self._check_score_args(prompts, continuations)
        _, tok = self.load()
        p_ids = [self.encode(p) for p in prompts]
        c_ids = [list(tok(c, add_special_tokens=False)["input_ids"]) for c in continuations]
        for i, c in enumerate(c_ids):
            if not c:
                raise LLMError(f"{self.describe()}: continuation {i} {continuations[i]!r} has no tokens")
        self._check_length([p + c for p, c in zip(p_ids, c_ids)], 0)
        # the forward input of row i is prompt + continuation[:-1]; rows with equal inputs share one pass
        seqs: dict[tuple[int, ...], int] = {}
        for p, c in zip(p_ids, c_ids):
            key = tuple(p + c[:-1])
            seqs[key] = max(seqs.get(key, 0), len(c))
        logps = self._last_logprobs(seqs)
        out = []
        for p, c in zip(p_ids, c_ids):
            lp = logps[tuple(p + c[:-1])]  # (k, V) rows for the last k positions
            rows = lp[lp.shape[0] - len(c) :]
            vals = [float(rows[j, t]) for j, t in enumerate(c)]
            out.append(
                ContinuationScore(tuple(tok.decode([t]) for t in c), tuple(vals), float(sum(vals)), len(p), len(c))
            )
        return out

    def _last_logprobs(self, seqs: dict[tuple[int, ...], int]) -> dict[tuple[int, ...], Any]:
        """Log-softmax rows of the last ``k`` positions of each sequence (``seqs``: sequence -> k): groups of
        sequences with a long common head read it once (:meth:`_shared_logprobs`), the rest in plain batches."""
        out: dict[tuple[int, ...], Any] = {}
        rest = dict(seqs)
        for group, shared in self._prefix_groups(seqs):
            out.update(self._shared_logprobs({g: seqs[g] for g in group}, shared))
            for g in group:
                del rest[g]
        if rest:
            out.update(self._plain_logprobs(rest))
        return out

    def _can_share(self) -> bool:
        if not self.share_prefix:
            return False
        model, _ = self.load()
        types = getattr(model.config, "layer_types", None)
        if types is None:  # no per-layer types: a configured sliding window may apply to every layer
            return getattr(model.config, "sliding_window", None) is None
        return all(t == "full_attention" for t in types)

    def _prefix_groups(self, seqs: dict[tuple[int, ...], int]) -> list[tuple[list[tuple[int, ...]], int]]:
        """``(sequences, head length)`` groups that save the most head tokens: on the sorted sequences a group is a
        run of neighbours; its head is their common prefix, cut so that every row's last ``k`` positions stay in
        its suffix. A run is split where neighbours share least when its parts together save more."""
        if len(seqs) < 2 or not self._can_share():
            return []
        order = sorted(seqs)
        lcp = []
        for a, b in zip(order, order[1:]):
            n, m = 0, min(len(a), len(b))
            while n < m and a[n] == b[n]:
                n += 1
            lcp.append(n)
        room = [len(s) - seqs[s] for s in order]  # the head may not reach a position whose logits are read

        def plan(lo: int, hi: int, depth: int) -> tuple[int, list[tuple[int, int, int]]]:
            if hi - lo < 2:
                return 0, []
            low = min(lcp[lo : hi - 1])
            head = min(low, min(room[lo:hi]))
            whole = (head * (hi - lo - 1), [(lo, hi, head)]) if head >= _MIN_SHARED else (0, [])
            if depth >= 32:  # nested heads this deep: keep the outer one
                return whole
            cuts = [i + 1 for i in range(lo, hi - 1) if lcp[i] == low]
            saved, parts = 0, []
            for a, b in zip([lo, *cuts], [*cuts, hi]):
                s, p = plan(a, b, depth + 1)
                saved, parts = saved + s, parts + p
            return (saved, parts) if saved > whole[0] else whole

        return [(order[lo:hi], head) for lo, hi, head in plan(0, len(order), 0)[1]]

    def _forward(self, model: Any, **kwargs: Any) -> Any:
        import torch

        try:
            with torch.inference_mode():
                return model(**kwargs)
        except RuntimeError as e:
            raise LLMError(f"{self.describe()}: forward pass failed: {e}") from e

    def _shared_logprobs(self, seqs: dict[tuple[int, ...], int], shared: int) -> dict[tuple[int, ...], Any]:
        """:meth:`_last_logprobs` for sequences that all start with the same ``shared`` tokens: the head runs once,
        then the suffixes in right-padded batches on top of a copy of its keys and values expanded to the batch
        (a fresh cache per batch: the forward pass appends to the cache it is given)."""
        import inspect

        import torch
        from transformers import DynamicCache

        model, tok = self.load()
        device, _ = self._device_dtype()
        cache_kw = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
        head = next(iter(seqs))[:shared]
        pre = self._forward(
            model,
            input_ids=torch.tensor([head], dtype=torch.long, device=device),
            attention_mask=torch.ones((1, shared), dtype=torch.long, device=device),
            position_ids=torch.arange(shared, device=device)[None],
            use_cache=True,
            logits_to_keep=1,
        )
        kv = [(layer.keys, layer.values) for layer in getattr(pre, cache_kw).layers]
        order = sorted(seqs, key=len, reverse=True)
        out: dict[tuple[int, ...], Any] = {}
        for s in range(0, len(order), self.batch_size):
            group = order[s : s + self.batch_size]
            n, width = len(group), len(group[0]) - shared
            input_ids = torch.full((n, width), tok.pad_token_id, dtype=torch.long)
            attn = torch.zeros((n, shared + width), dtype=torch.long)
            attn[:, :shared] = 1
            keep: set[int] = set()
            for i, g in enumerate(group):  # right padding: a row's tokens never see the pads after them
                m = len(g) - shared
                input_ids[i, :m] = torch.tensor(g[shared:], dtype=torch.long)
                attn[i, shared : shared + m] = 1
                keep.update(range(m - seqs[g], m))
            cols = sorted(keep)  # suffix positions whose logits some row reads
            at = {c: j for j, c in enumerate(cols)}
            cache = DynamicCache()
            for layer, (k, v) in enumerate(kv):
                cache.update(k.expand(n, *k.shape[1:]), v.expand(n, *v.shape[1:]), layer)
            logits = self._forward(
                model,
                input_ids=input_ids.to(device),
                attention_mask=attn.to(device),
                position_ids=torch.arange(shared, shared + width, device=device)[None].expand(n, -1),
                use_cache=True,
                logits_to_keep=torch.tensor(cols, dtype=torch.long, device=device),
                **{cache_kw: cache},
            ).logits
            logp = torch.log_softmax(logits.float(), dim=-1).cpu()
            for i, g in enumerate(group):
                m = len(g) - shared
                out[g] = logp[i, [at[c] for c in range(m - seqs[g], m)]]
        return out

    def _plain_logprobs(self, seqs: dict[tuple[int, ...], int]) -> dict[tuple[int, ...], Any]:
        """:meth:`_last_logprobs` in left-padded batches of similar lengths, each sequence read in full."""
        import torch

        model, tok = self.load()
        device, _ = self._device_dtype()
        order = sorted(seqs, key=len, reverse=True)
        out: dict[tuple[int, ...], Any] = {}
        for s in range(0, len(order), self.batch_size):
            group = order[s : s + self.batch_size]
            keep = max(seqs[g] for g in group)
            input_ids, attn = _left_padded(group, tok.pad_token_id)
            pos = (attn.cumsum(-1) - 1).clamp(min=0)
            logits = self._forward(
                model,
                input_ids=input_ids.to(device),
                attention_mask=attn.to(device),
                position_ids=pos.to(device),
                logits_to_keep=keep,
                use_cache=False,
            ).logits
            logp = torch.log_softmax(logits[:, -keep:, :].float(), dim=-1).cpu()
            for i, g in enumerate(group):
                out[g] = logp[i, keep - seqs[g] :]
        return out

    def next_token_logprobs(self, prompt: Prompt, k: int) -> list[tuple[str, float]]:
        """The ``k`` most likely next tokens after ``prompt`` with their logprobs (for the test server)."""
        _, tok = self.load()
        ids = tuple(self.encode(check_prompts([prompt])[0]))
        lp = self._last_logprobs({ids: 1})[ids][0]
        vals, idx = lp.topk(k)
        return [(tok.decode([int(t)]), float(v)) for v, t in zip(vals, idx)]


def _left_padded(rows: Sequence[Sequence[int]], pad: int) -> tuple[Any, Any]:
    """``(input_ids, attention_mask)`` of token rows left-padded with ``pad`` to the longest (long tensors)."""
    import torch

    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
    attn = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        input_ids[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
        attn[i, width - len(r) :] = 1
    return input_ids, attn


class _StopAfterText:
    """A ``transformers`` stopping criterion: a row is done once :func:`apply_stop` finds a stop string in its
    decoded completion (stops inside the leading whitespace do not count). Decodes each unfinished row's new
    tokens every step: answers are short, so this costs microseconds next to a forward pass."""

    def __init__(self, tok: Any, width: int, stop: Sequence[str]):
        self.tok, self.width, self.stop = tok, width, tuple(stop)
        self.done: list[bool] | None = None

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        n = input_ids.shape[0]
        if self.done is None:
            self.done = [False] * n
        for i in range(n):
            if not self.done[i]:
                text = self.tok.decode(input_ids[i, self.width :].tolist(), skip_special_tokens=True)
                self.done[i] = apply_stop(text, self.stop)[1]
        return torch.tensor(self.done, dtype=torch.bool, device=input_ids.device)
