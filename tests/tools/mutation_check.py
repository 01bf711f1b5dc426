"""Mutation check: does the suite notice when the code under it stops keeping its promises?

Each mutant is one small edit (a manifest field rule deleted, int8 bundles flipping 5% of their
units at tokenize time, one record dropped from a Ray run) applied to a temporary copy of the
repository; the tests that guard that promise run against the copy, and the mutant is *killed*
when they fail. The copy's ``audiotok/`` folder gets symlinks laying out the package the way
pyproject's package-dir mapping does (``audiotok.runtime`` -> ``runtime/`` ...) and the copy goes
first on PYTHONPATH, so the same virtual environment runs it and nothing is installed; subprocesses
the tests start (``python -m audiotok``) inherit it.

    python tests/tools/mutation_check.py                 # every mutant
    python tests/tools/mutation_check.py --only int8 ray  # mutants whose name holds a word
    python tests/tools/mutation_check.py --list

Runs each distinct test selection on an unmutated copy first (exit 2 if one fails there), then
prints one line per mutant and the kill rate; exits 1 when any mutant survives. Deleting the
``schema`` rule is left out as an equivalent mutant: ``Manifest.from_dict`` checks the schema
itself before any rule, so no test can tell.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE_DIRS = {"runtime": "runtime", "models": "models", "train": "train", "export": "export"}  # pyproject
IGNORED = shutil.ignore_patterns(".git", ".venv", "__pycache__", "*.egg-info", ".pytest_cache")
MANIFEST = "runtime/bundle/manifest.py"
FIELD_RULE = re.compile(r'^    "(\w+)": .*\n', re.M)
# Fields whose rule, deleted, changes nothing: Manifest.from_dict checks the schema before any rule.
EQUIVALENT = {"schema"}


@dataclass(frozen=True)
class Mutant:
    """One edit: in ``path``, ``old`` (which must occur exactly once) becomes ``new``; ``tests`` guard it."""

    name: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]  # pytest arguments, relative to the copy's root


def _rules_block(text: str) -> str:
    start = text.index("FIELD_RULES: dict[str, Rule] = {")
    return text[start:text.index("\n}\n", start) + 1]


def field_rule_mutants() -> list[Mutant]:
    """Each manifest field rule deleted, one at a time: the field checked by AnyJson, as if it had none."""
    block = _rules_block((REPO / MANIFEST).read_text())
    mutants = []
    for match in FIELD_RULE.finditer(block):
        field = match.group(1)
        if field in EQUIVALENT:
            continue
        # the line is kept with AnyJson (what a field without a rule gets), not deleted: the sidecar reader
        # imports the processor-option rules by name, and a KeyError there would kill the mutant trivially
        mutants.append(Mutant(f"rule-{field}", MANIFEST, match.group(0), f'    "{field}": AnyJson(),\n',
                              ("tests/test_fuzz_bundles.py", "-x", "-q", "-k",
                               f"manifest_values and {field}- or named_refusals or missing_fields")))
    return mutants


INT8_FLIP = Mutant(
    "int8-flips-5pct-at-tokenize", "runtime/tokenizer.py",
    "        offset, blocks = prepared_blocks(open_blocks, self.preprocess)\n"
    "        return self.tokenize_blocks(blocks, source=source), offset\n",
    "        offset, blocks = prepared_blocks(open_blocks, self.preprocess)\n"
    "        units = self.tokenize_blocks(blocks, source=source)\n"
    "        if self.manifest.precision == \"int8\":\n"
    "            units[::20] = (units[::20] + 1) % self.manifest.k\n"
    "        return units, offset\n",
    ("tests/test_precision.py", "-x", "-q", "-k", "transformers_float32"))

RAY_DROP = Mutant(
    "ray-drops-one-record", "runtime/corpus/ray_engine.py",
    "                for row in dataset.iter_rows():\n"
    "                    yield pickle.loads(row[\"result\"])\n",
    "                for i, row in enumerate(dataset.iter_rows()):\n"
    "                    if i != 7:\n"
    "                        yield pickle.loads(row[\"result\"])\n",
    ("tests/test_ray_node_lost.py", "-x", "-q"))


def all_mutants() -> list[Mutant]:
    return field_rule_mutants() + [INT8_FLIP, RAY_DROP]


def copy_repo(dest: Path) -> Path:
    """The working tree at ``dest/repo``, its ``audiotok/`` folder completed by symlinks to the folders
    pyproject maps into the package, so ``dest/repo`` on sys.path (or as the working directory, which
    ``python -c`` puts first) imports the copy, ahead of the editable install's finder."""
    root = dest / "repo"
    shutil.copytree(REPO, root, ignore=IGNORED, symlinks=True)
    for name, folder in PACKAGE_DIRS.items():
        (root / "audiotok" / name).symlink_to(root / folder, target_is_directory=True)
    return root


