"""MkDocs hook: the configuration reference, rendered from `gateway.config.Settings` at build time.

Why it exists: every default lives once, in the config models (docs/design.md), and the `tao`
command's flags are generated from them. A hand-copied table of keys drifts from the code; this
hook reads the models instead, so the page always shows what `tao serve` accepts.

On every page it replaces the marker `<!-- config-reference -->` with one section per model: the
top level, then each nested model under its path (`store`, `reward.read`, `models[]`), one row per
field (key, type, default, description from `Field(description=...)`), the model's docstring as
the section's intro. A union of models (a discriminated one, `Field(discriminator="kind")`) gets
one subsection per member, titled by its discriminator value. Nothing here knows the shape of
`Settings`: it walks whatever the models declare.
"""

from __future__ import annotations

import enum
import inspect
import json
import os
import types
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

MARKER = "<!-- config-reference -->"
BOUNDS = (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<"), ("min_length", "at least"),
          ("max_length", "at most"))


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    if MARKER not in markdown:
        return markdown
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # as gateway/__init__.py does
    from gateway.config import Settings

    return markdown.replace(MARKER, Reference(Settings).render())


def unwrap(tp: Any) -> tuple[Any, str | None]:
    """The type without `Annotated` and type aliases, and the discriminator they named, if any."""
    discriminator = None
    while True:
        if type(tp).__name__ == "TypeAliasType":
            tp = tp.__value__
        elif get_origin(tp) is Annotated:
            tp, *metadata = get_args(tp)
            for m in metadata:
                if isinstance(getattr(m, "discriminator", None), str):
                    discriminator = m.discriminator
        else:
            return tp, discriminator


def is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def is_union(tp: Any) -> bool:
    return get_origin(tp) in (Union, types.UnionType)


def either(items: list[str]) -> str:
    return " or ".join(items) if len(items) < 3 else ", ".join(items[:-1]) + " or " + items[-1]


def code(value: Any) -> str:
    return f"`{value}`"


def cell(text: str) -> str:
    """One line of a table cell: outside code spans, `|` escaped and `<` kept from reading as HTML."""
    parts = " ".join(text.split()).split("`")
    return "`".join(p if i % 2 else p.replace("|", "\\|").replace("<", "&lt;") for i, p in enumerate(parts))


class Choice:
    """A union of models: one of `members`, told apart by the `discriminator` field if named."""

    def __init__(self, members: tuple[type[BaseModel], ...], discriminator: str | None) -> None:
        self.members, self.discriminator = members, discriminator or self.tag_field(members)

    @staticmethod
    def tag_field(members: tuple[type[BaseModel], ...]) -> str | None:
        """A field every member types as a Literal (`kind`): the tag a callable discriminator reads."""
        shared = set.intersection(*(set(m.model_fields) for m in members))
        return next((name for name in sorted(shared) if all(
            get_origin(unwrap(m.model_fields[name].annotation)[0]) is Literal for m in members)), None)

    def label(self, member: type[BaseModel]) -> str:
        field = member.model_fields.get(self.discriminator or "")
        if field is None:
            return member.__name__
        values = get_args(unwrap(field.annotation)[0]) or (field.default,)
        return f"{self.discriminator}: {values[0]}"


