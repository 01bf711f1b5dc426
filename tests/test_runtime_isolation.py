"""The runtime needs no torch, transformers or scikit-learn, and the dispatcher says what to install."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO

BLOCKED = ("torch", "transformers", "sklearn", "onnx", "onnxscript")
BLOCKER = f"""
import importlib.abc, sys
class _Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {BLOCKED!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked)", name=name)
sys.meta_path.insert(0, _Blocked())
"""


def run_blocked(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCKER + code, *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def test_every_runtime_module_imports_without_training_libraries():
    modules = sorted(".".join(p.relative_to(REPO / "runtime").with_suffix("").parts)
                     for p in (REPO / "runtime").rglob("*.py") if p.stem != "__init__")
    code = ("import importlib, sys\n"
            f"for m in {modules!r}: importlib.import_module('audiotok.runtime.' + m)\n"
            f"loaded = sorted(n for n in sys.modules if n.split('.')[0] in {BLOCKED!r})\n"
            "print(loaded)")
    result = run_blocked(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    assert len(modules) >= 8


def test_tokenize_runs_with_training_libraries_blocked(logmel_bundle, speech_dir):
    wav = sorted(speech_dir.glob("*.wav"))[0]
    code = "from audiotok.runtime.commands.dispatcher import main; sys.exit(main(sys.argv[1:]))"
    blocked = run_blocked(code, "tokenize", logmel_bundle, wav)
    assert blocked.returncode == 0, blocked.stderr
    normal = subprocess.run([sys.executable, "-m", "audiotok", "tokenize", str(logmel_bundle), str(wav)],
                            capture_output=True, text=True)
    assert blocked.stdout == normal.stdout and len(blocked.stdout.split("\t")[1].split()) > 100


def test_training_commands_name_the_extra_when_torch_is_missing(tmp_path):
    code = "from audiotok.runtime.commands.dispatcher import main; sys.exit(main(sys.argv[1:]))"
    for cmd in ("train", "export"):
        result = run_blocked(code, cmd, "--help")
        assert result.returncode == 1
        assert result.stderr.strip().splitlines() == [
            f"audiotok: error: 'audiotok {cmd}' needs torch, which is not installed: pip install 'audiotok[train]'"]


def test_export_runs_without_scikit_learn(logmel_units, logmel_bundle, speech_dir, tmp_path):
    """export reads the centroids' sidecar without training code, so scikit-learn is not needed."""
    # None in sys.modules makes "import sklearn" fail and importlib.util.find_spec say "not installed"
    # (torch probes optional modules with find_spec, which a raising finder would break).
    code = ("import sys\n"
            "sys.modules['sklearn'] = None\n"
            "from audiotok.runtime.commands.dispatcher import main\n"
            "status = main(sys.argv[1:])\n"
            "assert sys.modules['sklearn'] is None and not any(n.startswith('sklearn.') for n in sys.modules)\n"
            "sys.exit(status)")
    bundle = tmp_path / "no-sklearn.onnx"
    result = subprocess.run([sys.executable, "-c", code, "export", "--model", "logmel", "--centroids",
                             str(logmel_units), "-o", str(bundle)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    wav = sorted(speech_dir.glob("*.wav"))[0]
    units = [subprocess.run([sys.executable, "-m", "audiotok", "tokenize", str(b), str(wav)], capture_output=True,
                            text=True, check=True).stdout for b in (bundle, logmel_bundle)]
    assert units[0] == units[1] and len(units[0].split("\t")[1].split()) > 100
