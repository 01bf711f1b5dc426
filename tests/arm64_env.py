"""An emulated Raspberry Pi userland for the tests: Debian's arm64 Python and the runtime's aarch64
wheels, run by qemu-user, built once and cached outside the repository.

Why this shape: no ARM machine is needed and nothing on the host changes. Debian's arm64 packages
are fetched by apt with a private state folder (the host's dpkg architectures, sources and lists
are never touched) and unpacked with ``dpkg -x``; the aarch64 wheels of the runtime's dependencies,
pinned to the versions installed on the host so that both sides run the same onnxruntime, are
unpacked by the host's pip and never run by it. qemu-user runs the Debian interpreter directly with
``-L PREFIX``, which resolves the guest's absolute paths under PREFIX first.

The one trap: onnxruntime parses ``/proc/cpuinfo`` at import; the host's x86 text makes it crash
inside qemu. Each CPU model gets its own PREFIX (links to the shared Debian tree plus a
``proc/cpuinfo`` in the ARM format), so the guest reads a Pi's cpuinfo while the host's stays as it
is: no root, no mount namespace.

The build is keyed by the Debian suite, the package names, the wheel pins and ``RECIPE``; a lock
file keeps two pytest processes from building at once, and a build happens in a temporary folder
renamed into place only once its interpreter has imported numpy and onnxruntime. ``python
tests/arm64_env.py`` builds (or finds) it and prints where it is.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RECIPE = 1  # bump when the build steps change: a new cache key, a fresh build
DEBIAN_SUITE = "bookworm"  # Debian 12: Python 3.11 and glibc 2.36, as on Raspberry Pi OS 64-bit (bookworm)
DEBIAN_MIRROR = os.environ.get("AUDIOTOK_ARM64_DEBIAN_MIRROR", "http://deb.debian.org/debian")
DEBIAN_SECURITY = os.environ.get("AUDIOTOK_ARM64_DEBIAN_SECURITY", "http://deb.debian.org/debian-security")
DEBIAN_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
PYTHON = "python3.11"
GLIBC_MINOR = 36  # bookworm's glibc: wheels tagged manylinux_2_17 .. manylinux_2_36 run on it
# The interpreter and the shared libraries it and the wheels load (libstdc++ and libgomp for onnxruntime).
DEBIAN_PACKAGES = (
    "python3.11-minimal", "libpython3.11-minimal", "libpython3.11-stdlib", "python3.11",
    "libc6", "libstdc++6", "libgcc-s1", "libgomp1", "libexpat1", "zlib1g", "libssl3", "libffi8",
    "libbz2-1.0", "liblzma5", "libsqlite3-0", "libncursesw6", "libtinfo6", "libreadline8", "libuuid1",
    "libcrypt1", "libnsl2", "libtirpc3", "libdb5.3",
)
LOCK_WAIT_S = 900  # another process building the same key: wait this long for it


class Arm64EnvError(RuntimeError):
    """The emulated userland could not be built or run; the message says which step and why."""


@dataclass(frozen=True)
class CpuModel:
    """One Raspberry Pi's cores as qemu emulates them and as ``/proc/cpuinfo`` describes them."""

    name: str  # qemu's -cpu name
    board: str
    part: str  # MIDR part number: 0xd08 Cortex-A72, 0xd0b Cortex-A76
    variant: str
    revision: int
    features: tuple[str, ...]  # the kernel's HWCAP names, as a Pi's cpuinfo lists them
    cores: int = 4

    def cpuinfo(self) -> str:
        block = ("processor\t: {i}\nBogoMIPS\t: 108.00\nFeatures\t: {features}\nCPU implementer\t: 0x41\n"
                 "CPU architecture: 8\nCPU variant\t: {variant}\nCPU part\t: {part}\nCPU revision\t: {revision}\n\n")
        text = "".join(block.format(i=i, features=" ".join(self.features), variant=self.variant, part=self.part,
                                    revision=self.revision) for i in range(self.cores))
        return text + "Hardware\t: BCM2835\nModel\t\t: " + self.board + "\n"


