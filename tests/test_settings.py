"""Settings in sections: defaults only in the model (configs/settings.yaml holds overrides, docs/settings.md is
generated), KBQA_<SECTION>__<NAME> in the environment, and every flat name of before still accepted (environment,
YAML, constructor) while reading one says where it went."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from app.kb.loaders._limits import LoadLimits, too_large
from app.settings import (
    DEFAULT_CONFIG,
    LEGACY_NAMES,
    PROJECT_ROOT,
    Settings,
    env_name,
    env_setting,
    nest,
    render_docs,
)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No KBQA_* variable of the caller's, and an empty overrides file."""
    import os

    for key in [k for k in os.environ if k.upper().startswith("KBQA_")]:
        monkeypatch.delenv(key)
    empty = tmp_path / "empty.yaml"
    empty.write_text("{}\n", encoding="utf-8")
    monkeypatch.setenv("KBQA_CONFIG", str(empty))
    return monkeypatch


def sections() -> dict[str, type[BaseModel]]:
    return {name: field.annotation for name, field in Settings.model_fields.items()}  # type: ignore[misc]


def test_every_setting_lives_in_a_section_and_is_described() -> None:
    assert set(sections()) == {
        "storage", "embedding", "ingest", "limits", "ocr", "preview", "retrieval", "chat", "llm", "fastchat", "api",
        "security", "ui", "eval",
    }
    for section, model in sections().items():
        for name, field in model.model_fields.items():
            assert field.description and len(field.description) > 10, f"{section}.{name} has no description"


# Settings added after the grouping: they never had a flat name to keep.
BORN_IN_SECTIONS = {
    "ocr.progress_interval_s", "ocr.workers", "preview.cache_mb", "preview.max_pixels",
    "chat.kb_top_k", "chat.kb_template", "chat.kb_template_english", "chat.kb_max_tokens", "chat.context_order",
    "chat.focus_chars", "chat.focus_pooled", "ingest.niceness",
}


def test_every_old_flat_name_maps_to_a_real_setting() -> None:
    for flat, (section, name) in LEGACY_NAMES.items():
        assert name in sections()[section].model_fields, f"{flat} -> {section}.{name}"
    assert {f"{section}.{name}" for section, name in LEGACY_NAMES.values()} | BORN_IN_SECTIONS == {
        f"{s}.{n}" for s, model in sections().items() for n in model.model_fields
    }, "a field without its old name, or two old names for one field"


def test_sections_read_well_at_call_sites(clean_env: pytest.MonkeyPatch) -> None:
    settings = Settings()
    assert settings.ocr.dpi == 200 and settings.limits.max_xml_mb == 50 and settings.retrieval.default_top_k == 5
    assert settings.storage.data_dir == Path.cwd() / "data"  # relative: to the working directory
    assert settings.chat.prompts_file == PROJECT_ROOT / "configs" / "prompts.yaml"
    assert settings.storage.resolved_milvus_uri == str(Path.cwd() / "data" / "milvus.db")
    assert settings.fastchat.api_url == "http://127.0.0.1:20000/v1" == settings.resolved_llm_base_url
    assert settings.api.url == "http://127.0.0.1:7861" and settings.ui.url == "http://127.0.0.1:8501"
    assert settings.ingest.max_upload_bytes == 200 * 1024 * 1024


