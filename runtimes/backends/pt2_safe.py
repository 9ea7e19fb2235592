"""Loading an ExportedProgram (.pt2) with nothing in the file unpickled and no code from the file run.

`torch.export.load` (torch 2.13) can run code from the file it loads:
  - sample inputs (data/sample_inputs/<model>.pt), the legacy weights and constants files
    (data/weights/<model>.pt, data/constants/<model>.pt) and the pre-2.8 archive layout go through
    `deserialize_torch_artifact`, which retries `torch.load(weights_only=False)` when the safe load fails;
  - weights and tensor constants flagged `use_pickle` in their payload config: `torch.load(weights_only=False)`;
  - opaque-object constants: `pickle.loads`; torchbind custom objects: `torch._C._pickle_load_obj`;
  - data/aotinductor/<model>/: a compiled shared library, loaded by `AOTIModelPackageLoader`;
  - models/<model>.json: symbolic shapes through `sympy.sympify` (an `eval`), `guards_code` pasted into Python
    source that `.module()` execs, node names pasted into the generated forward, and operator targets that are
    any attribute chain under `torch`, `math` or `operator` (e.g. a route to `os.system`), called when run.
Here the archive is read once into memory; only the members `torch.export.save` writes for a plain model are
accepted; payload configs must name raw tensor records (never a pickle); sample inputs are never read; the JSON's
symbolic expressions and guards must parse to plain arithmetic on the inputs' sizes; and after deserialization
every graph node must be a torch operator with an identifier for a name. Anything else is a BundleError.
"""
from __future__ import annotations

import ast
import functools
import io
import json
import keyword
import re
from pathlib import Path

from runtimes.errors import BundleError

MODEL = "model"
_FIX = "re-export the bundle with `neat export` (target exported) from a trusted model"
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_NUMBER = re.compile(r"[-+]?[0-9.eE+-]+\Z")
_MEMBERS = (r"archive_format|archive_version|byteorder|\.data/version|\.data/serialization_id|models/model\.json"
            r"|data/weights/model_weights_config\.json|data/weights/weight_[0-9]+"
            r"|data/constants/model_constants_config\.json|data/constants/tensor_[0-9]+"
            r"|data/sample_inputs/model\.pt|extra/[A-Za-z0-9_.-]+")
_SYMPY_CALLS = {"Symbol", "Integer", "Float", "Rational", "Add", "Mul", "Pow", "Max", "Min", "Mod", "Abs", "floor",
                "ceiling", "sqrt", "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "Equality", "Unequality", "StrictLessThan",
                "StrictGreaterThan", "LessThan", "GreaterThan", "And", "Or", "Not", "Piecewise", "ITE", "Tuple"}
_SIZE_ATTRS = {"size", "stride", "storage_offset", "dim", "numel", "isnan", "isinf", "isfinite", "inf", "nan",
               "floor", "ceil", "trunc", "sqrt", "pi", "e", "log", "exp", "pow"}
_ARITH = (ast.Expression, ast.BoolOp, ast.BinOp, ast.UnaryOp, ast.Compare, ast.Call, ast.Name, ast.Load,
          ast.Constant, ast.keyword, ast.operator, ast.unaryop, ast.boolop, ast.cmpop, ast.Tuple)


def _refuse(path: Path, what: str) -> BundleError:
    return BundleError(f"{path} is refused: {what}. Loading it could run code from the file; {_FIX}")


def _check_expr(text: str, calls: set, names: set, attrs: set, path: Path, where: str) -> None:
    """`text` must parse to arithmetic/comparisons over allowed names, calls, attributes and subscripts of L."""
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError):
        raise _refuse(path, f"{where} {text[:80]!r} is not an expression") from None
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in attrs:
            continue
        if isinstance(node, ast.Subscript) and attrs:
            continue  # L['name'][i].size()[k]: the index itself is checked as a node of its own
        ok = isinstance(node, _ARITH)
        if isinstance(node, ast.Name):
            ok = node.id in names or node.id in calls or (not attrs and bool(_IDENT.match(node.id))
                                                            and not node.id.startswith("_"))
        elif isinstance(node, ast.Call):
            fn = node.func
            ok = (isinstance(fn, ast.Name) and fn.id in calls) or (isinstance(fn, ast.Attribute) and fn.attr in attrs)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            ok = bool(_IDENT.match(node.value) or _NUMBER.match(node.value))
        elif isinstance(node, ast.keyword):
            ok = node.arg is not None and isinstance(node.value, ast.Constant) and isinstance(node.value.value, bool)
        if not ok:
            raise _refuse(path, f"{where} {text[:80]!r} holds {type(node).__name__}, not plain shape arithmetic")