CPU_MODELS = {
    "cortex-a72": CpuModel("cortex-a72", "Raspberry Pi 4 Model B Rev 1.4", "0xd08", "0x0", 3,
                           ("fp", "asimd", "evtstrm", "crc32", "cpuid")),
    # The Pi 5's Cortex-A76 adds the dot-product instructions (asimddp) onnxruntime's int8 kernels use.
    "cortex-a76": CpuModel("cortex-a76", "Raspberry Pi 5 Model B Rev 1.0", "0xd0b", "0x4", 1,
                           ("fp", "asimd", "evtstrm", "aes", "pmull", "sha1", "sha2", "crc32", "atomics", "fphp",
                            "asimdhp", "cpuid", "asimdrdm", "lrcpc", "dcpop", "asimddp")),
}


@dataclass(frozen=True)
class Arm64Env:
    """A built userland: ``home/root`` (Debian), ``home/site`` (wheels), ``home/cpu-NAME`` (qemu prefixes)."""

    home: Path
    qemu: str

    def command(self, cpu: str, *args: str) -> list[str]:
        """argv that runs the arm64 Python on ``cpu`` with ARGS."""
        return [self.qemu, "-L", str(self.home / f"cpu-{cpu}"), str(self.home / "root" / "usr" / "bin" / PYTHON), *args]

    def environ(self, cpu: str, *paths: Path) -> dict[str, str]:
        """A clean environment: nothing of the host's Python (venv, PYTHONPATH) leaks into the guest."""
        pythonpath = os.pathsep.join([*map(str, paths), str(self.home / "site")])
        return {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp"), "LANG": "C.UTF-8",
                "QEMU_CPU": cpu, "PYTHONPATH": pythonpath, "PYTHONNOUSERSITE": "1", "TMPDIR": tempfile.gettempdir()}

    @property
    def versions(self) -> dict:
        return json.loads((self.home / "env.json").read_text())


def runtime_requirements() -> list[str]:
    """The runtime's dependencies (pyproject's, without extras), each pinned to the host's installed version."""
    from importlib import metadata

    try:
        import tomllib

        declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    except ModuleNotFoundError:  # Python 3.10: the installed metadata says the same
        declared = [r for r in metadata.requires("audiotok") or [] if "extra ==" not in r]
    pins = []
    for requirement in declared:
        name = re.match(r"[A-Za-z0-9._-]+", requirement).group(0)
        try:
            pins.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            raise Arm64EnvError(f"{name} is not installed on the host; install the project first "
                                f"(pip install -e \".[train,test]\")") from None
    return sorted(pins)


