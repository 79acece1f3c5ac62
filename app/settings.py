"""The one settings object, in sections (`settings.storage.data_dir`, `settings.ocr.dpi`...).

Defaults live only in the models below; `configs/settings.yaml` (or the file KBQA_CONFIG names) holds overrides,
and KBQA_<SECTION>__<NAME> environment variables override both. The flat names used before the sections existed
(KBQA_MILVUS_URI, `milvus_uri:` in YAML...) keep working as aliases (LEGACY_NAMES). `python -m app.settings` prints
docs/settings.md.
"""

from __future__ import annotations

import json
import os
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined, to_jsonable_python
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = PROJECT_ROOT / "configs" / "settings.yaml"
ENV_PREFIX = "KBQA_"
# What `kbqa models prepare` builds under models_dir (app/modelprep/): the embedding model's folder, its int8
# OpenVINO and ONNX files, and the default chat model's GGUF file.
DEFAULT_EMBEDDING_DIRNAME = "multilingual-e5-small"
OPENVINO_INT8_FILE = "openvino/openvino_model_qint8.xml"
ONNX_INT8_FILE = "onnx/model_qint8_avx512_vnni.onnx"
ONNX_FP32_FILE = "onnx/model.onnx"
DEFAULT_LLM_FILENAME = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
CHUNK_SIZE_MIN, CHUNK_SIZE_MAX = 50, 8000  # characters; also the bounds of a knowledge base's own chunk_size

# NoDecode: a list setting may be given comma-separated as well as JSON (see _split_list).
StrList = Annotated[list[str], NoDecode]


def _split_list(value: object) -> object:
    """Accept a JSON list or a comma-separated string (environment) besides a list (YAML); drop blanks."""
    if isinstance(value, str):
        text = value.strip()
        value = json.loads(text) if text.startswith("[") else text.split(",")
    if isinstance(value, list):
        items = [item.strip() if isinstance(item, str) else item for item in value]
        return [item for item in items if item != ""]
    return value


class Section(BaseModel):
    """One group of settings; an unknown name in it is an error (a typo would otherwise be ignored)."""

    model_config = ConfigDict(extra="forbid")


class StorageSettings(Section):
    data_dir: Path = Field(
        Path("data"),
        validate_default=True,
        description="Everything the product stores (Milvus Lite file, catalog, uploaded files, prepared models, "
        "logs) lives here. Relative: to the working directory.",
    )
    milvus_uri: str = Field(
        "", description="Empty: a Milvus Lite file at <data_dir>/milvus.db. Or http://host:19530 for Milvus "
        "standalone / cluster."
    )
    milvus_token: str = Field("", description="Token for a Milvus server that requires authentication.")
    milvus_timeout_s: float = Field(
        10.0, gt=0, description="Seconds before a Milvus call gives up (the API then answers 503 instead of hanging)."
    )
    catalog_url: str = Field(
        "", description="Empty: a SQLite file at <data_dir>/catalog.db. Any SQLAlchemy URL works, e.g. "
        "postgresql+psycopg://user:pw@db/kbqa."
    )
    min_free_disk_mb: float = Field(
        100, ge=0, description="Writes (uploads, new knowledge bases, vectors into a Milvus Lite file) are refused "
        "with 507 while the disk holding data_dir has less free space than this: Milvus Lite accepts inserts on a "
        "full disk and then loses them."
    )
    tmp_dir: str = Field(
        "", description="Where `kbqa serve` keeps temporary files (uploads being received, Milvus Lite's socket). "
        "Empty: <data_dir>/tmp (a path over ~80 characters is too long for the socket: then /tmp is kept)."
    )

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value if value.is_absolute() else (Path.cwd() / value).resolve()

    @property
    def resolved_milvus_uri(self) -> str:
        return self.milvus_uri or str(self.data_dir / "milvus.db")

    @property
    def resolved_catalog_url(self) -> str:
        return self.catalog_url or f"sqlite:///{self.data_dir / 'catalog.db'}"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def files_dir(self) -> Path:
        return self.data_dir / "files"

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def run_dir(self) -> Path:
        return self.data_dir / "run"

    @property
    def resolved_tmp_dir(self) -> Path:
        return Path(self.tmp_dir).absolute() if self.tmp_dir else self.data_dir / "tmp"

    @property
    def default_llm_file(self) -> Path:
        return self.models_dir / DEFAULT_LLM_FILENAME


