"""Suites: YAML files validated into frozen dataclasses.

Precedence, lowest first: dataclass defaults < suite file (after ``include:``) < the
method's grid entry (its ``train:`` block) < ``--set key=value``. Unknown keys are errors.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml

from bench.data.imbalance import ImbalanceSpec
from bench.data.noise import NoiseSpec
from bench.errors import BenchError, did_you_mean
from bench.metrics import metric_names
from bench.spec.config import apply_override, build, merge, outrank_entries
from bench.spec.generation import GENERATION, GenerationTaskSpec, build_generation_task
from bench.spec.resources import ResourcePlan, take_resources
from bench.spec.sweep import check_overrides, check_sweeps

REPO_ROOT = Path(__file__).resolve().parents[2]
MAX_LR = 1.0  #: the largest lr: an AdamW step moves each weight by about lr, so above 1 it diverges at once
#: Where a wheel installs the suites: pyproject.toml maps the repository's ``suites/`` into the
#: package as ``bench/suites``. A checkout (or an editable install) has no such folder.
PACKAGED_SUITES = Path(__file__).resolve().parents[1] / "suites"


@dataclass(frozen=True)
class TrainConfig:
    """Training hyperparameters shared by all methods of a suite (a method may override)."""

    epochs: int = 3
    """Passes over the (noisy) training set. 0 trains nothing: the method's initial model is
    evaluated (for LoRA on a generation task, the base model, since B starts at zero)."""
    batch_size: int = 32
    """Training batch size."""
    eval_batch_size: int = 128
    """Batch size for prediction."""
    lr: float = 5e-4
    """Peak learning rate of AdamW for adapter (or all) parameters."""
    head_lr: float | None = None
    """Learning rate of the freshly initialised classification head; None means ``lr``."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    warmup_ratio: float = 0.06
    """Share of steps with linear warm-up; the rest decays linearly to 0."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm (0 disables)."""
    group_by_length: bool = True
    """Batch samples of similar length together (less padding)."""
    precision: str = "auto"
    """auto | fp32 | bf16: auto uses bf16 autocast where the hardware supports it."""

    def __post_init__(self) -> None:
        if self.epochs < 0 or self.batch_size < 1 or self.eval_batch_size < 1:
            raise ValueError("epochs must be >= 0 and batch sizes >= 1")
        if not (math.isfinite(self.lr) and 0 <= self.lr <= MAX_LR) or not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"Invalid lr {self.lr} (0 to {MAX_LR}) or warmup_ratio {self.warmup_ratio} ([0, 1))")
        for name in ("head_lr", "weight_decay", "max_grad_norm"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise ValueError(f"Invalid {name} {value}: must be a finite number >= 0")
        if (self.head_lr or 0.0) > MAX_LR:
            raise ValueError(f"Invalid head_lr {self.head_lr}: at most {MAX_LR}")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"Invalid precision {self.precision!r}: use auto, fp32 or bf16")


@dataclass(frozen=True)
class TaskSpec:
    """One classification task: where its splits come from and how they are cut."""

    dataset: str
    """Dataset folder name under the data dir, or a path to a folder in that layout."""
    name: str = ""
    """Display name (defaults to the key in the suite)."""
    train_dataset: str | None = None
    """Take the training split from another folder (AG News trains on noisyag_news)."""
    train_split: str = "train"
    val_split: str | None = None
    """None: use ``validation`` if the folder has it, else hold out ``val_fraction`` of train."""
    test_split: str = "test"
    label_field: str = "label"
    """Field holding the label the method trains on (before synthetic noise)."""
    truth_field: str | None = None
    """Real-noise sets: field holding the gold label (``clean_label``); noise must be none."""
    eval_label_field: str = "label"
    """Field holding the gold label in validation and test files."""
    text_field: str = "text"
    max_train: int | None = None
    max_val: int | None = 500
    max_test: int | None = None
    val_fraction: float = 0.1
    max_length: int = 128
    pair_map: str | dict[int, int] | None = None
    """Default asymmetric-noise map for this task (METHODS.md §1.2), e.g. ``sst5``."""
    noise: tuple[NoiseSpec, ...] | None = None
    """This task's noise settings, replacing the suite's list (e.g. only asym-40% on TREC)."""
    imbalance: ImbalanceSpec | None = None
    """Subsample one class of the training split, e.g. ``{ratio: 9, minority: negative}`` for
    SST-2 at 9:1 (:mod:`bench.data.imbalance`; METHODS.md §5.5 b). Validation and test stay as
    distributed. None: the split as distributed."""

    KIND: ClassVar[str] = "classification"
    """The task kind that runs it (:mod:`bench.kinds`); not a field, so not in the spec."""

    def __post_init__(self) -> None:
        for name in ("max_train", "max_val", "max_test"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 (or left out for every row), got {value}")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must be between 0 and 1 (exclusive), got {self.val_fraction}")
        if self.max_length < 1:
            raise ValueError(f"max_length must be >= 1 token, got {self.max_length}")

    OMIT_WHEN_NONE: ClassVar[tuple[str, ...]] = ("imbalance",)
    """Fields added after run ids were first stored: left out of the resolved spec (the input of
    the run id) while None, so that the cells that do not use them keep their ids."""


