"""Opening a bundle: an onnxruntime session plus its manifest, with clear errors.

Execution providers are chosen by short name (``cpu``, ``cuda``, ``tensorrt``, ``coreml``, ...)
or by onnxruntime's full name; ones this onnxruntime build lacks fall back to CPU with a warning,
because a tokenizer that refuses to start is worse than a slower one.
"""

from __future__ import annotations

import os
from numbers import Integral

import onnxruntime as ort

from .container import check_container, is_container, model_view, runtime_model
from ..constants import MANIFEST_KEY
from ..errors import BundleError, SettingsError
from ..audio.file_kind import require_regular_file
from .graph_rules import check_graph_rules
from ..log import log
from .manifest import Manifest
from ..process.memory_limit import bounded_arena, limit_mb, remember_limit
from ..process.native_stderr import Captured, captured_stderr, library_message
from .onnx_external import describe_external_data
from .onnx_tensors import scan_initializers

INPUT_NAME = "waveform"
OUTPUT_NAME = "units"
FLOAT_TENSOR = "tensor(float)"  # the waveform is always fed as float32, whatever the graph's precision
INTEGER_TENSORS = {f"tensor({t})" for t in ("int64", "int32", "int16", "int8", "uint64", "uint32", "uint16", "uint8")}

_PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "dml": "DmlExecutionProvider",
    "directml": "DmlExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "rocm": "ROCMExecutionProvider",
    "qnn": "QNNExecutionProvider",
    "xnnpack": "XnnpackExecutionProvider",
}


def resolve_providers(requested: list[str] | str | None) -> list[str]:
    """Map short names to onnxruntime providers, dropping (with a warning) those not available."""
    if requested is None:
        return ["CPUExecutionProvider"]
    names = [requested] if isinstance(requested, str) else list(requested)
    available = ort.get_available_providers()
    chosen: list[str] = []
    for name in names:
        full = _PROVIDER_ALIASES.get(name.lower(), name)
        if full in available:
            if full not in chosen:
                chosen.append(full)
        else:
            log.warning("execution provider %r is not available in this onnxruntime (available: %s); "
                        "falling back to CPU", name, ", ".join(available))
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")
    return chosen


THREADS_PER_CORE = 4  # threads (or local workers) beyond this many per core add memory, never speed


def thread_limit() -> int:
    """The most intra-op threads a session (or local worker processes a corpus run) may ask for: 4 per core.

    Each onnxruntime thread reserves its own stack and scratch memory: 100000 threads took 16 GB
    before anything else failed.
    """
    return THREADS_PER_CORE * (os.cpu_count() or 1)


def check_threads(threads: object, option: str = "threads") -> int | None:
    """``threads`` as an int in 1..thread_limit() (None: onnxruntime's default), else a SettingsError."""
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, Integral) or not 1 <= threads <= thread_limit():
        raise SettingsError(f"{option} must be an integer in 1..{thread_limit()} ({THREADS_PER_CORE} per core of "
                            f"this machine), got {threads!r}")
    return int(threads)


def session_options(threads: int | None = None) -> ort.SessionOptions:
    """How every audiotok session runs: all graph optimizations, errors-only logging, ``threads`` intra-op.

    Memory patterns are off. onnxruntime plans one pattern per input shape and keeps each pattern's
    block in its arena; audiotok's inputs change length with every file and window, so patterns are
    rarely reused and only pile up: a 120 s file in 30 s windows peaked at 1.22 GiB with them and
    0.73 GiB without (HuBERT-base size, layer 6), at the same speed (benchmarks/pass_memory.py).
    """
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: ORT's warnings are not the user's problem
    options.enable_mem_pattern = False
    threads = check_threads(threads)
    if threads:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    return options


def require_self_contained(path: str | os.PathLike) -> None:
    """Refuse a bundle whose tensors name files beside it, before onnxruntime would read them
    (a FIFO there hangs the load, any other file becomes weights): a bundle is one file. A
    container (bundle_container.py) is checked whole: header, regions and every external tensor."""
    if is_container(path):
        check_container(path)
        return
    outside = describe_external_data(path)
    if outside is not None:
        raise BundleError(f"{path}: not a self-contained bundle: {outside}; an audiotok bundle is one file, "
                          "and nothing beside it is read")


DEFAULT_RUN_FRAMES = 1500  # a 30 s window: the longest run of the default window policy

# onnxruntime resolves external data of a model given as bytes against this folder.
EXTERNAL_FOLDER_KEY = "session.model_external_initializers_file_folder_path"


ONNX_FLOAT16 = 10  # TensorProto.DataType
# onnxruntime's ORT_ENABLE_ALL pass that turns each fp16 weight feeding a float32-only kernel into a
# float32 copy at load time.
FP16_WEIGHT_FUSION = "FuseFp16InitializerToFp32NodeTransformer"


def has_fp16_weights(path: str | os.PathLike) -> bool:
    """Whether the graph has float16 initializers (an fp16 bundle), read from the protobuf over a
    memory map: names and types only, no weight is read."""
    found = False

    def note(info) -> bool:
        nonlocal found
        found = found or info.data_type == ONNX_FLOAT16
        return False  # decode nothing

    with model_view(path) as (model, _weights):
        scan_initializers(model, note)
    return found


