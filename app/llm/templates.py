"""Versioned prompt templates: one TOML file per version, safe `$name` substitution.

Layout: `<templates_dir>/<name>/<version>.toml`, the version a positive integer
without leading zeros (`1.toml`, `2.toml`, ...). Each file holds exactly:

    description = "what the template is for"                  # required
    system = "optional system message"                         # optional
    user = "the user message; $prompt is the task's prompt"    # required

    [defaults]                  # optional: values for variables a task's context may omit
    max_words = 100

Rendering is `string.Template` substitution and nothing else: `$name` and
`${name}` are replaced, `$$` is a literal `$`; there is no code execution, no
attribute or item access and no format spec. Substituted values are never
expanded again, so a prompt or context value containing `$x` stays as it is.
Every file is parsed and validated when the store is built, so a malformed
template stops the service at start-up instead of failing a task later.

Error messages name templates and variables, never prompt or context values.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any

from app.domain import InvalidInput
from app.llm.base import Message

__all__ = ["PROMPT_VARIABLE", "PromptTemplate", "TemplateStore"]

PROMPT_VARIABLE = "prompt"
# A subset of what `AgentTask.template` accepts, so every installed template can be named.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}")
_VERSION = re.compile(r"[1-9][0-9]{0,8}")
_VERSION_FILE = re.compile(r"([1-9][0-9]{0,8})\.toml")
_KEYS = frozenset({"description", "system", "user", "defaults"})
_TEXT_KEYS = ("description", "system", "user")


def _placeholders(text: str, part: str) -> frozenset[str]:
    template = Template(text)
    if not template.is_valid():
        raise ValueError(
            f"{part} has a malformed placeholder: use $name or ${{name}} with a name of letters, "
            "digits and underscores, and $$ for a literal $"
        )
    return frozenset(template.get_identifiers())


@dataclass(frozen=True, slots=True)
class PromptTemplate:
    """One version of one template. Constructing it validates its placeholders."""

    name: str
    version: int
    description: str
    system: str | None
    user: str
    # (variable, value) pairs, sorted: what a task's context may leave out.
    defaults: tuple[tuple[str, str], ...] = ()
    _variables: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise ValueError(f"template name {self.name!r} must be letters, digits, '_', '.' or '-' (at most 100)")
        if isinstance(self.version, bool) or not isinstance(self.version, int) or self.version < 1:
            raise ValueError("template version must be a positive integer")
        variables = _placeholders(self.user, "user")
        if self.system is not None:
            variables |= _placeholders(self.system, "system")
        if PROMPT_VARIABLE not in variables:
            raise ValueError("the template never uses $prompt, so the task's prompt would be dropped")
        for key, value in self.defaults:
            if key == PROMPT_VARIABLE:
                raise ValueError("defaults may not set 'prompt': it is always the task's prompt")
            if key not in variables:
                raise ValueError(f"defaults sets {key!r}, which neither system nor user uses")
            if not isinstance(value, str):
                raise ValueError(f"the default for {key!r} must be a string once loaded")
        object.__setattr__(self, "_variables", variables)

    @property
    def ref(self) -> str:
        """`name@version`: what a task records as its template."""
        return f"{self.name}@{self.version}"

    @property
    def variables(self) -> frozenset[str]:
        """The placeholder names used by the system and user texts."""
        return self._variables


def _scalar_text(value: object) -> str | None:
    """A str, int, float or bool as template text (bools as true/false); None for anything else."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        try:
            return str(value)
        except ValueError:  # beyond Python's int-to-str digit limit
            return None
    if isinstance(value, float) and math.isfinite(value):
        return str(value)
    return None


def template_variables(
    prompt: str, context: Mapping[str, Any], defaults: Iterable[tuple[str, str]] = ()
) -> dict[str, str]:
    """The values a template may use: `prompt`, each top-level scalar of `context`, and defaults.

    Context keys must be placeholder names (ASCII letters, digits, `_`; not starting
    with a digit); values must be str, int, float or bool (bools as `true`/`false`).
    Lists, objects and null are not available. A context value wins over a template
    default; `prompt` is always the task's prompt.
    """
    values = dict(defaults)
    for key, value in context.items():
        if not isinstance(key, str) or not key.isascii() or not key.isidentifier():
            continue
        text = _scalar_text(value)
        if text is not None:
            values[key] = text
    values[PROMPT_VARIABLE] = prompt
    return values


def render(template: PromptTemplate, prompt: str, context: Mapping[str, Any]) -> tuple[Message, ...]:
    """The messages for a task: the system message (if any), then the user message."""
    values = template_variables(prompt, context, template.defaults)
    missing = sorted(template.variables - values.keys())
    if missing:
        names = ", ".join(missing)
        raise InvalidInput(
            f"template {template.ref} needs context variable(s) {names}: give each as a top-level "
            "string, number or boolean in `context`",
            code="template_variable_missing",
        )
    messages: list[Message] = []
    if template.system is not None:
        messages.append(Message("system", Template(template.system).substitute(values)))
    messages.append(Message("user", Template(template.user).substitute(values)))
    return tuple(messages)