@dataclass(frozen=True)
class ModelSpec:
    """The base model: ``minilm`` (embedded), an HF name or folder, or ``random:<preset>``."""

    name: str = "minilm"


@dataclass(frozen=True)
class MethodSpec:
    """One grid entry: a registered method, its config and training overrides, its sweep (:mod:`bench.spec.sweep`)."""

    id: str
    method: str
    config: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    sweep: dict[str, Any] | None = None  # as written, None takes the suite's sweep:; parsed, None is none


@dataclass(frozen=True)
class ReportSpec:
    """What ``bench report`` adds for this suite beyond the per-cell tables.

    Attributes:
        deltas: method id -> the method ids to compare it with, e.g. ``{ba-lora: [pissa, lora]}``:
            the leaderboard's "Differences between methods" section gives, per task × noise, the
            seed-mean difference of each metric in ``delta_metrics`` with a Welch 95 % CI and p.
        delta_metrics: The record metrics those differences are taken of.
    """

    deltas: dict[str, list[str]] = field(default_factory=dict)
    delta_metrics: tuple[str, ...] = ("accuracy", "macro_f1", "worst_class_acc")


@dataclass(frozen=True)
class Suite:
    """A validated suite: the grid is tasks × noise × methods × seeds."""

    name: str
    path: str
    model: ModelSpec
    train: TrainConfig
    tasks: tuple[TaskSpec | GenerationTaskSpec, ...]
    noise: tuple[NoiseSpec, ...]
    seeds: tuple[int, ...]
    methods: tuple[MethodSpec, ...]
    description: str = ""
    report: ReportSpec = field(default_factory=ReportSpec)
    resources: ResourcePlan = field(default_factory=ResourcePlan)
    """Each cell's CPU cores and GPUs for the executor (:mod:`bench.spec.resources`)."""

    def train_for(self, method: MethodSpec) -> TrainConfig:
        """The training config of ``method``: the suite's, overridden by its grid entry."""
        base = {k: getattr(self.train, k) for k in TrainConfig.__dataclass_fields__}
        return build(TrainConfig, merge(base, method.train), f"{self.path}: methods.{method.id}.train")


SUITE_KEYS = ("include", "name", "description", "model", "train", "tasks", "noise", "seeds", "methods", "report",
              "resources", "sweep")


def suites_dir() -> Path:
    """Where named suites live: ``$PEFTBENCH_SUITES``, else an installed wheel's, else the repository's ``suites/``."""
    default = PACKAGED_SUITES if PACKAGED_SUITES.is_dir() else REPO_ROOT / "suites"
    return Path(os.environ.get("PEFTBENCH_SUITES", default))


def suite_names() -> list[str]:
    """Names of the suites in :func:`suites_dir` (files starting with ``_`` are fragments)."""
    return sorted(p.stem for p in suites_dir().glob("*.yaml") if not p.name.startswith("_"))


def suite_path(name_or_path: str) -> Path:
    """Resolve a suite name or a YAML path; unknown names get a did-you-mean."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.exists():
        return path
    candidate = suites_dir() / f"{name_or_path}.yaml"
    if candidate.exists():
        return candidate
    raise BenchError(f"unknown suite '{name_or_path}'" + did_you_mean(name_or_path, suite_names()))


class StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a mapping that repeats a key (plain YAML keeps the last silently)."""


