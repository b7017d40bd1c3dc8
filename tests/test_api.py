"""The Python API, `vldistill.distill(...)`: presets and term lists, the teacher cache (exact,
replayed augmentation, reuse, invalidation), the data forms users bring, the run folder."""

import csv
import json

import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from PIL import Image
from torch import nn

import vldistill
from vldistill.core.errors import DataError
from vldistill.kd.presets import PRESETS, TermsError

QUIET = {"progress_bar": False}


class Oracle(nn.Module):
    """A hand-built teacher: class 1 when the left half is brighter than the right half."""

    def forward(self, images):
        images = images.float()
        difference = images[..., :4].mean(dim=(1, 2, 3)) - images[..., 4:].mean(dim=(1, 2, 3))
        return torch.stack([-difference, difference], dim=-1) * 20.0


def halves(count, seed):
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(count, 1, 8, 8, generator=generator)
    labels = (images[..., :4].mean(dim=(1, 2, 3)) > images[..., 4:].mean(dim=(1, 2, 3))).long()
    return images, labels


def linear_student():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 2))


class TinyCNN(nn.Module):
    """Named layers for the feature terms: body (conv), pool, head."""

    def __init__(self, width, classes=2, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.body = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.ReLU())
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(width, classes)

    def forward(self, images):
        return self.head(self.pool(self.body(images.float())))


class FirstLoss(Callback):
    """Records the training loss of the first batch (a public `callbacks=` use)."""

    def __init__(self):
        self.value = self.batch = None

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_index):
        if self.value is None:
            self.value = float(outputs["loss"] if isinstance(outputs, dict) else outputs)
            self.batch = batch


