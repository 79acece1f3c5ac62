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
    "chat.conversation_gone": (
        "链接中的对话已不存在，已开始新对话。",
        "The conversation in the link is gone; a new one starts.",
    ),
    "chat.interrupted": (
        "（回答被中断：生成时页面有了新的操作）",
        "(interrupted: the page was used while the answer came)",
    ),
    "chat.export": ("导出为 Markdown", "Export as Markdown"),
    "chat.sources": ("来源（{n}）", "Sources ({n})"),
    "chat.source_line": (
        "**[{number}]** {file}{page} · 分数 {score:.3f} · 知识库 {kb}",
        "**[{number}]** {file}{page} · score {score:.3f} · {kb}",
    ),
    "chat.page": (" · 第 {page} 页", " · page {page}"),
    "chat.ocr": (" · OCR", " · OCR"),
    "preview.open": ("在原文中查看", "View in the original"),
    "preview.page": ("第 {page} 页（共 {pages} 页）", "Page {page} of {pages}"),
    "preview.not_found": (
        "未能在该页上定位此片段，只显示页面。",
        "The passage could not be located on the page; the page is shown without marks.",
    ),
    "preview.rows": ("表格行", "Spreadsheet rows"),
    "preview.slide": ("第 {page} 张幻灯片", "Slide {page}"),
    "preview.row": ("行号", "Row"),
    "preview.title": ("原文：{file}", "In the original: {file}"),
    "preview.bad_link": (
        "链接不完整：需要知识库、文档和片段编号。请从回答中的引用 [n] 打开。",
        "The link is incomplete: it needs a knowledge base, a document and a chunk number. Open it from an "
        "answer's citation [n].",
    ),
    "nav.source": ("原文", "Source"),
    "preview.kb": ("知识库 {kb}", "Knowledge base {kb}"),
    "preview.no_heading": ("（无标题）", "(no heading)"),
    "preview.ocr": ("此片段的文字由 OCR 从图片中识别。", "This passage was read from a picture by OCR."),
    "preview.download": ("下载原文件 {file}", "Download the original {file}"),
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
    "hits.ocr": ("OCR", "OCR"),
    "hits.chart": ("分数分布", "Scores"),
    "export.title": ("对话记录", "Conversation"),
    "export.user": ("问", "Question"),
    "export.assistant": ("答", "Answer"),
    "export.sources": ("来源", "Sources"),
    "export.empty": ("（空）", "(empty)"),
    # evaluation panel (知识库测试)
    "eval.title": ("批量评测：用问题集衡量检索质量", "Evaluate retrieval with a question set"),
    "eval.intro": (
        "上传 JSONL 问题集（每行一个问题，附期望的文档 id、文件名或答案文本），得到各检索方式和分块大小下的 "
        "recall@1/5/10、MRR、耗时、建议阈值和未命中的问题。",
        "Upload a JSONL question set (one question per line with the expected document id, file name or answer "
        "text) and get recall@1/5/10, MRR and latency per retrieval mode and chunk size, a suggested threshold "
        "and the questions that missed.",
    ),
    "eval.kb": ("评测的知识库", "Knowledge base"),
    "eval.modes": ("检索方式", "Retrieval modes"),
    "eval.file": ("问题集（.jsonl）", "Question set (.jsonl)"),
    "eval.file_help": (
        '每行例如 {"question": "…", "file_name": "手册.pdf"}，或用 "doc_id"、"answer"；可加 "source" 分组统计。',
        'Each line e.g. {"question": "…", "file_name": "manual.pdf"}, or "doc_id", "answer"; "source" groups '
        "the figures.",
    ),
    "eval.chunk_sizes": ("另试分块大小（逗号分隔，可空）", "Other chunk sizes to try (comma-separated, optional)"),
    "eval.answer_sample": ("端到端答案抽检题数", "Questions for the end-to-end answer check"),
    "eval.sample_help": (
        "对带答案文本的问题，用 LLM 在知识库问答模式下作答并检查答案是否包含期望文本（每题数秒）。",
        "For questions with answer text, the LLM answers in KB Q&A mode and the answer is checked for the "
        "expected text (seconds per question).",
    ),
    "eval.start": ("开始评测", "Start"),
    "eval.bad_sizes": ("分块大小须为逗号分隔的整数：{text}", "Chunk sizes must be whole numbers: {text}"),
    "eval.running": ("评测中：{stage}", "Evaluating: {stage}"),
    "eval.cancel": ("取消评测", "Cancel"),
    "eval.failed": ("评测失败：{reason}", "The evaluation failed: {reason}"),
    "eval.cancelled": ("评测已取消。", "The evaluation was cancelled."),
    "eval.done": ("完成：{questions} 个问题，用时 {seconds:.1f} 秒", "Done: {questions} questions in {seconds:.1f} s"),
    "eval.col.run": ("检索方式 @分块大小", "Mode @chunk size"),
    "eval.col.chunks": ("分块数", "Chunks"),
    "eval.col.misses": ("前 5 未命中", "Missed (top 5)"),
    "eval.col.source": ("来源", "Source"),
    "eval.col.questions": ("问题数", "Questions"),
    "eval.col.threshold": ("阈值", "Threshold"),
    "eval.col.gold_kept": ("保留的正确分块", "Gold kept"),
    "eval.col.others_dropped": ("丢弃的其他分块", "Others dropped"),
    "eval.col.question": ("问题", "Question"),
    "eval.col.answer": ("回答", "Answer"),
    "eval.by_source": ("按来源", "By source"),
    "eval.threshold": ("建议分数阈值", "Suggested score threshold"),
    "eval.threshold_tradeoff": (
        "在此阈值下保留 {kept:.1f}% 的正确分块，丢弃 {dropped:.1f}% 的其他分块（准则：{criterion}）。",
        "At this threshold {kept:.1f}% of the gold hits are kept and {dropped:.1f}% of the others are dropped "
        "(criterion: {criterion}).",
    ),
    "eval.no_threshold": ("无法给出建议阈值：{note}", "No threshold can be suggested: {note}"),
    "eval.misses_of": ("查看未命中的问题", "Misses of"),
    "eval.misses_count": ("列出 {shown} 个，共 {total} 个", "{shown} listed of {total}"),
    "eval.gold_rank": ("正确分块排在第 {rank} 位", "gold hit at rank {rank}"),
    "eval.gold_absent": ("前 10 中没有正确分块", "no gold hit in the top 10"),
    "eval.expected": ("期望：{expected}", "Expected: {expected}"),
    "eval.answers": ("端到端答案抽检", "End-to-end answer check"),
    "eval.contains": ("答案包含期望文本", "Answer contains the text"),
    "eval.refused": ("拒答", "Refused"),
    "eval.refused_with_gold": ("检索到正确分块仍拒答", "Refused with the gold chunk retrieved"),
    "eval.download": ("下载 JSON 报告", "Download the JSON report"),
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
    "kbs.doc_reading": (
        "{name}：{status}（读取第 {done}/{total} 页）",
        "{name}: {status} (reading page {done}/{total})",
    ),
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
    "col.reading": ("读取方式", "How read"),
    "read.text_pages": ("文本层 {n} 页", "text layer {n} p."),
    "read.ocr_pages": ("OCR {n} 页", "OCR {n} p."),
    "read.ocr_pictures": ("图片 OCR {n} 张", "OCR {n} pictures"),
    "read.confidence": ("（置信度 {confidence:.2f}）", " (confidence {confidence:.2f})"),
    "read.empty_pages": ("无内容 {n} 页", "{n} p. nothing readable"),
    "read.text": ("文本", "text"),
    "read.reading": ("读取第 {done}/{total} 页", "reading page {done}/{total}"),
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
