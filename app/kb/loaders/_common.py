"""Helpers shared by several loaders: short error reasons and the heading-path Section builder."""

from __future__ import annotations

from app.kb.documents import Section


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


class _SectionBuilder:
    """Collects text blocks under the current heading path and cuts a Section whenever a heading starts."""

    def __init__(self) -> None:
        self._stack: list[tuple[int, str]] = []
        self._blocks: list[str] = []
        self._sections: list[Section] = []

    def start_heading(self, level: int, title: str) -> None:
        self._flush()
        while self._stack and self._stack[-1][0] >= level:
            self._stack.pop()
        self._stack.append((level, " ".join(title.split())))

    def reset_headings(self) -> None:
        self._flush()
        self._stack = []

    def add_text(self, text: str) -> None:
        if text.strip():
            self._blocks.append(text.strip("\n"))

    def finish(self) -> list[Section]:
        self._flush()
        return self._sections

    def _flush(self) -> None:
        text = "\n\n".join(self._blocks).strip()
        if text:
            heading = " > ".join(title for _, title in self._stack) or None
            self._sections.append(Section(text=text, heading=heading))
        self._blocks = []