def fp16_on_cpu(path: str | os.PathLike, options: ort.SessionOptions, providers: list[str]) -> dict:
    """How an fp16 bundle runs on the CPU provider alone within 1.3x its size + 600 MB; the extra
    arguments for ``InferenceSession`` (none for any other bundle or provider list).

    The CPU provider has no fp16 kernels for most operators and runs them in float32 behind Casts.
    Left alone, onnxruntime folds each weight's Cast at load, so the session holds every weight in
    fp16 and in float32 (3x the bundle): the XLS-R 1B layout's 1.41 GB fp16 bundle peaked at 4.9 GB.
    With that fusion off the Casts run at each call, and the priority-based order runs each one just
    before the node that reads it (onnxruntime's default order runs the weights' Casts first, which
    keeps all their float32 copies alive at once: 3.9 GB). About one weight's float32 copy is alive at
    a time: the same bundle peaks at 1.6 GB. Loading is faster (4 s against 16 s) and each pass slower
    (the Casts run at every pass, on weights MatMul has not pre-packed): the same CPU time on 19.7 s
    of speech in 4 files, 16% more on 100 s in 20. Unpacked MatMuls sum in another order, so a unit
    at the edge of a tie can change (8 of 7,316 frames, agreement with the fp32 bundle unchanged;
    docs/bundle.md). GPU providers run fp16 kernels and are left as they are.
    """
    if list(providers) != ["CPUExecutionProvider"] or not has_fp16_weights(path):
        return {}
    options.execution_order = ort.ExecutionOrder.PRIORITY_BASED
    return {"disabled_optimizers": [FP16_WEIGHT_FUSION]}


def inference_session(path: str | os.PathLike, options: ort.SessionOptions,
                      providers: list[str]) -> ort.InferenceSession:
    """onnxruntime's session over a checked bundle of either layout.

    A container's graph is handed over with its weights pointing at the bundle file itself, so
    onnxruntime memory-maps them from there (no copy, no other file); a plain bundle is opened by path.
    An fp16 bundle on the CPU provider alone keeps its weights in fp16 (:func:`fp16_on_cpu`).
    """
    extra = fp16_on_cpu(path, options, providers)
    if not is_container(path):
        return ort.InferenceSession(str(path), options, providers=providers, **extra)
    container = check_container(path)
    options.add_session_config_entry(EXTERNAL_FOLDER_KEY, str(container.path.resolve().parent))
    return ort.InferenceSession(runtime_model(container), options, providers=providers, **extra)


def open_session(bundle: str | os.PathLike, *, providers: list[str] | str | None = None,
                 threads: int | None = None,
                 run_frames: int = DEFAULT_RUN_FRAMES) -> tuple[ort.InferenceSession, Manifest]:
    """The bundle's session and manifest; ``run_frames``, the longest run it will get, sizes its memory
    limit (see :mod:`memory_limit`)."""
    path = require_regular_file(bundle, BundleError, what="an ONNX bundle")  # a FIFO would block the load
    require_self_contained(path)  # a one-line refusal before onnxruntime sees the file
    check_graph_rules(path)
    chosen = resolve_providers(providers)
    options = session_options(threads)
    limit = limit_mb(path.stat().st_size, run_frames)
    noise = Captured()
    try:
        with captured_stderr() as noise, bounded_arena(options, limit):  # ORT logs load failures to fd 2
            session = inference_session(path, options, chosen)
    except Exception as exc:  # onnxruntime raises several private exception types here
        detail = library_message(exc, noise, limit=160)
        raise BundleError(f"{path}: not a valid ONNX model, or a truncated one ({detail})") from None
    remember_limit(session, limit)
    try:
        metadata = session.get_modelmeta().custom_metadata_map
    except UnicodeDecodeError as exc:  # a byte of the metadata changed: onnxruntime hands it over undecoded
        raise BundleError(f"{path}: its metadata is not UTF-8 text (byte {exc.start}); the file is damaged") from None
    if MANIFEST_KEY not in metadata:
        raise BundleError(f"{path}: an ONNX model, but not an audiotok bundle (no '{MANIFEST_KEY}' manifest)")
    manifest = Manifest.from_json(metadata[MANIFEST_KEY], source=str(path))
    check_graph_signature(session, str(path))
    return session, manifest


def _declared(arg: ort.NodeArg) -> str:
    return f"'{arg.name}' {arg.type} {list(arg.shape) if arg.shape is not None else 'of unknown shape'}"


def check_graph_signature(session: ort.InferenceSession, source: str) -> None:
    """The graph must declare ``waveform`` float32 ``[1, samples]`` in and ``units`` integer ``[1, frames]`` out.

    What the graph actually returns is checked again on every run (see ``Tokenizer.units_for_window``);
    this catches a wrong graph before any audio is read.
    """
    inputs, outputs = session.get_inputs(), session.get_outputs()
    found = (f"found inputs {', '.join(_declared(i) for i in inputs[:4]) or 'none'} and outputs "
             f"{', '.join(_declared(o) for o in outputs[:4]) or 'none'}")
    if [i.name for i in inputs] != [INPUT_NAME] or OUTPUT_NAME not in [o.name for o in outputs]:
        raise BundleError(f"{source}: expected input '{INPUT_NAME}' and output '{OUTPUT_NAME}', {found}")
    waveform, units = inputs[0], next(o for o in outputs if o.name == OUTPUT_NAME)
    if waveform.type != FLOAT_TENSOR or not _batch_of_one(waveform.shape):
        raise BundleError(f"{source}: input '{INPUT_NAME}' must be {FLOAT_TENSOR} shaped [1, samples], "
                          f"the graph declares {_declared(waveform)}")
    if units.type not in INTEGER_TENSORS or not _batch_of_one(units.shape):
        raise BundleError(f"{source}: output '{OUTPUT_NAME}' must be an integer tensor shaped [1, frames], "
                          f"the graph declares {_declared(units)}")


def _batch_of_one(shape: list | None) -> bool:
    """Rank 2 with a batch axis that is 1 or symbolic (a name, or unknown)."""
    return shape is not None and len(shape) == 2 and not (isinstance(shape[0], int) and shape[0] != 1)