def test_distill_with_a_transfer_set_beats_its_baseline_and_writes_the_run_folder(tmp_path):
    train, val = halves(16, 0), halves(400, 1)
    transfer = halves(2000, 2)[0]                        # unlabelled images
    result = vldistill.distill(Oracle(), linear_student(), train, val, transfer,
                               max_steps=150, batch_size=32, lr=0.05, trainer=QUIET,
                               output_dir=tmp_path / "run")
    assert result.teacher_metrics["accuracy"] == pytest.approx(100.0)
    assert result.metrics["accuracy"] > 70.0             # chance is 50
    assert result.steps == 150
    # the same student with only the 16 labels and no teacher learns less
    assert result.metrics["accuracy"] > result.baseline_metrics["accuracy"] + 5
    assert result.teacher_outputs == "cache" and result.cache["status"] == "built"
    assert result.teacher_forward_examples == 16 + 2000  # every row once, then never again
    folder = result.run_dir
    for name in ("report.md", "results.json", "metrics.csv", "history.png",
                 "learning_curves.png"):
        assert (folder / name).is_file(), name
    assert list((folder / "logs" / "student").glob("events.out.tfevents.*"))   # TensorBoard
    with open(folder / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {row["model"] for row in rows} == {"student", "baseline"}
    saved = json.loads((folder / "results.json").read_text())
    assert saved["metrics"] == result.metrics
    assert "KD gain" in (folder / "report.md").read_text()


def test_history_has_one_record_per_epoch_and_time_to_reach_reads_it(tmp_path):
    train, val = halves(64, 0), halves(100, 1)
    result = vldistill.distill(Oracle(), linear_student(), train, val, epochs=3, batch_size=16,
                               lr=0.05, trainer=QUIET, output_dir=tmp_path / "run")
    for model in ("student", "baseline"):
        records = result.history[model]
        assert [r["epoch"] for r in records] == [1.0, 2.0, 3.0]
        assert [r["step"] for r in records] == [4, 8, 12]            # 64 / 16 steps an epoch
        times = [r["time_s"] for r in records]
        assert times == sorted(times) and times[0] > 0
    assert result.steps == 12
    best = max(r["accuracy"] for r in result.history["student"])
    first = next(r for r in result.history["student"] if r["accuracy"] >= best)
    assert result.time_to_reach(best) == first["time_s"]
    assert result.time_to_reach(101.0) is None
    assert result.history["student"][-1]["accuracy"] == pytest.approx(result.metrics["accuracy"])


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_trains_a_tiny_pair(tmp_path, preset):
    train, val, transfer = halves(32, 0), halves(40, 1), halves(32, 2)[0]
    layers = ("body", "body") if "+" in preset else None
    teacher = TinyCNN(8, seed=1)
    result = vldistill.distill(teacher, TinyCNN(4), train, val, transfer,
                               terms=preset, layers=layers, max_steps=4, batch_size=8,
                               baseline=False, trainer=QUIET, output_dir=tmp_path / preset)
    assert result.steps == 4
    assert 0.0 <= result.metrics["accuracy"] <= 100.0
    losses = json.loads((result.run_dir / "results.json").read_text())["terms"]
    assert [t["loss"] for t in losses] == [t["loss"] for t in PRESETS[preset].terms]
    if preset == "task":
        assert result.teacher_outputs == "none" and result.teacher_forward_examples == 0
    # the hooks are gone: the student is the user's module, returning plain logits again,
    # and neither model keeps a forward hook of ours
    assert isinstance(result.student, TinyCNN)
    assert isinstance(result.student(train[0][:2]), torch.Tensor)
    assert not any(m._forward_hooks for m in [*result.student.modules(), *teacher.modules()])


def test_feature_terms_project_a_narrow_student_layer_to_the_teacher_width(tmp_path):
    train, val = halves(32, 0), halves(20, 1)
    terms = [{"loss": "task", "weight": 1.0},
             {"loss": "feature", "weight": 1.0, "student_layer": "pool",
              "teacher_layer": "pool", "name": "hint"}]
    seen = FirstLoss()
    result = vldistill.distill(TinyCNN(16, seed=1), TinyCNN(4), train, val, terms=terms,
                               max_steps=3, batch_size=8, baseline=False, callbacks=[seen],
                               trainer=QUIET, output_dir=tmp_path / "run")
    assert result.steps == 3 and np.isfinite(seen.value)
    columns = (result.run_dir / "logs" / "student" / "metrics.csv").read_text().splitlines()[0]
    assert "train/hint" in columns


def _first_batch(tmp_path, name, mode, augment=None):
    seen = FirstLoss()
    vldistill.distill(TinyCNN(8, seed=1), TinyCNN(4), halves(24, 0), halves(8, 1),
                      halves(24, 2)[0], terms="kd", teacher_outputs=mode, augment=augment,
                      max_steps=1, batch_size=8, baseline=False, callbacks=[seen],
                      trainer=QUIET, output_dir=tmp_path / name)
    return seen


def test_cached_and_online_teacher_give_the_same_first_loss(tmp_path):
    cached = _first_batch(tmp_path, "cached", "cache")
    online = _first_batch(tmp_path, "online", "online")
    assert cached.value == pytest.approx(online.value, abs=1e-5)


def test_replayed_augmentation_gives_the_same_first_loss_cached_and_online(tmp_path):
    augment = vldistill.Augment(views=3, max_shift=2, flip=True, seed=5)
    cached = _first_batch(tmp_path, "cached", "cache", augment)
    online = _first_batch(tmp_path, "online", "online", augment)
    assert cached.value == pytest.approx(online.value, abs=1e-5)
    # the student saw the replayed views: row r is view r % 3 of example r // 3 (labelled
    # examples, then transfer ones)
    examples = torch.cat([halves(24, 0)[0], halves(24, 2)[0]])
    images, rows = cached.batch["inputs"][0], cached.batch["rows"]
    assert (rows % 3).tolist() != [0] * len(rows)               # not only the plain view
    for image, row in zip(images, rows.tolist()):
        item, view = divmod(row, 3)
        expected = augment.apply(examples[item], augment.parameters(item, view))
        assert torch.equal(image, expected)


def test_a_second_call_reuses_the_cache_and_a_changed_teacher_invalidates_it(tmp_path, capsys):
    def run(teacher, name):
        return vldistill.distill(teacher, linear_student(), halves(32, 0), halves(8, 1),
                                 max_steps=2, batch_size=8, baseline=False, trainer=QUIET,
                                 output_dir=tmp_path / name)

    first = run(TinyCNN(4, seed=1), "first")
    assert first.cache["status"] == "built" and first.teacher_forward_examples == 32
    again = run(TinyCNN(4, seed=1), "again")                # same weights, same data
    assert again.cache["status"] == "reused" and again.teacher_forward_examples == 0
    assert again.teacher_time_s < first.teacher_time_s + 5      # hashing and checking only
    capsys.readouterr()
    changed = run(TinyCNN(4, seed=2), "changed")
    assert changed.cache["status"] == "rebuilt"
    printed = " ".join(capsys.readouterr().out.split())        # the console wraps lines
    assert "built for other inputs (the teacher's weights changed); rebuilding it" in printed


def test_a_stale_cache_is_refused_when_opened_directly(tmp_path):
    from vldistill.kd.sources import RowCache, row_cache, row_fingerprint
    from vldistill.kd.store import StoreError

    fingerprint = row_fingerprint("teacher-a", "data-a", "logits")
    row_cache(tmp_path, fingerprint, 4, lambda a, b: torch.zeros(b - a, 3), command="test")
    with pytest.raises(StoreError, match="fields differ.*teacher_weights"):
        RowCache(tmp_path, row_fingerprint("teacher-b", "data-a", "logits"), "test")


class RandomFlips(torch.utils.data.Dataset):
    """A dataset that augments at random inside __getitem__ (not replayable)."""

    def __init__(self, images, labels):
        self.images, self.labels = images, labels

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        image = self.images[index]
        return (image.flip(-1) if torch.rand(()) < 0.5 else image) + 1e-3 * torch.rand(()), \
            int(self.labels[index])


def test_auto_runs_online_and_says_why_when_the_dataset_augments_at_random(tmp_path, capsys):
    images, labels = halves(16, 0)
    result = vldistill.distill(Oracle(), linear_student(), RandomFlips(images, labels),
                               max_steps=2, batch_size=8, baseline=False, trainer=QUIET,
                               output_dir=tmp_path / "run")
    assert result.teacher_outputs == "online"
    assert "augments at random" in result.teacher_outputs_reason
    assert "teacher outputs: online" in " ".join(capsys.readouterr().out.split())
    assert result.teacher_forward_examples == 2 * 8 and result.teacher_time_s > 0
    with pytest.raises(ValueError, match="would not be exact.*augments at random"):
        vldistill.distill(Oracle(), linear_student(), RandomFlips(images, labels),
                          teacher_outputs="cache", max_steps=2, trainer=QUIET,
                          output_dir=tmp_path / "forced")


@pytest.mark.parametrize("terms, message", [
    ("kdd", "unknown terms preset 'kdd'; presets: kd, dkd"),
    ("kd+feature", "preset 'kd\\+feature' matches a student layer to a teacher layer"),
    ([{"loss": "kl"}], "terms\\[0\\]: unknown loss 'kl'; valid: task, .*dkd"),
    ([{"loss": "kd", "temprature": 2}], "terms\\[0\\] \\(kd\\): .*no parameter.*temprature"),
    ([{"loss": "kd", "weight": "half"}], "terms\\[0\\] \\(kd\\): weight 'half' is not a number"),
    ([{"loss": "task", "weight": 0}], "every loss term weight is 0"),
    ([{"weight": 1.0}], "terms\\[0\\] has no 'loss' name"),
    ([{"loss": "feature"}], "compares features: name the layers"),
    ([{"loss": "kd", "layer": "body"}], "loss 'kd' reads logits, not layers"),
    ([], "non-empty list"),
    (["kd"], "terms\\[0\\] is a str; expected a dict"),
])
def test_bad_terms_get_a_clear_error(terms, message):
    with pytest.raises(TermsError, match=message):
        vldistill.distill(Oracle(), linear_student(), halves(8, 0), terms=terms)


def test_a_layer_that_does_not_exist_is_named_with_the_layers_there_are(tmp_path):
    with pytest.raises(ValueError, match="student \\(TinyCNN\\) has no layer 'bdy'; its "
                                         "layers: body, body.0"):
        vldistill.distill(TinyCNN(8), TinyCNN(4), halves(8, 0), terms="kd+feature",
                          layers=("bdy", "body"), max_steps=1, trainer=QUIET,
                          output_dir=tmp_path)


def test_terms_from_a_recipe_are_accepted(tmp_path):
    from vldistill.config import LossTermSettings

    terms = [LossTermSettings(loss="ce", weight=0.5),
             LossTermSettings(loss="dkd", weight=1.0, temperature=2.0, unlabelled="kd")]
    result = vldistill.distill(Oracle(), linear_student(), halves(16, 0), halves(8, 1),
                               halves(16, 2)[0], terms=terms, max_steps=2, batch_size=8,
                               baseline=False, trainer=QUIET, output_dir=tmp_path)
    assert result.steps == 2


# --- the data forms users bring --------------------------------------------------------------


class Pairs(torch.utils.data.Dataset):
    def __init__(self, images, labels, as_dict=False):
        self.images, self.labels, self.as_dict = images, labels, as_dict

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        if self.as_dict:
            return {"pixels": self.images[index], "answer": int(self.labels[index])}
        return self.images[index], self.labels[index]


def test_datasets_loaders_and_dicts_read_the_same_as_tensors(tmp_path):
    images, labels = halves(32, 0)
    val = halves(16, 1)
    common = {"max_steps": 6, "batch_size": 8, "baseline": False, "trainer": QUIET}
    expected = vldistill.distill(Oracle(), linear_student(), (images, labels), val,
                                 output_dir=tmp_path / "tensors", **common)
    forms = {"dataset": Pairs(images, labels),
             "loader": torch.utils.data.DataLoader(Pairs(images, labels), batch_size=5),
             "dicts": Pairs(images, labels, as_dict=True)}
    for name, data in forms.items():
        result = vldistill.distill(Oracle(), linear_student(), data, val,
                                   columns=("pixels", "answer") if name == "dicts" else None,
                                   output_dir=tmp_path / name, **common)
        assert result.metrics == expected.metrics, name
        assert result.teacher_outputs == "cache", name


def test_a_hugging_face_dataset_with_named_columns(tmp_path):
    datasets = pytest.importorskip("datasets")
    rng = np.random.default_rng(0)
    pictures, labels = [], []
    for i in range(24):
        label = i % 2
        array = np.full((8, 8, 3), 30, np.uint8)
        (array[:, :4] if label else array[:, 4:])[:] = 200          # left bright: class 1
        array += rng.integers(0, 20, array.shape, dtype=np.uint8)
        pictures.append(Image.fromarray(array))
        labels.append(label)
    table = datasets.Dataset.from_dict({"img": pictures, "fine_label": labels},
                                       features=datasets.Features({
                                           "img": datasets.Image(),
                                           "fine_label": datasets.ClassLabel(num_classes=2)}))

    class Bright(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.tensor(20.0))

        def forward(self, images):                                   # uint8 (N, 3, 8, 8)
            x = images.float() / 255.0
            difference = x[..., :4].mean(dim=(1, 2, 3)) - x[..., 4:].mean(dim=(1, 2, 3))
            return torch.stack([-difference, difference], dim=-1) * self.scale

    result = vldistill.distill(Bright(), Bright(), table, table, max_steps=1, batch_size=8,
                               baseline=False, trainer=QUIET, output_dir=tmp_path)
    assert result.teacher_metrics["accuracy"] == 100.0


def test_distill_from_image_folder(tmp_path):
    rng = np.random.default_rng(0)
    for label, name in enumerate(("a_dark", "b_bright")):
        (tmp_path / "data" / name).mkdir(parents=True)
        for i in range(6):
            value = 40 + 160 * label + rng.integers(0, 30)
            Image.fromarray(np.full((10, 10, 3), value, np.uint8)).save(
                tmp_path / "data" / name / f"{i}.png")

    class Brightness(nn.Module):
        def forward(self, images):
            mean = images.float().mean(dim=(1, 2, 3)) / 255.0 - 0.5
            return torch.stack([-mean, mean], dim=-1) * 10

    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.inner = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2))

        def forward(self, images):
            return self.inner(images.float() / 255.0)

    result = vldistill.distill(Brightness(), Scaled(), tmp_path / "data", tmp_path / "data",
                               image_size=8, max_steps=120, batch_size=4, lr=0.05,
                               trainer=QUIET, output_dir=tmp_path / "run")
    assert result.teacher_metrics["accuracy"] == 100.0
    assert result.metrics["accuracy"] == 100.0


