"""docker-compose.yml, docker-compose.gpu.yml and the Dockerfile, validated without a Docker engine.

Debian's docker-compose 1.29 (installed by scripts/setup.sh) parses, merges and interpolates the files with
`docker-compose config`, which needs no engine; the checks below read its normalised output.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from app.llm.entrypoints import ROLES
from app.llm.llamacpp_worker import parse_args as llamacpp_worker_args
from app.modelprep.llm_gguf import DEFAULT_LLM
from app.settings import DEFAULT_EMBEDDING_DIRNAME, PROJECT_ROOT, Settings, env_setting

# Attu's README, section "Compatibility" (github.com/zilliztech/attu, README.md): "Milvus Version | Recommended
# Attu Version". The 2.6.x row reads v2.6.0 but links to the v2.6.1 release, so both are accepted there.
ATTU_FOR_MILVUS = {
    "2.6": {"v2.6.0", "v2.6.1"},
    "2.5": {"v2.5.10"},
    "2.4": {"v2.4.12"},
    "2.3": {"v2.3.5"},
    "2.2": {"v2.2.8"},
    "2.1": {"v2.2.2"},
}
APP_SERVICES = {"etcd", "minio", "milvus", "attu", "postgres", "fastchat-controller", "fastchat-api", "llm-worker",
                "api", "ui"}
IMAGE_REFERENCE = (
    r"(?P<repo>[^:@]+(?::\d+/[^:@]+)?)"  # registry[:port]/name
    r"(?::(?P<tag>\w[\w.-]*))?(?:@(?P<digest>sha256:[0-9a-f]{64}))?"
)
# Variables the compose files read from the caller's environment: unset here so the defaults are what is checked.
COMPOSE_VARIABLES = ["KBQA_PUBLISH_HOST", "KBQA_API_KEYS", "KBQA_CLIENT_API_KEY", "KBQA_CORS_ORIGINS",
                     "POSTGRES_PASSWORD", "KBQA_GPU_MODEL", "KBQA_GPU_MODELS_DIR"]


def compose_config(*files: str, **variables: str) -> dict[str, Any]:
    if shutil.which("docker-compose") is None:
        pytest.skip("docker-compose is not installed (scripts/setup.sh installs Debian's docker-compose package)")
    env = {k: v for k, v in os.environ.items() if k not in COMPOSE_VARIABLES} | variables
    args = [arg for name in files for arg in ("-f", name)]
    result = subprocess.run(
        ["docker-compose", *args, "config"], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "WARNING" not in result.stderr, result.stderr  # e.g. an unset variable without a default
    return yaml.safe_load(result.stdout)


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    return compose_config("docker-compose.yml")


def image_tag(image: str) -> tuple[str, str]:
    """(repository, tag or digest) of a pinned image reference; fails for an unpinned one."""
    match = re.fullmatch(IMAGE_REFERENCE, image)
    assert match, f"unreadable image reference {image!r}"
    pin = match["digest"] or match["tag"]
    assert pin and pin != "latest", f"image {image!r} is not pinned to a version or a digest"
    return match["repo"], pin


def command_option(command: list[str], option: str) -> str:
    return command[command.index(option) + 1]


def host_of(url: str) -> str:
    return urlsplit(url if "//" in url else f"//{url}").hostname or ""


def test_every_service_the_app_needs_is_there_with_a_pinned_image(config: dict[str, Any]) -> None:
    services = config["services"]
    assert set(services) >= APP_SERVICES
    for name, service in services.items():
        image_tag(service["image"])  # a built service still names its image, with a version tag
        if "build" in service:
            assert service["image"].startswith("kbqa:"), name
    repos = {name: image_tag(service["image"])[0] for name, service in services.items()}
    assert repos["milvus"] == "milvusdb/milvus" and repos["attu"] == "zilliz/attu" and repos["postgres"] == "postgres"


def test_attu_matches_the_milvus_release(config: dict[str, Any]) -> None:
    milvus_tag = image_tag(config["services"]["milvus"]["image"])[1]
    attu_tag = image_tag(config["services"]["attu"]["image"])[1]
    minor = re.match(r"v(\d+\.\d+)\.\d+", milvus_tag)
    assert minor and minor[1] in {"2.5", "2.6"}, f"Milvus {milvus_tag}: a current 2.5 or 2.6 release is expected"
    assert attu_tag in ATTU_FOR_MILVUS[minor[1]], f"Attu {attu_tag} is not the one for Milvus {milvus_tag}"
    assert config["services"]["attu"]["environment"]["MILVUS_URL"] == "milvus:19530"


def test_health_checks_and_start_order(config: dict[str, Any]) -> None:
    services = config["services"]
    for name, service in services.items():
        assert service.get("healthcheck", {}).get("test"), f"{name} has no health check"
        for dependency, condition in service.get("depends_on", {}).items():
            assert condition["condition"] in {"service_healthy", "service_completed_successfully"}, (name, dependency)
            assert dependency in services
    assert set(services["milvus"]["depends_on"]) == {"etcd", "minio"}
    assert set(services["api"]["depends_on"]) >= {"milvus", "postgres"}
    assert set(services["ui"]["depends_on"]) == {"api"}
    assert "fastchat-controller" in services["llm-worker"]["depends_on"]


def settings_from(environment: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The Settings the service would build from its environment (and the defaults in configs/)."""
    for key in [k for k in os.environ if k.startswith("KBQA_")]:
        monkeypatch.delenv(key)
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    return Settings()


