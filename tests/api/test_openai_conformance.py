"""The calls FastChat's own OpenAI-API test script makes (its tests/test_openai_api.py: models, completions,
streamed completions, chat, streamed chat, embeddings), through the `openai` package, against both doors: the
FastChat server that `kbqa llm up` starts, and the product's own `/v1` on a real `kbqa serve`. Each call gets a
real answer or a precise error at once, and a chat still answers afterwards: an unsupported call used to leave
the worker's semaphore taken, and every later request through either door then waited forever.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest

from app.llm.stack import LLMStack
from tests.conftest import api_env, kbqa_serve

PROMPT = "Once upon a time"
HELLO = [{"role": "user", "content": "Hello! What is your name?"}]
CAPITAL = [{"role": "user", "content": "What is the capital of France? Answer with one word."}]


def client(base_url: str) -> openai.OpenAI:
    # A bounded timeout, so a wedged server fails the test instead of hanging it; no retries, so an error is seen.
    return openai.OpenAI(base_url=base_url, api_key="EMPTY", timeout=300, max_retries=0)


@pytest.fixture(scope="module")
def product_url(
    tmp_path_factory: pytest.TempPathFactory, embedding_model_dir: Path, llm_stack: LLMStack
) -> Iterator[str]:
    data = tmp_path_factory.mktemp("conformance")
    env = api_env(data, embedding_model_dir, {"llm__base_url": llm_stack.settings.fastchat.api_url})
    with kbqa_serve(env, data / "serve.log") as served:
        yield f"{served.url}/v1"


def assert_chat_answers(oa: openai.OpenAI, model: str) -> None:
    reply = oa.chat.completions.create(model=model, messages=CAPITAL, temperature=0)
    assert "Paris" in (reply.choices[0].message.content or "")


def test_fastchat_door_runs_fastchat_s_own_script_and_stays_usable(llm_stack: LLMStack) -> None:
    oa = client(llm_stack.settings.fastchat.api_url)
    model = llm_stack.settings.llm.model
    assert [m.id for m in oa.models.list().data] == [model]

    completion = oa.completions.create(model=model, prompt=PROMPT, logprobs=1, max_tokens=16, temperature=0)
    assert completion.choices[0].text.strip()
    assert completion.usage is not None and completion.usage.prompt_tokens > 0
    streamed = "".join(
        c.choices[0].text
        for c in oa.completions.create(model=model, prompt=PROMPT, max_tokens=16, stream=True, temperature=0)
    )
    assert streamed == completion.choices[0].text

    chat = oa.chat.completions.create(model=model, messages=HELLO, temperature=0)
    assert chat.choices[0].message.content
    assert chat.usage is not None and chat.usage.prompt_tokens > 5
    pieces = list(oa.chat.completions.create(model=model, messages=HELLO, stream=True, temperature=0))
    assert "".join(c.choices[0].delta.content or "" for c in pieces) == chat.choices[0].message.content
    assert pieces[-1].usage is not None and pieces[-1].usage.prompt_tokens == chat.usage.prompt_tokens

    # Embeddings: the llama.cpp worker has none. More calls than the worker's concurrency, each refused at once.
    for _ in range(3):
        with pytest.raises(openai.BadRequestError, match="computes no embeddings"):
            oa.embeddings.create(model=model, input="Hello world!")
    assert_chat_answers(oa, model)


def test_a_stream_abandoned_by_its_client_frees_the_worker(llm_stack: LLMStack) -> None:
    """Clients that go away mid-answer, over and over, leave nothing taken: the next chat answers."""
    body = {"model": llm_stack.settings.llm.model, "stream": True, "max_tokens": 400,
            "messages": [{"role": "user", "content": "Write a long essay about the history of printing."}]}
    for _ in range(3):
        with httpx.stream("POST", f"{llm_stack.settings.fastchat.api_url}/chat/completions", json=body,
                          timeout=120) as response:
            assert response.status_code == 200
            next(response.iter_lines())  # the first piece arrived; leave without reading the rest
    assert_chat_answers(client(llm_stack.settings.fastchat.api_url), llm_stack.settings.llm.model)
    workers = [w.port for w in llm_stack.settings.fastchat.workers]
    for port in workers:
        status = httpx.post(f"http://{llm_stack.settings.fastchat.host}:{port}/worker_get_status", timeout=10).json()
        assert status["queue_length"] == 0, status


def test_product_door_answers_every_call_of_fastchat_s_script(product_url: str, llm_stack: LLMStack) -> None:
    oa = client(product_url)
    model = llm_stack.settings.llm.model
    models = [m.id for m in oa.models.list().data]
    assert models[0] == model

    # Legacy completions are not served: a precise 404 in OpenAI's shape, for the plain and the streamed call.
    with pytest.raises(openai.NotFoundError, match="use /v1/chat/completions"):
        oa.completions.create(model=model, prompt=PROMPT, logprobs=1, max_tokens=16, temperature=0)
    with pytest.raises(openai.NotFoundError, match="use /v1/chat/completions"):
        list(oa.completions.create(model=model, prompt=PROMPT, max_tokens=16, stream=True, temperature=0))

    chat = oa.chat.completions.create(model=model, messages=HELLO, temperature=0)
    assert chat.choices[0].message.content
    assert chat.usage is not None and chat.usage.prompt_tokens > 5, chat.usage
    assert chat.usage.total_tokens == chat.usage.prompt_tokens + chat.usage.completion_tokens
    pieces = list(oa.chat.completions.create(model=model, messages=HELLO, stream=True, temperature=0))
    assert "".join(c.choices[0].delta.content or "" for c in pieces) == chat.choices[0].message.content
    assert pieces[-1].usage is not None and pieces[-1].usage.prompt_tokens == chat.usage.prompt_tokens

    # Embeddings from the product's embedding model (the last model listed), float and base64 alike.
    embedding_model = models[-1]
    one = oa.embeddings.create(model=embedding_model, input="Hello world!")  # the client asks for base64
    vector = np.array(one.data[0].embedding)
    assert vector.shape == (384,) and abs(np.linalg.norm(vector) - 1) < 1e-3
    assert one.usage.prompt_tokens > 2
    raw = httpx.post(f"{product_url}/embeddings", timeout=60, json={
        "model": embedding_model, "input": ["Hello world!", "北京是中国的首都。", "Paris is the capital of France."],
        "encoding_format": "float",
    }).json()
    vectors = np.array([item["embedding"] for item in raw["data"]])
    # The same text alone and in a batch: int8 dynamic quantisation scales by each batch's range, so the vectors
    # agree closely rather than bit for bit.
    assert vectors[0] @ vector > 0.99
    assert vectors[2] @ vectors[0] < vectors[2] @ vectors[2]
    with pytest.raises(openai.NotFoundError, match="unknown embedding model"):
        oa.embeddings.create(model=model, input="Hello world!")
    assert_chat_answers(oa, model)


def test_product_door_accepts_text_parts_and_refuses_other_parts(product_url: str, llm_stack: LLMStack) -> None:
    oa = client(product_url)
    model = llm_stack.settings.llm.model
    parts = [{"role": "user", "content": [{"type": "text", "text": "What is the capital of France?"},
                                          {"type": "text", "text": "Answer with one word."}]}]
    reply = oa.chat.completions.create(model=model, messages=parts, temperature=0)  # type: ignore[arg-type]
    assert "Paris" in (reply.choices[0].message.content or "")

    image = [{"role": "user", "content": [{"type": "text", "text": "What is this?"},
                                          {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}]}]
    with pytest.raises(openai.BadRequestError, match="only text content parts are supported, not image_url"):
        oa.chat.completions.create(model=model, messages=image)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"messages": [{"role": "system", "content": "x" * 4001}, *CAPITAL]}, "4000"),
        ({"messages": [{"role": "user", "content": "y" * 20_001}, {"role": "assistant", "content": "ok"}, *CAPITAL]},
         "20000"),
        ({"messages": CAPITAL, "temperature": "NaN"}, "temperature"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages.0.role"),
        ({"messages": []}, "messages"),
    ],
    ids=["system-too-long", "history-too-long", "nan-temperature", "unknown-role", "no-messages"],
)
def test_product_door_refuses_bad_requests_in_openai_s_shape(
    product_url: str, llm_stack: LLMStack, body: dict[str, object], fragment: str
) -> None:
    content = httpx.Request("POST", "/", json={"model": llm_stack.settings.llm.model, **body}).content
    content = content.replace(b'"NaN"', b"NaN")  # a bare NaN token, which Python's json reads as a float
    response = httpx.post(f"{product_url}/chat/completions", content=content, timeout=60,
                          headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and fragment in error["message"], error


def test_langchain_openai_embeddings_use_the_product_door(product_url: str) -> None:
    langchain_openai = pytest.importorskip("langchain_openai")
    model = [m.id for m in client(product_url).models.list().data][-1]
    embeddings = langchain_openai.OpenAIEmbeddings(
        model=model, base_url=product_url, api_key="EMPTY", check_embedding_ctx_length=False
    )
    documents = embeddings.embed_documents(["北京是中国的首都。", "The Eiffel Tower is in Paris."])
    query = embeddings.embed_query("中国的首都是哪里？")
    assert len(documents) == 2 and len(query) == 384
    assert np.dot(query, documents[0]) > np.dot(query, documents[1])


def test_base64_embeddings_decode_to_the_float_ones(product_url: str) -> None:
    model = [m.id for m in client(product_url).models.list().data][-1]
    def fetch(encoding: str) -> object:
        body = {"model": model, "input": "知识库", "encoding_format": encoding}
        return httpx.post(f"{product_url}/embeddings", json=body, timeout=60).json()["data"][0]["embedding"]
    decoded = np.frombuffer(base64.b64decode(fetch("base64")), dtype="<f4")  # type: ignore[arg-type]
    assert np.allclose(decoded, np.array(fetch("float")), atol=1e-6)


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ('{"input": ""}', "input[0] is empty"),
        ('{"input": [[15339, 1917]]}', "input"),  # token arrays, which only OpenAI's own tokenizer can make
        ('{"input": "\\ud800"}', "surrogate"),
        ('{"input": ["a"], "dimensions": 1536}', "not 1536"),
        ('{"input": ' + '["x"' + ', "x"' * 2048 + "]}", "at most 2048"),
    ],
    ids=["empty", "token-arrays", "lone-surrogate", "wrong-dimensions", "too-many"],
)
def test_product_embeddings_refuse_bad_input_in_openai_s_shape(product_url: str, payload: str, fragment: str) -> None:
    model = [m.id for m in client(product_url).models.list().data][-1]
    content = payload.replace("{", '{"model": "' + model + '", ', 1)
    response = httpx.post(f"{product_url}/embeddings", content=content, timeout=60,
                          headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and fragment in error["message"], error
