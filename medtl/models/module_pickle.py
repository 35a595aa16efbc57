"""The tensors of a checkpoint that pickles a whole ``nn.Module`` (torchxrayvision's DenseNet files),
read with ``torch.load(weights_only=True)`` and without the classes it names.

torchxrayvision publishes its X-ray DenseNets as ``torch.save(model)`` files (its loader calls
``torch.load(path).state_dict()``), which pickle the module objects: ``weights_only=True`` refuses
them, and loading them in full would run whatever the pickle names.  Here every class the file
names under :data:`STAND_IN_PREFIXES` (torchxrayvision's and torch.nn's module classes) is mapped,
through ``torch.serialization.safe_globals``, to an inert stand-in that only stores the state the
pickle gives it; tensors are rebuilt by torch's own weights-only unpickler, and any other global
still refuses the file.  The stand-ins' ``_parameters``, ``_buffers`` and ``_modules`` are then
flattened into the state dict ``nn.Module.state_dict()`` would give (persistent buffers only).

Both of torch's formats are read.  The zip archive (torch >= 1.6) pickles module classes as
plain globals.  The legacy stream (torch <= 1.5, the era of torchxrayvision's files) passes each
module class once as a persistent id ``('module', cls, source_file, source)``, which torch's
weights-only unpickler refuses; the stream is rewritten in memory so that such an id becomes a
call of :func:`_module_class` on the same tuple (insert a global before the tuple, replace the
``BINPERSID`` opcode by ``TUPLE1 REDUCE``): the same class, through an allowed function, with no
byte of tensor data moved.  Only protocol-2 streams (no frames), as legacy ``torch.save`` wrote
them, are rewritten.
"""
from __future__ import annotations

import io
import pickle
import pickletools
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..errors import WeightsError

#: globals under these prefixes become inert stand-ins (module classes, and the backend object
#: modules of torch < 1.3 carried); all others go to torch's own weights-only check
STAND_IN_PREFIXES = ("torchxrayvision.", "torch.nn.modules.", "torch.nn.backends.", "torchvision.models.")
_PID_CLASS = "medtl_module_pickle._module_class"


