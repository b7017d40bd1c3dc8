"""Tests for the knowledge base, fact indexes and retrieval metrics (vldistill.data.facts, vldistill.models.fact_index, vldistill.eval.retrieval), and the
SQuAD v1.1 exact match / F1 (vldistill.eval.squad)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from vldistill.core.errors import DataError, MissingFileError
from vldistill.data.facts import KnowledgeBase, read_facts, write_facts
from vldistill.data.sample import Sample
from vldistill.data.shapesworld_questions import Fact
from vldistill.eval.retrieval import mean_reciprocal_rank, recall_at_k
from vldistill.eval.squad import exact_match, f1_score, normalize_squad

FACTS = [Fact("F1", "A triangle has three corners."), Fact("F2", "Bananas are yellow."),
         Fact("F3", "Snow is white."), Fact("F4", "A square has four corners.")]


def kb_file(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "facts.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- the KB file

def test_facts_round_trip_with_their_optional_fields(tmp_path: Path) -> None:
    kb = KnowledgeBase(FACTS, {"F2": {"source": "fruit", "score": 2}})
    kb2 = read_facts(write_facts(kb, tmp_path / "kb.jsonl"))

    assert kb2.facts == FACTS and kb2.fields == {"F2": {"source": "fruit", "score": 2}}
    assert kb2.fingerprint() == kb.fingerprint()
    assert KnowledgeBase(FACTS[::-1]).fingerprint() != kb.fingerprint()


@pytest.mark.parametrize("line, message", [
    ('{"id": "F1", "text": "ok"', r"line 2: not valid JSON"),
    ('["F1", "text"]', r"line 2: \['F1', 'text'\] is not a JSON object"),
    ('{"text": "no id"}', r"line 2: field 'id' is missing"),
    ('{"id": "F9", "text": ""}', r"line 2: field 'text' is ''"),
])
def test_a_bad_fact_line_is_named_by_file_and_line(tmp_path: Path, line: str,
                                                   message: str) -> None:
    path = kb_file(tmp_path, ['{"id": "F0", "text": "fine"}', line])
    with pytest.raises(DataError, match=message) as error:
        read_facts(path)
    assert str(path) in str(error.value)


def test_duplicate_fact_ids_are_refused_listing_their_lines(tmp_path: Path) -> None:
    lines = [json.dumps({"id": f"F{i % 3}", "text": f"fact {i}"}) for i in range(7)]
    with pytest.raises(DataError, match=r"3 fact ids appear more than once: 'F0' on lines "
                                        r"1, 4, 7; 'F1' on lines 2, 5"):
        read_facts(kb_file(tmp_path, lines))


def test_a_gold_fact_id_outside_the_kb_is_named() -> None:
    samples = [Sample(7, 1, "q", ("a",), fact_ids=("F2",)),
               Sample(8, 1, "q", ("a",), fact_ids=("F77",))]
    with pytest.raises(DataError, match=r"1 gold fact id\(s\) .* question 8 -> 'F77'"):
        KnowledgeBase(FACTS).check_gold(samples)
    KnowledgeBase(FACTS).check_gold(samples[:1])


def test_a_missing_kb_file_says_what_to_pass(tmp_path: Path) -> None:
    with pytest.raises(MissingFileError, match="facts.jsonl"):
        read_facts(tmp_path / "nope.jsonl")


# ----------------------------------------------------------------------------- metrics

def test_recall_and_mrr_by_hand() -> None:
    rankings = [["F1", "F2", "F3"], ["F3", "F4", "F2"], ["F2", "F3", "F4"], ["F1"]]
    golds = [["F1"], ["F2"], ["F1"], []]                  # the last query has no gold fact

    assert recall_at_k(rankings, golds, 1) == pytest.approx(100 / 3)
    assert recall_at_k(rankings, golds, 3) == pytest.approx(200 / 3)
    assert mean_reciprocal_rank(rankings, golds) == pytest.approx((1 + 1 / 3 + 0) / 3)


@pytest.mark.parametrize("prediction, truths, em, f1", [
    ("The Cat!", ["cat"], 1.0, 1.0),                     # case, article, punctuation
    ("a red  apple", ["red apple", "apple"], 1.0, 1.0),
    ("red apple pie", ["the red apple"], 0.0, 0.8),       # P 2/3, R 1: 2PR/(P+R) = 0.8
    ("blue", ["red apple"], 0.0, 0.0),
    ("an", ["the"], 1.0, 0.0),                            # both normalise to "": no tokens
])
def test_squad_exact_match_and_f1_by_hand(prediction, truths, em, f1) -> None:
    assert exact_match(prediction, truths) == em
    assert f1_score(prediction, truths) == pytest.approx(f1)


def test_squad_normalisation_steps() -> None:
    assert normalize_squad("  The  U.S.A.'s  best-known   answer ") == "usas bestknown answer"
    assert normalize_squad("Theatre an anthem") == "theatre anthem"   # whole words only


# ----------------------------------------------------------------------------- indexes

def test_bm25_ranks_the_fact_sharing_the_rare_words_first() -> None:
    from vldistill.models.fact_index import BM25Retriever

    indices, scores = BM25Retriever(KnowledgeBase(FACTS)).search(
        ["how many corners does a triangle have", "what colour are bananas"], k=6)

    assert indices[:, 0].tolist() == [0, 1]
    assert indices.shape == (2, 6) and indices[0, -1] == -1          # padded past 4 facts
    assert np.all(np.diff(scores[:, :4], axis=1) <= 0)               # best first


@pytest.fixture(scope="module")
def tiny_encoder_folder(tmp_path_factory) -> Path:
    """A 2-layer BERT with MiniLM's tokenizer, saved as a user would."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from vldistill.models.sentence_encoders import minilm_folder

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("encoder")
    tokenizer = AutoTokenizer.from_pretrained(minilm_folder())
    BertModel(BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                         num_attention_heads=2, intermediate_size=64)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_dense_flat_search_equals_brute_force_cosine(tiny_encoder_folder: Path) -> None:
    from vldistill.models.fact_index import DenseRetriever
    from vldistill.models.sentence_encoders import SentenceEncoder

    encoder = SentenceEncoder.from_pretrained(tiny_encoder_folder)
    kb = KnowledgeBase(FACTS)
    queries = ["corners of a triangle", "yellow fruit"]

    indices, scores = DenseRetriever(kb, encoder, "flat").search(queries, k=4)

    facts, q = encoder.encode(kb.texts), encoder.encode(queries)
    np.testing.assert_allclose(np.linalg.norm(facts, axis=1), 1.0, atol=1e-5)
    expected = q @ facts.T
    assert indices.tolist() == np.argsort(-expected, axis=1).tolist()
    np.testing.assert_allclose(scores, np.sort(expected, axis=1)[:, ::-1], atol=1e-5)