def apply(root: Path, mutant: Mutant) -> None:
    if not mutant.old:  # the baseline: nothing changed
        return
    path = root / mutant.path
    text = path.read_text()
    assert text.count(mutant.old) == 1, f"{mutant.name}: the text to mutate is not in {mutant.path} exactly once"
    path.write_text(text.replace(mutant.old, mutant.new))


def run_tests(root: Path, args: tuple[str, ...], timeout_s: int) -> tuple[bool, str]:
    """(passed, last lines) of pytest on the copy, importing the copy's audiotok."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), str(root / "tests")]),
           "PYTHONDONTWRITEBYTECODE": "1"}
    check = subprocess.run([sys.executable, "-c", "import audiotok.runtime; print(audiotok.runtime.__file__)"],
                           env=env, capture_output=True, text=True, cwd=root)
    assert check.stdout.strip().startswith(str(root)), f"the copy is not what gets imported: {check.stdout}{check.stderr}"
    try:
        # a private --basetemp: pytest prunes old /tmp/pytest-of-USER/pytest-N folders, which another
        # run by the same user may still be using
        result = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--basetemp",
                                 str(root.parent / "pytest"), *args], env=env,
                                capture_output=True, text=True, cwd=root, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return False, f"timed out after {timeout_s} s"
    tail = " | ".join(result.stdout.strip().splitlines()[-2:])
    return result.returncode == 0, tail


def check(mutant: Mutant, timeout_s: int, keep: bool) -> tuple[bool, str, float]:
    """(killed, what pytest said, seconds) for one mutant on a fresh copy."""
    started = time.monotonic()
    temp = Path(tempfile.mkdtemp(prefix="audiotok-mutant-"))
    try:
        root = copy_repo(temp)
        apply(root, mutant)
        passed, tail = run_tests(root, mutant.tests, timeout_s)
        return not passed, tail, time.monotonic() - started
    finally:
        if not keep:
            shutil.rmtree(temp, ignore_errors=True)


def get_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--only", nargs="*", default=[], help="run mutants whose name holds one of these words")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds one mutant's tests may take")
    parser.add_argument("--keep", action="store_true", help="keep each mutated copy (its path is printed)")
    parser.add_argument("--skip-baseline", action="store_true",
                        help="do not first run each mutant's tests on an unmutated copy (they must pass there)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = get_args(argv)
    mutants = [m for m in all_mutants() if not args.only or any(w in m.name for w in args.only)]
    if args.list:
        for m in mutants:
            print(f"{m.name}\t{m.path}\t{' '.join(m.tests)}")
        return 0
    if not args.skip_baseline:  # a kill only means something where the same tests pass unmutated
        for tests in dict.fromkeys(m.tests for m in mutants):
            failed, tail, seconds = check(Mutant("baseline", "README.md", "", "", tests), args.timeout, args.keep)
            print(f"{'BROKEN  ' if failed else 'baseline'}\t{' '.join(tests)}\t{seconds:.0f} s\t{tail}", flush=True)
            if failed:
                return 2
    killed = 0
    for mutant in mutants:
        dead, tail, seconds = check(mutant, args.timeout, args.keep)
        killed += dead
        print(f"{'killed  ' if dead else 'SURVIVED'}\t{mutant.name}\t{seconds:.0f} s\t{tail}", flush=True)
    print(f"kill rate {killed}/{len(mutants)}")
    return 0 if killed == len(mutants) else 1


if __name__ == "__main__":
    sys.exit(main())