class EmbeddingSettings(Section):
    model: str = Field(
        "", description="Empty: multilingual-e5-small prepared by `kbqa models prepare` under <data_dir>/models. "
        "Any local sentence-transformers folder or hub name works (a hub name needs internet once)."
    )
    backend: Literal["openvino-int8", "onnx-int8", "torch"] = Field(
        "openvino-int8", description="openvino-int8: OpenVINO with static int8 calibrated at `kbqa models prepare` "
        "(the fastest on CPU, nearest fp32); onnx-int8: ONNX Runtime with int8 dynamic quantization; torch: fp32."
    )
    batch_size: int = Field(
        8, ge=1, le=512, description="Chunks encoded at once (both int8 runtimes are fastest at small batches on 2 "
        "cores: OpenVINO 8 -> 37 zh chunks/s, 16 -> 34; ONNX Runtime 8 -> 33, 32 -> 10)."
    )
    threads: int = Field(
        0, ge=0, description="Threads for the embedding runtime (ONNX Runtime or PyTorch); 0: all cores."
    )
    query_prompt: str = Field("query: ", description="Prefix of a question before it is encoded (e5 models).")
    passage_prompt: str = Field("passage: ", description="Prefix of a chunk before it is encoded (e5 models).")


class IngestSettings(Section):
    chunk_size: int = Field(
        500, ge=CHUNK_SIZE_MIN, le=CHUNK_SIZE_MAX,
        description="Characters per chunk of a new knowledge base (each knowledge base keeps its own).",
    )
    chunk_overlap: int = Field(50, ge=0, description="Characters shared by neighbouring chunks; below chunk_size.")
    lease_s: float = Field(
        60.0, ge=1, description="Several API processes may share one catalog and Milvus: a process holds the "
        "documents it indexes with a lease it renews every quarter of this many seconds; another takes a document "
        "over only after the lease ran out (its owner died)."
    )
    max_index_attempts: int = Field(
        2, ge=1, description="A document whose indexing started this many times without finishing (its process "
        "crashed or was killed each time) is marked failed instead of being resumed again."
    )
    niceness: int = Field(
        10, ge=0, le=19, description="Niceness of indexing (the ingestion thread, what it starts, the passage "
        "embedder's threads): on a busy CPU searches and answers go first. 0: the API's own priority."
    )
    max_upload_mb: float = Field(200, gt=0, description="Largest file one upload may carry (413 past it).")
    max_filename_chars: int = Field(200, ge=16, le=255, description="Longest uploaded file name.")
    max_kb_name_chars: int = Field(64, ge=1, le=255, description="Longest knowledge-base name.")

    @model_validator(mode="after")
    def _overlap_below_size(self) -> IngestSettings:
        if self.chunk_overlap >= self.chunk_size:
            raise ValueError("chunk_overlap must be smaller than chunk_size")
        return self

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)


class LimitsSettings(Section):
    """What reading one document may inflate or allocate (app/kb/loaders/_limits.py; a file past a limit fails
    naming it), and what one client can make the API hold (app/api/guards.py)."""

    max_text_chars: int = Field(
        20_000_000, ge=1,
        description="Characters of decoded text (.txt/.md/.html) and of the text extracted from any file.",
    )
    max_html_elements: int = Field(200_000, ge=1, description="Tags in an HTML file (each costs about 1 KB parsed).")
    max_pdf_pages: int = Field(5000, ge=1, description="Pages of a PDF (or a multi-page TIFF).")
    max_zip_members: int = Field(10_000, ge=1, description="Parts in a .docx/.xlsx/.pptx (zip packages).")
    max_zip_member_mb: float = Field(
        200, gt=0, description="Uncompressed size of any one part of a zip package (images, embedded files)."
    )
    max_zip_total_mb: float = Field(500, gt=0, description="Uncompressed size of all parts of a zip package together.")
    max_zip_ratio: float = Field(
        100, gt=1, description="Uncompressed:compressed size of a part over 1 MB (real Word XML: 5-20)."
    )
    max_xml_mb: float = Field(
        50, gt=0, description="Uncompressed size of one XML part, e.g. word/document.xml (parsed: ~15x in memory)."
    )
    max_sheet_cells: int = Field(
        1_000_000, ge=1, description="Cells holding a value in one .xlsx/.csv/.tsv (each ~150 bytes while read)."
    )
    max_request_mb: float = Field(
        1000, gt=0, description="A request body announced (Content-Length) or sent larger is refused with 413 "
        "before it is read; at least ingest.max_upload_mb (an upload carries its files)."
    )
    max_header_kb: int = Field(64, ge=1, description="The request line and headers together.")
    request_body_timeout_s: float = Field(
        60.0, gt=0, description="A body that stalls (no data) this long is refused with 408 and its connection closed."
    )