def test_bad_data_gets_a_clear_error_naming_what_is_accepted(tmp_path):
    images, labels = halves(8, 0)
    with pytest.raises(DataError, match="train is a dict.*Accepted: \\(inputs, labels\\) "
                                         "tensors.*Example: vldistill.distill"):
        vldistill.distill(Oracle(), linear_student(), train={"x": 1})
    with pytest.raises(DataError, match="differ in shape"):
        vldistill.distill(Oracle(), linear_student(), train=(images, labels),
                          transfer=torch.rand(4, 1, 6, 6))
    with pytest.raises(DataError, match="train: labels of shape \\(7,\\).*8 integer class"):
        vldistill.distill(Oracle(), linear_student(), train=(images, labels[:7]))
    bad = Pairs(images, labels.float() + 0.5)
    with pytest.raises(DataError, match="train item 0: the label is 0.5 \\(float\\); expected "
                                        "an int class index"):
        vldistill.distill(Oracle(), linear_student(), bad, max_steps=1, trainer=QUIET,
                          output_dir=tmp_path)
    with pytest.raises(DataError, match="train item 0: no column\\(s\\) \\['image'\\]; the "
                                        "item has \\['answer', 'pixels'\\]"):
        vldistill.distill(Oracle(), linear_student(), Pairs(images, labels, as_dict=True),
                          columns=("image", "answer"), max_steps=1, trainer=QUIET,
                          output_dir=tmp_path)


