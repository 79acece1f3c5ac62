"""The prompt templates from configs/prompts.yaml, and the filling of them."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml

from app.chat.focus import focus_texts
from app.chat.models import Source
from app.errors import InvalidInput

ContextOrder = Literal["best_first", "best_last"]


@dataclass(frozen=True)
class KbExample:
    """A worked question: `context` as format_context writes it, the question, and the answer wanted."""

    context: str
    question: str
    answer: str


@dataclass(frozen=True)
class KbTemplate:
    """`user` gets the context and the question; `system`, where set, goes before everything as the system
    message, and `examples` follow it as earlier turns (the user text filled like a real question's, then the
    answer wanted): fixed turns the LLM worker evaluates once for every question (its prefix reuse)."""

    user: str
    system: str = ""
    examples: tuple[KbExample, ...] = ()

    @classmethod
    def parse(cls, name: str, value: str | dict[str, Any]) -> KbTemplate:
        if isinstance(value, str):
            return cls(user=value)
        if not isinstance(value, dict) or not isinstance(value.get("user"), str):
            raise ValueError(f"prompt template {name!r}: a text, or a mapping with a `user` text (and a `system` one)")
        examples = value.get("examples") or []
        fields = ("context", "question", "answer")
        if not isinstance(examples, list) or not all(
            isinstance(e, dict) and all(isinstance(e.get(f), str) for f in fields) for e in examples
        ):
            raise ValueError(f"prompt template {name!r}: `examples` is a list of mappings with a `context`, a "
                             "`question` and an `answer` text")
        return cls(user=value["user"], system=value.get("system") or "",
                   examples=tuple(KbExample(*(e[f] for f in fields)) for e in examples))

    def fill(self, context: str, question: str) -> str:
        return self.user.replace("{context}", context).replace("{question}", question)


@dataclass(frozen=True)
class PromptBook:
    kb_templates: dict[str, KbTemplate]
    rewrite: str
    no_hit_refusal: str
    no_hit_notice: str

    def kb_prompt(
        self, question: str, sources: list[Source], template: str, order: ContextOrder = "best_first",
        focus_chars: int = 0, focus_pooled: bool = False,
    ) -> str:
        """`focus_chars` > 0: each source's text cut to its sentences that bear on the question (app/chat/focus.py);
        `focus_pooled`: the sources share that budget times their number."""
        texts = focus_texts(question, [source.text for source in sources], focus_chars, focus_pooled)
        focused = [source.model_copy(update={"text": text}) for source, text in zip(sources, texts, strict=True)]
        return self.kb_template(template).fill(format_context(focused, order), question)

    def kb_system(self, template: str) -> str:
        return self.kb_template(template).system

    def kb_examples(self, template: str) -> list[dict[str, str]]:
        """The template's worked examples as earlier chat turns (user, assistant), to follow the system message."""
        kb = self.kb_template(template)
        return [
            message
            for example in kb.examples
            for message in ({"role": "user", "content": kb.fill(example.context, example.question)},
                            {"role": "assistant", "content": example.answer})
        ]

    def kb_template(self, name: str) -> KbTemplate:
        if name not in self.kb_templates:
            raise InvalidInput(f"unknown prompt template {name!r}; known: {', '.join(sorted(self.kb_templates))}")
        return self.kb_templates[name]

    def rewrite_prompt(self, history: list[tuple[str, str]], question: str) -> str:
        turns = "\n".join(f"{'用户' if role == 'user' else '助手'}：{text}" for role, text in history)
        return self.rewrite.replace("{history}", turns).replace("{question}", question)


def default_template(question: str, template: str, english_template: str) -> str:
    """The template for a question that names none: `english_template`, where set, for a question with Latin letters
    and no Chinese, Japanese or Korean letter (kb_default asks for Chinese answers)."""
    if english_template and _has_latin_letters_only(question):
        return english_template
    return template


def _has_latin_letters_only(text: str) -> bool:
    letters = [ch for ch in text if ch.isalpha()]
    wide = any(unicodedata.east_asian_width(ch) in "WF" for ch in letters)
    return bool(letters) and not wide and any(ch.isascii() for ch in letters)


def format_context(sources: list[Source], order: ContextOrder = "best_first") -> str:
    """Numbered blocks, each with where it comes from, so the answer can cite [n]. `sources` come best first;
    best_last puts the best block nearest the question that follows the context, keeping each block's number."""
    blocks = []
    for source in sources if order == "best_first" else reversed(sources):
        where = source.file_name + (f" 第{source.page}页" if source.page else "")
        blocks.append(f"[{source.number}] ({where}) {source.text}")
    return "\n\n".join(blocks)


@lru_cache(maxsize=4)
def _load(path: Path, mtime: float) -> PromptBook:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return PromptBook(
        kb_templates={name: KbTemplate.parse(name, value) for name, value in data["kb_templates"].items()},
        rewrite=data["rewrite"],
        no_hit_refusal=data["no_hit_refusal"],
        no_hit_notice=data["no_hit_notice"],
    )


def load_prompts(path: Path) -> PromptBook:
    """Read once, and again whenever the file changes (templates can be edited while the server runs)."""
    return _load(path, path.stat().st_mtime)