def cache_root() -> Path:
    if os.environ.get("AUDIOTOK_ARM64_CACHE"):
        return Path(os.environ["AUDIOTOK_ARM64_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "audiotok-arm64"


def cache_key(requirements: list[str]) -> str:
    recipe = {"recipe": RECIPE, "suite": DEBIAN_SUITE, "debian": DEBIAN_PACKAGES, "wheels": requirements,
              "cpus": {name: cpu.cpuinfo() for name, cpu in CPU_MODELS.items()}}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def find_qemu() -> str:
    for name in ("qemu-aarch64-static", "qemu-aarch64"):
        if shutil.which(name):
            return shutil.which(name)
    raise Arm64EnvError("qemu-aarch64-static not found: apt-get install qemu-user-static (.ci/run installs it)")


def ensure_env() -> Arm64Env:
    """The cached userland for the current pins, built first if it is missing."""
    qemu = find_qemu()
    requirements = runtime_requirements()
    key = cache_key(requirements)
    root = cache_root()
    home = root / key
    if (home / "env.json").is_file():
        return Arm64Env(home, qemu)
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root / f"{key}.lock"):
        if not (home / "env.json").is_file():  # built by another process while this one waited
            for stale in root.glob(f".build-{key}-*"):  # left by a build that was killed; ours, by name
                shutil.rmtree(stale, ignore_errors=True)
            staging = Path(tempfile.mkdtemp(prefix=f".build-{key}-", dir=root))
            try:
                _build(staging, requirements, qemu)
                staging.chmod(0o777 & ~_umask())  # mkdtemp made it private; the cache gets the umask's mode
                staging.rename(home)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
    return Arm64Env(home, qemu)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class _locked:
    """An exclusive ``flock`` on PATH, waited for at most LOCK_WAIT_S."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self):
        self.file = open(self.path, "a")
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except BlockingIOError:
                if time.monotonic() > deadline:
                    self.file.close()
                    raise Arm64EnvError(f"waited {LOCK_WAIT_S} s for another build of the arm64 userland "
                                        f"({self.path}); remove the lock file if no build is running") from None
                time.sleep(1)

    def __exit__(self, *exc):
        fcntl.flock(self.file, fcntl.LOCK_UN)
        self.file.close()


def _build(staging: Path, requirements: list[str], qemu: str) -> None:
    started = time.monotonic()
    debian = _unpack_debian(staging)
    wheels = _install_wheels(staging / "site", requirements)
    for cpu in CPU_MODELS.values():
        _make_prefix(staging, cpu)
    _compile(staging)
    env = Arm64Env(staging, qemu)
    _smoke_test(env)
    record = {"recipe": RECIPE, "suite": DEBIAN_SUITE, "debian": debian, "wheels": wheels, "requirements": requirements,
              "qemu": _run([qemu, "--version"], "qemu --version").stdout.splitlines()[0],
              "build_seconds": round(time.monotonic() - started, 1)}
    (staging / "env.json").write_text(json.dumps(record, indent=1) + "\n")


def _run(argv: list[str], step: str, **kwargs) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=600, **kwargs)
    except FileNotFoundError as error:
        raise Arm64EnvError(f"arm64 userland: {step}: {error.filename} not found") from None
    except subprocess.CalledProcessError as error:
        tail = "\n".join((error.stderr or error.stdout or "").strip().splitlines()[-6:])
        raise Arm64EnvError(f"arm64 userland: {step} failed (exit {error.returncode}):\n{tail}") from None
    except subprocess.TimeoutExpired:
        raise Arm64EnvError(f"arm64 userland: {step} did not finish in 600 s") from None


def _unpack_debian(staging: Path) -> dict[str, str]:
    """Debian's arm64 packages, fetched with apt's state kept in STAGING/apt, unpacked into STAGING/root."""
    if not DEBIAN_KEYRING.is_file():
        raise Arm64EnvError(f"arm64 userland: {DEBIAN_KEYRING} is missing (apt-get install debian-archive-keyring)")
    apt = staging / "apt"
    for folder in ("lists/partial", "cache/archives/partial", "debs", "etc/preferences.d", "etc/sources.list.d"):
        (apt / folder).mkdir(parents=True)
    sources = [f"deb [arch=arm64 signed-by={DEBIAN_KEYRING}] {DEBIAN_MIRROR} {DEBIAN_SUITE} main",
               f"deb [arch=arm64 signed-by={DEBIAN_KEYRING}] {DEBIAN_MIRROR} {DEBIAN_SUITE}-updates main",
               f"deb [arch=arm64 signed-by={DEBIAN_KEYRING}] {DEBIAN_SECURITY} {DEBIAN_SUITE}-security main"]
    (apt / "etc/sources.list").write_text("\n".join(sources) + "\n")
    (apt / "status").touch()
    options = [f"-oDir::State::Lists={apt / 'lists'}", f"-oDir::Cache={apt / 'cache'}",
               f"-oDir::State::status={apt / 'status'}", f"-oDir::Etc::SourceList={apt / 'etc/sources.list'}",
               f"-oDir::Etc::SourceParts={apt / 'etc/sources.list.d'}",
               f"-oDir::Etc::Preferences={apt / 'etc/preferences'}",
               f"-oDir::Etc::PreferencesParts={apt / 'etc/preferences.d'}",
               "-oAPT::Architecture=arm64", "-oAPT::Architectures::=arm64", "-oDebug::NoLocking=1"]
    if os.geteuid() == 0:  # apt would hand downloads to its _apt user, who cannot write into STAGING
        options.append("-oAPT::Sandbox::User=root")
    # --error-on=any: an unreachable mirror is an error here, not apt's warning and an empty index.
    _run(["apt-get", *options, "-q", "--error-on=any", "update"],
         f"apt-get update of Debian {DEBIAN_SUITE} arm64 from {DEBIAN_MIRROR} and {DEBIAN_SECURITY}")
    _run(["apt-get", *options, "-q", "download", *DEBIAN_PACKAGES], "apt-get download of the arm64 packages",
         cwd=apt / "debs")
    root = staging / "root"
    versions = {}
    for deb in sorted((apt / "debs").glob("*.deb")):
        _run(["dpkg-deb", "-x", str(deb), str(root)], f"dpkg-deb -x {deb.name}")
        name, version = _run(["dpkg-deb", "-f", str(deb), "Package", "Version"], "dpkg-deb -f").stdout.split("\n")[:2]
        versions[name.split(": ", 1)[1]] = version.split(": ", 1)[1]
    missing = set(DEBIAN_PACKAGES) - set(versions)
    if missing:
        raise Arm64EnvError(f"arm64 userland: apt-get download gave no {', '.join(sorted(missing))}")
    shutil.rmtree(apt)
    return versions


def _install_wheels(site: Path, requirements: list[str]) -> dict[str, str]:
    """aarch64 wheels of REQUIREMENTS (and what they depend on), unpacked by the host's pip into SITE."""
    platforms = [arg for minor in range(17, GLIBC_MINOR + 1) for arg in ("--platform", f"manylinux_2_{minor}_aarch64")]
    _run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--target", str(site),
          "--only-binary=:all:", "--implementation", "cp", "--python-version", "3.11", "--abi", "cp311",
          "--abi", "abi3", "--abi", "none", *platforms, "--platform", "manylinux2014_aarch64", *requirements],
         "pip install of the aarch64 wheels (" + " ".join(requirements) + ")")
    return dict(p.name.removesuffix(".dist-info").split("-", 1) for p in sorted(site.glob("*.dist-info")))