def _strict_mapping(loader: StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor` merges, it is no key
            continue
        key = loader.construct_object(key_node, deep=deep)
        try:
            repeated = key in seen
        except TypeError:  # an unhashable key: construct_mapping says so
            continue
        if repeated:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _strict_mapping)


def read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a suite file and its ``include:`` chain into one raw dict."""
    if path.resolve() in seen:
        raise BenchError(f"{path}: include cycle")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=StrictLoader) or {}  # noqa: S506 - a SafeLoader subclass
    except UnicodeDecodeError as err:
        raise BenchError(f"{path}: not UTF-8 text (byte 0x{err.object[err.start]:02x} at offset {err.start})") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise BenchError(f"{path}{line}: malformed YAML: {problem}") from None
    except OSError as err:
        raise BenchError(f"{path}: cannot read suite: {err.strerror}") from None
    if not isinstance(data, dict):
        raise BenchError(f"{path}: a suite must be a mapping at the top level")
    for key in data:
        if key not in SUITE_KEYS:
            raise BenchError(f"{path}: unknown key '{key}'" + did_you_mean(str(key), SUITE_KEYS))
    include = data.pop("include", None)
    if include is None:
        return data
    parent = read_yaml(include_path(path, str(include)), (*seen, path.resolve()))
    return merge(parent, data)


def include_path(path: Path, include: str) -> Path:
    """The file an ``include:`` names: beside ``path``; else, for a bare name, a suite in :func:`suites_dir`.

    So a repository suite copied elsewhere keeps its ``include: _classification.yaml``, and any
    suite file may ``include: noisy-text-smoke`` by its registered name.
    """
    beside = path.parent / include
    if beside.exists() or "/" in include:
        return beside
    registered = suites_dir() / (include if include.endswith((".yaml", ".yml")) else f"{include}.yaml")
    return registered if registered.exists() else beside


def load_suite(name_or_path: str, overrides: tuple[str, ...] = ()) -> Suite:
    """Load, merge, override and validate a suite (method configs are checked by the runner)."""
    path = suite_path(name_or_path)
    raw = read_yaml(path)
    for assignment in overrides:
        apply_override(raw, assignment)
        outrank_entries(raw, assignment)  # --set outranks the entries' own train:/resources: blocks
    return parse_suite(check_overrides(raw, overrides), str(path), default_name=path.stem)


def _mapping(raw: Any, where: str) -> dict[str, Any]:
    if raw is None:
        return {}
    if isinstance(raw, dict):
        return raw
    raise BenchError(f"{where}: expected a mapping, got {raw!r}")


def _as_list(raw: Any, where: str) -> list[Any]:
    if isinstance(raw, list):
        return raw
    raise BenchError(f"{where}: expected a list, got {raw!r}")


def _classification_task(raw: dict[str, Any], where: str) -> TaskSpec:
    if "evals" in raw:
        raise BenchError(f"{where}: evals: needs kind: generation (a classification task is scored on its "
                         "own test split; bias probes and lm-eval tasks score causal LMs)")
    return build(TaskSpec, {k: v for k, v in raw.items() if k != "kind"}, where)


def _report(raw: Any, methods: tuple[MethodSpec, ...], where: str) -> ReportSpec:
    """The suite's ``report:``; every method id it names must be in the grid."""
    report = build(ReportSpec, raw, where)
    ids = [m.id for m in methods]
    for name in report.delta_metrics:
        if name not in metric_names():
            raise BenchError(f"{where}.delta_metrics: unknown metric '{name}'" + did_you_mean(name, metric_names()))
    for method, references in report.deltas.items():
        if not isinstance(references, list) or not all(isinstance(r, str) for r in references) or not references:
            raise BenchError(f"{where}.deltas.{method}: expected a non-empty list of method ids, got {references!r}")
        for name in (method, *references):
            if name not in ids:
                raise BenchError(f"{where}.deltas: '{name}' is not a method of this suite" + did_you_mean(name, ids))
        if method in references:
            raise BenchError(f"{where}.deltas.{method}: a method is not compared with itself")
    return report


#: A task's ``kind:`` (default classification) -> the function that validates its mapping into
#: the task spec of that kind (whose ``KIND`` names its :mod:`bench.kinds` entry). One line per kind.
TASK_BUILDERS: dict[str, Callable[[dict[str, Any], str], TaskSpec | GenerationTaskSpec]] = {
    TaskSpec.KIND: _classification_task,
    GENERATION: build_generation_task,
}


def build_task(name: str, raw: Any, where: str) -> TaskSpec | GenerationTaskSpec:
    """Validate one task mapping of a suite with the builder of its ``kind:``."""
    spec = {"name": name, **_mapping(raw, where)}
    kind = spec.get("kind", TaskSpec.KIND)
    if kind not in TASK_BUILDERS:
        raise BenchError(f"{where}.kind: unknown task kind {kind!r}" + did_you_mean(str(kind), TASK_BUILDERS))
    return TASK_BUILDERS[kind](spec, where)


def parse_suite(raw: dict[str, Any], where: str, default_name: str) -> Suite:
    """Validate a raw (merged, overridden) suite dict."""
    raw, resources = take_resources(raw, where)
    tasks_raw = raw.get("tasks") or {}
    if not isinstance(tasks_raw, dict) or not tasks_raw:
        raise BenchError(f"{where}: 'tasks' must be a non-empty mapping of task name -> spec")
    tasks = tuple(build_task(key, spec, f"{where}: tasks.{key}") for key, spec in tasks_raw.items())
    noise = tuple(
        build(NoiseSpec, n, f"{where}: noise[{i}]")
        for i, n in enumerate(_as_list(raw.get("noise", [{"kind": "none"}]), f"{where}: noise"))
    )
    methods_raw = raw.get("methods") or {}
    if not isinstance(methods_raw, dict) or not methods_raw:
        raise BenchError(f"{where}: 'methods' must be a non-empty mapping of id -> entry")
    methods = tuple(
        build(MethodSpec, {"id": key, "method": key, **_mapping(entry, f"{where}: methods.{key}")},
              f"{where}: methods.{key}")
        for key, entry in methods_raw.items()
    )
    seeds = tuple(_as_list(raw.get("seeds", [0]), f"{where}: seeds"))
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 2**32 for s in seeds):
        raise BenchError(f"{where}: seeds must be a non-empty list of integers in [0, 2**32), got {list(seeds)}")
    if len(set(seeds)) != len(seeds):
        raise BenchError(f"{where}: seeds {list(seeds)} repeat a seed (it would run the same cells twice)")
    for task in tasks:
        if isinstance(task, GenerationTaskSpec):
            if any(n.kind != "none" for n in noise):
                raise BenchError(f"{where}: task {task.name} is a generation task; it takes noise kind none")
        elif task.truth_field and any(n.kind != "none" for n in (task.noise or noise)):
            raise BenchError(f"{where}: task {task.name} has real noise (truth_field); use noise kind none")
    suite = Suite(
        name=str(raw.get("name", default_name)),
        path=where,
        model=build(ModelSpec, raw.get("model") if isinstance(raw.get("model"), dict)
                    else {"name": raw.get("model", "minilm")}, f"{where}: model"),
        train=build(TrainConfig, raw.get("train"), f"{where}: train"),
        tasks=tasks, noise=noise, seeds=seeds, methods=methods,
        description=str(raw.get("description", "")),
        report=_report(raw.get("report"), methods, f"{where}: report"), resources=resources,
    )
    check_path_name(suite.name, "suite name", where)
    for method in methods:
        check_path_name(method.id, "method id", f"{where}: methods")
        suite.train_for(method)  # type-checks the grid entry's overrides now, not mid-run
    return check_sweeps(suite, raw.get("sweep"))  # each entry's sweep: (or the suite's) checked and normalised


#: A name that becomes a folder (a suite's in the store and under reports/, a method id's in the store).
PATH_NAME = re.compile(r"[A-Za-z0-9._-]{1,100}")


def check_path_name(name: str, what: str, where: str) -> None:
    """Refuse a name that cannot be one folder inside the store (``..``, ``/``, empty, over 100 characters).

    Raises:
        BenchError: one line naming ``where`` and the rule.
    """
    if not PATH_NAME.fullmatch(name) or name in (".", ".."):
        shown = name if len(name) <= 40 else name[:37] + "..."
        raise BenchError(f"{where}: {what} {shown!r} cannot name a folder: use 1-100 letters, digits, "
                         "'.', '_' or '-' (and not '.' or '..')")
