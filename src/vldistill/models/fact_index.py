"""Fact indexes: sparse (BM25 via ``bm25s``) and dense (a sentence encoder and ``faiss``), saved
with a manifest that fingerprints the knowledge base and the encoder, so an index built from
another knowledge base or encoder is refused with the rebuild command.

Every retriever answers ``search(queries, k) -> (indices (Q, k) into the knowledge base, scores
(Q, k))``, best first; -1 pads when the knowledge base has fewer than k facts.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from vldistill.core.errors import DataError, MissingFileError
from vldistill.core.hashing import module_fingerprint
from vldistill.data.facts import KnowledgeBase
from vldistill.models.sentence_encoders import SentenceEncoder, load_encoder

MANIFEST = "index.json"
KINDS = ("bm25", "flat", "hnsw")


class Retriever(Protocol):
    def search(self, queries: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]: ...


def _pad(indices: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    if indices.shape[1] >= k:
        return indices[:, :k], scores[:, :k]
    extra = k - indices.shape[1]
    return (np.pad(indices, ((0, 0), (0, extra)), constant_values=-1),
            np.pad(scores, ((0, 0), (0, extra)), constant_values=-np.inf))


class BM25Retriever:
    """Okapi BM25 over the fact texts (``bm25s``, English stopwords removed)."""

    def __init__(self, kb: KnowledgeBase, model=None) -> None:
        import bm25s

        self.kb = kb
        if model is None:
            model = bm25s.BM25()
            model.index(bm25s.tokenize(kb.texts, stopwords="en", show_progress=False),
                        show_progress=False)
        self.model = model

    def search(self, queries: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        import bm25s

        tokens = bm25s.tokenize(list(queries), stopwords="en", show_progress=False)
        top = min(k, len(self.kb))
        indices, scores = self.model.retrieve(tokens, k=top, show_progress=False,
                                              n_threads=1)
        return _pad(np.asarray(indices, dtype=np.int64), np.asarray(scores, np.float32), k)

    def save(self, folder: Path) -> None:
        self.model.save(str(folder / "bm25"), show_progress=False)


class DenseRetriever:
    """Inner product between unit vectors (cosine): ``flat`` (exact) or ``hnsw`` (approximate,
    faster on large knowledge bases) ``faiss`` index over the encoded facts."""

    def __init__(self, kb: KnowledgeBase, encoder: SentenceEncoder, kind: str = "flat",
                 index=None, batch_size: int = 64) -> None:
        import faiss

        if kind not in ("flat", "hnsw"):
            raise ValueError(f"dense index kind {kind!r} is not one of flat, hnsw")
        self.kb, self.encoder, self.kind, self.batch_size = kb, encoder, kind, batch_size
        if index is None:
            vectors = encoder.encode(kb.texts, batch_size)
            if kind == "flat":
                index = faiss.IndexFlatIP(vectors.shape[1])
            else:
                index = faiss.IndexHNSWFlat(vectors.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
            index.add(vectors)
        self.index = index

    def search(self, queries: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        vectors = self.encoder.encode(list(queries), self.batch_size)
        scores, indices = self.index.search(vectors, min(k, len(self.kb)))
        return _pad(indices.astype(np.int64), scores.astype(np.float32), k)

    def save(self, folder: Path) -> None:
        import faiss

        faiss.write_index(self.index, str(folder / "faiss.index"))


def encoder_fingerprint(encoder: SentenceEncoder) -> str:
    return module_fingerprint(encoder.model)


def build_index(kb: KnowledgeBase, kind: str, folder: Path,
                encoder: SentenceEncoder | None = None, encoder_spec: str | None = None
                ) -> BM25Retriever | DenseRetriever:
    """Build a ``kind`` index over ``kb`` and save it in ``folder`` with its manifest."""
    if kind not in KINDS:
        raise ValueError(f"index kind {kind!r} is not one of {', '.join(KINDS)}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    source = Path(kb.source)
    manifest: dict[str, Any] = {"kind": kind, "facts": len(kb),
                                "kb": str(source.resolve()) if source.is_file() else kb.source,
                                "kb_fingerprint": kb.fingerprint()}
    if kind == "bm25":
        retriever: BM25Retriever | DenseRetriever = BM25Retriever(kb)
    else:
        if encoder is None:
            raise ValueError("a dense index needs an encoder")
        retriever = DenseRetriever(kb, encoder, kind)
        spec = encoder_spec or encoder.name
        if spec != "minilm" and Path(spec).exists():
            spec = str(Path(spec).resolve())          # searchable from any directory
        manifest.update(encoder=spec, dim=encoder.dim,
                        encoder_fingerprint=encoder_fingerprint(encoder))
    retriever.save(folder)
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return retriever


def rebuild_command(manifest: dict[str, Any], folder: Path) -> str:
    encoder = f" --encoder {manifest['encoder']}" if "encoder" in manifest else ""
    return (f"vldistill kb index --facts {manifest.get('kb', 'FACTS.jsonl')} --kind "
            f"{manifest.get('kind', 'bm25')}{encoder} --out {folder}")


def load_index(folder: Path, kb: KnowledgeBase, encoder: SentenceEncoder | None = None
               ) -> BM25Retriever | DenseRetriever:
    """Open a saved index over ``kb``; refuse one built from another knowledge base or encoder,
    naming the mismatch and the command that rebuilds it."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        raise MissingFileError(f"{folder} holds no fact index ({MANIFEST} is missing). Fix: "
                               "build one with `vldistill kb index --facts FACTS.jsonl --out "
                               f"{folder}`.")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        manifest["kb_fingerprint"], manifest["kind"]
    except (ValueError, KeyError, TypeError):
        raise DataError(f"{path} is not a fact index manifest (damaged, or written by something "
                        f"else). Rebuild the index: `vldistill kb index --facts "
                        f"{kb.source} --out {folder}`.") from None
    needed = folder / ("bm25" if manifest["kind"] == "bm25" else "faiss.index")
    if not needed.exists():
        raise MissingFileError(f"index {folder} lacks {needed.name}. Rebuild it: "
                               f"`{rebuild_command({**manifest, 'kb': kb.source}, folder)}`.")
    if manifest["kb_fingerprint"] != kb.fingerprint():
        raise DataError(f"index {folder} was built from another knowledge base "
                        f"({manifest.get('kb')}, {manifest.get('facts')} facts) than "
                        f"{kb.source} ({len(kb)} facts): their ids or texts differ. Rebuild it: "
                        f"`{rebuild_command({**manifest, 'kb': kb.source}, folder)}`.")
    if manifest["kind"] == "bm25":
        import bm25s

        return BM25Retriever(kb, bm25s.BM25.load(str(folder / "bm25"), show_progress=False))
    import faiss

    encoder = encoder or load_encoder(manifest["encoder"])
    if encoder_fingerprint(encoder) != manifest["encoder_fingerprint"]:
        raise DataError(f"index {folder} was built with another encoder ({manifest['encoder']}) "
                        f"than the one given ({encoder.name}): its vectors would not match the "
                        f"queries'. Rebuild it: `{rebuild_command({**manifest, 'kb': kb.source, 'encoder': encoder.name}, folder)}`.")
    return DenseRetriever(kb, encoder, manifest["kind"],
                          index=faiss.read_index(str(folder / "faiss.index")))