class OcrSettings(Section):
    """OCR reads text from pictures: PDF pages without a usable text layer, image files and pictures inside
    .docx/.pptx, with Debian's tesseract-ocr (scripts/setup.sh installs it), each page on one thread."""

    enabled: bool = Field(
        True, description="Off: pictures hold nothing readable, and a file that holds nothing else fails saying so."
    )
    languages: str = Field(
        "chi_sim+eng", pattern=r"^[A-Za-z_]+(\+[A-Za-z_]+)*$",
        description="Tesseract language packs joined by '+' (Debian: tesseract-ocr-chi-sim, -eng...).",
    )
    dpi: int = Field(200, ge=72, le=400, description="Resolution a scanned PDF page is rendered at for OCR.")
    page_timeout_s: float = Field(
        60.0, gt=0, description="OCR of one page or picture is stopped past this; the page counts as unreadable."
    )
    workers: int = Field(
        0, ge=0, description="Pages or pictures of one document (a scanned PDF, a multi-page TIFF, the pictures in a "
        ".docx/.pptx) read by OCR at once, one Tesseract process each; 0: as many as the machine has cores."
    )
    max_image_pixels: int = Field(
        64_000_000, ge=1, description="A picture with more pixels is refused before it is decoded (decompression bomb)."
    )
    max_pictures: int = Field(50, ge=0, description="Pictures read by OCR in one .docx/.pptx; the rest are skipped.")
    progress_interval_s: float = Field(
        1.0, ge=0, description="How often, at most, a document's pages read are written to the catalog while it is "
        "read (the progress bar of the UI and `pages_done` in the API)."
    )


class PreviewSettings(Section):
    """Source previews (app/kb/preview/): PDF pages and pictures rendered on demand with a cited chunk highlighted."""

    cache_mb: float = Field(
        200, ge=0, description="Page images are kept under <data_dir>/cache/pages up to this size; the least "
        "recently shown go first."
    )
    max_pixels: int = Field(
        4_000_000, ge=10_000, le=50_000_000, description="Largest page image rendered (the render is scaled down)."
    )


class RetrievalSettings(Section):
    default_top_k: int = Field(
        5, ge=1, description="Chunks a search or a question retrieves when the request says not."
    )
    max_top_k: int = Field(100, ge=1, le=1000, description="Most chunks one request may ask for.")
    default_score_threshold: float = Field(
        0.0, ge=0, le=1, description="Chunks scoring below this (0-1 scale) are dropped when the request says not."
    )
    hybrid_fusion: Literal["calibrated", "rrf"] = Field(
        "calibrated", description="calibrated: rank hybrid hits by the fitted hybrid score (both raw scores weighed "
        "as learned from labelled data); rrf: reciprocal rank fusion (still reporting the calibrated score)."
    )
    hybrid_dense_weight: float = Field(0.5, ge=0, le=1, description="rrf: the dense list's weight.")
    rrf_k: int = Field(60, ge=1, description="rrf: the constant k of reciprocal rank fusion.")
    score_calibration_file: Path | None = Field(
        None, description="A score calibration fitted by `scripts/calibrate_scores.py --write <file>`; empty: the "
        "bundled fit for multilingual-e5-small (app/retrieval/calibration.json)."
    )


