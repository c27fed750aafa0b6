"""Source types: one validated model per ``type``, registered here, used for the YAML and for ``-a``.

A source type is a pydantic model (a subclass of :class:`SourceModel`, which holds the keys every
source has: ``name``, ``type``, ``contact``, ``concurrency``, ``delay``, ``recrawl_after``, ``seeds``)
registered with :func:`register_source_type`. The config loader (:mod:`holocron_scrapy.config`)
validates each ``sources:`` entry with the model its ``type`` names; a crawl validates the same
model again with the ``-a`` arguments merged in (:meth:`SourceModel.with_arguments`: the arguments
are strings, the model coerces them). A new source type is one new module: its model, its spider
(a :class:`~holocron_scrapy.spiders.base.HolocronSpider` whose ``source_type`` names the type) and
one ``register_source_type`` call; neither the config loader nor the base spider changes.

The built-in types (``http``, ``mediawiki``) register themselves in
``holocron_scrapy/spiders/http_source.py`` and ``holocron_scrapy/spiders/mediawiki_source.py``,
imported on the first look-up (:data:`BUILTIN_MODULES`).

Every problem is one :class:`~holocron_scrapy.errors.ConfigError` line naming the file, the key
(``sources[0].max_depth`` while the file is loaded, ``sources[name].max_depth`` when a crawl resolves
a value of the file, the bare argument name for a bad ``-a`` value) and the problem:
:func:`problem_of` turns pydantic's errors into today's wording. A validator that needs to name a
key below its field (``auth.type``) or another key raises ``ConfigError`` with the key relative to
the entry; it is prefixed here.

Settings read: none. Stats written: none.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, TypeVar

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import ErrorDetails

from holocron_scrapy import defaults
from holocron_scrapy.errors import ConfigError

#: Modules that register the built-in source types, imported on the first look-up.
BUILTIN_MODULES = ("holocron_scrapy.spiders.http_source", "holocron_scrapy.spiders.mediawiki_source")
#: The validation context of a crawl resolving a source (``-a`` merged in): checks a type defers
#: until then (see ``HttpSource``) run only with it.
CRAWL_CONTEXT = {"crawl": True}

M = TypeVar("M", bound="SourceModel")


# -- value types shared by the models ---------------------------------------------------------------
def _no_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError(f"expected an integer, got {value!r}")
    if isinstance(value, str):
        return value.strip()
    return value


def _non_empty(value: Any) -> Any:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("expected a non-empty string")
    return value.strip()


def at_least(low: float) -> AfterValidator:
    def check(value: Any) -> Any:
        if value < low:
            raise ValueError(f"must be at least {low:g}, got {value:g}")
        return value

    return AfterValidator(check)


def between(low: int, high: int) -> AfterValidator:
    def check(value: int) -> int:
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}, got {value}")
        return value

    return AfterValidator(check)


def _duration(value: Any) -> Any:
    if value is None or isinstance(value, float):
        return value
    from holocron_scrapy.config import parse_duration

    try:
        return parse_duration(value, key="")
    except ConfigError as exc:
        raise ValueError(exc.problem) from None


def _blank_false(value: Any) -> Any:
    return False if isinstance(value, str) and not value.strip() else value


#: An integer (a YAML int, or an ``-a`` or ``-s`` string such as ``"3"``); never a boolean.
Integer = Annotated[int, BeforeValidator(_no_bool)]
#: A number (``"0.5"`` too); never a boolean.
Number = Annotated[float, BeforeValidator(_no_bool)]
#: true/false, also ``"1"``, ``"yes"``, ``"off"`` ... (an empty string is false).
Boolean = Annotated[bool, BeforeValidator(_blank_false)]
#: A stripped, non-empty string.
Text = Annotated[str, BeforeValidator(_non_empty)]
#: ``90``, ``30s``, ``6h``, ``1d`` as seconds.
Duration = Annotated[float | None, BeforeValidator(_duration)]


def text_list(value: Any) -> Any:
    """A list of strings from a list, or from ``"a|b"`` (an ``-a`` value)."""
    if isinstance(value, str):
        return [part.strip() for part in value.split("|") if part.strip()]
    return value


# -- the common model -------------------------------------------------------------------------------
class SourceModel(BaseModel):
    """The keys every source has. A type subclasses it with its own keys, and says which of them an
    ``-a`` argument may set (:attr:`arguments`, default: none) and how (:meth:`argument_entry`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: ``-a`` names this type accepts besides the common ones (``source``, ``seeds``, ...).
    arguments: ClassVar[tuple[str, ...]] = ()
    #: Keys the entry may set that :attr:`options` leaves out (they hold secrets' names).
    private_keys: ClassVar[frozenset[str]] = frozenset({"auth"})
    #: What to say when a source of another type has one of this type's keys (default: "<key> is
    #: for <type> sources only").
    key_hints: ClassVar[dict[str, str]] = {}

    name: Text
    type: Text
    contact: Text | None = None
    concurrency: Annotated[Integer, between(1, 64)] = defaults.CONCURRENCY_PER_HOST
    delay: Annotated[Number, at_least(0)] = defaults.DOWNLOAD_DELAY
    recrawl_after: Duration = None
    seeds: tuple[Text, ...] = ()

    @field_validator("seeds", mode="before")
    @classmethod
    def _seed_list(cls, value: Any) -> Any:
        if value is None:
            return ()
        if not isinstance(value, (list, tuple)):
            raise ValueError("expected a list of strings")
        return value

    @classmethod
    def own_keys(cls) -> frozenset[str]:
        """The keys of this type only (not those of every source)."""
        return frozenset(cls.model_fields) - frozenset(SourceModel.model_fields)

    @property
    def options(self) -> dict[str, Any]:
        """The type's own keys the entry set (without :attr:`private_keys`)."""
        keys = (self.model_fields_set & self.own_keys()) - self.private_keys
        return {key: getattr(self, key) for key in sorted(keys)}

    def entry(self) -> dict[str, Any]:
        """The keys the entry set, with their validated values (validating them again is a no-op)."""
        return {key: getattr(self, key) for key in self.model_fields_set}

    @classmethod
    def argument_entry(cls, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """The entry keys the ``-a`` arguments set (strings; the model coerces them). Default: each
        argument of :attr:`arguments` given sets the key of its name."""
        return {name: kwargs[name] for name in cls.arguments if name in kwargs}

    @classmethod
    def argument_of(cls, key: str) -> str:
        """The ``-a`` argument behind entry key *key* (for error messages). Default: its first part."""
        return key.split(".", 1)[0]

    def with_arguments(self: M, kwargs: Mapping[str, Any], *, path: str | None = None) -> M:
        """This source with the ``-a`` arguments of its type merged in, validated by the same model.

        A bad value names the argument when an argument gave it, else ``sources[name].key`` of the
        file *path*."""
        try:
            updates = type(self).argument_entry(kwargs)
        except ConfigError as exc:  # raised naming the argument
            raise ConfigError(exc.problem, key=exc.key) from None
        data = _deep_merge(self.entry(), updates)
        given = {type(self).argument_of(key) for key in _paths(updates)} & set(kwargs)
        try:
            return type(self).model_validate(data, context=CRAWL_CONTEXT)
        except (ValidationError, ConfigError) as exc:
            key, problem = problem_of(type(self), exc)
            argument = type(self).argument_of(key) if key else ""
            if argument in given:
                raise ConfigError(problem, key=argument) from None
            where = f"sources[{self.name}]"
            raise ConfigError(problem, key=f"{where}.{key}" if key else where, source=path) from None


def _deep_merge(base: dict[str, Any], updates: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in updates.items():
        current = out.get(key)
        if isinstance(value, Mapping) and isinstance(current, (Mapping, BaseModel)):
            old = current.model_dump(exclude_unset=True) if isinstance(current, BaseModel) else dict(current)
            out[key] = _deep_merge(old, value)
        else:
            out[key] = value
    return out


def _paths(data: Mapping[str, Any], prefix: str = "") -> list[str]:
    paths = []
    for key, value in data.items():
        path = f"{prefix}{key}"
        paths.extend(_paths(value, path + ".") if isinstance(value, Mapping) and value else [path])
    return paths


# -- the registry -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class SourceType:
    """A registered type: its model, and its spider (a class or an import path; None: not said)."""

    name: str
    model: type[SourceModel]
    spider: Any = None


_REGISTRY: dict[str, SourceType] = {}
_builtins_loaded = False


def register_source_type(name: str, model: type[SourceModel], spider: Any = None) -> SourceType:
    """Register *model* for sources of ``type: name`` (again: replaces it). Returns the entry."""
    if not (isinstance(model, type) and issubclass(model, SourceModel)):
        raise TypeError(f"the model of source type {name!r} must subclass SourceModel, got {model!r}")
    entry = SourceType(name, model, spider)
    _REGISTRY[name] = entry
    return entry


def unregister_source_type(name: str) -> None:
    """Forget *name* (tests register types of their own)."""
    _REGISTRY.pop(name, None)


def _load_builtins() -> None:
    global _builtins_loaded
    if not _builtins_loaded:
        _builtins_loaded = True
        for module in BUILTIN_MODULES:
            importlib.import_module(module)


def source_types() -> dict[str, SourceType]:
    """Every registered type by name (the built-in ones included)."""
    _load_builtins()
    return dict(_REGISTRY)


def source_type(name: str) -> SourceType:
    """The registered type *name*; ConfigError (key ``type``) listing the known ones otherwise."""
    types = source_types()
    if name not in types:
        raise ConfigError(f"expected one of {', '.join(sorted(types))}, got {name!r}", key="type")
    return types[name]


def validate_source(raw: Any, *, key: str, path: str) -> SourceModel:
    """Validate one ``sources:`` entry (``raw``, from the YAML) with the model of its ``type``; a
    problem names *path*, ``key.<field>`` and the problem."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"expected a mapping, got {type(raw).__name__}", key=key, source=path)
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ConfigError("expected a non-empty string", key=f"{key}.name", source=path)
    types = source_types()
    kind = raw.get("type")
    if not isinstance(kind, str) or kind not in types:
        raise ConfigError(f"expected one of {', '.join(sorted(types))}, got {kind!r}", key=f"{key}.type", source=path)
    model = types[kind].model
    try:
        return model.model_validate(dict(raw))
    except (ValidationError, ConfigError) as exc:
        field, problem = problem_of(model, exc)
        raise ConfigError(problem, key=f"{key}.{field}" if field else key, source=path) from None


def ad_hoc_source(model: type[M], **fields: Any) -> M:
    """A source that is not in the config (``-a seeds`` alone, ``-a api_url``): built from arguments, so
    a problem names the argument."""
    try:
        return model.model_validate(fields)
    except (ValidationError, ConfigError) as exc:
        key, problem = problem_of(model, exc)
        raise ConfigError(problem, key=model.argument_of(key) if key else None) from None


class CommonArguments(BaseModel):
    """The ``-a`` arguments of every holocron spider that are not source keys."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    recrawl_after: Duration = None
    full_refresh: Boolean = False


def common_arguments(kwargs: Mapping[str, Any]) -> CommonArguments:
    """Validate the common ``-a`` arguments; a problem names the argument."""
    try:
        return CommonArguments.model_validate(dict(kwargs))
    except ValidationError as exc:
        key, problem = problem_of(CommonArguments, exc)
        raise ConfigError(problem, key=key) from None


# -- pydantic's errors in our words -----------------------------------------------------------------
def problem_of(model: type[BaseModel], exc: ValidationError | ConfigError) -> tuple[str, str]:
    """``(key relative to the entry, problem)`` of the first error of *exc*."""
    if isinstance(exc, ConfigError):
        return exc.key or "", exc.problem
    error = exc.errors(include_url=False)[0]
    loc = [str(part) for part in error["loc"] if not isinstance(part, int)]
    return ".".join(loc), _problem(model, loc, error)


def _value(expected: str) -> Callable[[ErrorDetails], str]:
    return lambda e: f"expected {expected}, got {e['input']!r}"


def _kind(expected: str) -> Callable[[ErrorDetails], str]:
    return lambda e: f"expected {expected}, got {type(e['input']).__name__}"


_FORMATS: dict[str, Callable[[ErrorDetails], str]] = {
    **dict.fromkeys(("int_type", "int_parsing", "int_from_float"), _value("an integer")),
    **dict.fromkeys(("float_type", "float_parsing"), _value("a number")),
    **dict.fromkeys(("bool_type", "bool_parsing"), _value("true or false")),
    **dict.fromkeys(("string_type", "string_too_short"), lambda e: "expected a non-empty string"),
    "greater_than_equal": lambda e: f"must be at least {e.get('ctx', {}).get('ge')}, got {e['input']!r}",
    "less_than_equal": lambda e: f"must be at most {e.get('ctx', {}).get('le')}, got {e['input']!r}",
    **dict.fromkeys(("dict_type", "model_type", "model_attributes_type"), _kind("a mapping")),
    **dict.fromkeys(("list_type", "tuple_type"), _kind("a list")),
    "literal_error": lambda e: f"expected {e.get('ctx', {}).get('expected')}, got {e['input']!r}",
}


def _problem(model: type[BaseModel], loc: list[str], error: ErrorDetails) -> str:
    kind = error["type"]
    if kind in ("value_error", "assertion_error"):
        return str(error.get("ctx", {}).get("error", error["msg"]))
    if kind == "missing":
        field = _field(model, loc)
        return "required: expected a non-empty string" if field is not None and _is_text(field) else "required"
    if kind == "extra_forbidden":
        parent = _model_at(model, loc[:-1])
        allowed = ", ".join(sorted(parent.model_fields)) if parent is not None else "?"
        key = loc[-1]
        if len(loc) == 1 and issubclass(model, SourceModel):
            types = source_types().items()
            owners = sorted((n, t.model) for n, t in types if key in t.model.model_fields and t.model is not model)
            hints = [owner.key_hints[key] for _, owner in owners if key in owner.key_hints]
            if owners:
                names = " and ".join(n for n, _ in owners)
                hint = hints[0] if len(hints) == 1 else f"{key} is for {names} sources only"
                return f"{hint} (allowed here: {allowed})"
        return f"unknown key (allowed: {allowed})"
    format_ = _FORMATS.get(kind)
    return format_(error) if format_ is not None else error["msg"]


def _model_at(model: type[BaseModel], loc: list[str]) -> type[BaseModel] | None:
    current: Any = model
    for part in loc:
        field = current.model_fields.get(part) if isinstance(current, type) and issubclass(current, BaseModel) else None
        if field is None:
            return None
        current = _model_in(field.annotation)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _model_in(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _field(model: type[BaseModel], loc: list[str]) -> Any:
    parent = _model_at(model, loc[:-1])
    return parent.model_fields.get(loc[-1]) if parent is not None and loc else None


def _is_text(field: Any) -> bool:
    validators = (m for m in field.metadata if isinstance(m, BeforeValidator))
    return field.annotation is str or any(m.func is _non_empty for m in validators)


__all__ = [
    "Boolean",
    "CRAWL_CONTEXT",
    "CommonArguments",
    "ad_hoc_source",
    "common_arguments",
    "Duration",
    "Field",
    "Integer",
    "Number",
    "SourceModel",
    "SourceType",
    "Text",
    "at_least",
    "between",
    "problem_of",
    "register_source_type",
    "source_type",
    "source_types",
    "text_list",
    "unregister_source_type",
    "validate_source",
]
