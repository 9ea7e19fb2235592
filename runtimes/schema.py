"""The manifest's schema, declared (pydantic v2, strict): what each field of manifest.json must be.

runtimes.manifest reads the file (size cap, JSON, schema and version) and builds its dataclasses from what
this schema accepted; every refusal is one BundleError line naming the place (`bundle_error`). Strict: no
coercion ("1" is not 1, true is not a number). Unknown keys are allowed and ignored here: the manifest's
`model` and `signature` are carried as they are in the file, an artifact's toolchain, requirements and
settings too; the keys of a parity this version does not know are dropped (as the dataclass has no place
for them). Rules across fields (an artifact's key names its target and precision, decode roles name the
signature's methods, image tokens come with a codebook) are validators of the models they span.

Imported on the first parse (runtimes.manifest), not with `runtimes`: pydantic and these models cost ~75 ms
to import (numpy already loaded).
"""
from typing import Annotated, Any, Literal, Optional

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from runtimes.decode import name_problem, roles_problem
from runtimes.errors import BundleError
from runtimes.manifest import DTYPE_NAMES, MAX_DIM, PLAIN, REQUIREMENTS, SHA256, VERDICTS, _printable, artifact_key

FIX = "re-export the bundle with `neat export`"


def refuse(should: str, at: str = ""):
    """A refusal of the value at this place (or at `at` under it): '<place> should be <should>'."""
    return PydanticCustomError("neat", "{should}", {"should": should, "at": at})


def refuse_line(line: str):
    """A refusal that says it all in one line of its own (it names the place itself)."""
    return PydanticCustomError("neat_line", "{line}", {"line": line})


def rule(test, should: str) -> AfterValidator:
    """A declared rule on an already typed value, with what the value should be, in words."""
    def check(value):
        if not test(value):
            raise refuse(should)
        return value
    return AfterValidator(check)


def _plain_path(p: str) -> bool:
    """A POSIX path relative to the bundle, of plain segments: never absolute, never up or out of it."""
    parts = p.split("/")
    return p.isprintable() and "\\" not in p and all(s not in ("", ".", "..") for s in parts)


def _shape(shape: list) -> bool:
    return len(shape) <= 16 and all((type(d) is int and 0 <= d <= MAX_DIM) or (j == 0 and d == "batch")
                                    for j, d in enumerate(shape))


Whole = Annotated[int, Field(ge=0, le=MAX_DIM)]
Signed = Annotated[int, Field(ge=-MAX_DIM, le=MAX_DIM)]
Count = Annotated[int, Field(ge=1, le=MAX_DIM)]
Path = Annotated[str, rule(_plain_path, "a plain relative path inside the bundle (printable; no '..', '.', "
                                        "empty or absolute part, no backslash)")]
Sha256 = Annotated[str, rule(SHA256.fullmatch, "64 lower-case hex digits")]
Shape = Annotated[list, rule(_shape, 'a list of at most 16 sizes (whole numbers), "batch" first when batched')]
Range = Annotated[list[Signed], rule(lambda r: len(r) == 2 and r[0] < r[1], "[low, high): two whole numbers, low < high")]

# A field typed X with the default None may be absent, but not null: defaults are not validated, and a
# strict X refuses a null in the file. Optional[X] = None allows null too.


