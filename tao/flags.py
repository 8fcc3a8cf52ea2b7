"""Command-line flags generated from config models, so that every default lives once: in the model.

TRL builds its CLI from its config dataclasses (`HfArgumentParser`); this does the same for our
pydantic models and plain dataclasses. Each field becomes `--field-name`, checked by the field's
own validation (a bad value is argparse's usage error, exit 2, naming the flag), its help the
field's description, its choices a `Literal`'s values, its default the field's default.

A flag stores its value under `<group>.<field>` in the namespace, so two models' fields of the same
name (the distill job's and the reward trainer's `max_steps`) never collide; `field_values` reads
one group back as keyword arguments for the model.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, TypeAdapter, ValidationError

_MISSING: Any = dataclasses.MISSING


@dataclasses.dataclass(frozen=True)
class FieldSpec:
    """What a flag needs to know about one field of a config model."""

    name: str
    annotation: Any  # the type, with the field's constraints (`ge=1` ...) attached
    default: Any  # `dataclasses.MISSING` when the field is required
    description: str | None


def field_specs(model: type) -> list[FieldSpec]:
    """The fields of a pydantic model or a dataclass, in declaration order."""
    if issubclass(model, BaseModel):
        return [FieldSpec(name, Annotated[(f.annotation, *f.metadata)] if f.metadata else f.annotation,
                          _MISSING if f.is_required() else f.get_default(call_default_factory=True), f.description)
                for name, f in model.model_fields.items()]
    hints = typing.get_type_hints(model)  # resolves `from __future__ import annotations` strings
    return [FieldSpec(f.name, hints[f.name],
                      f.default_factory() if f.default_factory is not _MISSING else f.default, None)
            for f in dataclasses.fields(model)]


def explain(error: ValidationError) -> str:
    """A pydantic error as one line for a terminal: `distill.max_steps: Input should be ...`."""
    return "; ".join(f"{'.'.join(str(part) for part in e['loc']) or 'value'}: {e['msg']}" for e in error.errors())


def _converter(spec: FieldSpec) -> Callable[[str], Any]:
    """argparse's `type=` for a field: the field's own validation, so `--max-steps 0` is refused
    while parsing, naming the flag, before anything runs."""
    adapter = TypeAdapter(spec.annotation)

    def convert(text: str) -> Any:
        try:
            return adapter.validate_python(text)
        except ValidationError as exc:
            raise argparse.ArgumentTypeError(f"{text!r}: " + "; ".join(e["msg"] for e in exc.errors())) from None

    return convert


def show_default(value: Any) -> str:
    """A default as the README writes it (relative paths with their `./`)."""
    if isinstance(value, Path) and not value.is_absolute() and not str(value).startswith("."):
        return f"./{value}"
    return str(value)


def _help(spec: FieldSpec, described: str, group: str, *, overrides: bool, switch: bool) -> str:
    """The field's description in argparse's voice ("Training steps." → "training steps"), then
    where its default comes from."""
    first, _, rest = described.rstrip(".").partition(" ")
    if first[1:].islower():  # a plain capitalised word, not "N" or "LoRA"
        first = first.lower()
    text = f"{first} {rest}".strip()
    built_in = "" if spec.default in (None, _MISSING) else show_default(spec.default)  # None: described
    if spec.default is _MISSING:
        text += " (required)"
    elif overrides:
        text += f" (default: {group}.{spec.name} in the config{', else ' + built_in if built_in else ''})"
    elif built_in and not switch:
        text += f" (default: {built_in})"
    return text.strip().replace("%", "%%")


def add_field_flags(parser: argparse.ArgumentParser, model: type, group: str, *,
                    only: Collection[str] | None = None, exclude: Collection[str] = (),
                    flags: Mapping[str, str] | None = None, helps: Mapping[str, str] | None = None,
                    overrides: bool = False) -> None:
    """Add one flag per field of `model` (or per field in `only`, less `exclude`) to `parser`.

    `flags` renames a field's flag (`{"out_dir": "--out"}`); `helps` gives help where the model
    has no description. With `overrides`, a flag that is not given stays None, so the value from
    the config file (the `group:` section) stands; the help then names that key and its built-in
    default. Otherwise the field's default is the flag's default.
    """
    flags, helps = flags or {}, helps or {}
    for spec in field_specs(model):
        if (only is not None and spec.name not in only) or spec.name in exclude:
            continue
        flag = flags.get(spec.name, "--" + spec.name.replace("_", "-"))
        switch = spec.annotation is bool and spec.default is False and not overrides  # a plain --flag
        kwargs: dict[str, Any] = {
            "dest": f"{group}.{spec.name}",
            "help": _help(spec, helps.get(spec.name) or spec.description or "", group, overrides=overrides,
                          switch=switch),
            "default": None if overrides or spec.default is _MISSING else spec.default,
            "required": spec.default is _MISSING,
        }
        if spec.annotation is bool:
            kwargs["action"] = "store_true" if switch else argparse.BooleanOptionalAction
        elif typing.get_origin(spec.annotation) is Literal:
            kwargs["choices"] = typing.get_args(spec.annotation)
        elif typing.get_origin(spec.annotation) is list:  # --kinds a b c
            [item] = typing.get_args(spec.annotation)
            kwargs.update(nargs="+", type=_converter(FieldSpec(spec.name, item, _MISSING, None)),
                          metavar=flag.lstrip("-").replace("-", "_").upper())
        else:
            kwargs.update(type=_converter(spec), metavar=flag.lstrip("-").replace("-", "_").upper())
        parser.add_argument(flag, **kwargs)


def field_values(args: argparse.Namespace, group: str) -> dict[str, Any]:
    """The values of one group's flags, by field name; flags not given (None) are left out."""
    prefix = group + "."
    return {key.removeprefix(prefix): value for key, value in vars(args).items()
            if key.startswith(prefix) and value is not None}