def load_template_file(path: Path, name: str, version: int) -> PromptTemplate:
    """Parse and validate one template file; a ValueError names the file."""
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except (OSError, ValueError) as exc:  # TOMLDecodeError and UnicodeDecodeError are ValueErrors
        raise ValueError(f"prompt template {path}: cannot be read as UTF-8 TOML: {exc}") from None
    try:
        unknown = sorted(set(data) - _KEYS)
        if unknown:
            raise ValueError(f"unknown key(s) {', '.join(unknown)}; allowed: description, system, user, defaults")
        for key in ("description", "user"):
            if key not in data:
                raise ValueError(f"{key!r} is required")
        for key in _TEXT_KEYS:
            if key not in data:
                continue
            if not isinstance(data[key], str):
                raise ValueError(f"{key!r} must be a string")
            if not data[key].strip():
                raise ValueError(f"{key!r} must not be empty" + ("; leave it out instead" if key == "system" else ""))
        system = data.get("system")
        return PromptTemplate(
            name=name,
            version=version,
            description=data["description"].strip(),
            system=system.strip() if system is not None else None,
            user=data["user"].strip(),
            defaults=_load_defaults(data.get("defaults", {})),
        )
    except ValueError as exc:
        raise ValueError(f"prompt template {path}: {exc}") from None


def _load_defaults(table: object) -> tuple[tuple[str, str], ...]:
    if not isinstance(table, dict):
        raise ValueError("'defaults' must be a table: [defaults] then name = value lines")
    pairs: list[tuple[str, str]] = []
    for key, value in table.items():
        if not key.isascii() or not key.isidentifier():
            raise ValueError(f"defaults key {key!r} is not a placeholder name (letters, digits and '_')")
        text = _scalar_text(value)
        if text is None:
            raise ValueError(f"the default for {key!r} must be a string, integer, finite float or boolean")
        pairs.append((key, text))
    return tuple(sorted(pairs))


class TemplateStore:
    """Every template under a directory, loaded and validated up front.

    A missing or empty directory means no templates. Entries whose names start with
    a dot are skipped; anything else that is not `<name>/<version>.toml` is an error,
    so a misnamed file is reported instead of silently ignored.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._templates: dict[str, dict[int, PromptTemplate]] = {}
        if not directory.exists():
            return
        if not directory.is_dir():
            raise ValueError(f"prompt templates directory {directory} is not a directory")
        for entry in sorted(directory.iterdir()):
            if entry.name.startswith("."):
                continue
            if not entry.is_dir():
                raise ValueError(f"prompt templates: {entry} is not a directory; use <name>/<version>.toml")
            if not _NAME.fullmatch(entry.name):
                raise ValueError(
                    f"prompt templates: {entry} is not a valid template name "
                    "(letters, digits, '_', '.' or '-', starting with a letter or digit, at most 100)"
                )
            versions: dict[int, PromptTemplate] = {}
            for file in sorted(entry.iterdir()):
                if file.name.startswith("."):
                    continue
                match = _VERSION_FILE.fullmatch(file.name)
                if match is None or not file.is_file():
                    raise ValueError(
                        f"prompt templates: {file} is not a version file; name versions 1.toml, 2.toml, ..."
                    )
                version = int(match.group(1))
                versions[version] = load_template_file(file, entry.name, version)
            if not versions:
                raise ValueError(f"prompt templates: {entry} has no versions; add {entry / '1.toml'} or remove it")
            self._templates[entry.name] = dict(sorted(versions.items()))

    def names(self) -> list[str]:
        """The template names, sorted."""
        return sorted(self._templates)

    def refs(self) -> list[str]:
        """Every installed `name@version`, sorted by name, then version."""
        return [t.ref for name in self.names() for t in self._templates[name].values()]

    def versions(self, name: str) -> list[int]:
        """The versions of one template, ascending (empty if unknown)."""
        return sorted(self._templates.get(name, {}))

    def __len__(self) -> int:
        return sum(len(versions) for versions in self._templates.values())

    def resolve(self, ref: str) -> PromptTemplate:
        """`name` gives its latest (highest) version, `name@N` version N."""
        name, sep, version_text = ref.partition("@")
        versions = self._templates.get(name)
        if versions is None:
            # Never the name the caller sent: only names that exist are repeated.
            raise InvalidInput(f"unknown template; {self._available()}", code="unknown_template")
        if not sep:
            return versions[max(versions)]
        well_formed = _VERSION.fullmatch(version_text) is not None
        template = versions.get(int(version_text)) if well_formed else None
        if template is None:
            choices = ", ".join(t.ref for t in versions.values())
            hint = "" if well_formed else " (versions are positive integers)"
            raise InvalidInput(
                f"template {name!r} has no such version{hint}; available: {choices}, or {name!r} for the latest",
                code="unknown_template",
            )
        return template

    def render(self, template: PromptTemplate, prompt: str, context: Mapping[str, Any]) -> tuple[Message, ...]:
        """The messages for a task; raises InvalidInput(template_variable_missing) naming what is missing."""
        return render(template, prompt, context)

    def _available(self) -> str:
        if not self._templates:
            return "no templates are installed"
        return "available: " + ", ".join(self.refs())
