"""Versioned prompt templates: loading, resolution and safe rendering (no database)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from app.domain import InvalidInput
from app.llm.base import Message
from app.llm.templates import PromptTemplate, TemplateStore
from app.settings import TEMPLATES_DIR

SECRET = "s3cr3t-value-never-echoed"


def write(root: Path, name: str, version: int | str, text: str) -> Path:
    path = root / name / (f"{version}.toml" if isinstance(version, int) else version)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def simple(user: str = "Answer: $prompt", *, system: str | None = None, extra: str = "") -> str:
    lines = ['description = "a test template"', f"user = {user!r}"]
    if system is not None:
        lines.append(f"system = {system!r}")
    return "\n".join(lines) + "\n" + extra


@pytest.fixture
def store(tmp_path: Path) -> TemplateStore:
    write(tmp_path, "greet", 1, simple("Hello: $prompt"))
    write(tmp_path, "greet", 2, simple("Hello, $name: $prompt", system="Be brief."))
    write(tmp_path, "greet", 10, simple("Hi ${name}! $prompt"))
    write(tmp_path, "other", 1, simple())
    return TemplateStore(tmp_path)


# -- resolution -----------------------------------------------------------------------------


def test_refs_and_names_are_sorted(store: TemplateStore) -> None:
    assert store.names() == ["greet", "other"]
    assert store.refs() == ["greet@1", "greet@2", "greet@10", "other@1"]
    assert store.versions("greet") == [1, 2, 10]
    assert len(store) == 4


def test_name_alone_resolves_to_the_highest_version(store: TemplateStore) -> None:
    template = store.resolve("greet")
    assert (template.name, template.version, template.ref) == ("greet", 10, "greet@10")


def test_pinned_version_resolves_to_that_version(store: TemplateStore) -> None:
    template = store.resolve("greet@2")
    assert template.ref == "greet@2"
    assert template.system == "Be brief."
    assert template.user == "Hello, $name: $prompt"
    assert template.variables == frozenset({"name", "prompt"})
    assert store.resolve("greet@1").variables == frozenset({"prompt"})


def test_unknown_name_names_the_available_templates(store: TemplateStore) -> None:
    with pytest.raises(InvalidInput) as caught:
        store.resolve("nope")
    assert caught.value.code == "unknown_template"
    assert "nope" not in caught.value.message  # never the name the caller made up
    for ref in ("greet@1", "greet@2", "greet@10", "other@1"):
        assert ref in caught.value.message


@pytest.mark.parametrize("ref", ["greet@3", "greet@0", "greet@01", "greet@latest", "greet@", "greet@2@2"])
def test_unknown_version_names_the_available_versions(store: TemplateStore, ref: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        store.resolve(ref)
    assert caught.value.code == "unknown_template"
    assert "greet@1, greet@2, greet@10" in caught.value.message
    assert "other@1" not in caught.value.message


def test_unknown_template_with_none_installed_says_so(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput) as caught:
        TemplateStore(tmp_path).resolve("summarize")
    assert caught.value.code == "unknown_template"
    assert "no templates are installed" in caught.value.message


def test_empty_or_missing_directory_means_no_templates(tmp_path: Path) -> None:
    for directory in (tmp_path, tmp_path / "missing"):
        store = TemplateStore(directory)
        assert store.refs() == []
        assert store.names() == []
        assert len(store) == 0


def test_hidden_entries_are_skipped(tmp_path: Path) -> None:
    write(tmp_path, "greet", 1, simple())
    write(tmp_path, "greet", ".2.toml", "this is not toml [")  # e.g. a version taken out of service
    (tmp_path / ".git").mkdir()
    assert TemplateStore(tmp_path).refs() == ["greet@1"]


# -- rendering ------------------------------------------------------------------------------


def test_render_with_prompt_and_context(store: TemplateStore) -> None:
    messages = store.render(store.resolve("greet@2"), "what time is it?", {"name": "Ada", "unused": [1, 2]})
    assert messages == (Message("system", "Be brief."), Message("user", "Hello, Ada: what time is it?"))
    assert store.render(store.resolve("greet@10"), "hi", {"name": "Bo"}) == (Message("user", "Hi Bo! hi"),)


def test_render_scalars_as_text(tmp_path: Path) -> None:
    write(tmp_path, "t", 1, simple("$prompt|$s|$i|$f|$yes|$no"))
    store = TemplateStore(tmp_path)
    context = {"s": "text", "i": 42, "f": 0.5, "yes": True, "no": False}
    (message,) = store.render(store.resolve("t"), "p", context)
    assert message.content == "p|text|42|0.5|true|false"


def test_prompt_is_always_the_tasks_prompt(store: TemplateStore) -> None:
    (message,) = store.render(store.resolve("greet@1"), "real", {"prompt": "from context"})
    assert message.content == "Hello: real"


def test_substituted_values_are_not_expanded_again(store: TemplateStore) -> None:
    (_, message) = store.render(store.resolve("greet@2"), "$name ${name} $$ {0} %s", {"name": "$prompt"})
    assert message.content == "Hello, $prompt: $name ${name} $$ {0} %s"


def test_double_dollar_is_a_literal_dollar(tmp_path: Path) -> None:
    write(tmp_path, "price", 1, simple("It costs $$5 ($$$amount): $prompt"))
    store = TemplateStore(tmp_path)
    template = store.resolve("price")
    assert template.variables == frozenset({"amount", "prompt"})
    (message,) = store.render(template, "ok?", {"amount": 7})
    assert message.content == "It costs $5 ($7): ok?"


def test_missing_variable_is_named_and_no_value_is_echoed(tmp_path: Path) -> None:
    write(tmp_path, "t", 1, simple("$prompt $alpha $beta $gamma", system="$delta"))
    store = TemplateStore(tmp_path)
    with pytest.raises(InvalidInput) as caught:
        store.render(store.resolve("t"), SECRET, {"beta": SECRET, "other": SECRET})
    error = caught.value
    assert error.code == "template_variable_missing"
    assert "t@1" in error.message
    assert "alpha, delta, gamma" in error.message
    assert "beta" not in error.message.replace("alpha, delta, gamma", "")
    assert SECRET not in error.message
    assert SECRET not in str(error)


@pytest.mark.parametrize(
    "value",
    [None, [1, 2], {"x": 1}, ["a", "b"], float("nan"), float("inf")],
    ids=["null", "list", "object", "list-of-str", "nan", "inf"],
)
def test_non_scalar_context_values_are_not_usable(store: TemplateStore, value: Any) -> None:
    with pytest.raises(InvalidInput) as caught:
        store.render(store.resolve("greet@2"), "p", {"name": value})
    assert caught.value.code == "template_variable_missing"
    assert "name" in caught.value.message


def test_nested_context_keys_are_not_reachable(tmp_path: Path) -> None:
    write(tmp_path, "t", 1, simple("$prompt $user_name"))
    store = TemplateStore(tmp_path)
    with pytest.raises(InvalidInput) as caught:
        store.render(store.resolve("t"), "p", {"user": {"name": SECRET}, "user.name": SECRET})
    assert caught.value.code == "template_variable_missing"
    assert SECRET not in caught.value.message


def test_attribute_access_in_a_placeholder_is_rejected_at_load(tmp_path: Path) -> None:
    path = write(tmp_path, "evil", 1, simple("${prompt.__class__} $prompt"))
    with pytest.raises(ValueError, match="malformed placeholder") as caught:
        TemplateStore(tmp_path)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize(
    "text",
    [
        "${prompt.__class__.__mro__}",
        "${prompt[0]}",
        "${prompt!r}",
        "${prompt:>10}",
        "$ prompt",
        "${}",
        "costs $5: $prompt",
        "${__import__('os').system('true')}",
    ],
)
def test_malformed_placeholders_are_rejected_at_load(tmp_path: Path, text: str) -> None:
    write(tmp_path, "evil", 1, simple(f"$prompt {text}"))
    with pytest.raises(ValueError, match="malformed placeholder"):
        TemplateStore(tmp_path)


def test_format_and_dotted_syntax_is_inert_text(tmp_path: Path) -> None:
    # `{...}` is not a placeholder, and `$prompt.__class__` is `$prompt` followed by literal text.
    write(tmp_path, "t", 1, simple("{prompt.__class__} {0} %(prompt)s $prompt.__class__"))
    store = TemplateStore(tmp_path)
    (message,) = store.render(store.resolve("t"), "P", {})
    assert message.content == "{prompt.__class__} {0} %(prompt)s P.__class__"


# -- defaults -------------------------------------------------------------------------------


def test_defaults_fill_what_the_context_leaves_out(tmp_path: Path) -> None:
    write(tmp_path, "t", 1, simple("$prompt in $n words for $who", extra="[defaults]\nn = 100\nwho = 'anyone'\n"))
    store = TemplateStore(tmp_path)
    template = store.resolve("t")
    assert template.defaults == (("n", "100"), ("who", "anyone"))
    assert store.render(template, "p", {})[0].content == "p in 100 words for anyone"
    assert store.render(template, "p", {"n": 5, "who": [1]})[0].content == "p in 5 words for anyone"


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ("[defaults]\nprompt = 'x'\n", "may not set 'prompt'"),
        ("[defaults]\nunused = 1\n", "neither system nor user uses"),
        ("[defaults]\nn = [1]\n", "must be a string"),
        ("[defaults]\nn = 1979-05-27\n", "must be a string"),
        ("[defaults]\n'not-a-name' = 1\n", "not a placeholder name"),
        ("defaults = 3\n", "must be a table"),
    ],
)
def test_bad_defaults_are_rejected(tmp_path: Path, extra: str, reason: str) -> None:
    path = write(tmp_path, "t", 1, simple("$prompt $n", extra=extra))
    with pytest.raises(ValueError, match=reason) as caught:
        TemplateStore(tmp_path)
    assert str(path) in str(caught.value)


# -- malformed files ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("this is [not toml", "cannot be read as UTF-8 TOML"),
        ('user = "$prompt"\n', "'description' is required"),
        ('description = "d"\n', "'user' is required"),
        ('description = "d"\nuser = "$prompt"\nmodel = "x"\n', "unknown key"),
        ('description = "d"\nuser = 3\n', "'user' must be a string"),
        ('description = "d"\nuser = "$prompt"\nsystem = ["x"]\n', "'system' must be a string"),
        ('description = "d"\nuser = "$prompt"\nsystem = "  "\n', "'system' must not be empty"),
        ('description = ""\nuser = "$prompt"\n', "'description' must not be empty"),
        ('description = "d"\nuser = "no prompt here"\n', "never uses \\$prompt"),
    ],
)
def test_malformed_file_is_rejected_naming_the_file(tmp_path: Path, text: str, reason: str) -> None:
    write(tmp_path, "good", 1, simple())
    path = write(tmp_path, "bad", 3, text)
    with pytest.raises(ValueError, match=reason) as caught:
        TemplateStore(tmp_path)
    assert str(path) in str(caught.value)


def test_non_utf8_file_is_rejected_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad" / "1.toml"
    path.parent.mkdir()
    path.write_bytes(b'description = "\xff"\nuser = "$prompt"\n')
    with pytest.raises(ValueError, match="UTF-8") as caught:
        TemplateStore(tmp_path)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize("filename", ["0.toml", "01.toml", "v2.toml", "2.tml", "2.toml~", "notes.md", "latest.toml"])
def test_misnamed_version_file_is_rejected(tmp_path: Path, filename: str) -> None:
    write(tmp_path, "t", 1, simple())
    path = write(tmp_path, "t", filename, simple())
    with pytest.raises(ValueError, match="not a version file") as caught:
        TemplateStore(tmp_path)
    assert str(path) in str(caught.value)


def test_stray_file_or_bad_name_or_empty_template_directory_is_rejected(tmp_path: Path) -> None:
    stray = tmp_path / "summarize.toml"
    stray.write_text(simple())
    with pytest.raises(ValueError, match="is not a directory") as caught:
        TemplateStore(tmp_path)
    assert str(stray) in str(caught.value)
    stray.unlink()

    bad = tmp_path / "-bad"
    bad.mkdir()
    with pytest.raises(ValueError, match="not a valid template name"):
        TemplateStore(tmp_path)
    bad.rmdir()

    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="has no versions"):
        TemplateStore(tmp_path)


def test_directory_that_is_a_file_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "templates"
    path.write_text("")
    with pytest.raises(ValueError, match="not a directory"):
        TemplateStore(path)


def test_constructing_a_template_validates_it() -> None:
    template = PromptTemplate("ok", 1, "d", None, "$prompt $x")
    assert template.variables == frozenset({"prompt", "x"})
    assert template.ref == "ok@1"
    with pytest.raises(ValueError, match="malformed placeholder"):
        PromptTemplate("bad", 1, "d", "${x.y}", "$prompt")
    with pytest.raises(ValueError, match="positive integer"):
        PromptTemplate("bad", 0, "d", None, "$prompt")
    with pytest.raises(ValueError, match="template name"):
        PromptTemplate("a@b", 1, "d", None, "$prompt")


# -- the shipped templates ------------------------------------------------------------------

SHIPPED_CONTEXT: dict[str, Any] = {"labels": "billing, technical, other", "max_words": 50, "audience": "engineers"}


def test_shipped_templates_load_and_render() -> None:
    store = TemplateStore(TEMPLATES_DIR)
    assert {"summarize@1", "summarize@2", "classify@1"} <= set(store.refs())
    assert store.resolve("summarize").version >= 2
    prompt = "The invoice total was wrong twice; please refund $12.50."
    for ref in store.refs():
        template = store.resolve(ref)
        assert template.description
        messages = store.render(template, prompt, SHIPPED_CONTEXT)
        assert messages[-1].role == "user"
        assert prompt in messages[-1].content
        assert [m.role for m in messages] == (["system", "user"] if template.system else ["user"])
        for message in messages:
            assert "$" not in message.content.replace("$12.50", "")


def test_shipped_summarize_v2_uses_its_context_and_defaults() -> None:
    store = TemplateStore(TEMPLATES_DIR)
    template = store.resolve("summarize@2")
    system, user = store.render(template, "text", {"max_words": 40, "audience": "executives"})
    assert "at most 40 words" in user.content
    assert "executives" in system.content
    system, user = store.render(template, "text", {})
    assert "at most 120 words" in user.content


def test_shipped_classify_needs_labels() -> None:
    store = TemplateStore(TEMPLATES_DIR)
    with pytest.raises(InvalidInput) as caught:
        store.render(store.resolve("classify@1"), "text", {"labels": ["a", "b"]})
    assert caught.value.code == "template_variable_missing"
    assert "labels" in caught.value.message
