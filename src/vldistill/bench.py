"""`vldistill bench latency`: latency at batch 1, peak memory and accuracy, model by model.

Each model runs in its own fresh process (so its peak memory is its own) with the same number
of threads: a PyTorch checkpoint (``.safetensors`` from ``vldistill run``), an ONNX export
folder (``vldistill export``) or its int8 model (``FOLDER:int8``). Every model answers the
same validation questions, one question and one image per call; latency is the wall time of
the model call alone (inputs prepared beforehand), reported as p50 and p95. Peak memory is the
process's maximum resident set size after loading, answering and timing. Accuracy is the
measured on the first ``questions`` validation questions of the data the checkpoint (or the
export) was trained on, by the metric its recipe named: official VQA accuracy, or
(``eval.metric: vizwiz``) official VizWiz accuracy.
"""

from __future__ import annotations

import multiprocessing
import resource
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vldistill.config import DataSettings
from vldistill.core.errors import DataError
from vldistill.data.answers import AnswerVocab
from vldistill.data.batches import VQACollator, VQAImageDataset
from vldistill.data.tokenizer import QuestionTokenizer
from vldistill.eval.vizwiz import VizWizAccuracy
from vldistill.eval.vqa_accuracy import VQAAccuracy
from vldistill.export.runtime import MANIFEST, OnnxVQA, answer_from_logits
from vldistill.jobs.vqa_kd.data import load_val
from vldistill.models import build_from_checkpoint
from vldistill.models.checkpoint import load_checkpoint


@dataclass
class LatencyRow:
    name: str
    kind: str                      # "PyTorch fp32" | "ONNX fp32" | "ONNX int8"
    p50_ms: float
    p95_ms: float
    peak_rss_mib: float
    accuracy: float
    questions: int
    metric: str = "vqa"            # "vqa" | "vizwiz": the official accuracy measured


def parse_spec(spec: str) -> tuple[str, Path, bool]:
    """``NAME=PATH`` or ``NAME=FOLDER:int8`` -> (name, path, int8)."""
    if "=" not in spec:
        raise DataError(f"--model {spec!r}: expected NAME=PATH, e.g. "
                        "student=runs/x/checkpoints/student-kd-seed0-last.safetensors or "
                        "'student int8=export-folder:int8'")
    name, path = spec.split("=", 1)
    int8 = path.endswith(":int8")
    return name.strip(), Path(path[:-5] if int8 else path), int8


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def _val_data(data: dict[str, Any], questions: int, needs=("rgb",)):
    """The first ``questions`` val questions, read with the modalities the run's data needed."""

    val, val_images = load_val(DataSettings.model_validate(data), needs=needs)
    return val[:questions], val_images


def _accuracy(metric_name: str):
    """The accumulator of the metric a checkpoint or export records ("vqa" when absent)."""

    return VizWizAccuracy() if metric_name == "vizwiz" else VQAAccuracy()


