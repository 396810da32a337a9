"""Marshmallow schemas built from the annotated `__init__` parameters of platforms and storage backends, and
the discovery of the storage backends (a storage setting's schema is built from theirs)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import inspect
import logging
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

from marshmallow import Schema, fields, validate
from marshmallow import ValidationError as MarshmallowError

import storage
from collector.errors import ContractError, SettingError
from collector.masking import MASK
from collector.types import Secret, parse_date, parse_datetime
from storage.base import Storage

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Setting:
    """One setting as `GET /platforms/get` describes it."""

    name: str
    type: str
    required: bool
    default: Any = None
    choices: list[Any] | None = None
    secret: bool = False
    items: str | None = None
    backends: dict[str, list[dict[str, Any]]] | None = None

    @property
    def secret_mapping(self) -> bool:
        """A `dict[str, Secret]`: its keys are plain, every value is a secret."""
        return self.secret and self.type == "object"

    def describe(self) -> dict[str, Any]:
        shown: dict[str, Any] = {"name": self.name, "type": self.type, "required": self.required}
        if not self.required:
            shown["default"] = masked_secret(self.default, mapping=self.secret_mapping) if self.secret \
                else self.default
        for extra in ("choices", "items", "backends"):
            if getattr(self, extra) is not None:
                shown[extra] = getattr(self, extra)
        shown["secret"] = self.secret
        return shown


def masked_secret(value: Any, *, mapping: bool) -> Any:
    """A secret setting's value as it is shown: `***`, or a mapping's keys each with `***` (None stays None)."""
    if value is None:
        return None
    if mapping and isinstance(value, dict):
        return dict.fromkeys(value, MASK)
    return MASK


class StrictNumber(fields.Float):
    """A JSON number (int or float, never a string or bool), finite."""

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.make_error("invalid")
        return super()._deserialize(value, attr, data, **kwargs)


class SecretString(fields.String):
    """A string whose loaded value is a `Secret` (masked repr)."""

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any) -> Any:
        return Secret(super()._deserialize(value, attr, data, **kwargs))


class DateSetting(fields.Field):
    """An ISO date or a relative expression (`yesterday`, `4 days back`), resolved when loaded."""

    def __init__(self, parse: Callable[[object], Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._parse = parse

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any) -> Any:
        try:
            return self._parse(value)
        except ValueError as exc:
            raise MarshmallowError(str(exc)) from None


class StorageSetting(fields.Field):
    """A storage spec `{"type": ..., "settings": {...}}`, loaded into a backend instance (not connected)."""

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any) -> Any:
        if not isinstance(value, dict):
            raise MarshmallowError('give a storage spec: {"type": "sqlite", "settings": {...}}')
        available = storage_backends()
        unknown = sorted(set(value) - {"type", "settings"})
        errors: dict[str, Any] = {key: ["Unknown field."] for key in unknown}
        kind = value.get("type")
        if not isinstance(kind, str) or kind not in available:  # an object or list as `type` is unhashable
            errors["type"] = [f"{kind!r} is not a storage type; use one of {sorted(available)}"]
            raise MarshmallowError(errors)
        settings = value.get("settings", {})
        if not isinstance(settings, dict):
            errors["settings"] = ["give the backend's settings as an object"]
            raise MarshmallowError(errors)
        try:
            loaded = available[kind].schema().load(settings)
        except MarshmallowError as exc:
            errors["settings"] = exc.messages
        if errors:
            raise MarshmallowError(errors)
        try:
            return available[kind].cls(**loaded)
        except SettingError as exc:
            raise MarshmallowError({"settings": exc.details}) from None
        except (ValueError, TypeError) as exc:
            raise MarshmallowError({"settings": [str(exc)]}) from None


SIMPLE: dict[Any, tuple[Callable[..., fields.Field], str]] = {
    str: (lambda **kw: fields.String(**kw), "string"),
    Secret: (lambda **kw: SecretString(**kw), "string"),
    int: (lambda **kw: fields.Integer(strict=True, **kw), "integer"),
    float: (lambda **kw: StrictNumber(**kw), "number"),
    bool: (lambda **kw: fields.Boolean(truthy={True}, falsy={False}, **kw), "boolean"),
    dt.date: (lambda **kw: DateSetting(parse_date, **kw), "date"),
    dt.datetime: (lambda **kw: DateSetting(parse_datetime, **kw), "datetime"),
    dict: (lambda **kw: fields.Dict(keys=fields.String(), **kw), "object"),
    Storage: (lambda **kw: StorageSetting(**kw), "storage"),
}


def field_for(annotation: Any, *, where: str) -> tuple[fields.Field, dict[str, Any]]:
    """A marshmallow field and its description (type, choices, secret) for one annotation."""
    optional = False
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) != 1:
            raise ContractError(f"{where}: union {annotation!r} is not supported; use one type or `X | None`")
        optional, annotation = True, args[0]
        origin = typing.get_origin(annotation)
    info: dict[str, Any] = {}
    kwargs: dict[str, Any] = {"allow_none": optional}
    if annotation in SIMPLE:
        make, info["type"] = SIMPLE[annotation]
        info["secret"] = annotation is Secret
        return make(**kwargs), info
    if isinstance(annotation, type) and issubclass(annotation, Storage):
        make, info["type"] = SIMPLE[Storage]
        return make(**kwargs), info
    if origin is typing.Literal:
        choices = list(typing.get_args(annotation))
        info.update(type="string" if all(isinstance(c, str) for c in choices) else "choice", choices=choices)
        return fields.Raw(validate=validate.OneOf(choices), **kwargs), info
    if annotation is list or origin is list:
        item_args = typing.get_args(annotation)
        if item_args:
            item, item_info = field_for(item_args[0], where=f"{where}[]")
            info.update(type="list", items=item_info["type"])
            return fields.List(item, **kwargs), info
        info.update(type="list", items="any")
        return fields.List(fields.Raw(), **kwargs), info
    if origin is dict:
        info["type"] = "object"
        args = typing.get_args(annotation)
        if len(args) == 2 and args[1] is Secret:  # a mapping whose values are secret (request headers, say)
            if args[0] is not str:
                raise ContractError(f"{where}: a mapping of secrets is written dict[str, Secret]")
            info["secret"] = True
            return fields.Dict(keys=fields.String(), values=SecretString(), **kwargs), info
        return fields.Dict(keys=fields.String(), **kwargs), info
    raise ContractError(
        f"{where}: type {annotation!r} is not a setting type; use str, int, float, bool, dt.date, "
        "dt.datetime, list, dict, Literal[...], Secret, dict[str, Secret] or Storage"
    )


@dataclasses.dataclass(frozen=True)
class SettingsSchema:
    """The settings a class takes, as a marshmallow schema plus what `GET /platforms/get` shows."""

    cls: type
    settings: tuple[Setting, ...]
    schema_class: type[Schema]
    defaults: dict[str, Any]

    def schema(self) -> Schema:
        return self.schema_class()

    def secret_names(self) -> list[str]:
        return [s.name for s in self.settings if s.secret]

    def has_secrets(self) -> bool:
        return any(s.secret or s.type == "storage" for s in self.settings)


def json_default(value: Any) -> Any:
    """A default as JSON shows it: dates in ISO form, everything else as it is."""
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def build_settings_schema(cls: type, *, where: str) -> SettingsSchema:
    """Read `cls.__init__`'s annotated parameters into a `SettingsSchema`; raise `ContractError` if unfit."""
    init = cls.__init__
    if init is object.__init__:
        return SettingsSchema(cls, (), Schema.from_dict({}, name=f"{cls.__name__}Settings"), {})
    try:
        hints = typing.get_type_hints(init, include_extras=False)
        signature = inspect.signature(init)
    except Exception as exc:
        raise ContractError(f"{where}: cannot read the settings of __init__: {exc}") from exc
    declared: dict[str, fields.Field] = {}
    settings: list[Setting] = []
    defaults: dict[str, Any] = {}
    for name, param in list(signature.parameters.items())[1:]:
        spot = f"{where}: setting {name!r}"
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise ContractError(f"{spot}: *args/**kwargs cannot be settings; name each setting")
        if name.startswith("_"):
            raise ContractError(f"{spot}: names starting with '_' are reserved")
        if name not in hints:
            raise ContractError(f"{spot} has no type annotation; annotate it (e.g. `{name}: str`)")
        field, info = field_for(hints[name], where=spot)
        required = param.default is inspect.Parameter.empty
        if required:
            field.required = True
        else:
            defaults[name] = json_default(param.default)
            if isinstance(field, DateSetting) and isinstance(param.default, str):
                # "yesterday" as a default means the day before the job runs: parse it at each load
                field.load_default = functools.partial(field.deserialize, param.default)
            else:
                field.load_default = param.default
            if param.default is None:
                field.allow_none = True
        declared[name] = field
        settings.append(
            Setting(
                name=name,
                required=required,
                default=None if required else defaults[name],
                **info,
                backends=_describe_backends() if info["type"] == "storage" else None,
            )
        )
    schema_class = Schema.from_dict(declared, name=f"{cls.__name__}Settings")
    return SettingsSchema(cls, tuple(settings), schema_class, defaults)