def test_nested_environment_variables(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("KBQA_STORAGE__MILVUS_URI", "http://milvus:19530")
    clean_env.setenv("KBQA_OCR__DPI", "300")
    clean_env.setenv("KBQA_SECURITY__API_KEYS", "k-1, k-2")
    clean_env.setenv("KBQA_SECURITY__CORS_ORIGINS", '["https://a.example"]')
    clean_env.setenv("KBQA_FASTCHAT__WORKERS", json.dumps([{"kind": "llamacpp", "port": 21002}]))
    clean_env.setenv("KBQA_API__CLIENT_URL", "http://api:7861")
    settings = Settings()
    assert settings.storage.milvus_uri == "http://milvus:19530" and settings.ocr.dpi == 300
    assert settings.security.api_keys == ["k-1", "k-2"] and settings.security.cors_origins == ["https://a.example"]
    assert [w.port for w in settings.fastchat.workers] == [21002]
    assert settings.api.url == "http://api:7861"


def test_old_flat_environment_variables_still_work(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("KBQA_MILVUS_URI", "http://milvus:19530")
    clean_env.setenv("KBQA_DATA_DIR", "/srv/kbqa")
    clean_env.setenv("KBQA_API_KEYS", "k-1,k-2")
    clean_env.setenv("KBQA_ALLOWED_HOSTS", '["kb.example.com", "10.0.0.5"]')
    clean_env.setenv("KBQA_LLM_WORKERS", json.dumps([{"kind": "llamacpp", "port": 21002}, {"kind": "hf", "port": 3}]))
    clean_env.setenv("KBQA_LOAD_OCR", "false")
    clean_env.setenv("KBQA_LOAD_MAX_XML_MB", "7.5")
    clean_env.setenv("KBQA_INGEST_LEASE_S", "2")
    clean_env.setenv("KBQA_API_URL", "http://api:7861")
    clean_env.setenv("kbqa_ui_language", "en")  # case-insensitive, as the sectioned names are
    settings = Settings()
    assert settings.storage.milvus_uri == "http://milvus:19530" and settings.storage.data_dir == Path("/srv/kbqa")
    assert settings.security.api_keys == ["k-1", "k-2"]
    assert settings.security.allowed_hosts == ["kb.example.com", "10.0.0.5"]
    assert [(w.kind, w.port) for w in settings.fastchat.workers] == [("llamacpp", 21002), ("hf", 3)]
    assert settings.ocr.enabled is False and settings.limits.max_xml_mb == 7.5 and settings.ingest.lease_s == 2
    assert settings.api.client_url == "http://api:7861" == settings.api.url and settings.ui.language == "en"


def test_a_sectioned_variable_wins_over_its_old_name(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("KBQA_MILVUS_URI", "http://old:19530")
    clean_env.setenv("KBQA_STORAGE__MILVUS_URI", "http://new:19530")
    assert Settings().storage.milvus_uri == "http://new:19530"


def test_yaml_takes_sections_and_old_flat_keys_below_the_environment(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "settings.yaml"
    config.write_text(
        "storage:\n  milvus_uri: http://milvus:19530\n"
        "catalog_url: postgresql+psycopg://u:p@db/kbqa\n"  # an old flat key
        "load_ocr_dpi: 300\n"
        "api_keys: [k-1]\n"
        "llm_workers:\n  - {kind: llamacpp, port: 21002}\n",
        encoding="utf-8",
    )
    clean_env.setenv("KBQA_CONFIG", str(config))
    clean_env.setenv("KBQA_OCR__DPI", "100")
    settings = Settings()
    assert settings.storage.milvus_uri == "http://milvus:19530"
    assert settings.storage.catalog_url == "postgresql+psycopg://u:p@db/kbqa"
    assert settings.ocr.dpi == 100  # the environment over the file
    assert settings.security.api_keys == ["k-1"] and settings.fastchat.workers[0].port == 21002


def test_yaml_with_an_unknown_key_warns_and_a_typo_inside_a_section_fails(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "settings.yaml"
    clean_env.setenv("KBQA_CONFIG", str(config))
    config.write_text("no_such_setting: 1\n", encoding="utf-8")
    with pytest.warns(UserWarning, match="unknown setting 'no_such_setting'"):
        Settings()
    config.write_text("ocr:\n  dpii: 300\n", encoding="utf-8")
    with pytest.raises(ValueError, match="dpii"):
        Settings()


def test_reading_a_flat_attribute_says_where_it_went(clean_env: pytest.MonkeyPatch) -> None:
    settings = Settings()
    with pytest.raises(AttributeError, match=r"settings\.milvus_uri moved to settings\.storage\.milvus_uri"):
        _ = settings.milvus_uri
    with pytest.raises(AttributeError, match=r"settings\.api_url moved to settings\.api\.url"):
        _ = settings.api_url
    with pytest.raises(AttributeError, match=r"settings\.load_ocr moved to settings\.ocr\.enabled"):
        _ = settings.load_ocr
    with pytest.raises(AttributeError, match="no_such_thing") as plain:
        _ = settings.no_such_thing
    assert "moved" not in str(plain.value)


def test_constructor_and_with_changes_take_sections_paths_and_old_names(clean_env: pytest.MonkeyPatch) -> None:
    settings = Settings(storage__data_dir="/srv/a", **{"ocr.dpi": 300}, chunk_size=300, eval={"jobs_kept": 3})
    assert (settings.storage.data_dir, settings.ocr.dpi, settings.ingest.chunk_size) == (Path("/srv/a"), 300, 300)
    assert settings.eval.jobs_kept == 3 and settings.eval.max_questions == 2000  # the rest of the section kept
    changed = settings.with_changes(retrieval__rrf_k=10, llm_model="m")
    assert (changed.retrieval.rrf_k, changed.llm.model, changed.ocr.dpi) == (10, "m", 300)
    assert settings.retrieval.rrf_k == 60, "with_changes changed the original"
    with pytest.raises(TypeError, match="unknown setting 'chunk_sise'"):
        Settings(chunk_sise=300)


def test_validators_hold_across_sections(clean_env: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="chunk_overlap must be smaller than chunk_size"):
        Settings(ingest__chunk_size=100, ingest__chunk_overlap=100)
    with pytest.raises(ValueError, match=r"max_request_mb must be at least ingest\.max_upload_mb"):
        Settings(ingest__max_upload_mb=500, limits__max_request_mb=100)
    with pytest.raises(ValueError, match="visible ASCII"):
        Settings(security__client_api_key="has space")
    with pytest.raises(ValueError, match="visible ASCII"):
        Settings().with_changes(security__api_keys=["fine", "密钥"])


def test_a_loader_refusal_names_the_setting_path_and_its_variable() -> None:
    message = str(too_large("太大", "too big", "max_xml_mb", "50 MB"))
    assert "limits.max_xml_mb (KBQA_LIMITS__MAX_XML_MB)" in message
    assert "ocr.max_image_pixels (KBQA_OCR__MAX_IMAGE_PIXELS)" in str(too_large("", "", "ocr_max_image_pixels", "1"))
    assert env_name("fastchat.workers") == "KBQA_FASTCHAT__WORKERS"


def test_environment_variables_name_their_setting() -> None:
    assert env_setting("KBQA_STORAGE__MILVUS_URI") == env_setting("KBQA_MILVUS_URI") == "storage.milvus_uri"
    assert env_setting("KBQA_API_URL") == "api.client_url" and env_setting("KBQA_LOAD_OCR") == "ocr.enabled"
    assert env_setting("KBQA_STORAGE__MILVUS_URL") is None and env_setting("KBQA_MILVUS_URL") is None
    assert env_setting("OTHER_STORAGE__MILVUS_URI") is None


def test_load_limits_come_from_the_limits_and_ocr_sections(clean_env: pytest.MonkeyPatch) -> None:
    settings = Settings(limits__max_pdf_pages=7, ocr__enabled=False, ocr__dpi=100)
    limits = LoadLimits.from_settings(settings)
    assert (limits.max_pdf_pages, limits.ocr, limits.ocr_dpi, limits.max_xml_mb) == (7, False, 100, 50)
    assert LoadLimits.from_settings() == LoadLimits.from_settings(Settings())


def test_docs_settings_md_is_generated_from_the_model() -> None:
    docs = PROJECT_ROOT / "docs" / "settings.md"
    assert docs.read_text(encoding="utf-8") == render_docs(), (
        "docs/settings.md is stale: python -m app.settings > docs/settings.md"
    )
    assert "| `ocr.dpi` | `KBQA_OCR__DPI` | `KBQA_LOAD_OCR_DPI` | `200` |" in render_docs()


def repeated_defaults(overrides: dict) -> list[str]:
    """The settings an overrides file sets to their defaults (sections or old flat names)."""
    defaults = Settings.model_construct().model_dump(mode="json")  # the models' defaults: no file, no environment
    return sorted(
        f"{section}.{name}"
        for section, values in nest(overrides, "overrides").items()
        for name, value in values.items()
        if defaults[section].get(name) == value
    )


def test_configs_settings_yaml_holds_overrides_only() -> None:
    """A value in the shipped YAML that equals the model's default is a second copy of it: remove it."""
    data = yaml.safe_load(DEFAULT_CONFIG.read_text(encoding="utf-8")) or {}
    assert repeated_defaults(data) == [], "configs/settings.yaml repeats defaults (they live in app/settings.py)"


def test_the_overrides_check_catches_a_repeated_default() -> None:
    data = {"ocr": {"dpi": 200}, "chunk_size": 500, "storage": {"milvus_uri": "http://milvus:19530"}}
    assert repeated_defaults(data) == ["ingest.chunk_size", "ocr.dpi"]