class ChatSettings(Section):
    prompts_file: Path = Field(
        Path("configs/prompts.yaml"),
        validate_default=True,
        description="The prompt templates (relative to the project root, or absolute).",
    )
    history_turns: int = Field(5, ge=0, le=50, description="Earlier question/answer pairs sent with a question.")
    max_history_messages: int = Field(100, ge=0, description="Longer client-sent histories are refused (422).")
    max_kbs: int = Field(5, ge=1, description="Knowledge bases one question may search at once.")
    rewrite_followups: bool = Field(
        True, description="In kb mode, rewrite a follow-up into a standalone question before retrieval."
    )
    no_hit_policy: Literal["refuse", "llm"] = Field(
        "refuse", description="When no chunk passes the threshold: refuse, or llm (answer from the model, marked)."
    )
    max_question_chars: int = Field(1000, ge=1, description="Longest question (also in a question set).")
    kb_top_k: int = Field(
        3, ge=1, description="Chunks a 知识库问答 prompt gets (知识库测试 and search take retrieval.default_top_k). "
        "3, not 5: the first token 40% sooner with as many right answers (docs/benchmarks.md, bench_answers.py)."
    )
    kb_template: str = Field(
        "kb_default", description="The kb template of configs/prompts.yaml a 知识库问答 request that names none gets "
        "(measured in docs/benchmarks.md, scripts/bench_answers.py)."
    )
    kb_template_english: str = Field(
        "kb_english", description="The kb template a 知识库问答 request that names none gets when its question has no "
        "Chinese, Japanese or Korean letter (an English question); empty: kb_template for every question."
    )
    kb_max_tokens: int = Field(
        1024, ge=1, description="Most tokens of a 知识库问答 answer (never more than llm.max_tokens, which bounds the "
        "other modes; a request's max_tokens wins)."
    )
    focus_chars: int = Field(
        100, ge=0, description="Characters each source keeps in a 知识库问答 prompt: a longer chunk keeps its "
        "sentences sharing the rarest words with the question, in their order (app/chat/focus.py); 0: whole "
        "chunks. The sources shown with the answer stay whole. From the answers benchmark: 150 a source took the zh "
        "first token 8.3 -> 3.7 s with more answers right (0.70 -> 0.75) and cited (0.63 -> 0.76); 100 pooled "
        "(focus_pooled) 3.7 -> 3.0 s, right 0.77, cited 0.81."
    )
    focus_pooled: bool = Field(
        True, description="The sources of a 知识库问答 prompt share focus_chars times their number: sentences are "
        "kept in order of how much they bear on the question, wherever they are, each source keeping its best one "
        "(a source that bears more keeps more). false: focus_chars for each source."
    )
    context_order: Literal["best_first", "best_last"] = Field(
        "best_first", description="Order of the numbered chunks in the prompt: best_first, or best_last (the best "
        "chunk nearest the question; the numbers stay the ranks)."
    )

    @field_validator("prompts_file")
    @classmethod
    def _under_project(cls, value: Path) -> Path:
        return value if value.is_absolute() else PROJECT_ROOT / value


class LLMSettings(Section):
    """The backend reaches the LLM only through an OpenAI-compatible API, so FastChat (the default), vLLM, Ollama,
    llama.cpp's server or OpenAI itself can stand behind it unchanged."""

    base_url: str = Field(
        "", description="Empty: the FastChat stack that `kbqa llm up` starts (http://<fastchat.host>:"
        "<fastchat.api_port>/v1)."
    )
    model: str = Field("Qwen2.5-Coder-1.5B-Instruct", description="The model name sent to the LLM server.")
    api_key: str = Field("EMPTY", description="The key sent to the LLM server.")
    temperature: float = Field(0.3, ge=0, le=2, description="Sampling temperature of answers.")
    max_tokens: int = Field(1024, ge=1, description="Longest answer, in tokens.")
    connect_timeout_s: float = Field(3.0, gt=0, description="A server that is not running is reported after this.")
    timeout_s: float = Field(
        300.0, gt=0, description="Longest wait for the next piece of an answer, the wait in the worker's queue behind "
        "other users' answers included; also FastChat's own wait on the worker (FASTCHAT_WORKER_API_TIMEOUT)."
    )


class WorkerSettings(BaseModel):
    """One FastChat model worker that `kbqa llm up` starts and registers with the controller."""

    model_config = ConfigDict(extra="forbid")

    # llamacpp: our GGUF worker over llama-cpp-python (CPU, fast); hf: FastChat's own model_worker
    # (Hugging Face weights); vllm: FastChat's vllm_worker (GPU, needs `pip install vllm`).
    kind: Literal["llamacpp", "hf", "vllm"] = "llamacpp"
    port: int = Field(20002, ge=1, le=65535)
    # Empty: the GGUF prepared by `kbqa models prepare` (llamacpp only; hf and vllm need a path).
    model_path: str = ""
    # Empty: llm.model. Several workers may serve one name; the controller spreads requests over them.
    model_name: str = ""
    # FastChat conversation template name; empty lets FastChat pick one from the model path.
    conv_template: str = "qwen-7b-chat"
    context_length: int = Field(4096, ge=256)
    threads: int = Field(0, ge=0)  # llamacpp: 0 = all cores
    concurrency: int = Field(1, ge=1)  # requests a worker runs at once; the rest queue
    # llamacpp only: prompt-lookup speculative decoding, tokens drafted per step from the prompt; 0: off.
    speculative_tokens: int = Field(0, ge=0, le=64)
    # llamacpp only: the weights that read prompts. bf16: a bf16 copy of the GGUF made once beside it (prompts read
    # ~1.3x as fast on an AMD EPYC with AVX512-BF16, half as fast on an Intel Xeon with AMX; answers still decoded
    # with the GGUF's own weights); model: the GGUF itself; auto: bf16 where the CPU has AVX512-BF16 or AMX-BF16,
    # 16 GiB of memory, and the copy read a prompt faster than the GGUF when measured once on this machine.
    prefill_weights: Literal["auto", "bf16", "model"] = "auto"
    device: str = "cpu"  # hf only: cpu, cuda, mps
    extra_args: list[str] = []  # passed as-is to FastChat's model_worker / vllm_worker


