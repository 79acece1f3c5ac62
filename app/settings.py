"""The one settings object: defaults from configs/settings.yaml, overridden by KBQA_* environment variables."""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = PROJECT_ROOT / "configs" / "settings.yaml"
# What `kbqa models prepare` builds under models_dir (app/modelprep/): the embedding model's folder, its int8 ONNX
# file, and the default chat model's GGUF file.
DEFAULT_EMBEDDING_DIRNAME = "multilingual-e5-small"
ONNX_INT8_FILE = "onnx/model_qint8_avx512_vnni.onnx"
DEFAULT_LLM_FILENAME = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
CHUNK_SIZE_MIN, CHUNK_SIZE_MAX = 50, 8000  # characters; also the bounds of a knowledge base's own chunk_size


class WorkerSettings(BaseModel):
    """One FastChat model worker that `kbqa llm up` starts and registers with the controller."""

    model_config = ConfigDict(extra="forbid")

    # llamacpp: our GGUF worker over llama-cpp-python (CPU, fast); hf: FastChat's own model_worker
    # (Hugging Face weights); vllm: FastChat's vllm_worker (GPU, needs `pip install vllm`).
    kind: Literal["llamacpp", "hf", "vllm"] = "llamacpp"
    port: int = Field(20002, ge=1, le=65535)
    # Empty: the GGUF prepared by `kbqa models prepare` (llamacpp only; hf and vllm need a path).
    model_path: str = ""
    # Empty: llm_model. Several workers may serve one name; the controller spreads requests over them.
    model_name: str = ""
    # FastChat conversation template name; empty lets FastChat pick one from the model path.
    conv_template: str = "qwen-7b-chat"
    context_length: int = Field(4096, ge=256)
    threads: int = Field(0, ge=0)  # llamacpp: 0 = all cores
    concurrency: int = Field(1, ge=1)  # requests a worker runs at once; the rest queue
    # llamacpp only: prompt-lookup speculative decoding, tokens drafted per step from the prompt; 0: off.
    speculative_tokens: int = Field(0, ge=0, le=64)
    device: str = "cpu"  # hf only: cpu, cuda, mps
    extra_args: list[str] = []  # passed as-is to FastChat's model_worker / vllm_worker