def _make_prefix(staging: Path, cpu: CpuModel) -> None:
    """STAGING/cpu-NAME: relative links to the Debian tree, and this CPU's /proc/cpuinfo."""
    prefix = staging / f"cpu-{cpu.name}"
    (prefix / "proc").mkdir(parents=True)
    for entry in (staging / "root").iterdir():
        (prefix / entry.name).symlink_to(Path("..") / "root" / entry.name)
    (prefix / "proc" / "cpuinfo").write_text(cpu.cpuinfo())


def _compile(staging: Path) -> None:
    """Byte-compile the stdlib and the wheels once, so that each emulated start skips it.

    Bytecode is the same on every architecture; the host compiles it when it is the same Python
    minor version (natively, fast), else the guest does it.
    """
    folders = [str(staging / "root" / "usr" / "lib" / PYTHON), str(staging / "site")]
    if sys.version_info[:2] == (3, 11):
        _run([sys.executable, "-m", "compileall", "-q", "-j", "0", *folders], "compileall")
    else:
        env = Arm64Env(staging, find_qemu())
        cpu = next(iter(CPU_MODELS))
        _run(env.command(cpu, "-m", "compileall", "-q", *folders), "compileall (emulated)", env=env.environ(cpu))


def _smoke_test(env: Arm64Env) -> None:
    for cpu in CPU_MODELS:
        result = subprocess.run(env.command(cpu, "-c", "import numpy, onnxruntime, soxr, soundfile, tqdm"),
                                env=env.environ(cpu), capture_output=True, text=True, timeout=300)
        if result.returncode != 0:
            raise Arm64EnvError(f"arm64 userland: the emulated {PYTHON} ({cpu}) could not import the runtime's "
                                f"dependencies (exit {result.returncode}):\n{result.stderr.strip()[-800:]}")


def install_project(dest: Path) -> Path:
    """The checkout installed as ``pip install --no-deps`` would on a Pi (runtime dependencies come from site).

    pip builds from a copy so that the checkout gets no build/ or egg-info folder, in its own build
    environment (pyproject's setuptools, not whatever the test environment has).
    """
    source = dest / "source"
    source.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md", "audiotok", "runtime", "models", "train", "export"):
        copy = shutil.copytree if (REPO / name).is_dir() else shutil.copy2
        copy(REPO / name, source / name, **({"ignore": shutil.ignore_patterns("__pycache__")}
                                            if (REPO / name).is_dir() else {}))
    target = dest / "install"
    _run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps",
          "--target", str(target), str(source)], "pip install --no-deps of the project")
    shutil.rmtree(source)
    return target


if __name__ == "__main__":
    try:
        built = ensure_env()
    except Arm64EnvError as error:
        print(f"arm64_env: error: {error}", file=sys.stderr)
        sys.exit(1)
    print(built.home)
    print(json.dumps(built.versions, indent=1))
