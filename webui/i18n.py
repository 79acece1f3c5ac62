"""Interface texts in Chinese (the default) and English. `t(key, **values)` picks the session's language."""

from __future__ import annotations

import os

import streamlit as st

LANGUAGES = {"zh": "中文", "en": "English"}

TEXTS: dict[str, tuple[str, str]] = {
    # navigation and shell
    "app.title": ("本地知识库问答", "Local knowledge-base Q&A"),
    "nav.chat": ("对话", "Chat"),
    "nav.kbs": ("知识库管理", "Knowledge bases"),
    "lang.label": ("语言 / Language", "语言 / Language"),
    "status.api_ok": ("API 已连接", "API connected"),
    "status.llm_ok": ("LLM 就绪：{model}", "LLM ready: {model}"),
    "status.llm_down": ("LLM 未连接", "LLM not reachable"),
    "status.llm_model_missing": ("LLM 服务未提供模型 {model}", "The LLM server does not serve {model}"),
    # errors
    "err.api_unreachable": (
        "无法连接 kbqa API（{url}）。请先启动后端：`scripts/run.sh`（全部启动）或 `.venv/bin/kbqa serve`（仅 API）。",
        "Cannot reach the kbqa API at {url}. Start the backend first: `scripts/run.sh` (everything) or "
        "`.venv/bin/kbqa serve` (the API only).",
    ),
    "err.unauthorized": (
        "API 拒绝了访问密钥（401）。请设置 KBQA_CLIENT_API_KEY 为 API 接受的密钥。",
        "The API refused the key (401). Set KBQA_CLIENT_API_KEY to a key the API accepts.",
    ),
    "err.llm_down": (
        "LLM 当前不可用。启动本地模型：`.venv/bin/kbqa llm up`（或用 `scripts/run.sh` 全部启动）。"
        "知识库测试不需要 LLM。",
        "The LLM is not available. Start the local model with `.venv/bin/kbqa llm up` (or everything with "
        "`scripts/run.sh`). 知识库测试 (retrieval test) works without it.",
    ),
    "err.http": ("请求失败（{status}）：{detail}", "The request failed ({status}): {detail}"),
    "err.detail": ("详情：{detail}", "Details: {detail}"),
    "err.partial": ("回答中断：{detail}", "The answer was cut off: {detail}"),
    # chat page
    "chat.title": ("对话", "Chat"),
    "mode.label": ("模式", "Mode"),
    "mode.llm": ("LLM 对话", "LLM chat"),
    "mode.kb": ("知识库问答", "KB Q&A"),
    "mode.kb_test": ("知识库测试", "Retrieval test"),
    "chat.kbs": ("知识库", "Knowledge bases"),
    "chat.kbs_help": (
        "可选多个；各知识库的结果按同一 0-1 分数合并。",
        "Pick one or several; hits merge on one 0-1 score.",
    ),
    "chat.pick_kb": ("请先在侧栏选择至少一个知识库。", "Pick at least one knowledge base in the sidebar."),
    "chat.no_kbs": (
        "还没有知识库，先去创建一个并上传文档。",
        "There is no knowledge base yet: create one and upload documents.",
    ),
    "chat.go_kbs": ("前往知识库管理", "Go to knowledge bases"),
    "chat.placeholder.llm": ("和模型聊聊……", "Talk to the model…"),
    "chat.placeholder.kb": ("基于知识库提问……", "Ask your knowledge base…"),
    "chat.placeholder.kb_test": ("输入问题，查看检索到的分块与分数……", "Type a question to see the retrieved chunks…"),
    "chat.settings": ("参数设置", "Settings"),
    "chat.top_k": ("返回分块数 top_k", "Chunks to retrieve (top_k)"),
    "chat.threshold": ("分数阈值", "Score threshold"),
    "chat.threshold_help": (
        "0-1 的统一分数，越高越相关；低于阈值的分块被丢弃。",
        "One 0-1 scale for every mode, higher is better; chunks below it are dropped.",
    ),
    "chat.retrieval_mode": ("检索方式", "Retrieval mode"),
    "retrieval.hybrid": ("混合（向量+BM25）", "Hybrid (dense + BM25)"),
    "retrieval.dense": ("向量", "Dense"),
    "retrieval.bm25": ("关键词 BM25", "Keyword BM25"),
    "chat.temperature": ("温度", "Temperature"),
    "chat.history_turns": ("携带历史轮数", "History turns sent"),
    "chat.new": ("新对话", "New conversation"),
    "chat.export": ("导出 .md", "Export .md"),
    "chat.sources": ("来源（{n}）", "Sources ({n})"),
    "chat.source_line": (
        "**[{number}]** {file}{page} · 分数 {score:.3f} · 知识库 {kb}",
        "**[{number}]** {file}{page} · score {score:.3f} · {kb}",
    ),
    "chat.page": (" · 第 {page} 页", " · page {page}"),
    "chat.rewritten": ("检索用改写问题：{question}", "Rewritten for retrieval: {question}"),
    "chat.timings": ("耗时", "Timings"),
    "timing.retrieval_ms": ("检索", "retrieval"),
    "timing.rewrite_ms": ("改写", "rewrite"),
    "timing.first_token_ms": ("首字", "first token"),
    "timing.total_ms": ("总计", "total"),
    "chat.no_hits": ("没有分块达到阈值。", "No chunk passed the threshold."),
    "chat.not_from_kb": ("（未使用知识库内容）", "(not from the knowledge base)"),
    "hits.number": ("序号", "#"),
    "hits.kb": ("知识库", "Knowledge base"),
    "hits.file": ("文件", "File"),
    "hits.page": ("页", "Page"),
    "hits.score": ("分数", "Score"),
    "hits.text": ("分块内容", "Chunk text"),
    "hits.chart": ("分数分布", "Scores"),
    "export.title": ("对话记录", "Conversation"),
    "export.user": ("问", "Question"),
    "export.assistant": ("答", "Answer"),
    "export.sources": ("来源", "Sources"),
    "export.empty": ("（空）", "(empty)"),
    # knowledge-base page
    "kbs.title": ("知识库管理", "Knowledge bases"),
    "kbs.create": ("新建知识库", "New knowledge base"),
    "kbs.name": ("名称", "Name"),
    "kbs.description": ("描述", "Description"),
    "kbs.create_button": ("创建", "Create"),
    "kbs.created": ("已创建知识库「{name}」", "Created knowledge base “{name}”"),
    "kbs.none": ("还没有知识库。在上面新建一个。", "No knowledge base yet. Create one above."),
    "kbs.select": ("选择知识库", "Knowledge base"),
    "kbs.documents": ("文档", "Documents"),
    "kbs.ready": ("就绪", "Ready"),
    "kbs.chunks": ("分块", "Chunks"),
    "kbs.chunk_size": ("分块大小", "Chunk size"),
    "kbs.delete": ("删除知识库", "Delete knowledge base"),
    "kbs.delete_confirm": (
        "确认删除知识库「{name}」及其全部文档和向量？此操作不可撤销。",
        "Delete “{name}” with all its documents and vectors? This cannot be undone.",
    ),
    "kbs.deleted": ("已删除知识库「{name}」", "Deleted “{name}”"),
    "kbs.confirm": ("确认删除", "Delete"),
    "kbs.cancel": ("取消", "Cancel"),
    "kbs.upload": ("上传文档（可多选）", "Upload documents (several at once)"),
    "kbs.upload_help": ("支持：{types}；单个文件最大 {mb:g} MB。", "Accepted: {types}; up to {mb:g} MB per file."),
    "kbs.upload_button": ("上传并建立索引", "Upload and index"),
    "kbs.uploaded": ("「{name}」已加入索引队列", "“{name}” is queued for indexing"),
    "kbs.duplicate": ("「{name}」：{message}", "“{name}”: {message}"),
    "kbs.upload_failed": ("「{name}」上传失败：{detail}", "“{name}” was not uploaded: {detail}"),
    "kbs.progress": ("索引进度", "Indexing"),
    "kbs.doc_progress": ("{name}：{status}（{done}/{total} 分块）", "{name}: {status} ({done}/{total} chunks)"),
    "kbs.doc_ready": ("「{name}」已就绪：{chunks} 个分块", "“{name}” is ready: {chunks} chunks"),
    "kbs.doc_failed": ("「{name}」失败：{error}", "“{name}” failed: {error}"),
    "kbs.no_documents": ("这个知识库还没有文档。", "This knowledge base has no documents yet."),
    "kbs.doc_select": ("选择文档", "Document"),
    "kbs.show_chunks": ("查看分块", "Show chunks"),
    "kbs.delete_doc": ("删除文档", "Delete document"),
    "kbs.doc_deleted": ("已删除文档「{name}」", "Deleted “{name}”"),
    "kbs.chunk_caption": ("分块 #{index}{page}{heading}", "Chunk #{index}{page}{heading}"),
    "kbs.chunks_of": ("「{name}」的分块 {start}-{end} / {total}", "Chunks {start}-{end} of {total} in “{name}”"),
    "kbs.prev": ("上一页", "Previous"),
    "kbs.next": ("下一页", "Next"),
    "col.filename": ("文件名", "File"),
    "col.status": ("状态", "Status"),
    "col.pages": ("页数", "Pages"),
    "col.chunks": ("分块数", "Chunks"),
    "col.size": ("大小", "Size"),
    "col.created": ("上传时间", "Uploaded"),
    "col.progress": ("进度", "Progress"),
    "col.error": ("失败原因", "Error"),
    "doc.queued": ("排队中", "queued"),
    "doc.processing": ("索引中", "indexing"),
    "doc.ready": ("就绪", "ready"),
    "doc.failed": ("失败", "failed"),
}


def default_language() -> str:
    language = os.environ.get("KBQA_UI_LANGUAGE", "zh")
    return language if language in LANGUAGES else "zh"


def language() -> str:
    return st.session_state.get("lang") or default_language()


def t(key: str, **values: object) -> str:
    zh, en = TEXTS[key]
    text = en if language() == "en" else zh
    return text.format(**values) if values else text