class ModuleStandIn:
    """Holds the pickled state of one module object; runs nothing of the class it stands in for."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._pickled_state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.__dict__["_pickled_state"] = state

    def state(self) -> Mapping[str, Any]:
        st = self.__dict__.get("_pickled_state")
        if isinstance(st, tuple) and st and isinstance(st[0], Mapping):  # (dict, slots)
            st = st[0]
        return st if isinstance(st, Mapping) else {}


def _stand_in(name: str) -> type:
    return type(name.rsplit(".", 1)[-1], (ModuleStandIn,), {"__module__": __name__})


def _module_class(pid: tuple) -> Any:
    """A legacy persistent id ``('module', cls, source_file, source)`` -> ``cls`` (a stand-in)."""
    return pid[1]


def _fail(path: Path, exc: BaseException) -> WeightsError:
    msg = " ".join(str(exc).split())[:200] or type(exc).__name__
    return WeightsError(f"{path}: not a readable checkpoint (corrupt or truncated?): {msg}")


def _ops(stream) -> list[tuple[Any, Any, int]]:
    strings: list[str] = []
    out = []
    for op, arg, pos in pickletools.genops(stream):
        if op.name == "STACK_GLOBAL" and len(strings) >= 2:
            arg = f"{strings[-2]} {strings[-1]}"
        if isinstance(arg, str):
            strings.append(arg)
        out.append((op, arg, pos))
    return out


def _globals(ops) -> set[str]:
    return {a.replace(" ", ".") for op, a, _ in ops if op.name in ("GLOBAL", "INST", "STACK_GLOBAL")
            and isinstance(a, str)}


def _legacy_rewrite(data: bytes, ops) -> bytes:
    """``data`` with every ``('module', cls, ...)`` persistent id of the main pickle (``ops``, with
    positions in ``data``) turned into ``_module_class(('module', cls, ...))``."""
    if any(op.name == "PROTO" and arg > 3 for op, arg, _ in ops):
        return data  # framed protocols are not what legacy torch.save wrote: left to refuse
    marks, mark_of, edits, memo = [], {}, [], {}
    for i, (op, arg, pos) in enumerate(ops):
        if op.name == "MARK":
            marks.append(i)
        elif pickletools.markobject in op.stack_before and marks:
            mark_of[i] = marks.pop()
        elif op.name in ("BINPUT", "LONG_BINPUT", "PUT") and isinstance(ops[i - 1][1], str):
            memo[arg] = ops[i - 1][1]  # a memoised string ('module' comes back as a memo get)
        if op.name != "BINPERSID":
            continue
        k = i - 1
        while k >= 0 and ops[k][0].name in ("BINPUT", "LONG_BINPUT", "PUT", "MEMOIZE"):
            k -= 1
        m = mark_of.get(k)
        first = ops[m + 1] if m is not None else None
        if first and first[0].name in ("BINGET", "LONG_BINGET", "GET"):
            first = (first[0], memo.get(first[1]), first[2])
        if ops[k][0].name == "TUPLE" and first and first[1] == "module":
            module, name = _PID_CLASS.rsplit(".", 1)
            edits += [(ops[m][2], 0, f"c{module}\n{name}\n".encode()), (pos, 1, b"\x85R")]
    out, last = [], 0
    for pos, cut, new in sorted(edits):
        out += [data[last:pos], new]
        last = pos + cut
    return b"".join(out + [data[last:]])


def _prepare(path: Path) -> tuple[Any, set[str]]:
    """(what ``torch.load`` reads, the globals the file names)."""
    data = path.read_bytes()
    if zipfile.is_zipfile(io.BytesIO(data)):
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            pkl = next(n for n in z.namelist() if re.fullmatch(r"([^/]+/)?data\.pkl", n))
            return io.BytesIO(data), _globals(_ops(io.BytesIO(z.read(pkl))))
    f = io.BytesIO(data)
    for _ in range(3):  # legacy: magic number, protocol version, sys info, then the object
        _ops(f)
    ops = _ops(f)
    return io.BytesIO(_legacy_rewrite(data, ops)), _globals(ops)


def flatten(obj: ModuleStandIn, prefix: str = "") -> dict[str, torch.Tensor]:
    """``state_dict()`` of a stood-in module tree: parameters, persistent buffers, then children."""
    st = obj.state()
    out: dict[str, torch.Tensor] = {}
    for k, v in (st.get("_parameters") or {}).items():
        if isinstance(v, torch.Tensor):
            out[prefix + k] = v.detach()
    skip = st.get("_non_persistent_buffers_set") or set()
    for k, v in (st.get("_buffers") or {}).items():
        if isinstance(v, torch.Tensor) and k not in skip:
            out[prefix + k] = v
    for k, child in (st.get("_modules") or {}).items():
        if isinstance(child, ModuleStandIn):
            out.update(flatten(child, f"{prefix}{k}."))
    return out


def read_module_checkpoint(path: str | Path) -> Any:
    """A pickled module's state dict, or the object itself when the file holds no module (a plain
    state dict).  Unreadable files and other pickled objects: one-line :class:`WeightsError`."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: file not found")
    try:
        stream, names = _prepare(path)
    except (StopIteration, ValueError, EOFError, OSError, zipfile.BadZipFile) as exc:
        raise _fail(path, exc) from None
    allowed = [(_stand_in(n), n) for n in sorted(names) if n.startswith(STAND_IN_PREFIXES)]
    try:
        with torch.serialization.safe_globals(allowed + [(_module_class, _PID_CLASS)]):
            obj = torch.load(stream, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = sorted(set(re.findall(r"GLOBAL ([\w.]+)", str(exc))))
        if found:
            raise WeightsError(f"{path}: refused: the checkpoint pickles objects that are neither tensors nor "
                               f"modules ({', '.join(found)}); medtl loads weights only with "
                               "weights_only=True") from None
        raise _fail(path, exc) from None
    except (RuntimeError, EOFError, ValueError, OSError, KeyError, IndexError, AttributeError, TypeError) as exc:
        raise _fail(path, exc) from None
    if isinstance(obj, ModuleStandIn):
        sd = flatten(obj)
        if not sd:
            raise WeightsError(f"{path}: the pickled module holds no tensors")
        return sd
    return obj
