"""A plain wheel install runs named suites from any directory (suites/ and the lm-eval templates ship in it).

The wheel is built from a copy of the sources pyproject.toml packages (nothing is written into the
checkout, and no stale ``build/`` can leak files in), then installed with ``--no-deps`` into a
fresh venv outside the repository. Its dependencies come from this interpreter's site-packages
through a ``.pth`` file that names the folder: a path line only adds it to ``sys.path``, and the
``.pth`` files inside it are not processed, so the editable install's finder
(``__editable__.peftbench-*.pth``, an import line) never runs there and ``bench`` can only come
from the wheel. About 15 s on the 2-core CPU, most of it ``bench validate --all`` importing torch.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO.parent / "shared" / "data"
#: What the wheel is built from: the packages, the folder mapped into them, and the readme the metadata reads.
SOURCES = ("pyproject.toml", "README.md", "bench", "methods", "suites")


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> str:
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, f"{cmd} exited {out.returncode}\n{out.stdout}\n{out.stderr}"
    return out.stdout


def _files(root: Path, pattern: str) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob(pattern) if "__pycache__" not in p.parts}


def _build_wheel(tmp: Path, env: dict[str, str]) -> Path:
    src = tmp / "src"
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            src.mkdir(exist_ok=True)
            shutil.copy2(path, src / name)
    _run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation", "--no-index", "-q",
          "-w", str(tmp / "dist")], src, env)
    (wheel,) = (tmp / "dist").glob("peftbench-*.whl")
    return wheel


def _fresh_venv(tmp: Path, wheel: Path, env: dict[str, str]) -> Path:
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp, env)
    python = venv / "bin" / "python"
    # the wheel goes in before the .pth: with this interpreter's site-packages visible, pip would
    # see the editable peftbench there and uninstall it from the shared .venv
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q",
          str(wheel)], tmp, env)
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], tmp, env).strip())
    ours = dict.fromkeys(sysconfig.get_path(key) for key in ("purelib", "platlib"))
    (site / "_peftbench_test_deps.pth").write_text("".join(f"{path}\n" for path in ours))
    return venv


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="needs ../shared/data")
def test_wheel_install_lists_and_validates_every_suite(tmp_path: Path) -> None:
    assert not tmp_path.resolve().is_relative_to(REPO)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PEFTBENCH_", "PYTHON"))}
    env.update(HF_HUB_OFFLINE="1", PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    wheel = _build_wheel(tmp_path, env)

    # every module of the tree is in the wheel (pyproject.toml lists the packages by hand), and
    # every suite and lm-eval template file, under bench/suites
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"{top}/{f}" for top in ("bench", "methods") for f in _files(REPO / top, "*.py")}
    expected |= {f"bench/suites/{f}" for f in _files(REPO / "suites", "*") if (REPO / "suites" / f).is_file()}
    assert expected - names == set()

    venv = _fresh_venv(tmp_path, wheel, env)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = _run([str(venv / "bin" / "python"), "-c",
                  "import sys, bench, bench.evaluate.lm_tasks as t; "
                  "assert not any(m.startswith('__editable__') for m in sys.modules), 'editable finder loaded'; "
                  "print(bench.__file__); print(t.templates_dir())"], elsewhere, env).splitlines()
    package = venv.resolve() / "lib"
    assert all(Path(p).resolve().is_relative_to(package) for p in where), where
    assert not any(Path(p).resolve().is_relative_to(REPO) for p in where), where
    # results and reports go to the working directory, not into site-packages
    stores = _run([str(venv / "bin" / "python"), "-c", "from bench import api; print(api.results_dir()); "
                   "print(api.reports_dir())"], elsewhere, env).split()
    assert stores == [str(elsewhere / "results"), str(elsewhere / "reports")]

    suites = sorted(p.stem for p in (REPO / "suites").glob("*.yaml") if not p.name.startswith("_"))
    listed = _run([str(venv / "bin" / "bench"), "ls", "suites"], elsewhere, env)
    assert listed.removeprefix("suites:").strip().split(", ") == suites
    validated = _run([str(venv / "bin" / "bench"), "validate", "--all", "--data-dir", str(SHARED_DATA)], elsewhere, env)
    lines = validated.splitlines()
    assert [line.split(":")[0] for line in lines] == [f"ok  {name}" for name in suites], validated

    # $PEFTBENCH_SUITES still outranks the installed suites
    own = tmp_path / "own-suites"
    own.mkdir()
    shutil.copy2(REPO / "suites" / "noisy-text-smoke.yaml", own / "mine.yaml")
    listed = _run([str(venv / "bin" / "bench"), "ls", "suites"], elsewhere, {**env, "PEFTBENCH_SUITES": str(own)})
    assert listed.split() == ["suites:", "mine"]
    # and an empty suites folder is an error, not "every suite valid"
    empty = subprocess.run([str(venv / "bin" / "bench"), "validate", "--all"], cwd=elsewhere, capture_output=True,
                           text=True, env={**env, "PEFTBENCH_SUITES": str(tmp_path / "no-suites")})
    assert empty.returncode == 2 and empty.stderr.startswith("error: validate: no suites in"), empty.stderr
