"""Chat against the real stack: Milvus (Lite file, or a server over TCP), the embedding model and FastChat serving
the real Qwen2.5 model.

The knowledge base holds facts the model cannot know (an invented project, its leader and budget)."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from fastapi.testclient import TestClient

from app.api.main import create_app
from app.chat.models import Source
from app.chat.prompts import default_template, load_prompts
from app.errors import InvalidInput
from app.llm.stack import LLMStack
from app.settings import Settings
from kbqa_client import sse_events
from tests.conftest import answering_settings, create_kb, free_port, make_settings, upload_ready

KB = "项目库"
PROJECT_FILES = [  # one fact per file, so each is its own chunk
    ("星河计划负责人.md", "星河计划由林晓澜负责，她在二〇二三年接手这个项目。"),
    ("青松计划预算.md", "那它的预算呢？这是青松计划评审会上最常被问到的问题。青松计划的总预算为一千二百五十万元。"),
    ("星河计划预算.md", "星河计划的总预算为三千八百七十万元，资金全部来自市科委专项拨款。"),
    ("远航计划进度.md", "远航计划已完成第二阶段的测试，预计明年春季交付。"),
]
PROJECTS = [(name, text.encode()) for name, text in PROJECT_FILES]


@pytest.fixture(scope="module")
def client(
    tmp_path_factory: pytest.TempPathFactory,
    embedding_model_dir: Path,
    llm_stack: LLMStack,
    backend_settings: dict[str, str],
) -> Iterator[TestClient]:
    settings = answering_settings(
        tmp_path_factory.mktemp("chat"), embedding_model_dir, llm_stack, max_tokens=120, **backend_settings
    )
    with TestClient(create_app(settings)) as test_client:
        create_kb(test_client, KB)
        docs = upload_ready(test_client, KB, *PROJECTS)
        assert {d["status"] for d in docs} == {"ready"}, docs
        yield test_client


def ask(client: TestClient, **body: object) -> dict:
    response = client.post("/api/chat", json={"stream": False, **body})
    assert response.status_code == 200, response.text
    return response.json()


def events_of(client: TestClient, **body: object) -> list[dict]:
    with client.stream("POST", "/api/chat", json={"stream": True, **body}) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        return list(sse_events(response))


def test_kb_answers_with_the_fact_and_its_source(client: TestClient) -> None:
    result = ask(client, question="星河计划的总预算是多少？", mode="kb", kb_names=[KB])
    assert "三千八百七十万" in result["answer"] or "3870" in result["answer"]
    assert result["answered_from_kb"] is True
    top = result["sources"][0]
    assert top["number"] == 1 and top["file_name"] == "星河计划预算.md" and top["kb_name"] == KB
    assert "三千八百七十万元" in top["text"] and 0 < top["score"] <= 1
    assert result["timings_ms"]["retrieval_ms"] > 0 and result["timings_ms"]["first_token_ms"] > 0


def test_stream_sends_sources_then_tokens_then_done_and_matches_non_stream(client: TestClient) -> None:
    body = {"question": "星河计划由谁负责？", "mode": "kb", "kb_names": [KB]}
    events = events_of(client, **body)
    assert [e["type"] for e in events[:1]] == ["sources"] and events[-1]["type"] == "done"
    deltas = [e for e in events if e["type"] == "delta"]
    assert len(deltas) >= 3 and {e["type"] for e in events[1:-1]} == {"delta"}
    streamed = "".join(e["text"] for e in deltas)
    assert "林晓澜" in streamed
    assert [s["number"] for s in events[0]["sources"]] == list(range(1, len(events[0]["sources"]) + 1))
    done = events[-1]
    assert done["usage"]["completion_tokens"] == len(deltas)
    assert done["timings_ms"]["total_ms"] >= done["timings_ms"]["first_token_ms"] >= done["timings_ms"]["retrieval_ms"]
    whole = ask(client, **body)
    assert whole["answer"] == streamed
    assert whole["sources"] == events[0]["sources"]


def test_llm_mode_gets_no_sources(client: TestClient) -> None:
    result = ask(client, question="What is the capital of France? Answer with one word.", mode="llm")
    assert "Paris" in result["answer"]
    assert result["sources"] == [] and result["answered_from_kb"] is False
    assert result["timings_ms"]["retrieval_ms"] is None


def test_kb_test_returns_scored_chunks_without_the_llm(
    tmp_path: Path, embedding_model_dir: Path, client: TestClient, backend_settings: dict[str, str]
) -> None:
    result = ask(client, question="星河计划的总预算", mode="kb_test", kb_names=[KB], top_k=2)
    assert len(result["sources"]) == 2 and "三千八百七十万元" in result["sources"][0]["text"]
    assert result["answer"] == "" and result["timings_ms"]["first_token_ms"] is None
    # Proof that no LLM is involved: the same request succeeds with the LLM unreachable.
    settings = make_settings(
        tmp_path, embedding_model_dir, llm__base_url=f"http://127.0.0.1:{free_port()}/v1", **backend_settings
    )
    with TestClient(create_app(settings)) as offline:
        create_kb(offline, "离线库")
        upload_ready(offline, "离线库", *PROJECTS)
        assert ask(offline, question="星河计划的总预算", mode="kb_test", kb_names=["离线库"])["sources"]
        down = offline.post("/api/chat", json={"question": "星河计划的总预算", "mode": "kb", "kb_names": ["离线库"]})
        assert down.status_code == 503, "a down LLM is a 503 before streaming starts"
        assert "is not reachable" in down.json()["detail"] and settings.llm.base_url in down.json()["detail"]


def test_several_knowledge_bases_are_searched_together(client: TestClient) -> None:
    create_kb(client, "第二库")
    upload_ready(client, "第二库", ("星河计划风险.md", "星河计划的主要风险是关键芯片的供货周期过长。".encode()))
    result = ask(client, question="星河计划", mode="kb_test", kb_names=[KB, "第二库"], top_k=5)
    assert {s["kb_name"] for s in result["sources"]} == {KB, "第二库"}
    scores = [s["score"] for s in result["sources"]]
    assert scores == sorted(scores, reverse=True)  # one 0-1 scale, so hits from both merge by score
    assert [s["number"] for s in result["sources"]] == list(range(1, len(scores) + 1))


HISTORY = [
    {"role": "user", "content": "星河计划的负责人是谁？"},
    {"role": "assistant", "content": "星河计划的负责人是林晓澜。"},
]


def test_follow_up_finds_the_right_chunk_only_thanks_to_rewriting(client: TestClient) -> None:
    plain = ask(client, question="那它的预算呢？", mode="kb", kb_names=[KB], history=HISTORY, rewrite=False)
    assert plain["rewritten_question"] is None
    assert "青松计划" in plain["sources"][0]["text"], "without rewriting, the follow-up matches the wrong project"

    rewritten = ask(client, question="那它的预算呢？", mode="kb", kb_names=[KB], history=HISTORY)
    assert "星河计划" in rewritten["rewritten_question"]
    assert "三千八百七十万元" in rewritten["sources"][0]["text"]
    assert "三千八百七十万" in rewritten["answer"] or "3870" in rewritten["answer"]


def test_conversation_kept_by_the_server(client: TestClient) -> None:
    conversation = client.post("/api/conversations", json={}).json()["id"]
    first = ask(client, question="星河计划的负责人是谁？", mode="kb", kb_names=[KB], conversation_id=conversation)
    assert "林晓澜" in first["answer"]
    second = ask(client, question="那它的预算呢？", mode="kb", kb_names=[KB], conversation_id=conversation)
    assert "星河计划" in second["rewritten_question"]
    stored = client.get(f"/api/conversations/{conversation}").json()
    assert [m["role"] for m in stored["messages"]] == ["user", "assistant", "user", "assistant"]
    assert stored["messages"][3]["rewritten_question"] == second["rewritten_question"]
    assert stored["messages"][3]["sources"][0]["text"] == second["sources"][0]["text"]
    assert client.delete(f"/api/conversations/{conversation}").status_code == 204
    assert client.get(f"/api/conversations/{conversation}").status_code == 404


def test_no_hit_refuses_or_answers_marked(client: TestClient) -> None:
    refused = ask(client, question="星河计划的总预算是多少？", mode="kb", kb_names=[KB], score_threshold=0.999999)
    assert refused["sources"] == [] and refused["answered_from_kb"] is False
    assert refused["answer"].startswith("根据已知信息无法回答该问题")
    marked = ask(client, question="1+1等于几？", mode="kb", kb_names=[KB], score_threshold=0.999999,
                 no_hit_policy="llm")
    assert marked["answer"].startswith("（知识库中没有找到相关内容") and "2" in marked["answer"]


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"question": "   ", "mode": "llm"}, 422, "must not be empty"),
        ({"question": "长" * 1001, "mode": "llm"}, 422, "the limit is 1000"),
        ({"question": "你好", "mode": "poetry"}, 422, "mode"),
        ({"question": "你好", "mode": "kb_test", "kb_names": [KB], "top_k": 0}, 422, "top_k"),
        ({"question": "你好", "mode": "kb_test", "kb_names": [KB], "top_k": 101}, 422, "top_k"),
        ({"question": "你好", "mode": "kb", "kb_names": ["没有这个库"]}, 404, "没有这个库"),
        ({"question": "你好", "mode": "kb", "kb_names": []}, 422, "at least one knowledge base"),
        ({"question": "你好", "mode": "llm", "history": [{"role": "robot", "content": "x"}]}, 422, "role"),
        ({"question": "你好", "mode": "llm", "history": "not a list"}, 422, "history"),
        ({"question": "你好", "mode": "llm", "history": [], "conversation_id": "0" * 32}, 422, "not both"),
        ({"question": "你好", "mode": "llm", "conversation_id": "' or 1=1 --"}, 422, "hexadecimal"),
        ({"question": "你好", "mode": "llm", "conversation_id": "f" * 32}, 404, "not found"),
        ({"question": "你好", "mode": "kb", "kb_names": [KB], "template": "nope"}, 422, "unknown prompt template"),
    ],
)
def test_bad_requests_get_precise_errors(client: TestClient, body: dict, status: int, fragment: str) -> None:
    for stream in (False, True):
        response = client.post("/api/chat", json={**body, "stream": stream})
        assert response.status_code == status, response.text
        assert fragment in response.text


def test_openai_client_chats_with_a_knowledge_base(client: TestClient) -> None:
    oa = openai.OpenAI(base_url="http://testserver/v1", api_key="unused", http_client=client)
    models = [m.id for m in oa.models.list()]
    assert f"kb:{KB}" in models and models[0] == "Qwen2.5-Coder-1.5B-Instruct"

    reply = oa.chat.completions.create(model=f"kb:{KB}", messages=[{"role": "user", "content": "星河计划由谁负责？"}])
    assert "林晓澜" in reply.choices[0].message.content
    assert reply.model_extra["sources"][0]["file_name"] == "星河计划负责人.md"

    stream = oa.chat.completions.create(
        model=f"kb:{KB}", messages=[{"role": "user", "content": "星河计划由谁负责？"}], stream=True
    )
    chunks = list(stream)
    assert chunks[0].model_extra["sources"][0]["kb_name"] == KB
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == reply.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == "stop"

    plain = oa.chat.completions.create(
        model="Qwen2.5-Coder-1.5B-Instruct", messages=[{"role": "user", "content": "Capital of France? One word."}]
    )
    assert "Paris" in plain.choices[0].message.content and plain.model_extra["sources"] == []

    named = oa.chat.completions.create(
        model="Qwen2.5-Coder-1.5B-Instruct",
        messages=[{"role": "system", "content": "你的名字叫小智。"}, {"role": "user", "content": "你叫什么名字？"}],
    )
    assert "小智" in named.choices[0].message.content  # system messages reach the model

    with pytest.raises(openai.NotFoundError, match="unknown model"):
        oa.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.NotFoundError, match="没有这个库"):
        oa.chat.completions.create(model="kb:没有这个库", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError, match="must not be empty"):
        oa.chat.completions.create(model=f"kb:{KB}", messages=[{"role": "user", "content": " "}])


def _source(number: int, text: str) -> Source:
    return Source(doc_id=f"d{number}", chunk_index=0, text=text, file_name=f"{number}.md", page=None, number=number,
                  kb_name=KB, score=1 - number / 10)


def test_best_last_context_keeps_every_chunk_and_its_number_with_the_best_nearest_the_question() -> None:
    sources = [_source(n, text) for n, (_name, text) in enumerate(PROJECT_FILES, start=1)]
    prompts = load_prompts(Settings().chat.prompts_file)
    prompt = prompts.kb_prompt("星河计划由谁负责？", sources, "kb_default", "best_last")
    blocks = [prompt.index(f"[{s.number}] ({s.file_name}) {s.text}") for s in sources]
    assert blocks == sorted(blocks, reverse=True), "the best chunk [1] comes last"
    assert prompt.index("问题是") > blocks[0]
    assert prompt == prompts.kb_prompt("星河计划由谁负责？", sources[::-1], "kb_default", "best_first")


def test_a_system_template_sends_its_instruction_as_the_system_message_and_only_context_and_question_after() -> None:
    sources = [_source(n, text) for n, (_name, text) in enumerate(PROJECT_FILES, start=1)]
    prompts = load_prompts(Settings().chat.prompts_file)
    system, user = prompts.kb_system("kb_sys"), prompts.kb_prompt("星河计划由谁负责？", sources, "kb_sys")
    assert "[n]" in system and "不允许在答案中添加编造成分" in system
    assert user.startswith("已知信息：") and "问题是：星河计划由谁负责？" in user
    blocks = [user.index(f"[{s.number}] ({s.file_name}) {s.text}") for s in sources]
    assert max(blocks) < user.index("问题是"), "the question follows the context"
    assert "不允许在答案中添加编造成分" not in user, "the instruction is in the system message, evaluated once"
    assert prompts.kb_system("kb_default") == ""
    with pytest.raises(InvalidInput, match="unknown prompt template 'kb_none'"):
        prompts.kb_system("kb_none")


def test_a_template_mapping_without_a_user_text_is_named_when_the_prompts_are_read(tmp_path: Path) -> None:
    prompts = Settings().chat.prompts_file.read_text(encoding="utf-8")
    broken = tmp_path / "prompts.yaml"
    broken.write_text(prompts.replace("kb_templates:\n", "kb_templates:\n  kb_broken:\n    system: 只有系统消息\n", 1),
                      encoding="utf-8")
    with pytest.raises(ValueError, match="prompt template 'kb_broken': a text, or a mapping with a `user` text"):
        load_prompts(broken)


def test_an_example_template_sends_its_worked_questions_as_earlier_turns_filled_like_the_real_one() -> None:
    sources = [_source(n, text) for n, (_name, text) in enumerate(PROJECT_FILES, start=1)]
    prompts = load_prompts(Settings().chat.prompts_file)
    examples = prompts.kb_examples("kb_examples")
    assert [m["role"] for m in examples] == ["user", "assistant"] * (len(examples) // 2) and examples
    real = prompts.kb_prompt("星河计划由谁负责？", sources, "kb_examples")
    instruction = real[real.index("根据上述已知信息"):real.index("问题是")]
    for asked, answer in zip(examples[::2], examples[1::2], strict=True):
        assert asked["content"].startswith("已知信息：\n[1] (") and instruction in asked["content"]
        assert "问题是：" in asked["content"] and "{" not in asked["content"]
        assert re.search(r"\[\d\]", answer["content"]), "a worked answer cites its piece"
    assert prompts.kb_examples("kb_default") == []


def test_template_examples_without_an_answer_are_named_when_the_prompts_are_read(tmp_path: Path) -> None:
    prompts = Settings().chat.prompts_file.read_text(encoding="utf-8")
    broken = tmp_path / "prompts.yaml"
    broken.write_text(prompts.replace(
        "kb_templates:\n",
        "kb_templates:\n  kb_broken:\n    user: '{context} {question}'\n"
        "    examples:\n      - {context: c, question: q}\n",
        1), encoding="utf-8")
    with pytest.raises(ValueError, match="prompt template 'kb_broken': `examples` is a list of mappings"):
        load_prompts(broken)


@pytest.mark.parametrize("template", ["kb_short", "kb_quote", "kb_sys", "kb_examples"])
def test_short_templates_over_fewer_chunks_still_answer_from_the_chunk(client: TestClient, template: str) -> None:
    result = ask(client, question="星河计划的总预算是多少？", mode="kb", kb_names=[KB], top_k=2, template=template)
    assert len(result["sources"]) == 2 and "三千八百七十万元" in result["sources"][0]["text"]
    assert "三千八百七十万" in result["answer"] or "3870" in result["answer"]
    assert result["finish_reason"] == "stop"


@pytest.mark.parametrize(
    ("question", "english"),
    [
        ("Who leads the Aurora project?", True),
        ("What is GPT-4's context length (in tokens)?", True),
        ("星河计划由谁负责？", False),
        ("Who is 林晓澜?", False),  # a Chinese name: the answer may well be wanted in Chinese
        ("プロジェクトの予算は？", False),
        ("1234？", False),  # no letters: nothing says English
    ],
)
def test_the_english_template_is_picked_only_for_questions_without_cjk_letters(question: str, english: bool) -> None:
    assert default_template(question, "kb_default", "kb_english") == ("kb_english" if english else "kb_default")
    assert default_template(question, "kb_default", "") == "kb_default"


def test_an_english_question_gets_an_english_answer_where_the_english_template_is_set(
    tmp_path: Path, embedding_model_dir: Path, llm_stack: LLMStack
) -> None:
    """kb_default asks for Chinese answers; with chat.kb_template_english an English question is answered in
    English from the same sources, and a Chinese question still gets kb_default's Chinese answer."""
    settings = answering_settings(tmp_path, embedding_model_dir, llm_stack, max_tokens=80,
                                  chat__kb_template_english="kb_english")
    with TestClient(create_app(settings)) as client:
        create_kb(client, "aurora")
        aurora = ("aurora.md", b"The Aurora project is led by Maya Chen, who took it over in 2021.")
        upload_ready(client, "aurora", aurora, *PROJECTS[:1])
        english = ask(client, question="Who leads the Aurora project?", mode="kb", kb_names=["aurora"])
        chinese = ask(client, question="星河计划由谁负责？", mode="kb", kb_names=["aurora"])
    assert "Maya Chen" in english["answer"]
    assert not any(unicodedata.east_asian_width(ch) in "WF" for ch in english["answer"]), english["answer"]
    assert "林晓澜" in chinese["answer"]