def measure_one(name: str, path: Path, int8: bool, threads: int, repeats: int,
                questions: int) -> dict[str, Any]:
    """Runs in a child process: load one model, score it, time it, report its peak memory."""

    torch.set_num_threads(threads)

    times: list[float] = []
    if path.is_dir() and (path / MANIFEST).is_file():
        model = OnnxVQA(path, int8=int8, threads=threads)
        if "data" not in model.manifest:
            raise DataError(f"export {path} does not record its data settings; export it "
                            "from a checkpoint saved by `vldistill run`")
        metric_name = model.manifest.get("metric", "vqa")
        metric = _accuracy(metric_name)
        samples, images = _val_data(model.manifest["data"], questions)
        encoded = []
        for sample in samples:
            enc = model.encode([images.rgb(sample.image_id)], [sample.question])
            encoded.append(enc)
            logits = model.session.run(["logits"], enc)[0][0]
            metric.update(answer_from_logits(logits, model.answers).answer, sample.answers)
        for i in range(repeats):
            enc = encoded[i % len(encoded)]
            start = time.perf_counter()
            model.session.run(["logits"], enc)
            times.append(time.perf_counter() - start)
        kind = "ONNX int8" if int8 else "ONNX fp32"
    else:

        checkpoint = load_checkpoint(path)
        metric_name = checkpoint.extra.get("metric", "vqa")
        metric = _accuracy(metric_name)
        model = build_from_checkpoint(checkpoint).eval()
        vocab = AnswerVocab.from_json(checkpoint.extra["answer_vocab"])
        answers = vocab.to_json()
        tokenizer = QuestionTokenizer.from_json(checkpoint.extra["question_vocab"])
        modality = checkpoint.extra.get("modality", "rgb")           # what the model sees
        samples, images = _val_data(checkpoint.extra["data"], questions,
                                    checkpoint.extra.get("data_modalities", [modality]))
        depth = DataSettings.model_validate(checkpoint.extra["data"]).depth
        dataset = VQAImageDataset(samples, images, vocab, tokenizer, modalities=(modality,),
                                  depth=depth)
        collate = VQACollator(len(vocab), modality)
        singles = []
        for index in range(len(dataset)):
            item = dataset[index]
            for row, sample in enumerate(item["samples"]):
                batch = collate([{**item, "samples": [sample],
                                  "tokens": item["tokens"][row:row + 1,
                                                           :int(item["lengths"][row])],
                                  "lengths": item["lengths"][row:row + 1],
                                  "labelled": item["labelled"][row:row + 1],
                                  "target_rows": np.zeros(0, np.int64),
                                  "target_columns": np.zeros(0, np.int64),
                                  "target_scores": np.zeros(0, np.float32)}])
                singles.append((batch["inputs"], sample))
        def call(inputs):
            return model(**inputs)

        encode = getattr(model, "encode", None)
        if encode is not None and hasattr(model, "forward_encoded"):
            # a Hugging Face model preprocesses inside forward (tokenizer, image processor):
            # do that beforehand, as for ONNX, and time the network alone
            singles = [(encode(inputs["images"], inputs["image_index"], inputs["questions"]),
                        sample) for inputs, sample in singles]
            call = model.forward_encoded
        with torch.inference_mode():
            for inputs, sample in singles:
                logits = call(inputs).logits[0].float().numpy()
                metric.update(answer_from_logits(logits, answers).answer, sample.answers)
            for i in range(repeats):
                inputs = singles[i % len(singles)][0]
                start = time.perf_counter()
                call(inputs)
                times.append(time.perf_counter() - start)
        kind = "PyTorch fp32"
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss              # KiB; bytes on macOS
    peak = peak / (1024 * 1024 if sys.platform == "darwin" else 1024)
    result = metric.compute()
    return asdict(LatencyRow(name, kind, 1000 * _percentile(times, 50),
                             1000 * _percentile(times, 95), peak, result["overall"],
                             result["count"], metric_name))


def _child(queue, *args) -> None:
    try:
        queue.put(("ok", measure_one(*args)))
    except Exception as error:          # reported to the parent with the model's name
        queue.put(("error", f"{type(error).__name__}: {error}"))


def bench_latency(specs: list[str], threads: int = 2, repeats: int = 100,
                  questions: int = 200) -> list[LatencyRow]:
    rows = []
    context = multiprocessing.get_context("spawn")
    for spec in specs:
        name, path, int8 = parse_spec(spec)
        queue = context.Queue()
        process = context.Process(target=_child,
                                  args=(queue, name, path, int8, threads, repeats, questions))
        process.start()
        status, payload = "error", "the measuring process died without a result"
        while True:
            try:
                status, payload = queue.get(timeout=5)
                break
            except Exception:              # queue.Empty: still running, or dead
                if not process.is_alive():
                    payload += f" (exit code {process.exitcode}; out of memory?)"
                    break
        process.join()
        if status != "ok":
            raise DataError(f"--model {spec}: {payload}")
        rows.append(LatencyRow(**payload))
    return rows


def latency_table(rows: list[LatencyRow]) -> str:
    names = {row.metric for row in rows}
    label = "VizWiz acc. %" if names == {"vizwiz"} else "VQA acc. %" if names <= {"vqa"} \
        else "acc. % (metric)"
    lines = [f"| model | runtime | p50 ms | p95 ms | peak RSS MiB | {label} | questions |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r.name} | {r.kind} | {r.p50_ms:.2f} | {r.p95_ms:.2f} | "
              f"{r.peak_rss_mib:.0f} | {r.accuracy:.2f}"
              f"{f' ({r.metric})' if len(names) > 1 else ''} | {r.questions} |" for r in rows]
    return "\n".join(lines)


if __name__ == "__main__":   # pragma: no cover
    print(latency_table(bench_latency(sys.argv[1:])))