class FastChatSettings(Section):
    """The FastChat stack that `kbqa llm up` starts: controller, openai_api_server and the workers."""

    host: str = Field("127.0.0.1", description="Where the controller, the API server and the workers listen.")
    controller_port: int = Field(20001, ge=1, le=65535, description="The controller's port.")
    api_port: int = Field(20000, ge=1, le=65535, description="The OpenAI-compatible API server's port.")
    dispatch_method: Literal["shortest_queue", "lottery"] = Field(
        "shortest_queue", description="How the controller picks a worker for a request."
    )
    heart_beat_s: int = Field(
        15, ge=1, description="Workers report this often; the controller drops one silent for 3x as long."
    )
    start_timeout_s: float = Field(180.0, gt=0, description="Longest wait for the stack to serve after starting it.")
    stall_timeout_s: float = Field(
        120.0, gt=0, description="A worker alive but not serving (silent to a status request, or busy without "
        "producing a token) this long is restarted by `kbqa llm up`."
    )
    probe_interval_s: float = Field(5.0, gt=0, description="How often `kbqa llm up` probes each worker.")
    workers: list[WorkerSettings] = Field(
        [WorkerSettings()], description="The model workers (JSON in the environment). Each registers under "
        "model_name (default llm.model); several may serve one name. kind: llamacpp (GGUF over llama-cpp-python, "
        "the CPU default), hf (FastChat's model_worker: model_path, device) or vllm (GPUs; `pip install vllm`); "
        "fields: kind, port, model_path, model_name, conv_template, context_length, threads, concurrency, "
        "speculative_tokens, prefill_weights (llamacpp), device, extra_args.",
    )

    @field_validator("workers", mode="before")
    @classmethod
    def _json_workers(cls, value: object) -> object:
        return json.loads(value) if isinstance(value, str) else value

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.api_port}/v1"

    @property
    def controller_url(self) -> str:
        return f"http://{self.host}:{self.controller_port}"


class ApiSettings(Section):
    host: str = Field("127.0.0.1", description="Where `kbqa serve` listens; 0.0.0.0 accepts other machines (then "
                      "set security.api_keys).")
    port: int = Field(7861, description="The API's port.")
    client_url: str = Field(
        "", description="Where the CLI and the web UI reach the API. Empty: http://<api.host>:<api.port>."
    )

    @property
    def url(self) -> str:
        return self.client_url or f"http://{self.host}:{self.port}"


class SecuritySettings(Section):
    api_keys: StrList = Field(
        [], description="Keys the API accepts. Empty: no authentication (fine on 127.0.0.1). Otherwise every route "
        "but GET /health needs 'Authorization: Bearer <key>' (401 without it); several keys let you rotate one at a "
        "time. Environment: comma-separated or a JSON list."
    )
    client_api_key: str = Field(
        "", description="The key our own clients (the kbqa CLI, the web UI) send. Empty: the first of api_keys."
    )
    cors_origins: StrList = Field(
        [], description="Browser origins allowed to call the API from other pages (CORS), e.g. "
        "https://kb.example.com. Empty: no cross-origin access."
    )
    allowed_hosts: StrList = Field(
        [], description="Names the API is served as besides 127.0.0.1, localhost, ::1 and api.host; a request "
        "whose Host names another is refused (421, against DNS rebinding). '*' accepts any."
    )

    @field_validator("api_keys", "cors_origins", "allowed_hosts", mode="before")
    @classmethod
    def _lists(cls, value: object) -> object:
        return _split_list(value)

    @field_validator("api_keys", "client_api_key")
    @classmethod
    def _printable_keys(cls, value: list[str] | str) -> list[str] | str:
        """A key travels in an HTTP header: visible ASCII only, or no client could ever send it."""
        for key in [value] if isinstance(value, str) else value:
            if not all("!" <= char <= "~" for char in key):
                raise ValueError("API keys may hold only visible ASCII characters (no spaces)")
        return value

    @property
    def resolved_client_api_key(self) -> str:
        """The key our own clients (CLI, UI) send: client_api_key, else the first accepted key, else none."""
        return self.client_api_key or (self.api_keys[0] if self.api_keys else "")