def _describe_backends() -> dict[str, list[dict[str, Any]]]:
    return {kind: [s.describe() for s in spec.settings.settings] for kind, spec in storage_backends().items()}


@dataclasses.dataclass(frozen=True)
class BackendSpec:
    """A discovered storage backend: the `type` specs name it by, its class and its settings."""

    kind: str
    cls: type
    settings: SettingsSchema

    def schema(self) -> Any:
        return self.settings.schema()


@functools.cache
def storage_backends() -> dict[str, BackendSpec]:
    """Every storage backend by `type`, with the settings schema built from its `__init__`."""
    found: dict[str, BackendSpec] = {}
    for kind, cls in sorted(storage.backends().items()):
        try:
            found[kind] = BackendSpec(kind, cls, build_settings_schema(cls, where=f"storage type {kind!r}"))
        except ContractError as exc:
            log.error("storage backend %r is not available: %s", kind, exc)
    return found


def flatten_errors(messages: Any, prefix: str = "") -> dict[str, list[str]]:
    """Marshmallow's nested error dict as `{"settings.storage.settings.port": ["..."]}`."""
    if isinstance(messages, dict):
        flat: dict[str, list[str]] = {}
        for key, value in messages.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            flat.update(flatten_errors(value, path))
        return flat
    if isinstance(messages, list) and messages and all(isinstance(m, str) for m in messages):
        return {prefix or "_schema": list(messages)}
    if isinstance(messages, list):
        flat = {}
        for item in messages:
            flat.update(flatten_errors(item, prefix))
        return flat
    return {prefix or "_schema": [str(messages)]}


__all__ = ["Setting", "SettingsSchema", "build_settings_schema", "flatten_errors"]