class Schema(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


class FileSpec(Schema):
    path: Path
    sha256: Sha256
    size: Annotated[int, Field(ge=0)]


class ParitySpec(Schema):
    verdict: Literal[VERDICTS]
    method: str
    tolerance: dict = {}
    cases: list[dict] = []  # each case an object: name, batch, chunks, metrics
    worst: dict = {}
    notes: str = ""


def _requirements(req: dict) -> dict:
    """Each value of the type its backend reads (REQUIREMENTS); any other a string, a whole number or a list
    of strings."""
    for key, value in req.items():
        kind = REQUIREMENTS.get(key)
        plain = isinstance(value, str) or (type(value) is int and -MAX_DIM <= value <= MAX_DIM) or (
            isinstance(value, list) and all(isinstance(v, str) for v in value))
        if not plain or (kind is not None and not isinstance(value, kind)):
            raise refuse({str: "a string", list: "a list of strings"}.get(
                kind, "a string, a whole number or a list of strings"), f".{key}")
    return req


Requirements = Annotated[dict[str, Any], AfterValidator(_requirements)]


class ArtifactSpec(Schema):
    target: str
    precision: str
    files: list[FileSpec]
    toolchain: dict
    requirements: Requirements
    build_seconds: Annotated[float, Field(ge=0, allow_inf_nan=False)]  # an int is taken as its float
    parity: ParitySpec
    settings: dict = {}
    methods: dict[str, ParitySpec] = {}
    decode: Optional[ParitySpec] = None


class TensorSpec(Schema):
    name: Annotated[str, Field(min_length=1)]
    dtype: Literal[DTYPE_NAMES]
    shape: Shape
    range: Range = None


class Entry(Schema):
    """An entry point's tensors: inputs, state, outputs."""
    inputs: list[TensorSpec]
    state: list[TensorSpec]
    outputs: list[TensorSpec]


class Batch(Schema):
    min: Count
    max: Count

    @model_validator(mode="after")
    def ordered(self):
        if self.min > self.max:
            raise refuse("{min, max} with min <= max")
        return self


class Dynamic(Schema):
    batch: Batch = None


class SignatureSpec(Entry):
    dynamic: Dynamic = None
    methods: dict[str, Entry] = None
    decode: dict[str, Any] = None
    init_state: Optional[FileSpec] = None

    @field_validator("methods", mode="before")
    @classmethod
    def method_names(cls, methods):  # before their tensors: a name is a directory of every artifact
        for name in methods if isinstance(methods, dict) else ():
            if name_problem(name):
                raise refuse_line(f"signature.methods: {name_problem(name)}; re-export the bundle")
        return methods

    @model_validator(mode="after")
    def roles(self):
        why = roles_problem(self.decode or {}, list(self.methods or {}))
        if why:
            raise refuse_line(f"signature.decode: {why}; re-export the bundle")
        return self


class Tokens(Schema):
    bytes: Whole = None
    pad: Whole = None
    bos: Whole = None
    eos: Whole = None
    boi: Whole = None
    eoi: Whole = None
    first_code: Whole = None
    codes: Whole = None
    image_grid: Whole = None
    patch_px: Whole = None
    codebook: Annotated[list[list[float]], Field(min_length=1)] = None

    @model_validator(mode="after")
    def image(self):  # image spans are decoded through the codebook
        if self.first_code is None and self.eoi is None:
            return self
        grid, px = self.image_grid, self.patch_px
        if not (grid is not None and px is not None and 1 <= grid <= 64 and 1 <= px <= 64):
            raise refuse("image_grid and patch_px (whole numbers 1..64) with first_code and eoi")
        if self.codebook is None or any(len(c) != px * px for c in self.codebook):
            raise refuse(f"a non-empty list of codes of {px}x{px} numbers each", ".codebook")
        return self


class ModelSpec(Schema):
    name: str = None
    config: dict = None
    weights_sha256: str = None
    reference_loader: str = None
    tokens: Tokens = None
    reference: Optional[FileSpec] = None


class ManifestSpec(Schema):
    """The whole manifest past its header (schema and schema_version, checked before it)."""
    model: ModelSpec
    signature: SignatureSpec
    artifacts: dict[str, ArtifactSpec]
    updated: str = ""

    @model_validator(mode="after")
    def keys_and_methods(self):
        methods = set(self.signature.methods or {})
        for key, a in self.artifacts.items():
            if not (PLAIN.fullmatch(a.target) and PLAIN.fullmatch(a.precision)) or key != artifact_key(a.target, a.precision):
                raise refuse_line(f"artifact key {key!r} must be <target>-<precision> of plain lower-case names (it "
                                  "is a directory of the bundle); the manifest was tampered with")
            if set(a.methods) - methods:
                raise refuse_line(f"artifacts.{key}.methods must map method names of signature.methods to their "
                                  "parity; re-export the bundle")
        return self


FILE = TypeAdapter(FileSpec)
REQUIREMENTS_ADAPTER = TypeAdapter(Requirements, config=Schema.model_config)

# what a value of each refused type should be, in words
SHOULD = {"dict_type": "an object", "model_type": "an object", "model_attributes_type": "an object",
          "list_type": "a list", "string_type": "a string", "int_type": "a whole number", "float_type": "a number",
          "bool_type": "true or false", "finite_number": "a finite number", "string_too_short": "a non-empty string"}


def _place(where: str, loc) -> str:
    place = where
    for k in loc:
        place += f"[{k}]" if isinstance(k, int) else (f".{k}" if place else str(k))
    return place


def bundle_error(exc: ValidationError, where: str = "") -> BundleError:
    """The first of a ValidationError's errors as one line: the place in the manifest, what it should be,
    and the fix."""
    e = exc.errors(include_url=False)[0]
    kind, ctx, loc = e["type"], e.get("ctx") or {}, tuple(e["loc"])
    place = _place(where, loc)
    if kind == "neat_line":
        line = ctx["line"]
    elif kind == "missing":
        line = f"{_place(where, loc[:-1]) or 'the top level'} has no '{loc[-1]}'; {FIX}"
    elif kind == "literal_error":
        line = f"{place} must be one of {ctx.get('expected')}; {FIX}"
    else:
        if kind == "neat":
            should, place = ctx["should"], place + ctx.get("at", "")
        elif kind in SHOULD:
            should = SHOULD[kind]
        elif "ge" in ctx or "le" in ctx:
            bound = ctx.get("ge", ctx.get("le"))
            bound = int(bound) if isinstance(bound, float) and bound.is_integer() else bound
            should = f"at least {bound}" if "ge" in ctx else f"at most {bound}"
        elif "max_length" in ctx:
            should = f"at most {ctx['max_length']} long"
        else:
            should = str(e["msg"]).removeprefix("Input should be ")
        line = f"{place or 'the manifest'} should be {should}; {FIX}"
    return BundleError(_printable(f"manifest: {line}"))
