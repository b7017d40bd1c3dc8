"""Safety: nothing a file says is ever executed. A pickle planted where weights are expected is
refused (and its payload never runs); a recipe cannot name a Python object."""

from __future__ import annotations

import json
import os
import pickle
import re
from pathlib import Path

import pytest

from vldistill.core.errors import MissingFileError, RecipeError


class _Payload:
    """Unpickling this runs ``os.system`` and leaves a marker file: the attack to refuse."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_pickle_in_a_hugging_face_folder_is_refused_and_never_run(tmp_path: Path) -> None:
    from vldistill.models.fid_reader import FiDReader
    from vldistill.models.sentence_encoders import SentenceEncoder

    marker = tmp_path / "payload-ran"
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(_Payload(marker)))
    for load in (SentenceEncoder.from_pretrained, FiDReader.from_pretrained):
        with pytest.raises(MissingFileError, match=r"no model.safetensors \(found "
                                                   r"pytorch_model.bin: pickled weights are "
                                                   r"never loaded"):
            load(folder)
    assert not marker.exists()


def test_the_payload_would_run_if_unpickled(tmp_path: Path) -> None:
    """The control: the planted file really is an attack (so the test above could fail)."""
    marker = tmp_path / "payload-ran"
    pickle.loads(pickle.dumps(_Payload(marker)))                # noqa: S301 - on purpose
    assert marker.exists()


@pytest.mark.parametrize("tag", ["!!python/object/apply:os.system", "!!python/name:os.system",
                                 "!!python/object/new:os.system"])
def test_a_recipe_cannot_name_python_code(tmp_path: Path, tag: str) -> None:
    from vldistill.config import load_recipe

    marker = tmp_path / "payload-ran"
    path = tmp_path / "recipe.yaml"
    path.write_text(f"name: x\neval: {tag} ['touch {marker}']\n")
    with pytest.raises(RecipeError, match="recipe.yaml is not valid YAML at line 2.*python"):
        load_recipe(path)
    assert not marker.exists()


def test_a_key_given_twice_in_a_recipe_is_refused_with_both_lines(tmp_path: Path) -> None:
    from vldistill.config import load_recipe

    path = tmp_path / "recipe.yaml"
    path.write_text("name: a\nteacher:\n  train: {max_steps: 5}\n  train: {max_steps: 9}\n")
    with pytest.raises(RecipeError, match=r"key 'train' appears twice in one mapping "
                                          r"\(lines 3 and 4\)"):
        load_recipe(path)
    path.write_text("base: &b {max_steps: 5}\nteacher:\n  train:\n    <<: *b\n    lr: 0.1\n")
    with pytest.raises(RecipeError, match="base"):      # merge keys parse; 'base' is unknown
        load_recipe(path)


def test_image_ids_cannot_leave_the_image_root(tmp_path: Path) -> None:
    from vldistill.core.errors import DataError
    from vldistill.data.vqa import FolderImageStore

    (tmp_path / "images").mkdir()
    store = FolderImageStore(tmp_path / "images")
    with pytest.raises(DataError, match=r"image id '\.\./secret'.*not inside the image root"):
        store.rgb("../secret")
    with pytest.raises(DataError, match="not inside the image root"):
        FolderImageStore(tmp_path / "images", "../{image_id}.png").rgb(1)


# a Hugging Face model class's from_pretrained (AutoModel*, *Model, *For*, a chosen class);
# tokenizers, processors, configs and our own wrappers read no weights themselves
MODEL_LOAD = re.compile(r"(^|\.)(AutoModel\w*|\w*Model|\w+For\w+|model_class)\.from_pretrained$")


def _calls(tree):
    import ast

    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = ast.unparse(node.func)
            keywords = {k.arg: ast.unparse(k.value) for k in node.keywords}
            yield node.lineno, name, keywords


def test_no_code_path_in_the_package_can_unpickle_or_run_what_a_file_says() -> None:
    """A scan of every module: torch.load only with weights_only=True, np.load only with
    allow_pickle=False, YAML only through the safe loaders, no pickle / marshal / eval / exec,
    no trust_remote_code, every Hugging Face model from_pretrained with use_safetensors=True."""
    import ast

    import vldistill

    problems = []
    for path in sorted(Path(vldistill.__file__).parent.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for line, name, keywords in _calls(tree):
            where = f"{path.name}:{line} {name}"
            if name == "torch.load" and keywords.get("weights_only") != "True":
                problems.append(where)
            if name.endswith(("np.load", "numpy.load")) and \
                    keywords.get("allow_pickle") != "False":
                problems.append(where)
            if name.startswith("yaml.") and "load" in name and name != "yaml.safe_load" and \
                    keywords.get("Loader") != "_RecipeLoader":
                problems.append(where)
            if name.split(".")[0] in ("pickle", "marshal", "dill", "cloudpickle") or \
                    name in ("eval", "exec", "__import__"):
                problems.append(where)
            if keywords.get("trust_remote_code") not in (None, "False"):
                problems.append(where)
            if MODEL_LOAD.search(name) and keywords.get("use_safetensors") != "True":
                problems.append(where)
    assert not problems, problems
