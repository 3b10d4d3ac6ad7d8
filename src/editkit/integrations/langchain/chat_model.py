"""`EditableChatModel`: an `EditableLM` as a LangChain chat model.

    chat = EditableChatModel(lm=lm)                  # or EditableChatModel() for the default
    chat.invoke("The mother tongue of Danielle Darrieux is")
    for chunk in chat.stream([SystemMessage(...), HumanMessage(...)]): ...

The last human message is the question: it is what the edit memory is searched with, and it is
laid out with the retrieved edits exactly as `EditableLM.ask` lays it out (P-Tokens around the
best edit, other edits as distractors). Earlier messages are history. With `chat=True` (the
default) the conversation goes through the model's chat template, the edit layout filling the
last user turn; with `chat=False` a single question gives exactly `lm.ask(question)`'s prompt.

Per call (`invoke(..., fact=..., distractors=..., mode=..., namespace=...)`, or `.bind(...)`) the
edits can be given explicitly, bypassing the memory; the RAG chain uses this.

`response_metadata` reports what was used: `model_name`, `mode`, `edit` (id, text, namespace,
score; None when no edit was placed) and `distractors`; `usage_metadata` the prompt and
completion token counts.
"""
from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.base import LangSmithParams
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    SystemMessage,
)
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from ...editable import EditableLM
from ...errors import InvalidInputError
from ...layouts import Mode
from ...limits import MAX_NEW_TOKENS
from ...loading import DEFAULT_MODEL_NAME
from ...records import MAX_QUESTION_CHARS, RetrievedEdit, check_namespace, clean_text
from ...runtime.generation import check_generation_args

_ROLES = {"human": "user", "user": "user", "ai": "assistant", "assistant": "assistant",
          "system": "system"}
_CALL_KWARGS = {"fact", "distractors", "mode", "namespace", "max_tokens", "temperature", "seed",
                "chat"}


def _edit_info(hit: RetrievedEdit | None) -> dict[str, Any] | None:
    if hit is None:
        return None
    e = hit.edit
    return {"id": e.id, "text": e.text, "namespace": e.namespace, "score": hit.score,
            "source": "memory"}


def _given_info(text: str) -> dict[str, Any]:
    return {"id": None, "text": text, "namespace": None, "score": None, "source": "given"}


def _text_of(message: BaseMessage) -> str:
    """The text of a message; non-text content blocks are refused (editkit is text-only)."""
    content = message.content
    if isinstance(content, str):
        return content
    parts = []
    for block in content:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, dict) and block.get("type") == "text":
            parts.append(str(block.get("text", "")))
        elif isinstance(block, dict) and block.get("type") in ("reasoning", "thinking") \
                and isinstance(message, AIMessage):
            continue  # a reasoning trace of an earlier answer is not part of the conversation
        else:
            kind = block.get("type") if isinstance(block, dict) else type(block).__name__
            raise InvalidInputError(f"EditableChatModel takes text only; a "
                                    f"{type(message).__name__} has a {kind!r} content block.")
    return "".join(parts)


def to_turns(messages: Sequence[BaseMessage]) -> list[tuple[str, str]]:
    """(role, text) turns with roles user/assistant/system; consecutive turns of one role are
    merged (some chat templates require alternation). Raises InvalidInputError for an empty list,
    a tool/function message, an AI message with tool calls, or a last turn that is not a user's.
    """
    if not messages:
        raise InvalidInputError("EditableChatModel got an empty list of messages; send at least "
                                "one human message (the question).")
    turns: list[tuple[str, str]] = []
    last = len(messages) - 1
    for i, m in enumerate(messages):
        if isinstance(m, HumanMessage):
            role = "user"
        elif isinstance(m, AIMessage):
            if m.tool_calls or m.invalid_tool_calls:
                raise InvalidInputError("EditableChatModel does not support tool calling; the "
                                        "history has an AI message with tool calls.")
            role = "assistant"
        elif isinstance(m, SystemMessage):
            role = "system"
        elif isinstance(m, ChatMessage) and m.role.lower() in _ROLES:
            role = _ROLES[m.role.lower()]
        else:
            raise InvalidInputError(
                f"EditableChatModel does not support {type(m).__name__} messages"
                + (f" (role {m.role!r})" if isinstance(m, ChatMessage) else "")
                + "; use human, AI and system messages (editkit has no tool calling).")
        text = _text_of(m)
        if i != last:  # history: skip empty turns, refuse control characters
            if not text.strip():
                continue
            text = clean_text(text, f"{type(m).__name__} text", 10 * MAX_QUESTION_CHARS)
        if turns and turns[-1][0] == role:
            turns[-1] = (role, f"{turns[-1][1]}\n\n{text}" if turns[-1][1] else text)
        else:
            turns.append((role, text))
    if turns[-1][0] != "user":
        raise InvalidInputError(f"The last message must be a human message (the question); "
                                f"it is a {turns[-1][0]} message.")
    return turns


