"""Natural questions, as a new user types them, through every door with default settings: the SDK
(`ask`, `ask_many`, `stream`), the CLI, the server's chat endpoint (the unmodified `openai`
client) and LangChain. Real default model, its shipped P-Tokens, the learned relevance gate.

The edits and questions are ones this 135M model answers with the edit in its chat template;
how often that happens over whole data sets is measured by `editkit eval`, not here. What these
tests pin is the path: a question is laid out in the chat template (inline, the model often says
nothing: the bug these tests were written for), the answer is never empty, it carries the new
object, and a question about another subject gets no edit.
"""
from __future__ import annotations

import pytest
from typer.testing import CliRunner

from editkit import EditableLM
from editkit.cli import app

EDITS = {
    "The mother tongue of Danielle Darrieux is English.": (
        "English", ["What is the mother tongue of Danielle Darrieux?",
                    "Which language did Danielle Darrieux grow up speaking?"]),
    "The Horsehead Nebula is part of the constellation Aquarius.": (
        "Aquarius", ["Which constellation does the Horsehead Nebula belong to?"]),
    "Yaakov Yitzchok Ruderman was born in 1957.": (
        "1957", ["When was Yaakov Yitzchok Ruderman born?"]),
    "The song Looking On is by The Moody Blues.": (
        "Moody Blues", ["Who recorded the song Looking On?"]),
}
CASES = [(fact, obj, q) for fact, (obj, qs) in EDITS.items() for q in qs]
UNRELATED = "What is the mother tongue of Thomas Joannes Stieltjes?"


@pytest.fixture
def edited(product_lm: EditableLM) -> EditableLM:
    return product_lm.edit(list(EDITS))


def test_ask_answers_natural_questions_with_the_edited_object(edited: EditableLM) -> None:
    for fact, obj, q in CASES:
        a = edited.ask(q)
        assert a.fact == fact and a.edit is not None and a.edit.edit.text == fact
        assert obj in a.text, (q, a.text)
        assert edited.prompt(q)[0].chat  # a question goes through the chat template
    other = edited.ask(UNRELATED)
    assert other.text and other.fact is None and "English" not in other.text


def test_ask_many_and_stream_give_the_same_answers(edited: EditableLM) -> None:
    questions = [q for _, _, q in CASES]
    alone = [edited.ask(q).text for q in questions]
    assert [a.text for a in edited.ask_many(questions)] == alone
    assert "".join(edited.stream(questions[0])) == alone[0]


def test_a_sentence_to_complete_stays_inline_and_ends_with_its_line(
        edited: EditableLM) -> None:
    a = edited.ask("The mother tongue of Danielle Darrieux is")
    assert not edited.prompt("The mother tongue of Danielle Darrieux is")[0].chat
    assert a.text.startswith("English") and "\n" not in a.text
    assert a.completion_tokens < 32  # stopped at the end of the answer, not the token budget


def test_cli_ask_answers_a_question_and_says_which_edit_it_used() -> None:
    runner = CliRunner()
    fact, obj, q = CASES[0]
    res = runner.invoke(app, ["ask", "--fact", fact, q])
    assert res.exit_code == 0, res.output
    assert obj in res.stdout.strip().splitlines()[0]
    assert f"edit used: {fact!r}" in res.stderr
    res = runner.invoke(app, ["ask", "--fact", fact, UNRELATED])
    assert res.exit_code == 0 and res.stdout.strip()
    assert "no edit applied" in res.stderr and "relevance gate" in res.stderr


def test_the_chat_endpoint_answers_with_the_edit_for_a_plain_openai_request(
        edited: EditableLM) -> None:
    openai = pytest.importorskip("openai", reason="needs the dev extra (openai)")
    pytest.importorskip("uvicorn", reason="needs editkit[serve]")
    from editkit.serve import serve_in_thread

    srv, url = serve_in_thread(edited)
    try:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0)
        for _, obj, q in CASES[:3]:
            r = client.chat.completions.create(model="editkit",
                                               messages=[{"role": "user", "content": q}])
            assert obj in r.choices[0].message.content, (q, r.choices[0].message.content)
    finally:
        srv.should_exit = True


def test_langchain_chat_model_answers_with_the_edit(edited: EditableLM) -> None:
    pytest.importorskip("langchain_core", reason="needs editkit[langchain]")
    from langchain_core.messages import HumanMessage, SystemMessage

    from editkit.integrations.langchain import EditableChatModel

    chat = EditableChatModel(lm=edited)
    for fact, obj, q in CASES[:3]:
        msg = chat.invoke([SystemMessage("Answer briefly."), HumanMessage(q)])
        assert obj in msg.content and msg.response_metadata["edit"]["text"] == fact, msg.content