class UISettings(Section):
    """The Streamlit web UI (`kbqa ui`, started by `kbqa up`); it reaches the API at api.client_url."""

    host: str = Field("127.0.0.1", description="Where the web UI listens.")
    port: int = Field(8501, ge=1, le=65535, description="The web UI's port.")
    language: Literal["zh", "en"] = Field(
        "zh", description="The interface language a new browser session starts in (switchable in the UI)."
    )

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


class EvalSettings(Section):
    """Retrieval evaluation (kbqa eval, POST /api/kbs/{kb}/eval)."""

    max_questions: int = Field(2000, ge=1, description="Question sets with more questions are refused (413).")
    max_file_mb: float = Field(20, gt=0, description="Larger question-set files are refused (413).")
    max_chunk_sizes: int = Field(
        4, ge=0, le=20, description="Chunk sizes one evaluation may try besides the knowledge base's own (each "
        "re-indexes)."
    )
    max_answer_sample: int = Field(
        100, ge=0, description="Questions one evaluation may send to the LLM for the end-to-end answer check."
    )
    misses_listed: int = Field(
        100, ge=0, description="Missed questions listed per mode and chunk size in a report (all are counted)."
    )
    jobs_kept: int = Field(20, ge=1, description="Finished evaluation jobs kept in memory for GET /api/eval/jobs/{id}.")


def _flat(section: str, *fields: str, prefix: str = "") -> dict[str, tuple[str, str]]:
    return {f"{prefix}{name}": (section, name) for name in fields}


# Every flat name the settings had before they were grouped: still accepted in the environment (KBQA_<NAME>), in
# YAML and as a constructor keyword. Section, then field.
LEGACY_NAMES: dict[str, tuple[str, str]] = {
    **_flat("storage", "data_dir", "milvus_uri", "milvus_token", "milvus_timeout_s", "catalog_url",
            "min_free_disk_mb", "tmp_dir"),
    **_flat("embedding", "model", "backend", "batch_size", "threads", prefix="embedding_"),
    **_flat("embedding", "query_prompt", "passage_prompt"),
    **_flat("ingest", "chunk_size", "chunk_overlap", "max_index_attempts", "max_upload_mb", "max_filename_chars",
            "max_kb_name_chars"),
    "ingest_lease_s": ("ingest", "lease_s"),
    **_flat("limits", "max_text_chars", "max_html_elements", "max_pdf_pages", "max_zip_members", "max_zip_member_mb",
            "max_zip_total_mb", "max_zip_ratio", "max_xml_mb", "max_sheet_cells", prefix="load_"),
    **_flat("limits", "max_request_mb", "max_header_kb", "request_body_timeout_s"),
    "load_ocr": ("ocr", "enabled"),
    **_flat("ocr", "languages", "dpi", "page_timeout_s", "max_image_pixels", "max_pictures", prefix="load_ocr_"),
    **_flat("retrieval", "default_top_k", "max_top_k", "default_score_threshold", "hybrid_fusion",
            "hybrid_dense_weight", "rrf_k", "score_calibration_file"),
    "prompts_file": ("chat", "prompts_file"),
    "max_question_chars": ("chat", "max_question_chars"),
    **_flat("chat", "history_turns", "max_history_messages", "max_kbs", "rewrite_followups", "no_hit_policy",
            prefix="chat_"),
    **_flat("llm", "base_url", "model", "api_key", "temperature", "max_tokens", "connect_timeout_s", "timeout_s",
            prefix="llm_"),
    **_flat("fastchat", "host", "controller_port", "api_port", "dispatch_method", "heart_beat_s", "start_timeout_s",
            "stall_timeout_s", "probe_interval_s", prefix="fastchat_"),
    "llm_workers": ("fastchat", "workers"),
    **_flat("api", "host", "port", prefix="api_"),
    "api_url": ("api", "client_url"),
    **_flat("security", "api_keys", "client_api_key", "cors_origins", "allowed_hosts"),
    **_flat("ui", "host", "port", "language", prefix="ui_"),
    **_flat("eval", "max_questions", "max_file_mb", "max_chunk_sizes", "max_answer_sample", "misses_listed",
            "jobs_kept", prefix="eval_"),
}
# Attributes the flat Settings had besides its fields (properties), and where they went.
MOVED_PROPERTIES: dict[str, str] = {
    **{name: f"storage.{name}" for name in (
        "resolved_milvus_uri", "resolved_catalog_url", "models_dir", "files_dir", "logs_dir", "run_dir",
        "resolved_tmp_dir", "default_llm_file")},
    "fastchat_api_url": "fastchat.api_url",
    "fastchat_controller_url": "fastchat.controller_url",
    "max_upload_bytes": "ingest.max_upload_bytes",
    "resolved_client_api_key": "security.resolved_client_api_key",
    "ui_url": "ui.url",
    "api_url": "api.url",
}
MOVED: dict[str, str] = {flat: f"{section}.{name}" for flat, (section, name) in LEGACY_NAMES.items()} | MOVED_PROPERTIES