def test_api_bad_settings_get_clear_errors(tmp_path):
    from vldistill.core.errors import RecipeError

    data = halves(8, 0)
    with pytest.raises(RecipeError, match="trainer.device: unknown key.*devices"):
        vldistill.distill(Oracle(), linear_student(), data, trainer={"device": 2})
    with pytest.raises(ValueError, match="teacher_outputs='sometimes'; choose one of auto"):
        vldistill.distill(Oracle(), linear_student(), data, teacher_outputs="sometimes",
                          output_dir=tmp_path)
    with pytest.raises(TypeError, match="augment is a function; it must be replayable"):
        vldistill.distill(Oracle(), linear_student(), data, augment=lambda x: x)
    with pytest.raises(TypeError, match="optimizer is a int; pass a name"):
        vldistill.distill(Oracle(), linear_student(), data, optimizer=3)


def test_optimizer_and_schedule_callables_are_used(tmp_path):
    calls = {}

    def optimizer(parameters):
        calls["optimizer"] = len(parameters)
        return torch.optim.SGD(parameters, lr=0.1, momentum=0.9)

    def schedule(optim, total):
        calls["total"] = total
        return torch.optim.lr_scheduler.StepLR(optim, step_size=2, gamma=0.5)

    vldistill.distill(Oracle(), linear_student(), halves(32, 0), epochs=2, batch_size=8,
                      optimizer=optimizer, schedule=schedule, baseline=False, trainer=QUIET,
                      output_dir=tmp_path)
    assert calls == {"optimizer": 2, "total": 8}          # weight and bias; 2 epochs x 4 steps