def test_minilm_is_the_real_pretrained_encoder() -> None:
    from vldistill.models.sentence_encoders import minilm

    encoder = minilm()
    vectors = encoder.encode(["A triangle has three corners.", "A triangle has 3 corners.",
                              "Bananas are yellow."])

    assert vectors.shape == (3, 384) and encoder.dim == 384
    # pretrained: a paraphrase is far closer than an unrelated sentence
    assert vectors[0] @ vectors[1] > 0.8 > 0.4 > vectors[0] @ vectors[2]


def test_a_saved_index_is_refused_for_another_kb_or_encoder(tmp_path: Path,
                                                             tiny_encoder_folder: Path) -> None:
    from vldistill.models.fact_index import build_index, load_index
    from vldistill.models.sentence_encoders import SentenceEncoder

    kb_path = write_facts(KnowledgeBase(FACTS), tmp_path / "facts.jsonl")
    kb = read_facts(kb_path)
    encoder = SentenceEncoder.from_pretrained(tiny_encoder_folder)
    build_index(kb, "flat", tmp_path / "dense", encoder, str(tiny_encoder_folder))
    build_index(kb, "bm25", tmp_path / "bm25")
    query = ["how many corners does a square have"]

    for kind in ("dense", "bm25"):       # reloaded indexes answer as the built ones did
        assert load_index(tmp_path / kind, kb, encoder if kind == "dense" else None
                          ).search(query, 2)[0].shape == (1, 2)
    assert load_index(tmp_path / "bm25", kb).search(query, 1)[0][0, 0] == 3

    other = KnowledgeBase(FACTS[:3], source="other.jsonl")
    with pytest.raises(DataError, match=r"another knowledge base .* Rebuild it: `vldistill kb "
                                        r"index --facts other.jsonl --kind flat"):
        load_index(tmp_path / "dense", other)
    encoder.model.embeddings.word_embeddings.weight.data[5] += 1.0     # another encoder
    with pytest.raises(DataError, match=r"another encoder .* Rebuild it"):
        load_index(tmp_path / "dense", kb, encoder)


def test_kb_cli_indexes_and_searches(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from vldistill.cli import app

    kb_path = write_facts(KnowledgeBase(FACTS), tmp_path / "facts.jsonl")
    runner = CliRunner()
    built = runner.invoke(app, ["kb", "index", "--facts", str(kb_path), "--out",
                                str(tmp_path / "idx"), "--kind", "bm25"])
    assert built.exit_code == 0, built.output
    found = runner.invoke(app, ["kb", "search", "which fruit is yellow bananas", "--index",
                                str(tmp_path / "idx"), "-k", "2"])
    assert found.exit_code == 0, found.output
    assert found.output.splitlines()[0].startswith("1. [F2]")
    bad = runner.invoke(app, ["kb", "index", "--facts", str(kb_path), "--out",
                              str(tmp_path / "x"), "--kind", "ivf"])
    assert bad.exit_code == 2 and "expected one of bm25, flat, hnsw" in bad.output


def test_hnsw_finds_what_the_exact_index_finds_on_a_small_kb(tiny_encoder_folder: Path) -> None:
    from vldistill.models.fact_index import DenseRetriever
    from vldistill.models.sentence_encoders import SentenceEncoder

    encoder = SentenceEncoder.from_pretrained(tiny_encoder_folder)
    kb = KnowledgeBase(FACTS)
    queries = ["corners of a triangle", "yellow fruit", "white snow", "four corners"]

    exact, _ = DenseRetriever(kb, encoder, "flat").search(queries, 2)
    approximate, _ = DenseRetriever(kb, encoder, "hnsw").search(queries, 2)

    assert approximate.tolist() == exact.tolist()      # 4 facts: the graph reaches them all
    with pytest.raises(ValueError, match="not one of flat, hnsw"):
        DenseRetriever(kb, encoder, "ivf")