def env_name(path: str) -> str:
    """The environment variable of a setting: "limits.max_xml_mb" -> KBQA_LIMITS__MAX_XML_MB."""
    return ENV_PREFIX + path.replace(".", "__").upper()


def env_setting(variable: str) -> str | None:
    """The setting an environment variable sets, by its sectioned name or its old flat one
    (KBQA_STORAGE__MILVUS_URI, KBQA_MILVUS_URI -> "storage.milvus_uri"); None for no setting."""
    name = variable.lower().removeprefix(ENV_PREFIX.lower())
    if name in LEGACY_NAMES:
        section, field = LEGACY_NAMES[name]
        return f"{section}.{field}"
    section, _, field = name.partition("__")
    model = Settings.model_fields.get(section)
    known = model is not None and field in model.annotation.model_fields  # type: ignore[union-attr]
    return f"{section}.{field}" if variable.upper().startswith(ENV_PREFIX) and known else None


def setting_ref(path: str) -> str:
    """How messages name a setting: its path and its environment variable."""
    return f"{path} ({env_name(path)})"


def config_file() -> Path:
    return Path(os.environ.get("KBQA_CONFIG", DEFAULT_CONFIG))


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def nest(values: dict[str, Any], where: str, unknown: Literal["raise", "warn"] = "raise") -> dict[str, Any]:
    """Settings given as sections ({"storage": {...}}), as "section__name" or "section.name" keys, or by their old
    flat names, as one nested dict."""
    nested: dict[str, Any] = {}
    for key, value in values.items():
        if key in Settings.model_fields:
            part = {key: value}
        elif (parts := key.replace("__", ".").split(".")) and len(parts) == 2 and parts[0] in Settings.model_fields:
            part = {parts[0]: {parts[1]: value}}
        elif key in LEGACY_NAMES:
            section, name = LEGACY_NAMES[key]
            part = {section: {name: value}}
        elif unknown == "warn":
            warnings.warn(f"{where}: unknown setting {key!r} ignored (see docs/settings.md)", stacklevel=3)
            continue
        else:
            raise TypeError(f"{where}: unknown setting {key!r} (see docs/settings.md)")
        nested = _deep_merge(nested, part)
    return nested