def test_the_docs_preset_table_is_the_code_s():
    from pathlib import Path

    from vldistill.kd.presets import preset_table

    docs = (Path(__file__).parents[1] / "docs" / "api.md").read_text()
    assert preset_table() in docs, "docs/api.md's preset table is stale: paste preset_table()"


def test_distill_on_vqa_datasets_runs_the_teacher_online(tmp_path):
    from vldistill.data.answers import AnswerVocab
    from vldistill.data.batches import VQAImageDataset
    from vldistill.data.sample import ArrayImageStore, Sample
    from vldistill.data.tokenizer import QuestionTokenizer

    rng = np.random.default_rng(0)
    bright = rng.random(40) < 0.5
    pixels = np.where(bright[:, None, None, None], 220, 30).astype(np.uint8) \
        * np.ones((40, 8, 8, 3), np.uint8)
    samples = [Sample(i, i, "Is it bright?", ("yes" if bright[i] else "no",) * 10)
               for i in range(40)]
    store = ArrayImageStore(list(range(40)), pixels)
    vocab = AnswerVocab.build([s.answers for s in samples])
    tokenizer = QuestionTokenizer.build(s.question for s in samples)
    train = VQAImageDataset(samples[:24], store, vocab, tokenizer)
    val = VQAImageDataset(samples[24:], store, vocab, tokenizer)
    yes = vocab.index("yes")

    class Looks(nn.Module):                     # answers from the image's brightness
        def __init__(self, scale):
            super().__init__()
            self.scale = nn.Parameter(torch.tensor(scale))

        def forward(self, images, question_tokens, question_lengths, image_index):
            light = images.float().mean(dim=(1, 2, 3))[image_index] / 255.0 - 0.5
            logits = torch.zeros(len(image_index), len(vocab))
            logits[:, yes] = light * self.scale
            logits[:, 1 - yes] = -light * self.scale
            return logits

    result = vldistill.distill(Looks(20.0), Looks(-1.0), train, val, max_steps=30,
                               batch_size=8, lr=0.5, baseline=False, trainer=QUIET,
                               output_dir=tmp_path)
    assert result.teacher_outputs == "online" and "VQA" in result.teacher_outputs_reason
    assert result.teacher_metrics["vqa_accuracy"] == pytest.approx(100.0)
    assert result.metrics["vqa_accuracy"] == pytest.approx(100.0)    # it learnt the sign
    with pytest.raises(ValueError, match="would not be exact: the API caches"):
        vldistill.distill(Looks(20.0), Looks(-1.0), train, val, teacher_outputs="cache",
                          max_steps=1, trainer=QUIET, output_dir=tmp_path / "forced")