class EditableChatModel(BaseChatModel):
    """A LangChain chat model whose answers take the edits of an `EditableLM` into account.

    lm: the EditableLM to wrap (shares its model, P-Tokens and edit memory). If None, the model
      named by `model` (None = the embedded SmolLM2-135M-Instruct) is loaded on first use with
      `EditableLM.from_pretrained` and a fresh in-RAM memory.
    mode / namespace: defaults for every call (None = the LM's own).
    chat: lay the conversation out with the model's chat template (default True; a model
      without one gets the turns as lines of text).
    max_tokens, temperature (None or 0 = greedy), seed (sampled calls), stop: the standard
      LangChain parameters.
    timeout and max_retries are accepted for compatibility and unused: generation is local.
    """

    model_config = ConfigDict(populate_by_name=True, arbitrary_types_allowed=True,
                              protected_namespaces=())

    lm: Any = Field(default=None, exclude=True, description="the EditableLM to wrap")
    model_name: str | None = Field(default=None, alias="model")
    mode: str | None = None
    namespace: str | None = None
    chat: bool = True
    max_tokens: int = Field(default=32, ge=1, le=MAX_NEW_TOKENS)
    temperature: float | None = Field(default=None, ge=0.0)
    seed: int | None = None
    stop: list[str] | None = Field(default=None, alias="stop_sequences")
    streaming: bool = False
    timeout: float | None = None
    max_retries: int | None = None

    _loaded: Any = PrivateAttr(default=None)
    _load_lock: Any = PrivateAttr(default_factory=threading.Lock)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        try:
            super().__init__(*args, **kwargs)
        except ValidationError as exc:
            raise InvalidInputError(f"Invalid EditableChatModel settings: {exc}") from exc

    @field_validator("lm")
    @classmethod
    def _check_lm(cls, value: Any) -> Any:
        if value is not None and not isinstance(value, EditableLM):
            raise ValueError(f"lm must be an editkit.EditableLM, got {type(value).__name__}.")
        return value

    @field_validator("mode")
    @classmethod
    def _check_mode(cls, value: Any) -> str | None:
        return None if value is None else Mode.parse(value).value

    @field_validator("namespace")
    @classmethod
    def _check_ns(cls, value: Any) -> str | None:
        return None if value is None else check_namespace(value)

    # ---- identity ---------------------------------------------------------------------------
    @property
    def _llm_type(self) -> str:
        return "editkit"

    @property
    def resolved_model_name(self) -> str:
        """The wrapped model's name (without loading anything)."""
        lm = self.lm or self._loaded
        if lm is not None:
            return str(lm.name)
        return self.model_name or DEFAULT_MODEL_NAME

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.resolved_model_name, "mode": self.mode, "chat": self.chat,
                "max_tokens": self.max_tokens, "temperature": self.temperature}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = LangSmithParams(ls_provider="editkit",
                                 ls_model_name=kwargs.get("model") or self.resolved_model_name,
                                 ls_model_type="chat",
                                 ls_temperature=kwargs.get("temperature", self.temperature),
                                 ls_max_tokens=kwargs.get("max_tokens", self.max_tokens))
        if stop or self.stop:
            params["ls_stop"] = list(stop or self.stop or [])
        return params

    @property
    def editable_lm(self) -> EditableLM:
        """The wrapped EditableLM (loaded on first use when none was given)."""
        if self.lm is not None:
            return self.lm
        with self._load_lock:
            if self._loaded is None:
                self._loaded = EditableLM.from_pretrained(self.model_name,
                                                          mode=self.mode or Mode.PTOKENS)
        return self._loaded

    # ---- prompt -----------------------------------------------------------------------------
    def _options(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        unknown = {k for k in kwargs if k not in _CALL_KWARGS and not k.startswith("ls_")}
        if unknown:
            raise InvalidInputError(
                f"EditableChatModel got unsupported argument(s) {sorted(unknown)}"
                + ("; editkit has no tool calling" if unknown & {"tools", "tool_choice"} else "")
                + ("; it wraps one model, per-call model override is not supported"
                   if "model" in unknown else "")
                + f". Accepted: {', '.join(sorted(_CALL_KWARGS))}.")
        max_tokens = kwargs.get("max_tokens", self.max_tokens)
        temperature = kwargs.get("temperature", self.temperature)
        check_generation_args(max_tokens, temperature, name="max_tokens")
        distractors = kwargs.get("distractors")
        if distractors is not None and (isinstance(distractors, str)
                                        or not isinstance(distractors, Sequence)):
            raise InvalidInputError("distractors must be a list of strings.")
        return {"fact": kwargs.get("fact"), "distractors": distractors,
                "mode": kwargs.get("mode", self.mode),
                "namespace": kwargs.get("namespace", self.namespace),
                "chat": bool(kwargs.get("chat", self.chat)), "max_tokens": max_tokens,
                "temperature": temperature, "seed": kwargs.get("seed", self.seed)}

    def build_prompt(self, messages: Sequence[BaseMessage], **kwargs: Any
                     ) -> tuple[list[int], Any, RetrievedEdit | None, list[RetrievedEdit]]:
        """Token ids for a conversation, the SDK prompt of its last question, and the edits used.

        Exposed so that callers can inspect exactly what the model will see
        (`lm.tokenizer.decode(ids)`).
        """
        opts = self._options(kwargs)
        return self._build(list(messages), opts)

    def _build(self, messages: list[BaseMessage], opts: dict[str, Any]
               ) -> tuple[list[int], Any, RetrievedEdit | None, list[RetrievedEdit]]:
        # The SDK lays the conversation out (`PromptBuilder.frame`: history, then the edit
        # layout of the question as the last user turn) and applies its one context rule.
        lm = self.editable_lm
        turns = to_turns(messages)
        question = clean_text(turns[-1][1], "question", MAX_QUESTION_CHARS)
        p, edit, others = lm.prompt(question, mode=opts["mode"], namespace=opts["namespace"],
                                    fact=opts["fact"], distractors=opts["distractors"],
                                    chat=opts["chat"] and lm.has_chat_template,
                                    history=turns[:-1],
                                    max_new_tokens=opts["max_tokens"])
        return list(p.ids), p, edit, others

    # ---- generation ---------------------------------------------------------------------------
    def _metadata(self, p: Any, edit: RetrievedEdit | None, others: list[RetrievedEdit],
                  finish_reason: str | None = None) -> dict[str, Any]:
        if edit is None and p.fact is not None:  # given per call (fact=...), e.g. by RAG
            used, dis = _given_info(p.fact), [_given_info(d) for d in p.distractors]
        else:
            used, dis = _edit_info(edit), [_edit_info(o) for o in others]
        meta: dict[str, Any] = {"model_name": self.resolved_model_name,
                                "model_provider": "editkit", "mode": p.mode.value,
                                "edit": used, "distractors": dis}
        if finish_reason is not None:
            meta["finish_reason"] = finish_reason
        return meta

    @staticmethod
    def _usage(prompt_tokens: int, completion_tokens: int) -> UsageMetadata:
        return UsageMetadata(input_tokens=prompt_tokens, output_tokens=completion_tokens,
                             total_tokens=prompt_tokens + completion_tokens)

    def _start(self, messages: list[BaseMessage], stop: list[str] | None,
               kwargs: dict[str, Any], *, stream: bool) -> tuple[Any, ...]:
        """The call's prompt (its edits retrieved) and its generation, as a row of the running
        batch: calls decode together with concurrent ones (`batch` runs one per thread), and an
        idle batch waits for the calls whose edits are still being retrieved (`arriving`).
        Models with per-sequence decoders run alone, as `EditableLM.ask` / `stream` do."""
        opts = self._options(kwargs)
        lm = self.editable_lm
        with lm.engine.arriving():
            ids, p, edit, others = self._build(messages, opts)
            gen = (lm.stream_batched if stream else lm.generate_batched)(
                p, max_new_tokens=opts["max_tokens"], temperature=opts["temperature"],
                seed=opts["seed"], stop=stop if stop is not None else (self.stop or []),
                namespace=opts["namespace"])
        return ids, p, edit, others, gen

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None,
                  **kwargs: Any) -> ChatResult:
        ids, p, edit, others, gen = self._start(messages, stop, kwargs, stream=False)
        meta = self._metadata(p, edit, others, gen.finish_reason)
        msg = AIMessage(content=gen.text, response_metadata=meta,
                        usage_metadata=self._usage(len(ids), gen.completion_tokens))
        return ChatResult(generations=[ChatGeneration(
            message=msg, generation_info={"finish_reason": gen.finish_reason})],
            llm_output={"model_name": self.resolved_model_name})

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None,
                **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        # Core fires on_llm_new_token for every chunk yielded here; this method must not.
        ids, p, edit, others, gen = self._start(messages, stop, kwargs, stream=True)
        with gen:  # closing frees the row (or stops the worker) if the consumer left early
            for piece in gen:
                yield ChatGenerationChunk(message=AIMessageChunk(content=piece))
        # One closing chunk carries usage (input tokens counted once) and the metadata.
        yield ChatGenerationChunk(
            message=AIMessageChunk(content="", chunk_position="last",
                                   response_metadata=self._metadata(p, edit, others,
                                                                    gen.finish_reason),
                                   usage_metadata=self._usage(len(ids),
                                                              gen.completion_tokens)),
            generation_info={"finish_reason": gen.finish_reason})