class _LegacyEnvSource(PydanticBaseSettingsSource):
    """KBQA_<FLAT_NAME> variables (e.g. KBQA_MILVUS_URI), as the settings' old flat names; case-insensitive like
    the nested ones. The values stay strings: the fields' validators parse them (lists, JSON workers)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        env = {key.lower(): value for key, value in os.environ.items()}
        names = {flat: f"{ENV_PREFIX.lower()}{flat}" for flat in LEGACY_NAMES}
        found = {flat: env[name] for flat, name in names.items() if name in env}
        return nest(found, "environment")


class _YamlSource(PydanticBaseSettingsSource):
    """The overrides file (KBQA_CONFIG, else configs/settings.yaml): sections, or the old flat names."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = config_file()
        if not path.is_file():
            return {}
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: settings must be a mapping, got {type(data).__name__}")
        return nest(data, str(path), unknown="warn")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="ignore")

    storage: StorageSettings = Field(default_factory=StorageSettings, description="Where data lives.")
    embedding: EmbeddingSettings = Field(default_factory=EmbeddingSettings, description="The embedding model.")
    ingest: IngestSettings = Field(default_factory=IngestSettings, description="Uploads and indexing.")
    limits: LimitsSettings = Field(
        default_factory=LimitsSettings, description="Bounds on reading one document and on one request."
    )
    ocr: OcrSettings = Field(default_factory=OcrSettings, description="Reading text from pictures.")
    preview: PreviewSettings = Field(default_factory=PreviewSettings, description="Source previews.")
    retrieval: RetrievalSettings = Field(default_factory=RetrievalSettings, description="Search and scores.")
    chat: ChatSettings = Field(default_factory=ChatSettings, description="Chat and prompts.")
    llm: LLMSettings = Field(default_factory=LLMSettings, description="The LLM, over an OpenAI-compatible API.")
    fastchat: FastChatSettings = Field(default_factory=FastChatSettings, description="The local LLM stack.")
    api: ApiSettings = Field(default_factory=ApiSettings, description="The REST API server.")
    security: SecuritySettings = Field(default_factory=SecuritySettings, description="Keys, CORS, host names.")
    ui: UISettings = Field(default_factory=UISettings, description="The web UI.")
    eval: EvalSettings = Field(default_factory=EvalSettings, description="Retrieval evaluation.")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        given = getattr(init_settings, "init_kwargs", {})
        init = InitSettingsSource(settings_cls, init_kwargs=nest(given, "Settings()"))
        return init, env_settings, _LegacyEnvSource(settings_cls), _YamlSource(settings_cls)

    @model_validator(mode="after")
    def _request_holds_upload(self) -> Settings:
        if self.limits.max_request_mb < self.ingest.max_upload_mb:
            raise ValueError(
                "limits.max_request_mb must be at least ingest.max_upload_mb: an upload's request carries the file"
            )
        return self

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)  # type: ignore[misc]
        except AttributeError:
            if name in MOVED:
                raise AttributeError(f"settings.{name} moved to settings.{MOVED[name]}") from None
            raise

    def with_changes(self, **changes: Any) -> Settings:
        """A copy with some settings changed, validated again: `with_changes(storage__data_dir=path)` (also
        "storage.data_dir" keys, sections as dicts, or the old flat names)."""
        return type(self).model_validate(_deep_merge(self.model_dump(), nest(changes, "with_changes()")))

    @property
    def resolved_embedding_model(self) -> str:
        return self.embedding.model or str(self.storage.models_dir / DEFAULT_EMBEDDING_DIRNAME)

    @property
    def resolved_llm_base_url(self) -> str:
        """Where the backend reaches the LLM: any OpenAI-compatible server, the FastChat stack by default."""
        return (self.llm.base_url or self.fastchat.api_url).rstrip("/")


@lru_cache
def get_settings() -> Settings:
    return Settings()


def _default(field: FieldInfo) -> object:
    value = field.default_factory() if field.default_factory is not None else field.default  # type: ignore[call-arg]
    return None if value is PydanticUndefined else value


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ").replace("<", "&lt;").replace(">", "&gt;")


def render_docs() -> str:
    """docs/settings.md: every section and setting, its environment variable, old flat name and default."""
    old = {f"{section}.{name}": flat for flat, (section, name) in LEGACY_NAMES.items()}
    lines = [
        "# Settings",
        "",
        "Generated from `app/settings.py` by `python -m app.settings > docs/settings.md` (a test fails when this "
        "file is stale).",
        "",
        "Defaults live only in the code. `configs/settings.yaml` (or the file `KBQA_CONFIG` names) holds overrides, "
        "by section:",
        "",
        "```yaml",
        "storage:",
        "  milvus_uri: http://milvus:19530",
        "ocr:",
        "  dpi: 300",
        "```",
        "",
        "Environment variables override the file: `KBQA_<SECTION>__<NAME>`, e.g. `KBQA_STORAGE__MILVUS_URI`. The "
        "flat names used before the sections (`KBQA_MILVUS_URI`, `milvus_uri:` at the top of the YAML file) keep "
        "working as aliases; a sectioned name wins over its alias. Lists take JSON or comma-separated values "
        "(`KBQA_SECURITY__API_KEYS=key1,key2`); `fastchat.workers` takes JSON.",
    ]
    for section, section_field in Settings.model_fields.items():
        model = section_field.annotation
        assert isinstance(model, type) and issubclass(model, BaseModel)
        lines += ["", f"## `{section}`: {section_field.description}", ""]
        if model.__doc__ and model.__doc__ != Section.__doc__:
            lines += [" ".join(model.__doc__.split()), ""]
        lines += ["| setting | environment | old name | default | what |", "|---|---|---|---|---|"]
        for name, field in model.model_fields.items():
            path = f"{section}.{name}"
            default = json.dumps(to_jsonable_python(_default(field)), ensure_ascii=False)
            alias = f"`{ENV_PREFIX}{old[path].upper()}`" if path in old else ""
            lines.append(
                f"| `{path}` | `{env_name(path)}` | {alias} | `{_cell(default)}` | {_cell(field.description or '')} |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render_docs(), end="")