def _check_program_json(doc: dict, path: Path) -> None:
    """Symbolic expressions (sympify'd) and guards (exec'd by .module()) must be plain arithmetic."""
    from torch.fx.experimental.symbolic_shapes import SYMPY_INTERP

    def walk(x):
        if isinstance(x, dict):
            for k, v in x.items():
                if k == "expr_str":
                    if not isinstance(v, str):
                        raise _refuse(path, "a symbolic expression is not a string")
                    _check_expr(v, _SYMPY_CALLS, set(), set(), path, "symbolic expression")
                else:
                    walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    walk(doc)
    guard_calls = {k for k in SYMPY_INTERP if _IDENT.match(k) and not k.startswith("_")}
    for guard in doc.get("guards_code") or []:
        if not isinstance(guard, str):
            raise _refuse(path, "a guard is not a string")
        _check_expr(guard, guard_calls, {"L", "math", "inf", "True", "False"}, _SIZE_ATTRS, path, "guard")


def _check_configs(reader, path: Path) -> None:
    for name, prefix in (("data/weights/model_weights_config.json", "weight_"),
                         ("data/constants/model_constants_config.json", "tensor_")):
        try:
            config = json.loads(reader.read_string(name)).get("config")
        except Exception as exc:
            raise _refuse(path, f"its {name} is missing or not JSON ({type(exc).__name__})") from None
        if not isinstance(config, dict):
            raise _refuse(path, f"its {name} has no config mapping")
        for fqn, meta in config.items():
            if not isinstance(meta, dict) or meta.get("use_pickle") is not False or not meta.get("tensor_meta"):
                raise _refuse(path, f"{name} stores {fqn!r} as a pickle or without tensor metadata")
            if not (isinstance(meta.get("path_name"), str) and meta["path_name"].startswith(prefix)):
                raise _refuse(path, f"{name} stores {fqn!r} as {meta.get('path_name')!r}, not a raw tensor record")


def _check_graph(gm, path: Path) -> None:
    """After deserialization: every node a torch operator (or operator/math/sym function), every name an
    identifier, before `.module()` pastes them into Python source."""
    import math
    import operator

    import torch

    allowed = (torch._ops.OpOverload, torch._ops.OpOverloadPacket, torch._ops.HigherOrderOperator)
    modules = {operator.__name__, "_operator", math.__name__}
    for mod in gm.modules():
        graph = getattr(mod, "graph", None)
        for node in graph.nodes if graph is not None else ():
            names = [node.name] + ([node.target] if node.op == "placeholder" else [])
            names += list(node.kwargs)
            if not all(isinstance(n, str) and _IDENT.match(n) and not keyword.iskeyword(n) for n in names):
                raise _refuse(path, f"graph node {str(node.name)[:60]!r} has a name that is not an identifier")
            if node.op in ("call_method", "call_module"):
                raise _refuse(path, f"graph node {node.name} is a {node.op}, which export never writes")
            if node.op != "call_function":
                continue
            t = node.target
            sym = getattr(t, "__module__", None) == "torch" and getattr(t, "__name__", "").startswith(("sym_", "_sym_"))
            if not (isinstance(t, allowed) or sym or (callable(t) and getattr(t, "__module__", None) in modules)):
                raise _refuse(path, f"graph node {node.name} calls {str(t)[:60]!r}, not a torch operator")