def test_a_focused_prompt_is_shorter_and_still_answers_from_the_sentence_that_holds_the_fact(
    client: TestClient,
) -> None:
    """chat.focus_chars cuts each source to the sentences that bear on the question: the real model reads a shorter
    prompt and still answers from the kept sentence; the sources sent back stay whole."""
    haitang = (
        "海棠计划于二〇一九年在宁波立项，最初只有五名成员。项目组的办公室设在东钱湖畔的一座旧仓库里。"
        "第一阶段的目标是完成港口调度系统的原型。海棠计划的验收负责人是周慕白，他来自市交通局。"
        "原型在二〇二一年通过了内部评审。第二阶段扩大到三个港区，并引入了新的合作单位。"
    )
    create_kb(client, "海棠")
    upload_ready(client, "海棠", ("海棠计划.md", haitang.encode()))
    question = {"question": "海棠计划的验收负责人是谁？", "mode": "kb", "kb_names": ["海棠"], "temperature": 0}
    whole = ask(client, **question, focus_chars=0)
    focused = ask(client, **question, focus_chars=40)
    for answer in (whole, focused):
        assert "周慕白" in answer["answer"], answer["answer"]
        assert answer["sources"][0]["text"] == haitang
    assert whole["usage"]["prompt_tokens"] - focused["usage"]["prompt_tokens"] >= 50, (whole["usage"], focused["usage"])