def config_file() -> Path:
    return Path(os.environ.get("KBQA_CONFIG", DEFAULT_CONFIG))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KBQA_", extra="ignore")

    data_dir: Path = Path("data")
    milvus_uri: str = ""
    milvus_token: str = ""
    milvus_timeout_s: float = Field(10.0, gt=0)
    catalog_url: str = ""
    min_free_disk_mb: float = Field(100, ge=0)
    tmp_dir: str = ""

    embedding_model: str = ""
    embedding_backend: Literal["onnx-int8", "torch"] = "onnx-int8"
    embedding_batch_size: int = Field(8, ge=1, le=512)
    embedding_threads: int = Field(0, ge=0)
    query_prompt: str = "query: "
    passage_prompt: str = "passage: "

    chunk_size: int = Field(500, ge=CHUNK_SIZE_MIN, le=CHUNK_SIZE_MAX)
    chunk_overlap: int = Field(50, ge=0)

    ingest_lease_s: float = Field(60.0, ge=1)
    max_index_attempts: int = Field(2, ge=1)

    # What reading one document may inflate or allocate (app/kb/loaders/_limits.py).
    load_max_text_chars: int = Field(20_000_000, ge=1)
    load_max_html_elements: int = Field(200_000, ge=1)
    load_max_pdf_pages: int = Field(5000, ge=1)
    load_max_zip_members: int = Field(10_000, ge=1)
    load_max_zip_member_mb: float = Field(200, gt=0)
    load_max_zip_total_mb: float = Field(500, gt=0)
    load_max_zip_ratio: float = Field(100, gt=1)
    load_max_xml_mb: float = Field(50, gt=0)
    load_max_sheet_cells: int = Field(1_000_000, ge=1)
    # OCR (app/kb/loaders/ocr.py, Debian's tesseract-ocr): scanned PDF pages, image files, pictures in DOCX/PPTX.
    load_ocr: bool = True
    load_ocr_languages: str = Field("chi_sim+eng", pattern=r"^[A-Za-z_]+(\+[A-Za-z_]+)*$")
    load_ocr_dpi: int = Field(200, ge=72, le=400)
    load_ocr_page_timeout_s: float = Field(60.0, gt=0)
    load_ocr_max_image_pixels: int = Field(64_000_000, ge=1)
    load_ocr_max_pictures: int = Field(50, ge=0)

    max_upload_mb: float = Field(200, gt=0)
    max_filename_chars: int = Field(200, ge=16, le=255)
    max_kb_name_chars: int = Field(64, ge=1, le=255)
    max_question_chars: int = Field(1000, ge=1)
    # Bounds on what one client can make the server hold (see app/api/guards.py and server_options in main.py).
    max_request_mb: float = Field(1000, gt=0)
    max_header_kb: int = Field(64, ge=1)
    request_body_timeout_s: float = Field(60.0, gt=0)

    default_top_k: int = Field(5, ge=1)
    max_top_k: int = Field(100, ge=1, le=1000)
    default_score_threshold: float = Field(0.0, ge=0, le=1)
    hybrid_fusion: Literal["calibrated", "rrf"] = "calibrated"
    hybrid_dense_weight: float = Field(0.5, ge=0, le=1)
    rrf_k: int = Field(60, ge=1)
    eval_max_questions: int = Field(2000, ge=1)
    eval_max_file_mb: float = Field(20, gt=0)
    eval_max_chunk_sizes: int = Field(4, ge=0, le=20)
    eval_max_answer_sample: int = Field(100, ge=0)
    eval_misses_listed: int = Field(100, ge=0)
    eval_jobs_kept: int = Field(20, ge=1)
    # A score calibration fitted by scripts/calibrate_scores.py; empty: the bundled fit for multilingual-e5-small.
    score_calibration_file: Path | None = None

    api_host: str = "127.0.0.1"
    api_port: int = 7861

    ui_host: str = "127.0.0.1"
    ui_port: int = Field(8501, ge=1, le=65535)
    ui_language: Literal["zh", "en"] = "zh"

    # NoDecode: KBQA_API_KEYS / KBQA_CORS_ORIGINS may be comma-separated as well as JSON (see _split_list).
    api_keys: Annotated[list[str], NoDecode] = []
    client_api_key: str = ""
    cors_origins: Annotated[list[str], NoDecode] = []
    # Names the API is served as besides 127.0.0.1, localhost, ::1 and api_host; "*" accepts any Host.
    allowed_hosts: Annotated[list[str], NoDecode] = []

    llm_base_url: str = ""
    llm_model: str = "Qwen2.5-Coder-1.5B-Instruct"
    llm_api_key: str = "EMPTY"
    llm_temperature: float = Field(0.3, ge=0, le=2)
    llm_max_tokens: int = Field(1024, ge=1)
    llm_connect_timeout_s: float = Field(3.0, gt=0)
    llm_timeout_s: float = Field(120.0, gt=0)

    prompts_file: Path = PROJECT_ROOT / "configs" / "prompts.yaml"
    chat_history_turns: int = Field(5, ge=0, le=50)
    chat_max_history_messages: int = Field(100, ge=0)
    chat_max_kbs: int = Field(5, ge=1)
    chat_rewrite_followups: bool = True
    chat_no_hit_policy: Literal["refuse", "llm"] = "refuse"
    chat_kb_top_k: int = Field(5, ge=1)
    chat_kb_template: str = "kb_default"
    chat_kb_max_tokens: int = Field(1024, ge=1)
    chat_context_order: Literal["best_first", "best_last"] = "best_first"

    fastchat_host: str = "127.0.0.1"
    fastchat_controller_port: int = Field(20001, ge=1, le=65535)
    fastchat_api_port: int = Field(20000, ge=1, le=65535)
    fastchat_dispatch_method: Literal["shortest_queue", "lottery"] = "shortest_queue"
    fastchat_heart_beat_s: int = Field(15, ge=1)
    fastchat_start_timeout_s: float = Field(180.0, gt=0)
    # `kbqa llm up` restarts a worker that is alive but not serving: silent to a status request for this long,
    # or busy without producing a token for this long.
    fastchat_stall_timeout_s: float = Field(120.0, gt=0)
    fastchat_probe_interval_s: float = Field(5.0, gt=0)
    llm_workers: list[WorkerSettings] = [WorkerSettings()]

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        yaml_source = YamlConfigSettingsSource(settings_cls, yaml_file=config_file())
        return init_settings, env_settings, yaml_source

    @field_validator("api_keys", "cors_origins", "allowed_hosts", mode="before")
    @classmethod
    def _split_list(cls, value: object) -> object:
        """Accept a JSON list or a comma-separated string (environment) besides a list (YAML); drop blanks."""
        if isinstance(value, str):
            text = value.strip()
            value = json.loads(text) if text.startswith("[") else text.split(",")
        if isinstance(value, list):
            items = [item.strip() if isinstance(item, str) else item for item in value]
            return [item for item in items if item != ""]
        return value

    @field_validator("api_keys", "client_api_key")
    @classmethod
    def _printable_keys(cls, value: list[str] | str) -> list[str] | str:
        """A key travels in an HTTP header: visible ASCII only, or no client could ever send it."""
        for key in [value] if isinstance(value, str) else value:
            if not all("!" <= char <= "~" for char in key):
                raise ValueError("API keys may hold only visible ASCII characters (no spaces)")
        return value

    def model_post_init(self, _context: object) -> None:
        if not self.data_dir.is_absolute():
            self.data_dir = (Path.cwd() / self.data_dir).resolve()
        if not self.prompts_file.is_absolute():
            self.prompts_file = PROJECT_ROOT / self.prompts_file
        if self.chunk_overlap >= self.chunk_size:
            raise ValueError("chunk_overlap must be smaller than chunk_size")
        if self.max_request_mb < self.max_upload_mb:
            raise ValueError("max_request_mb must be at least max_upload_mb: an upload's request carries the file")

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
    def resolved_embedding_model(self) -> str:
        return self.embedding_model or str(self.models_dir / DEFAULT_EMBEDDING_DIRNAME)

    @property
    def default_llm_file(self) -> Path:
        return self.models_dir / DEFAULT_LLM_FILENAME

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def resolved_tmp_dir(self) -> Path:
        return Path(self.tmp_dir).absolute() if self.tmp_dir else self.data_dir / "tmp"

    @property
    def run_dir(self) -> Path:
        return self.data_dir / "run"

    @property
    def fastchat_api_url(self) -> str:
        return f"http://{self.fastchat_host}:{self.fastchat_api_port}/v1"

    @property
    def fastchat_controller_url(self) -> str:
        return f"http://{self.fastchat_host}:{self.fastchat_controller_port}"

    @property
    def resolved_llm_base_url(self) -> str:
        """Where the backend reaches the LLM: any OpenAI-compatible server, the FastChat stack by default."""
        return (self.llm_base_url or self.fastchat_api_url).rstrip("/")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def resolved_client_api_key(self) -> str:
        """The key our own clients (CLI, UI) send: client_api_key, else the first accepted key, else none."""
        return self.client_api_key or (self.api_keys[0] if self.api_keys else "")

    @property
    def ui_url(self) -> str:
        return f"http://{self.ui_host}:{self.ui_port}"

    @property
    def api_url(self) -> str:
        return os.environ.get("KBQA_API_URL", f"http://{self.api_host}:{self.api_port}")


@lru_cache
def get_settings() -> Settings:
    return Settings()