@functools.lru_cache(maxsize=1)
def _schema_reader():
    """JSON -> torch's export schema dataclasses, as torch's own `_dict_to_dataclass` reads it, with what each
    annotation means worked out once per class (torch resolves the type hints again at every node: about half of
    the load time of a large program, 4 of 8 s for the shipped NEAT's chunk forward). Made once per process: a
    bundle's chunk forward and its methods share the plans."""
    import dataclasses
    import types
    import typing

    from torch._export.serde import schema
    from torch._export.serde.serialize import _resolve_schema_cls
    from torch._export.serde.union import _Union

    @functools.lru_cache(maxsize=None)
    def plan(annotation):
        cls = _resolve_schema_cls(annotation)
        origin, args = typing.get_origin(cls), typing.get_args(cls)
        if origin is typing.Annotated:
            return plan(cls.__origin__)
        if origin in (typing.Union, types.UnionType) and type(None) in args:
            return "optional", args[0]
        if isinstance(cls, type) and issubclass(cls, _Union):
            return "union", cls, typing.get_type_hints(cls, globalns=vars(schema))
        if dataclasses.is_dataclass(cls):
            hints = typing.get_type_hints(cls, globalns=vars(schema))
            return "dataclass", cls, tuple((f.name, hints[f.name]) for f in dataclasses.fields(cls))
        return "value", cls, args

    def read(annotation, data):
        kind, *how = plan(annotation)
        if kind == "optional":
            return None if data is None else read(how[0], data)
        if kind == "union":  # {tag: value}, exactly one
            ((tag, value),) = data.items()
            return how[0].create(**{tag: read(how[1][tag], value)})
        if kind == "dataclass":  # keys the schema does not know are ignored, as torch does
            return how[0](**{name: read(hint, data[name]) for name, hint in how[1] if name in data})
        cls, args = how
        if isinstance(data, list):
            return [read(args[0], d) for d in data]
        if isinstance(data, dict):
            return {k: read(args[1], v) for k, v in data.items()}
        return float(data) if cls is float else data

    return read


def load_program(path: Path):
    """The ExportedProgram saved at `path` by `torch.export.save`, loaded without unpickling or running its code."""
    from torch._export.serde import schema
    from torch._export.serde.serialize import ExportedProgramDeserializer
    from torch.export.pt2_archive import _package as pkg
    from torch.export.pt2_archive.constants import ARCHIVE_VERSION_PATH, ARCHIVE_VERSION_VALUE

    path = Path(path)
    data = path.read_bytes()  # one read: the checks and the load see the same bytes
    try:
        reader = pkg.PT2ArchiveReader(io.BytesIO(data))
        members = list(reader.get_file_names())
        version = reader.read_string(ARCHIVE_VERSION_PATH)
    except Exception as exc:
        raise BundleError(f"{path} is not a PT2 archive ({type(exc).__name__}: {str(exc)[:120]}); {_FIX}") from None
    if version != ARCHIVE_VERSION_VALUE:
        raise BundleError(f"{path} is PT2 archive version {version[:20]!r}, this PyTorch reads "
                          f"{ARCHIVE_VERSION_VALUE!r}; {_FIX}")
    strange = [m for m in members if not re.fullmatch(_MEMBERS, m)]
    if strange:
        raise _refuse(path, f"it holds {strange[0]!r}, which a plain `torch.export.save` of one model never writes "
                            f"(AOTInductor code, a pickled object, a legacy layout or another model)")
    _check_configs(reader, path)
    try:
        doc = json.loads(reader.read_string(f"models/{MODEL}.json"))
        if not isinstance(doc, dict):
            raise ValueError("not a JSON object")
    except Exception as exc:
        raise _refuse(path, f"its models/{MODEL}.json is missing or not a JSON object ({type(exc).__name__})") from None
    _check_program_json(doc, path)
    try:
        serialized = _schema_reader()(schema.ExportedProgram, doc)
        state_dict = pkg._load_state_dict(reader, MODEL)  # configs checked: raw records only, no torch.load
        constants = pkg._load_constants(reader, MODEL)
        if not isinstance(state_dict, dict) or not isinstance(constants, dict):
            raise ValueError("legacy pickled weights")
        program = ExportedProgramDeserializer().deserialize(serialized, state_dict, constants, None)
    except BundleError:
        raise
    except Exception as exc:
        raise BundleError(f"{path} could not be read as an ExportedProgram ({type(exc).__name__}: "
                          f"{str(exc)[:160]}); {_FIX}") from None
    _check_graph(program.graph_module, path)
    return program
