"""The LangChain integration on the real default model and embedder (no stand-ins)."""
from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("langchain_core",
                    reason="needs langchain-core (pip install 'editkit[langchain]')")

from langchain_core.documents import Document
from langchain_core.messages import (
    AIMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.vectorstores import InMemoryVectorStore

import langchain_fixtures as lcf
from editkit import EditableLM, EditMemory, FactTooLongError, InvalidInputError
from editkit.embedder import shared_embedder
from editkit.integrations.langchain import (
    EditableChatModel,
    EditkitEmbeddings,
    EditMemoryRetriever,
    VectorStoreEditMemory,
    add_documents,
    create_edit_rag_chain,
    docs_to_edit_kwargs,
)
from editkit.integrations.langchain.rag import stuffed_question
from editkit.retrieval import EditStore
from langchain_fixtures import DARRIEUX, FACTS

chat_lm, fact_memory = lcf.chat_lm, lcf.fact_memory  # fixtures used below

Q = "The mother tongue of Danielle Darrieux is"
N = 6  # new tokens per generation: enough to compare outputs, cheap on CPU


# ---- chat model ---------------------------------------------------------------------------
def test_invoke_is_the_sdk_answer_with_edit_and_usage_reported(chat_lm: EditableLM) -> None:
    stored = chat_lm.edit(DARRIEUX).edits()[0]
    chat = EditableChatModel(lm=chat_lm, chat=False, max_tokens=N)
    msg = chat.invoke(Q)
    ans = chat_lm.ask(Q, max_new_tokens=N, stop=())
    assert msg.content == ans.text and msg.content
    meta = msg.response_metadata
    assert meta["mode"] == "ptokens" and meta["model_name"] == "SmolLM2-135M-Instruct"
    assert meta["edit"]["id"] == stored.id and meta["edit"]["text"] == DARRIEUX
    assert meta["edit"]["score"] == pytest.approx(ans.edit.score)
    assert msg.usage_metadata == {"input_tokens": ans.prompt_tokens,
                                  "output_tokens": ans.completion_tokens,
                                  "total_tokens": ans.prompt_tokens + ans.completion_tokens}


def test_stream_concatenates_to_invoke_with_one_usage_chunk(chat_lm: EditableLM) -> None:
    chat_lm.edit(DARRIEUX)
    chat = EditableChatModel(lm=chat_lm, max_tokens=N)
    chunks = list(chat.stream(Q))
    full = chunks[0]
    for c in chunks[1:]:
        full = full + c
    invoked = chat.invoke(Q)
    assert len(chunks) > 2 and full.content == invoked.content
    assert [c.chunk_position for c in chunks][-1] == "last"
    assert sum(1 for c in chunks if c.usage_metadata) == 1
    assert full.usage_metadata == invoked.usage_metadata
    assert full.response_metadata["edit"]["text"] == DARRIEUX


def test_stop_sequences_cut_invoke_and_stream_alike(chat_lm: EditableLM) -> None:
    chat = EditableChatModel(lm=chat_lm, max_tokens=N)
    full = chat.invoke("Hello").content
    word = full.split()[1]  # a stop sequence the greedy answer is known to contain
    cut = full[: full.index(word)].strip()
    stopped = chat.invoke("Hello", stop=[word])
    assert stopped.content == cut and stopped.response_metadata["finish_reason"] == "stop"
    assert "".join(c.content for c in chat.stream("Hello", stop=[word])) == cut
    assert EditableChatModel(lm=chat_lm, max_tokens=N, stop=[word]).invoke("Hello").content == cut


def test_chat_template_prompt_matches_sdk_and_keeps_history(chat_lm: EditableLM) -> None:
    chat_lm.edit(DARRIEUX)
    chat = EditableChatModel(lm=chat_lm)
    ids, _, edit, _ = chat.build_prompt([HumanMessage(Q)])
    assert ids == chat_lm.prompt(Q, chat=True)[0].ids and edit.edit.text == DARRIEUX
    ids, *_ = chat.build_prompt([SystemMessage("Be brief."), HumanMessage("hi"),
                                 AIMessage("Hello!"), HumanMessage(Q)])
    text = chat_lm.tokenizer.decode(ids)
    order = [text.index(s) for s in ("<|im_start|>system\nBe brief.", "<|im_start|>user\nhi",
                                     "<|im_start|>assistant\nHello!", DARRIEUX, Q)]
    assert order == sorted(order) and text.endswith("<|im_start|>assistant\n")
    assert text.count(DARRIEUX) == 1  # the edit sits in the last user turn only
    begin = chat_lm.ptokens.begin_ids[0]
    assert ids.count(begin) == 1 and ids.index(begin) > text.count("<|im_start|>") - 1


def test_user_text_cannot_produce_control_tokens(chat_lm: EditableLM) -> None:
    chat = EditableChatModel(lm=chat_lm)
    end = chat_lm.tokenizer.convert_tokens_to_ids("<|im_end|>")
    plain, *_ = chat.build_prompt([HumanMessage("hi"), AIMessage("ok"), HumanMessage("what?")])
    sneaky, *_ = chat.build_prompt([HumanMessage("hi<|im_end|>"), AIMessage("ok<|im_end|>"),
                                    HumanMessage("what?<|im_end|>")])
    assert sneaky.count(end) == plain.count(end)


def test_given_fact_bypasses_memory_and_is_reported(chat_lm: EditableLM) -> None:
    chat = EditableChatModel(lm=chat_lm, chat=False, max_tokens=N)
    fact, dis = "The Eiffel Tower is located in Rome.", ["Toko Yasuda plays the piano."]
    msg = chat.bind(fact=fact, distractors=dis, mode="prompt").invoke(
        "The Eiffel Tower is located in the city of")
    ans = chat_lm.ask("The Eiffel Tower is located in the city of", max_new_tokens=N,
                      fact=fact, distractors=dis, mode="prompt", stop=())
    assert msg.content == ans.text
    meta = msg.response_metadata
    assert meta["mode"] == "prompt" and meta["edit"]["text"] == fact
    assert meta["edit"]["source"] == "given" and [d["text"] for d in meta["distractors"]] == dis


def test_namespace_selects_edits(chat_lm: EditableLM) -> None:
    chat_lm.edit(DARRIEUX, namespace="alice")
    chat = EditableChatModel(lm=chat_lm)
    assert chat.build_prompt([HumanMessage(Q)])[2] is None
    assert chat.build_prompt([HumanMessage(Q)], namespace="alice")[2].edit.text == DARRIEUX
    alice = EditableChatModel(lm=chat_lm, namespace="alice")
    assert alice.build_prompt([HumanMessage(Q)])[2].edit.namespace == "alice"


def test_abandoned_stream_stops_generating(chat_lm: EditableLM) -> None:
    import threading
    import time

    chat = EditableChatModel(lm=chat_lm, max_tokens=400)
    stream = chat.stream("Write a long story about a cat.")
    first = next(stream)
    assert first.content
    started = time.time()
    stream.close()  # the consumer leaves after one chunk
    alive = [t for t in threading.enumerate() if t.name == "editkit-generate"]
    assert alive == [] and time.time() - started < 30


def test_chat_model_generates_through_the_sdk_decoder_and_context_rule(
        tiny_model_dir, tiny_ptokens) -> None:
    from editkit.loading import load_model

    loaded = load_model(tiny_model_dir, device="cpu")
    lm = EditableLM(loaded, tiny_ptokens, EditMemory(None), mode="ptokens", prefix_cache=2,
                    decode_dtype="bfloat16")
    chat = EditableChatModel(lm=lm, chat=False, max_tokens=4)
    fact = "The Eiffel Tower is located in Rome."
    q = "The Eiffel Tower is located in the city of"
    msg = chat.invoke(q, fact=fact)
    assert lm.prefix_cache.misses == 1  # the SDK's prefix-cache decoder ran
    ans = lm.ask(q, fact=fact, max_new_tokens=4, stop=())
    assert msg.content == ans.text and lm.prefix_cache.hits == 1
    assert msg.response_metadata["finish_reason"] == ans.finish_reason
    loaded.model.config.max_position_embeddings = 40
    room = 40 - len(lm.prompt(q, mode="none")[0])
    assert chat.invoke(q, mode="none", max_tokens=room).content is not None
    with pytest.raises(InvalidInputError, match="context of 40"):
        chat.invoke(q, mode="none", max_tokens=room + 1)  # the SDK's one context rule


def test_lazy_default_loading_uses_the_named_model(tiny_model_dir) -> None:
    chat = EditableChatModel(model=str(tiny_model_dir), max_tokens=3, chat=False)
    assert chat._loaded is None  # constructing loads nothing (LangChain builds models often)
    assert chat._get_ls_params()["ls_model_name"] == str(tiny_model_dir)
    msg = chat.invoke("hi")
    assert chat.editable_lm.name == tiny_model_dir.name == msg.response_metadata["model_name"]
    assert 1 <= msg.usage_metadata["output_tokens"] <= 3


def test_async_invoke_matches_sync(chat_lm: EditableLM) -> None:
    chat = EditableChatModel(lm=chat_lm, max_tokens=N)
    assert asyncio.run(chat.ainvoke("Hello")).content == chat.invoke("Hello").content


@pytest.mark.parametrize("messages, match", [
    ([], "empty list of messages"),
    ([HumanMessage("hi"), ToolMessage("3", tool_call_id="1")], "ToolMessage"),
    ([HumanMessage("hi"), AIMessage("hello")], "last message must be a human"),
    ([AIMessage("", tool_calls=[{"name": "f", "args": {}, "id": "1"}]), HumanMessage("hi")],
     "tool calling"),
    ([HumanMessage([{"type": "image_url", "image_url": {"url": "http://x/y.png"}}])],
     "text only"),
    ([HumanMessage("   ")], "empty"),
    ([HumanMessage("a\x1bb")], "control characters"),
    ([HumanMessage("a\x1bb"), AIMessage("ok"), HumanMessage("hi")], "control characters"),
])
def test_bad_messages_raise_clear_errors(chat_lm: EditableLM, messages: list,
                                         match: str) -> None:
    chat = EditableChatModel(lm=chat_lm, max_tokens=N)
    with pytest.raises(InvalidInputError, match=match):
        chat.invoke(messages)


def test_bad_settings_raise_clear_errors(chat_lm: EditableLM) -> None:
    with pytest.raises(InvalidInputError, match="Unknown mode"):
        EditableChatModel(lm=chat_lm, mode="telepathy")
    with pytest.raises(InvalidInputError, match="EditableLM"):
        EditableChatModel(lm="SmolLM2")
    with pytest.raises(InvalidInputError, match="max_tokens"):
        EditableChatModel(lm=chat_lm, max_tokens=0)
    chat = EditableChatModel(lm=chat_lm)
    with pytest.raises(InvalidInputError, match="tool calling"):
        chat.invoke("hi", tools=[{"name": "f"}])
    with pytest.raises(InvalidInputError, match="model override"):
        chat.invoke("hi", model="gpt-4")
    with pytest.raises(NotImplementedError):
        chat.bind_tools([])


# ---- retriever, embeddings, vector-store memory ---------------------------------------------
def test_retriever_returns_edits_as_documents(chat_lm: EditableLM) -> None:
    stored = {e.text: e for e in chat_lm.edit(FACTS).edits()}
    chat_lm.edit("Danielle Darrieux speaks Italian.", namespace="bob")
    retriever = EditMemoryRetriever.from_lm(chat_lm, k=3, threshold=0.3)
    docs = retriever.invoke("What is the mother tongue of Danielle Darrieux?")
    assert 1 <= len(docs) <= 3 and docs[0].page_content == DARRIEUX
    for d in docs:
        e = stored[d.page_content]
        assert d.id == d.metadata["id"] == e.id and d.metadata["namespace"] == "default"
        assert d.metadata["score"] >= 0.3 and "Darrieux" in d.page_content
    # the learned gate (default) orders by relevance; the threshold gate by cosine
    assert [d.metadata["relevance"] for d in docs] == sorted(
        (d.metadata["relevance"] for d in docs), reverse=True)
    by_cos = retriever.invoke("What is the mother tongue of Danielle Darrieux?", gate="threshold")
    assert "relevance" not in by_cos[0].metadata
    assert [d.metadata["score"] for d in by_cos] == sorted(
        (d.metadata["score"] for d in by_cos), reverse=True)
    bob = retriever.invoke("Danielle Darrieux language", namespace="bob")
    assert [d.page_content for d in bob] == ["Danielle Darrieux speaks Italian."]
    assert retriever.invoke("How do volcanoes form?", threshold=0.9) == []
    with pytest.raises(InvalidInputError, match="k must be"):
        retriever.invoke("x", k=0)
    with pytest.raises(InvalidInputError, match="EditStore"):
        EditMemoryRetriever(memory=[1, 2])
    with pytest.raises(InvalidInputError, match="gate"):
        retriever.invoke("x", gate="maybe")


def test_retriever_leaves_out_edits_about_another_subject_with_the_learned_gate(
        chat_lm: EditableLM) -> None:
    chat_lm.edit(FACTS)
    retriever = EditMemoryRetriever.from_lm(chat_lm, k=3)
    q = "The mother tongue of Léon Blum is"  # same relation, another subject
    assert retriever.invoke(q) == []
    assert retriever.invoke(q, gate="threshold", threshold=0.3)  # similar, so cosine passes


def test_embeddings_are_editkits_unit_vectors() -> None:
    emb = EditkitEmbeddings()
    vecs = emb.embed_documents(FACTS[:2])
    ref = shared_embedder().encode(FACTS[:2])
    assert len(vecs) == 2 and vecs[0] == pytest.approx(ref[0].tolist(), abs=1e-6)
    assert sum(x * x for x in emb.embed_query(Q)) == pytest.approx(1.0, abs=1e-4)
    assert emb.embed_documents([]) == []
    with pytest.raises(InvalidInputError):
        emb.embed_documents("not a list")


def test_vectorstore_memory_matches_sqlite_memory_and_drives_the_lm(
        default_model, default_ptokens, fact_memory: EditMemory) -> None:
    store = InMemoryVectorStore(EditkitEmbeddings())
    mem = VectorStoreEditMemory(store)
    assert isinstance(mem, EditStore)
    lm = EditableLM(default_model, default_ptokens, mem, mode="ptokens")
    lm.edit(FACTS)
    lm.edit("Danielle Darrieux speaks Italian.", namespace="bob")
    got = mem.retrieve(Q, k=3, threshold=0.2)
    want = fact_memory.retrieve(Q, k=3, threshold=0.2)
    assert [h.edit.text for h in got] == [h.edit.text for h in want]
    assert [h.score for h in got] == pytest.approx([h.score for h in want], abs=1e-5)
    assert [h.edit.text for h in mem.retrieve(Q, namespace="bob", threshold=0.0)] == \
        ["Danielle Darrieux speaks Italian."]
    p, edit, _ = lm.prompt(Q)
    assert edit.edit.text == DARRIEUX and p.fact == DARRIEUX
    gone = lm.forget(edit.edit.id)
    assert store.get_by_ids([gone.id]) == [] and all(e.id != gone.id for e in lm.edits())
    assert lm.clear("bob") == 1 and lm.edits("bob") == []
    assert len(mem) == len(FACTS) - 1


def test_add_documents_turns_documents_into_edits(chat_lm: EditableLM) -> None:
    docs = [Document(DARRIEUX, metadata={"subject": "Danielle Darrieux", "object": "English"}),
            Document("The Eiffel Tower is located in Rome.", metadata={"source": "x"})]
    mem = VectorStoreEditMemory(InMemoryVectorStore(EditkitEmbeddings()))
    edits = mem.add_documents(docs, namespace="kb")
    assert [e.text for e in edits] == [d.page_content for d in docs]
    assert edits[0].subject == "Danielle Darrieux" and edits[0].object == "English"
    assert edits[1].subject is None and mem.edits("kb") == edits
    sqlite_edits = add_documents(chat_lm.memory, docs)
    assert [e.text for e in chat_lm.edits()] == [e.text for e in sqlite_edits]
    with pytest.raises(FactTooLongError, match="split"):
        docs_to_edit_kwargs([Document("word " * 400)])
    with pytest.raises(InvalidInputError, match="Documents"):
        mem.add_documents(["a plain string"])
    with pytest.raises(InvalidInputError, match="no documents"):
        mem.add_documents([])
    assert len(mem) == 2  # nothing half-written by the failures


# ---- RAG ----------------------------------------------------------------------------------
CORPUS = [Document(f, id=str(i)) for i, f in enumerate(FACTS)]


def test_rag_chain_does_not_place_documents_about_another_subject(chat_lm: EditableLM) -> None:
    retriever = InMemoryVectorStore.from_documents(
        [Document(f, id=str(i)) for i, f in enumerate(FACTS)], EditkitEmbeddings()
    ).as_retriever(search_kwargs={"k": 2})
    chat = EditableChatModel(lm=chat_lm, chat=False, max_tokens=N)
    q = "The mother tongue of Léon Blum is"  # the corpus knows Darrieux's, not Blum's
    gated = create_edit_rag_chain(chat, retriever, mode="prompt").invoke(q)
    assert len(gated["context"]) == 2 and not any(d.metadata["placed"] for d in gated["context"])
    assert gated["answer"].response_metadata["mode"] == "none"
    ungated = create_edit_rag_chain(chat, retriever, mode="prompt", gate=None).invoke(q)
    assert ungated["answer"].response_metadata["edit"]["text"] == DARRIEUX
    with pytest.raises(InvalidInputError, match="gate"):
        create_edit_rag_chain(chat, retriever, gate="yes")


@pytest.fixture(scope="module")
def corpus_retriever():
    return InMemoryVectorStore.from_documents(CORPUS, EditkitEmbeddings()).as_retriever(
        search_kwargs={"k": 3})


def test_rag_chain_places_best_doc_as_ptoken_edit(chat_lm: EditableLM,
                                                  corpus_retriever) -> None:
    chat = EditableChatModel(lm=chat_lm, chat=False, max_tokens=N)
    chain = create_edit_rag_chain(chat, corpus_retriever, mode="ptokens")
    out = chain.invoke({"question": Q})
    assert [d.page_content for d in out["context"]][0] == DARRIEUX and len(out["context"]) == 3
    docs = [d.page_content for d in out["context"] if d.metadata["placed"]]  # the gate's choice
    assert docs[0] == DARRIEUX and all("Darrieux" in d for d in docs)
    meta = out["answer"].response_metadata
    assert meta["mode"] == "ptokens" and meta["edit"]["text"] == DARRIEUX
    assert [d["text"] for d in meta["distractors"]] == docs[1:]
    ans = chat_lm.ask(Q, max_new_tokens=N, fact=docs[0], distractors=docs[1:], mode="ptokens",
                      stop=())
    assert out["answer"].content == ans.text
    assert out["answer"].usage_metadata["input_tokens"] == ans.prompt_tokens
    streamed = "".join(c["answer"].content for c in chain.stream(Q) if "answer" in c)
    assert streamed == ans.text


def test_stuff_baseline_puts_all_docs_before_the_question(chat_lm: EditableLM,
                                                          corpus_retriever) -> None:
    chat = EditableChatModel(lm=chat_lm, chat=False, max_tokens=N)
    out = create_edit_rag_chain(chat, corpus_retriever, stuff=True).invoke(Q)
    meta = out["answer"].response_metadata
    assert meta["mode"] == "none" and meta["edit"] is None
    stuffed = stuffed_question(out["context"], Q)
    assert stuffed.splitlines()[:3] == [d.page_content for d in out["context"]]
    ans = chat_lm.ask(stuffed, max_new_tokens=N, mode="none", stop=())
    assert out["answer"].content == ans.text
    assert out["answer"].usage_metadata["input_tokens"] == ans.prompt_tokens


def test_rag_with_no_documents_answers_unedited(chat_lm: EditableLM) -> None:
    chat_lm.edit(DARRIEUX)  # an edit in the LM's memory must not leak in either
    chat = EditableChatModel(lm=chat_lm, chat=False, max_tokens=N)
    empty = EditMemoryRetriever(memory=EditMemory(None))
    out = create_edit_rag_chain(chat, empty).invoke(Q)
    assert out["context"] == [] and out["answer"].response_metadata["edit"] is None
    assert out["answer"].content == chat_lm.ask(Q, max_new_tokens=N, mode="none", stop=()).text
    with pytest.raises(InvalidInputError, match="question"):
        create_edit_rag_chain(chat, empty).invoke(42)


def test_example_runs_as_written(chat_lm: EditableLM, capsys: pytest.CaptureFixture) -> None:
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "docs" / "examples" / "langchain_rag.py"
    spec = importlib.util.spec_from_file_location("langchain_rag_example", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    out = example.main(lm=chat_lm)
    printed = capsys.readouterr().out
    assert out["chat"].response_metadata["edit"]["text"] == DARRIEUX and out["chat"].content
    assert out["retrieved"][0].page_content == DARRIEUX
    rag = out["rag"]["answer"].response_metadata
    assert rag["mode"] == "ptokens" and rag["edit"]["text"] == "Porsche 911, created by Honda."
    assert out["stuffed"]["answer"].response_metadata["mode"] == "none"
    for line in ("chat:", "retriever:", "P-Token RAG:", "streamed:", "plain-context RAG:"):
        assert line in printed


def test_batch_decodes_concurrent_greedy_calls_together_with_invokes_answers(
        chat_lm: EditableLM, monkeypatch: pytest.MonkeyPatch) -> None:
    # a wide window, so that the four threads' retrievals (tens of ms each) surely overlap it
    monkeypatch.setattr(chat_lm.batcher, "window_s", 0.5)
    chat_lm.edit(DARRIEUX)
    chat = EditableChatModel(lm=chat_lm, chat=False, max_tokens=N)
    questions = [Q, "The Eiffel Tower is located in the city of", "Name three colours.",
                 "What language did Danielle Darrieux speak?"]
    one_by_one = [chat.invoke(q) for q in questions]
    before = (chat_lm.batcher.requests, chat_lm.batcher.batches)
    together = chat.batch(questions, config={"max_concurrency": 4})
    requests = chat_lm.batcher.requests - before[0]
    batches = chat_lm.batcher.batches - before[1]
    assert [m.content for m in together] == [m.content for m in one_by_one]
    assert [m.usage_metadata for m in together] == [m.usage_metadata for m in one_by_one]
    # The same edit, field for field; its retrieval score only to float32 rounding: concurrent
    # calls embed their questions together, and a batched encode differs in the last bits
    # (0.79719138 vs 0.79719150), far below what a wrong edit or embedding would change.
    for got, want in zip([m.response_metadata["edit"] for m in together],
                         [m.response_metadata["edit"] for m in one_by_one], strict=True):
        assert (got is None) == (want is None)
        if want is not None:
            assert {k: v for k, v in got.items() if k != "score"} == \
                {k: v for k, v in want.items() if k != "score"}
            assert got["score"] == pytest.approx(want["score"], abs=1e-5)
    assert requests == 4 and batches < 4  # some calls shared a batch


def test_concurrent_streams_decode_in_one_running_batch(
        chat_lm: EditableLM, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    monkeypatch.setattr(chat_lm.batcher, "window_s", 0.5)
    chat_lm.edit(DARRIEUX)
    chat = EditableChatModel(lm=chat_lm, chat=False, max_tokens=N)
    questions = [Q, "The Eiffel Tower is located in the city of"]
    invoked = [chat.invoke(q).content for q in questions]
    before = (chat_lm.batcher.requests, chat_lm.batcher.batches)
    streamed: list = [None, None]

    def consume(i: int) -> None:
        streamed[i] = "".join(c.content for c in chat.stream(questions[i]))

    threads = [threading.Thread(target=consume, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert streamed == invoked
    assert chat_lm.batcher.requests - before[0] == 2
    assert chat_lm.batcher.batches - before[1] == 1  # the second stream joined the first's batch
