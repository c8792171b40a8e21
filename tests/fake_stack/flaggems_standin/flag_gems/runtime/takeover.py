"""FAKE_GEMS_TAKEOVER=1: `enable()` takes vLLM layers over instead of registering ATen ops through
torch.library — the way FlagGems' `flag_gems.modules` and vLLM-FL's ops replace a layer's forward.

The kernels are bound here when flag_gems is imported (as FlagGems' own namespaces hold theirs),
so nothing outside FlagGems calls a `flag_gems.ops` module attribute: the only trace of them
running is FlagGems' own op log (`GEMS <OP>` at DEBUG, `record=True`). `all_registered_ops()`
names what was taken over. Layers: `embedding` (vLLM's UnquantizedEmbeddingMethod.embedding)
and `silu` (SiluAndMul.forward_cpu / forward_native), each unless named in `unused`.
"""

from __future__ import annotations

import os

from flag_gems.ops.embedding import embedding as _embedding
from flag_gems.ops.silu import silu as _silu


def asked() -> bool:
    return os.environ.get("FAKE_GEMS_TAKEOVER", "") == "1"


class TakenOver:
    """What `all_registered_ops()` reads: the layers taken over, by FlagGems' op name."""

    def __init__(self, ops: list[str]) -> None:
        self.ops = ops

    def get_all_ops(self) -> list[str]:
        return list(self.ops)

    def get_all_keys(self) -> list[str]:
        return list(self.ops)


_ORIGINAL: dict[str, object] = {}


def take_over(exclude: list[str]) -> TakenOver:
    from vllm.model_executor.layers.activation import SiluAndMul
    from vllm.model_executor.layers.vocab_parallel_embedding import UnquantizedEmbeddingMethod

    taken = []
    if "embedding" not in exclude:
        _ORIGINAL.setdefault("embedding", UnquantizedEmbeddingMethod.embedding)

        def embedding(self, layer, input_):
            return _embedding(layer.weight, input_)

        UnquantizedEmbeddingMethod.embedding = embedding
        taken.append("embedding")
    if "silu" not in exclude:

        def silu_and_mul(self, x):
            d = x.shape[-1] // 2
            return _silu(x[..., :d]) * x[..., d:]

        SiluAndMul.forward_cpu = SiluAndMul.forward_native = silu_and_mul
        taken.append("silu")
    return TakenOver(taken)