class Reference:
    def __init__(self, root: type[BaseModel]) -> None:
        self.root = root
        self.prefix = root.model_config.get("env_prefix", "")
        self.delimiter = root.model_config.get("env_nested_delimiter") or "__"
        self.anchors: dict[Any, str] = {}  # a model class, or a union's members, to its section id
        self.paths: dict[Any, str] = {}
        self.labels: dict[type[BaseModel], str] = {}  # a union member's title: `kind: default`

    def render(self) -> str:
        self.claim(self.root, "", "top-level")
        return "\n".join(self.model(self.root, "", 2, "Top level"))

    def claim(self, target: Any, path: str, anchor: str | None = None) -> bool:
        """Give `target` a section (False when it already has one: link to it instead)."""
        key = target.members if isinstance(target, Choice) else target
        if key in self.anchors:
            return False
        anchor = anchor or path.replace("[]", "").replace(".", "-").replace("_", "-")
        while anchor in self.anchors.values():
            anchor += "-"
        self.anchors[key], self.paths[key] = anchor, path
        if isinstance(target, Choice):
            for member in target.members:
                self.labels[member] = target.label(member)
                slug = self.labels[member].replace(": ", "-").replace("_", "-")
                self.anchors.setdefault(member, f"{anchor}-{slug}")
                self.paths.setdefault(member, path)
        return True

    def nested(self, tp: Any, suffix: str = "", discriminator: str | None = None):
        """(path suffix, model or Choice) for every model a field's type holds."""
        tp, named = unwrap(tp)
        discriminator = named or discriminator
        args = [a for a in get_args(tp) if a is not Ellipsis]
        if is_union(tp):
            models = tuple(m for m in (unwrap(a)[0] for a in args) if is_model(m))
            if len(models) > 1:
                yield suffix, Choice(models, discriminator)
                return
            for a in args:
                yield from self.nested(a, suffix)
        elif get_origin(tp) in (list, set, tuple, frozenset):
            for a in args:
                yield from self.nested(a, suffix + "[]")
        elif get_origin(tp) is dict:
            yield from self.nested(args[1], suffix + "{}")
        elif is_model(tp):
            yield suffix, tp

    def type_text(self, tp: Any) -> str:
        tp, _ = unwrap(tp)
        args = [a for a in get_args(tp) if a is not Ellipsis]
        if tp is type(None):
            return "null"
        if is_union(tp):
            models = tuple(m for m in (unwrap(a)[0] for a in args) if is_model(m))
            if len(models) > 1 and models in self.anchors:
                links = [f"[{code(self.labels[m])}](#{self.anchors[m]})" for m in models]
                rest = [self.type_text(a) for a in args if unwrap(a)[0] not in models]
                return either(["one of " + ", ".join(links), *rest])
            return either([self.type_text(a) for a in args])
        if get_origin(tp) is Literal:
            return either([code(a) for a in args])
        if isinstance(tp, type) and issubclass(tp, enum.Enum):
            return either([code(m.value) for m in tp])
        if get_origin(tp) in (list, set, tuple, frozenset):
            return "list of " + either([self.type_text(a) for a in args])
        if get_origin(tp) is dict:
            return f"mapping of {self.type_text(args[0])} to {self.type_text(args[1])}"
        if is_model(tp):
            return f"object: [{code(self.paths[tp] or 'top level')}](#{self.anchors[tp]})"
        if tp is Any:
            return "any"
        if tp is Path:
            return "path"
        return getattr(tp, "__name__", str(tp))

    def default_text(self, field: Any) -> str:
        factory = field.default_factory
        if factory is not None:
            doc = inspect.getdoc(factory) if inspect.isfunction(factory) else None
            if doc and factory.__name__ != "<lambda>":
                return f"{code(factory.__name__ + '()')}: {doc.splitlines()[0]}"
            try:
                value = factory()
            except TypeError:  # a factory of the other fields' values
                return code(getattr(factory, "__name__", "computed"))
        elif field.default is PydanticUndefined:
            return "required"
        else:
            value = field.default
        if isinstance(value, BaseModel):
            return f"[its defaults](#{self.anchors[type(value)]})"
        if value is None:
            return "unset"
        if isinstance(value, Path):
            shown = str(value)
            return code(shown if value.is_absolute() or shown.startswith(".") else f"./{shown}")
        if isinstance(value, enum.Enum):
            value = value.value
        if isinstance(value, (bool, list, tuple, dict)):
            return code(json.dumps(value, default=str))
        return code(value)

    def env_text(self, path: str) -> str:
        if "[]" in path or "{}" in path:
            outer = path.split("[]")[0].split("{}")[0]
            return f"Environment: inside the JSON value of {code(self.env_name(outer))}."
        if not path:
            return f"Environment: {code(self.prefix + '<KEY>')}, lists and objects as JSON."
        return f"Environment: {code(self.env_name(path) + self.delimiter + '<KEY>')}."

    def env_name(self, path: str) -> str:
        return self.prefix + path.upper().replace(".", self.delimiter)

    def model(self, cls: type[BaseModel], path: str, level: int, title: str,
              pending: list | None = None) -> list[str]:
        """A model's section; its nested models follow it (or go to `pending`, a union's list)."""
        found = [((f"{path}.{name}" if path else name) + suffix, target)
                 for name, field in cls.model_fields.items()
                 for suffix, target in self.nested(field.annotation, discriminator=field.discriminator)]
        children = [(child_path, target) for child_path, target in found if self.claim(target, child_path)]
        lines = [f"{'#' * level} {title} {{#{self.anchors[cls]}}}", ""]
        doc = cls.__dict__.get("__doc__")
        if doc:
            lines += [" ".join(inspect.cleandoc(doc).split()), ""]
        extra = cls.model_config.get("extra")
        notes = {"forbid": "Unknown keys are refused.", "ignore": "Unknown keys are ignored.",
                 "allow": "Keys not listed here are accepted and kept as options."}.get(extra or "ignore", "")
        lines += [f"{notes} {self.env_text(path)}".strip(), "", "| key | type | default | description |",
                  "|---|---|---|---|"]
        for name, field in cls.model_fields.items():
            kind = self.type_text(field.annotation)
            bounds = [f"{sym} {getattr(m, attr)}" for m in field.metadata for attr, sym in BOUNDS
                      if getattr(m, attr, None) is not None]
            lines.append("| " + " | ".join(cell(c) for c in (
                code(name), ", ".join([kind, *bounds]), self.default_text(field), field.description or "")) + " |")
        lines.append("")
        for child_path, target in children:
            if pending is not None:
                pending.append((child_path, target))
            else:
                lines += self.target(child_path, target, level)
        return lines

    def target(self, path: str, target: Any, level: int) -> list[str]:
        if not isinstance(target, Choice):
            return self.model(target, path, level, code(path))
        members = ", ".join(f"[{code(self.labels[m])}](#{self.anchors[m]})" for m in target.members)
        by = f"by {code(target.discriminator)}" if target.discriminator else "by its keys"
        lines = [f"{'#' * level} {code(path)} {{#{self.anchors[target.members]}}}", "",
                 f"One of these, chosen {by}: {members}.", ""]
        pending: list = []
        for member in target.members:
            title = f"{code(path)} with {code(self.labels[member])}"
            lines += self.model(member, path, min(level + 1, 6), title, pending)
        for child_path, child in pending:
            lines += self.target(child_path, child, level)
        return lines
