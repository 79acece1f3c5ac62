"""A conversation as a Markdown document, for the export button."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from webui.i18n import t


def conversation_markdown(messages: list[dict[str, Any]], now: datetime | None = None) -> str:
    stamp = (now or datetime.now()).strftime("%Y-%m-%d %H:%M")
    lines = [f"# {t('export.title')} ({stamp})", ""]
    for message in messages:
        if message["role"] == "user":
            lines += [f"## {t('export.user')}（{t('mode.' + message['mode'])}）", "", message["content"], ""]
            continue
        lines += [f"### {t('export.assistant')}", ""]
        if message.get("rewritten_question"):
            lines += [f"> {t('chat.rewritten', question=message['rewritten_question'])}", ""]
        lines += [message.get("content") or t("export.empty"), ""]
        if message.get("error"):
            lines += [f"> {t('err.partial', detail=message['error'])}", ""]
        if message.get("sources"):
            lines += [f"**{t('export.sources')}**", ""]
            lines += [_source_line(source) for source in message["sources"]]
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _source_line(source: dict[str, Any]) -> str:
    page = t("chat.page", page=source["page"]) if source.get("page") else ""
    return f"- [{source['number']}] {source['file_name']}{page} ({source['score']:.3f}, {source['kb_name']})"
