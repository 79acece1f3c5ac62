"""The one settings object: defaults from configs/settings.yaml, overridden by KBQA_* environment variables."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = PROJECT_ROOT / "configs" / "settings.yaml"
DEFAULT_EMBEDDING_DIRNAME = "multilingual-e5-small"


def config_file() -> Path:
    return Path(os.environ.get("KBQA_CONFIG", DEFAULT_CONFIG))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KBQA_", extra="ignore")

    data_dir: Path = Path("data")
    milvus_uri: str = ""
    milvus_token: str = ""
    milvus_timeout_s: float = Field(10.0, gt=0)
    catalog_url: str = ""

    embedding_model: str = ""
    embedding_backend: Literal["onnx-int8", "torch"] = "onnx-int8"
    embedding_batch_size: int = Field(8, ge=1, le=512)
    embedding_threads: int = Field(0, ge=0)
    query_prompt: str = "query: "
    passage_prompt: str = "passage: "

    chunk_size: int = Field(500, ge=50, le=8000)
    chunk_overlap: int = Field(50, ge=0)

    max_upload_mb: float = Field(200, gt=0)
    max_filename_chars: int = Field(200, ge=16, le=255)
    max_kb_name_chars: int = Field(64, ge=1, le=255)
    max_question_chars: int = Field(1000, ge=1)

    default_top_k: int = Field(5, ge=1)
    max_top_k: int = Field(100, ge=1, le=1000)
    default_score_threshold: float = Field(0.0, ge=0, le=1)
    hybrid_fusion: Literal["calibrated", "rrf"] = "calibrated"
    hybrid_dense_weight: float = Field(0.5, ge=0, le=1)
    rrf_k: int = Field(60, ge=1)
    score_dense_center: float = 0.8564
    score_dense_scale: float = Field(26.849, gt=0)
    score_bm25_center: float = 2.5882
    score_bm25_scale: float = Field(3.6684, gt=0)
    score_hybrid_dense: float = 21.2991
    score_hybrid_bm25: float = 0.8240
    score_hybrid_bias: float = -19.7014

    api_host: str = "127.0.0.1"
    api_port: int = 7861

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

    def model_post_init(self, _context: object) -> None:
        if not self.data_dir.is_absolute():
            self.data_dir = (Path.cwd() / self.data_dir).resolve()
        if self.chunk_overlap >= self.chunk_size:
            raise ValueError("chunk_overlap must be smaller than chunk_size")

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
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def api_url(self) -> str:
        return os.environ.get("KBQA_API_URL", f"http://{self.api_host}:{self.api_port}")


@lru_cache
def get_settings() -> Settings:
    return Settings()
