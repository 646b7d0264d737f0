"""mkdocs hook: the configuration tables, generated from the code so they cannot drift.

`docs/configuration.md` holds the marker `<!-- settings-table -->`, replaced by a table of
every field of `app.settings.Settings` (its environment variable, default, accepted values
and meaning, from the field's `description=`); `<!-- provider-endpoint-table -->` becomes
the fields of one `PROVIDER_ENDPOINTS` entry. `tests/unit/test_docs.py` imports this module
by path and checks the tables against the class.
"""

from __future__ import annotations

import json
import types
import typing
from pathlib import Path
from typing import Any

import annotated_types
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

import app
from app.settings import ProviderEndpoint, Settings

SETTINGS_MARKER = "<!-- settings-table -->"
ENDPOINT_MARKER = "<!-- provider-endpoint-table -->"
_PACKAGE_ROOT = Path(app.__file__).resolve().parent.parent


def env_name(name: str, model: type[Settings] = Settings) -> str:
    """The environment variable a Settings field is read from."""
    return f"{model.model_config.get('env_prefix', '')}{name}".upper()


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _default(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float):
        return f"`{value:g}`"
    if isinstance(value, Path):
        if value.is_absolute():
            try:
                return f"`{value.relative_to(_PACKAGE_ROOT).as_posix()}` (in the installed package)"
            except ValueError:
                pass
        return f"`{value.as_posix()}`"
    if isinstance(value, list | dict):
        return f"`{json.dumps(value)}`" if value else "none"
    return f"`{value}`"


def default_text(field: FieldInfo) -> str:
    """A field's default as the table shows it."""
    if field.default is PydanticUndefined:
        if field.default_factory is None:
            return "required"
        return _default(field.default_factory())  # type: ignore[call-arg]
    return _default(field.default)


def _unwrap(annotation: Any) -> tuple[Any, list[Any]]:
    """The type under `X | None` and `Annotated[...]`, and the constraints gathered on the way."""
    constraints: list[Any] = []
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation, *extra = typing.get_args(annotation)
            for item in extra:
                constraints.extend(item.metadata if isinstance(item, FieldInfo) else [item])
        elif origin in (typing.Union, types.UnionType):
            rest = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
            if len(rest) != 1:
                return annotation, constraints
            annotation = rest[0]
        else:
            return annotation, constraints


def _bounds(constraints: list[Any]) -> str:
    low = high = ""
    for item in constraints:
        if isinstance(item, annotated_types.Gt):
            low = f"> {item.gt}"
        elif isinstance(item, annotated_types.Ge):
            low = f"≥ {item.ge}"
        elif isinstance(item, annotated_types.Lt):
            high = f"< {item.lt}"
        elif isinstance(item, annotated_types.Le):
            high = f"≤ {item.le}"
    if low.startswith("≥") and high.startswith("≤"):
        return f"{low[2:]} to {high[2:]}"
    return ", ".join(part for part in (low, high) if part)


def accepts_text(field: FieldInfo) -> str:
    """What a field accepts, in a few words."""
    annotation, constraints = _unwrap(field.annotation)
    constraints = [*constraints, *field.metadata]
    origin = typing.get_origin(annotation)
    if annotation is bool:
        return "`true` or `false`"
    if annotation is int or annotation is float:
        bounds = _bounds(constraints)
        kind = "integer" if annotation is int else "number"
        return f"{kind} {bounds}" if bounds else kind
    if annotation is SecretStr:
        return "secret text"
    if annotation is Path:
        return "path"
    if annotation is str:
        return "text"
    if origin is typing.Literal:
        return ", ".join(f"`{value}`" for value in typing.get_args(annotation))
    if origin is list:
        (item,) = typing.get_args(annotation)
        if isinstance(item, type) and issubclass(item, BaseModel):
            return "JSON list of objects"
        return "comma-separated list or JSON list"
    if origin is dict:
        return "JSON object"
    return f"`{annotation}`"


def settings_table(model: type[Settings] = Settings) -> str:
    """The Markdown table of every setting: variable, default, accepted values, meaning."""
    rows = ["| variable | default | accepts | meaning |", "| --- | --- | --- | --- |"]
    for name, field in model.model_fields.items():
        rows.append(
            f"| `{env_name(name, model)}` | {_cell(default_text(field))} | {_cell(accepts_text(field))} "
            f"| {_cell(field.description or '')} |"
        )
    return "\n".join(rows)


def endpoint_table(model: type[BaseModel] = ProviderEndpoint) -> str:
    """The Markdown table of the fields of one `PROVIDER_ENDPOINTS` entry."""
    rows = ["| field | default | meaning |", "| --- | --- | --- |"]
    for name, field in model.model_fields.items():
        rows.append(f"| `{name}` | {_cell(default_text(field))} | {_cell(field.description or '')} |")
    return "\n".join(rows)


def render(markdown: str) -> str:
    """Replace the markers in a page's Markdown with the generated tables."""
    return markdown.replace(SETTINGS_MARKER, settings_table()).replace(ENDPOINT_MARKER, endpoint_table())


def on_page_markdown(markdown: str, **_: Any) -> str:
    """mkdocs' hook: every page passes through here before it is rendered."""
    return render(markdown)