def test_the_app_reaches_milvus_postgres_and_the_llm_by_service_name(
    config: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    services = config["services"]
    api_env = services["api"]["environment"]
    for name in ("api", "ui"):
        for key in services[name]["environment"]:
            if key.startswith("KBQA_"):  # a misspelt name would be ignored silently by the settings
                assert env_setting(key), key

    settings = settings_from(api_env, monkeypatch)
    milvus = urlsplit(settings.storage.resolved_milvus_uri)
    assert (milvus.hostname, milvus.port) == ("milvus", 19530)
    catalog = urlsplit(settings.storage.resolved_catalog_url)
    assert catalog.scheme == "postgresql+psycopg" and (catalog.hostname, catalog.port) == ("postgres", 5432)
    postgres_env = services["postgres"]["environment"]
    assert (catalog.username, catalog.password, catalog.path) == (
        postgres_env["POSTGRES_USER"], postgres_env["POSTGRES_PASSWORD"], f"/{postgres_env['POSTGRES_DB']}"
    )
    llm = urlsplit(settings.resolved_llm_base_url)
    assert llm.hostname == "fastchat-api"
    assert str(llm.port) == command_option(services["fastchat-api"]["command"], "--port")
    assert settings.security.api_keys == [] and settings.security.cors_origins == []  # open unless the caller sets keys

    ui = services["ui"]["environment"]
    assert host_of(ui["KBQA_API_URL"]) == "api" and ui["KBQA_UI_HOST"] == "0.0.0.0"


def test_api_keys_reach_the_api_and_the_ui(monkeypatch: pytest.MonkeyPatch) -> None:
    config = compose_config("docker-compose.yml", KBQA_API_KEYS="k-one,k-two", KBQA_PUBLISH_HOST="0.0.0.0")
    api = settings_from(config["services"]["api"]["environment"], monkeypatch)
    ui = settings_from(config["services"]["ui"]["environment"], monkeypatch)
    assert api.security.api_keys == ["k-one", "k-two"] and ui.security.resolved_client_api_key == "k-one"
    published = [p for s in config["services"].values() for p in s.get("ports", [])]
    assert published and all(p.startswith("0.0.0.0:") for p in published)


def test_ports_are_published_on_127_0_0_1_by_default(config: dict[str, Any]) -> None:
    published = {name: s["ports"] for name, s in config["services"].items() if s.get("ports")}
    assert set(published) >= {"api", "ui", "attu"}
    for name, ports in published.items():
        assert all(port.startswith("127.0.0.1:") for port in ports), (name, ports)


def test_fastchat_services_find_each_other(config: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    services = config["services"]
    controller_port = command_option(services["fastchat-controller"]["command"], "--port")
    for name in ("fastchat-controller", "fastchat-api", "llm-worker"):
        command = services[name]["command"]
        assert command[:3] == ["python", "-m", "app.llm.entrypoints"] and command[3] in ROLES, name
        assert command_option(command, "--host") == "0.0.0.0"  # inside its container; published or not by compose
    assert command_option(services["fastchat-api"]["command"], "--controller-address") == (
        f"http://fastchat-controller:{controller_port}"
    )
    worker = llamacpp_worker_args(services["llm-worker"]["command"][4:])  # unknown options would exit here
    assert worker.controller_address == f"http://fastchat-controller:{controller_port}"
    assert worker.worker_address == f"http://llm-worker:{worker.port}"
    assert worker.model_path == f"/opt/kbqa/models/{DEFAULT_LLM.filename}"
    api = settings_from(services["api"]["environment"], monkeypatch)
    assert worker.model_names == [api.llm.model]


def test_stateful_services_keep_their_data_in_named_volumes(config: dict[str, Any]) -> None:
    declared = set(config["volumes"])
    for name in ("etcd", "minio", "milvus", "postgres", "api"):
        sources = {v.split(":")[0] for v in config["services"][name]["volumes"]}
        assert sources & declared, f"{name} keeps its data in no named volume: {sources}"


def test_gpu_override_swaps_in_a_cuda_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    config = compose_config("docker-compose.yml", "docker-compose.gpu.yml", KBQA_GPU_MODEL="Qwen2.5-7B-Instruct")
    worker = config["services"]["llm-worker"]
    image_tag(worker["image"])
    assert worker["command"][3] == "model_worker" and command_option(worker["command"], "--device") == "cuda"
    assert command_option(worker["command"], "--model-path") == "/models/Qwen2.5-7B-Instruct"
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert worker["build"]["args"]["TORCH_INDEX_URL"] == "https://pypi.org/simple"
    api = settings_from(config["services"]["api"]["environment"], monkeypatch)
    assert [api.llm.model] == command_option(worker["command"], "--model-names").split(",")
    assert config["services"]["milvus"] == compose_config("docker-compose.yml")["services"]["milvus"]


def test_dockerfile_pins_its_base_and_prepares_the_models() -> None:
    dockerfile = (PROJECT_ROOT / "Dockerfile").read_text()
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", dockerfile, re.M)
    assert base and re.fullmatch(r"python:3\.11\.\d+-slim-\w+", base[1]), "base image must be pinned to a patch"
    assert all(line.split()[1] == "${PYTHON_IMAGE}" for line in dockerfile.splitlines() if line.startswith("FROM "))
    # The models land where docker-compose.yml and the settings look for them.
    assert "KBQA_DATA_DIR=/opt/kbqa kbqa models prepare" in dockerfile
    assert f"KBQA_EMBEDDING_MODEL=/opt/kbqa/models/{DEFAULT_EMBEDDING_DIRNAME}" in dockerfile
    ignored = (PROJECT_ROOT / ".dockerignore").read_text().split()
    assert {".venv", "data", ".git"} <= set(ignored)
