"""Reading weights files without executing pickled code.

The released SelaVPR checkpoints carry numpy objects (``recalls`` array, ``best_r5`` scalar),
so the reference loads them with ``weights_only=False``, which runs arbitrary pickle code. We
load with ``weights_only=True`` and allow exactly the numpy globals those files need, under
both spellings (numpy 1.x pickles say ``numpy.core.multiarray``, numpy 2 says
``numpy._core.multiarray`` and builds dtypes of classes such as ``numpy.dtypes.Float64DType``).
Anything else is refused with the offending global named.
"""

from __future__ import annotations

import pickle
import pickletools
import re
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from selavpr_ros.errors import CheckpointError

# Plain numeric dtypes only: object, string, void and datetime dtypes are left out.
_NUMERIC_DTYPE_CLASSES = (
    "BoolDType", "Int8DType", "Int16DType", "Int32DType", "Int64DType",
    "UInt8DType", "UInt16DType", "UInt32DType", "UInt64DType",
    "ByteDType", "UByteDType", "ShortDType", "UShortDType", "IntDType", "UIntDType",
    "LongDType", "ULongDType", "LongLongDType", "ULongLongDType",
    "Float16DType", "Float32DType", "Float64DType", "LongDoubleDType",
    "Complex64DType", "Complex128DType", "CLongDoubleDType",
)  # fmt: skip


def _multiarray() -> Any:
    core = getattr(np, "_core", None)
    if core is not None and hasattr(core, "multiarray"):
        return core.multiarray
    # numpy < 1.26 only, where np.core is public; the pinned numpy 2 stubs no longer declare it
    return np.core.multiarray  # type: ignore[attr-defined]


def allowed_numpy_globals() -> list[Callable[..., Any] | tuple[Callable[..., Any], str]]:
    """Return the allow-list for ``torch.load(weights_only=True)``, as (object, pickled name)."""
    multiarray = _multiarray()
    allowed: list[Callable[..., Any] | tuple[Callable[..., Any], str]] = []
    for name in ("_reconstruct", "scalar"):
        fn = getattr(multiarray, name)
        for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            allowed.append((fn, f"{module}.{name}"))
    allowed += [(np.ndarray, "numpy.ndarray"), (np.dtype, "numpy.dtype")]
    dtypes = getattr(np, "dtypes", None)
    for cls_name in _NUMERIC_DTYPE_CLASSES:
        cls = getattr(dtypes, cls_name, None) if dtypes is not None else None
        if cls is not None:
            allowed.append((cls, f"numpy.dtypes.{cls_name}"))
    return allowed


def allowed_global_names() -> set[str]:
    return {entry[1] for entry in allowed_numpy_globals() if isinstance(entry, tuple)}


_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def _unpickler_detail(err: Exception) -> str:
    """Return the specific line of torch's long weights-only error, without its advice.

    torch suggests re-running with ``weights_only=False``, i.e. executing the file's code;
    that advice is dropped here on purpose.
    """
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    specific = [
        ln.split("WeightsUnpickler error:", 1)[-1].strip()
        for ln in lines
        if "weights_only" not in ln.lower()
        and "weights only load failed" not in ln.lower()
        and not ln.startswith("Check the documentation")
    ]
    specific = [ln for ln in specific if ln]
    return specific[0] if specific else type(err).__name__


def _pickle_globals(path: Path) -> set[str]:
    """Every global a plain pickle file names, read from its opcodes (nothing is run)."""
    names: set[str] = set()
    strings: list[str] = []
    with open(path, "rb") as f:
        for opcode, arg, _ in pickletools.genops(f):
            if opcode.name in ("GLOBAL", "INST"):
                names.add(str(arg).replace(" ", "."))
            elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                names.add(f"{strings[-2]}.{strings[-1]}")
            elif isinstance(arg, str):
                strings.append(arg)
            if opcode.name == "STOP":
                break
    return names - {"torch._utils._rebuild_tensor_v2", "collections.OrderedDict"}


def _refusal(path: Path, err: Exception) -> CheckpointError:
    """Name the globals that made the safe unpickler refuse the file."""
    detail = _unpickler_detail(err)
    names = set(_GLOBAL.findall(str(err)))
    try:
        if zipfile.is_zipfile(path):
            names |= set(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
        else:
            names |= _pickle_globals(path)
    except Exception:  # noqa: BLE001 - only used to improve the message
        pass
    extra = sorted(names - allowed_global_names())
    if extra:
        detail = f"it needs the non-allow-listed global{'s' if len(extra) > 1 else ''} " + (
            ", ".join(extra))
    elif "global" not in detail.lower() and "can only build" not in detail.lower():
        return CheckpointError(f"{path}: not a readable torch checkpoint ({detail})")
    return CheckpointError(
        f"{path}: refusing to load: {detail}. Only tensors, plain containers and numpy "
        "arrays/scalars are accepted (no pickled objects or code)."
    )


def torch_load_safe(path: str | Path) -> Any:
    """``torch.load`` a .pth/.pt file onto the CPU with the numpy allow-list, memory-mapped.

    Raises:
        CheckpointError: missing file, not a torch file, or a pickle that needs other globals.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    is_zip = zipfile.is_zipfile(path)
    try:
        with torch.serialization.safe_globals(allowed_numpy_globals()), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
    except pickle.UnpicklingError as err:
        raise _refusal(path, err) from err
    except (RuntimeError, EOFError, ValueError, OSError) as err:
        detail = _unpickler_detail(err)
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({detail})") from err
