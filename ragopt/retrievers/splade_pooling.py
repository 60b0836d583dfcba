"""Faster SPLADE inference on a loaded sentence-transformers ``SparseEncoder``, giving the same vectors.

A SPLADE vector is, per vocabulary term j, ``max_t log(1 + relu(x_tj))`` over a text's tokens t, where
``x_t = W h_t + b`` are the masked-language-model logits. sentence-transformers computes the logits of every token,
padding included (``batch x tokens x 30,522`` floats, 2 GB for 32 texts of 512 tokens), then masks them, applies
relu and log1p and takes the max: four passes over that tensor. On 2 CPU cores those passes took about 80% of
SPLADE-tiny's encoding time, and writing the logits into freshly allocated memory took as long as the matrix
product. Here the head's vocabulary projection is deferred to the pooling, which runs it one text at a time on that
text's real tokens and reduces at once:

- ``log(1 + relu(.))`` is non-decreasing, so ``max_t f(x_tj) = f(max_t x_tj)``. This holds in floating point too:
  relu and the rounding of log1p are monotone. So the max is taken first, and f runs on one vector per text.
- ``b`` is the same for every token, so ``max_t (y_tj + b_j) = max_t y_tj + b_j`` with ``y = W h`` (rounding of the
  sum is monotone as well): the bias is added to one vector per text.
- Padding tokens are never projected.

The only arithmetic that can differ from the stock path is the matrix product, which the BLAS may block
differently for one text than for a padded batch: each logit is then the same dot product summed in another order,
a difference of a few float32 roundings of the hidden size's terms (measured: at most 1.9e-7 on cranfield).
``install_fast_pooling`` checks the patched model against the stock modules on a probe batch and leaves the model
unpatched if any value differs by more than 1e-4 (absolute and relative), which no summation order reaches for
these magnitudes and any real change (a missing bias, a projected padding token) exceeds. Only eval-mode max pooling of a right-padded batch takes the fast path; training, sum
pooling, left padding and the unpadded (flash-attention) layout project in full and run the stock pooling.
"""

from __future__ import annotations

import types
from typing import Any

__all__ = ["install_fast_pooling", "TOLERANCE"]

TOLERANCE = 1e-4  # the probe's bound on a difference from the stock vectors (see above)


_PROBE = [
    "a",
    "SPLADE expands a text into weighted vocabulary terms; the maximum runs over the real tokens only. " * 3,
    "boundary layer flow over a flat plate",
]


def install_fast_pooling(model: Any) -> bool:
    """Patch ``model`` (a loaded ``SparseEncoder`` in eval mode) in place when it is an MLM transformer followed by
    max ``SpladePooling`` and the patched model reproduces the stock vectors on a probe batch. Returns whether it
    was patched; an unpatched model works as before."""
    import torch

    modules = list(model)
    if len(modules) < 2 or type(modules[1]).__name__ != "SpladePooling":
        return False
    pooling, decoder = modules[1], _mlm_decoder(modules[0])
    if decoder is None or getattr(pooling, "pooling_strategy", None) != "max" or model.training:
        return False
    with torch.inference_mode():
        before = model.encode(_PROBE, convert_to_tensor=True, convert_to_sparse_tensor=False, show_progress_bar=False)
        decoder.forward = types.MethodType(_decoder_forward, decoder)
        pooling.forward = types.MethodType(_pooling_forward, pooling)
        pooling._ragopt_decoder = decoder
        after = model.encode(_PROBE, convert_to_tensor=True, convert_to_sparse_tensor=False, show_progress_bar=False)
    if before.shape == after.shape and torch.allclose(after, before, rtol=TOLERANCE, atol=TOLERANCE):
        return True
    del decoder.forward, pooling.forward, pooling._ragopt_decoder
    return False


def _mlm_decoder(module: Any) -> Any:
    """The vocabulary projection (a plain ``Linear`` with a bias) of ``module``'s masked-language-model head."""
    import torch

    auto = getattr(module, "auto_model", None)
    get = getattr(auto, "get_output_embeddings", None)
    head = get() if callable(get) else None
    if type(head) is torch.nn.Linear and head.bias is not None:  # a subclass may compute something else
        return head
    return None


def _decoder_forward(self: Any, hidden: Any) -> Any:
    """In eval mode the projection is deferred: the hidden states go on to the pooling unprojected."""
    import torch.nn.functional as F

    return F.linear(hidden, self.weight, self.bias) if self.training else hidden


def _pooling_forward(self: Any, features: dict[str, Any]) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F

    hidden, mask = features["token_embeddings"], features["attention_mask"]
    decoder = self._ragopt_decoder
    if self.training:  # the decoder projected in full
        return type(self).forward(self, features)
    lengths = mask.sum(1)
    right_padded = (
        "cu_seq_lens_q" not in features
        and hidden.dim() == 3
        and torch.equal(mask.bool(), torch.arange(mask.shape[1], device=mask.device)[None, :] < lengths[:, None])
    )
    if not right_padded:
        features["token_embeddings"] = F.linear(hidden, decoder.weight, decoder.bias)
        return type(self).forward(self, features)
    weight = decoder.weight
    vocab = weight.shape[0]
    pooled = torch.stack(
        [
            F.linear(hidden[i, :n], weight).amax(0) if n else hidden.new_full((vocab,), float("-inf"))
            for i, n in enumerate(lengths.tolist())
        ]
    )
    pooled += decoder.bias
    pooled = pooled.clamp_min_(0).log1p_()  # stock: padding is masked to 0 before relu, so the floor is 0
    if self.activation_function == "log1p_relu":
        pooled = pooled.log1p_()
    for name in ("embedding_dimension", "word_embedding_dimension"):  # sentence-transformers 6 / 5
        if hasattr(self, name) and getattr(self, name) is None:
            setattr(self, name, vocab)
    features["sentence_embedding"] = pooled
    return features
