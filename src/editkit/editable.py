"""`EditableLM`: the front door. A thin facade over loading, P-Tokens, layouts, memory and the
decode stack (`editkit.runtime`).

    lm = EditableLM.from_pretrained()
    lm.edit("The Eiffel Tower is located in Rome.").ask("The Eiffel Tower is in the city of")
    for piece in lm.stream("The Eiffel Tower is in the city of", stop=["."]): ...
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from .compat import context_length
from .errors import InvalidInputError, PTokenMismatchError, UnsafeFactError
from .ike import DemoStore
from .layouts import (
    ANSWER_END,
    ChatSetting,
    Mode,
    Prompt,
    PromptBuilder,
    check_chat_setting,
    reads_as_question,
)
from .loading import LoadedModel, load_model
from .memory import EditMemory, EditStore
from .ptokens import DEFAULT_M, PTokens, fingerprint, warn_untrained
from .records import (
    DEFAULT_NAMESPACE,
    MAX_FACT_CHARS,
    MAX_QUESTION_CHARS,
    Answer,
    CandidateScore,
    Edit,
    FactInput,
    RetrievedEdit,
    ScoreResult,
    check_namespace,
    clean_text,
)
from .retrieval import (
    DEFAULT_GATE,
    DEFAULT_THRESHOLD,
    DEFAULT_TOP_K,
    RetrievalSettings,
    Selection,
    select,
)
from .runtime.batching import BatchedStream, MicroBatcher
from .runtime.generation import (
    DEFAULT_PREFIX_BYTES,
    FinishReason,
    Generation,
    GenerationStream,
    TextGenerator,
    check_generation_args,
    decoder_for,
)
from .runtime.mixed_decode import decode_copy
from .runtime.prefix_cache import CachedScorer, PrefixCache
from .runtime.scoring import ScoreItem, forests, packed_logprobs_many, target_logprobs
from .safety import FactPolicy, tokenizer_special_strings

log = logging.getLogger(__name__)


def shipped_ptokens_dir(model_name: str, m: int, quantization: str | None = None, *,
                        root: Path | None = None) -> Path | None:
    """Trained P-Tokens shipped inside the package for a model, if any.

    Tokens trained on the quantized model live in `m{m}-{quantization}` (e.g. `m10-8bit`): the
    rows that persuade the full-precision model need not persuade its quantized copy. Where none
    ships for that precision, the full-precision set is returned (the caller says so). `root`
    replaces the package's `editkit/data/ptokens` (tests).
    """
    base = resources.files("editkit.data") / "ptokens" if root is None else root
    names = ([f"m{m}-{quantization}"] if quantization else []) + [f"m{m}"]
    for dirname in names:
        # join before str(): the package root may be a MultiplexedPath, whose str() is not a path
        path = Path(str(base / model_name / dirname))
        if (path / "ptokens_config.json").is_file():
            return path
    return None


def _per_question_modes(mode: Any, n: int) -> list[Any]:
    """`mode` of `ask_many` / `score_many`: one for every question, or a list of one each."""
    modes = (list(mode) if isinstance(mode, Sequence) and not isinstance(mode, str)
             else [mode] * n)
    if len(modes) != n:
        raise InvalidInputError(f"{n} questions but {len(modes)} modes.")
    return modes


def _check_prefix_store_mb(value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise InvalidInputError(f"prefix_store_mb must be a number ≥ 0 (megabytes), not "
                                f"{value!r}.")


def _check_sampling(do_sample: bool, temperature: Any) -> None:
    """`do_sample` / `temperature` of `ask`, `stream` and `ask_many`."""
    if do_sample and not (isinstance(temperature, (int, float)) and temperature > 0):
        raise InvalidInputError("temperature must be a number > 0 when do_sample=True.")


def _answer_stop(stop: Sequence[str] | None, chat: bool) -> Sequence[str]:
    """`stop` of `ask` / `stream` / `ask_many`; None: where the answer ends. In a chat turn that
    is the model's end of turn (EOS), which instruct models emit after the reply (a reply may
    open with "The answer is:" and give it on the next line); inline, a small model goes on
    past the completed sentence, so the answer is its first line (`layouts.ANSWER_END`)."""
    if stop is None:
        return () if chat else ANSWER_END
    return stop


def _per_question(values: Any, name: str, n: int) -> list[Any]:
    """`facts` / `distractors` of `ask_many`: None for all, or one entry (maybe None) each."""
    if values is None:
        return [None] * n
    if isinstance(values, str) or not isinstance(values, Sequence) or len(values) != n:
        raise InvalidInputError(f"{name} must be a list with one entry per question ({n}).")
    return list(values)


class AnswerStream:
    """What `EditableLM.stream()` returns: iterate it for the answer's text pieces as they are
    generated.

    The pieces concatenate to exactly the text `ask()` returns. `text`, `completion_tokens` and
    `finish_reason` are final once the stream is exhausted (`finish_reason` is None before, and
    after a cancel). `close()`, leaving a `for` loop over it early, or dropping it cancels the
    generation at its next step; `with lm.stream(q) as s:` closes it on exit.
    """

    def __init__(self, generation: GenerationStream, prompt: Prompt, edit: RetrievedEdit | None,
                 distractors: list[RetrievedEdit]) -> None:
        self._gen = generation
        self.prompt_tokens = len(prompt)
        self.mode = prompt.mode.value
        self.edit = edit
        self.distractors = distractors

    @property
    def text(self) -> str:
        return self._gen.text

    @property
    def completion_tokens(self) -> int:
        return self._gen.completion_tokens

    @property
    def finish_reason(self) -> FinishReason | None:
        return self._gen.finish_reason

    def __iter__(self) -> Iterator[str]:
        return iter(self._gen)

    def __next__(self) -> str:
        return next(self._gen)

    def close(self) -> None:
        """Cancel the generation and wait until it has stopped computing."""
        self._gen.close()

    def __enter__(self) -> AnswerStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def answer(self) -> Answer:
        """Run the stream to its end (if it is not already) and return the whole `Answer`."""
        for _ in self._gen:
            pass
        if self.finish_reason is None:
            raise InvalidInputError("This answer stream was cancelled; it has no whole answer.")
        return Answer(text=self.text, mode=self.mode, edit=self.edit,
                      distractors=self.distractors, prompt_tokens=self.prompt_tokens,
                      completion_tokens=self.completion_tokens,
                      finish_reason=self.finish_reason)


class EditableLM:
    """A frozen language model + P-Tokens + an edit memory, asked through one of four modes."""

    def __init__(self, loaded: LoadedModel, ptokens: PTokens, memory: EditStore,
                 mode: Mode | str = Mode.PTOKENS, *, retrieval: RetrievalSettings | None = None,
                 chat: ChatSetting = "auto",
                 demos: DemoStore | str | os.PathLike[str] | None = None,
                 ptokens_source: str = "",
                 fact_policy: FactPolicy | dict[str, Any] | None = None,
                 prefix_cache: int = 0, decode_dtype: str | None = None,
                 prefix_store_mb: float = DEFAULT_PREFIX_BYTES / 2**20) -> None:
        self.model, self.tokenizer, self.name = loaded.model, loaded.tokenizer, loaded.name
        self.quantization = loaded.quantization
        # Optional bf16/fp16 copy of the weights for greedy decoding after an fp32 prefill
        # (editkit.runtime.mixed_decode): faster on CPUs where decoding is memory-bound.
        self.decode_model = decode_copy(self.model, decode_dtype) if decode_dtype else None
        self.fact_policy = fact_policy  # validated by the property setter
        # The builder holds the one P-Token set; `self.ptokens` reads and assigns it there.
        # Its own default layout (what evaluation's scorer builds) is inline unless chat=True;
        # `ask` and friends resolve "auto" per question (`use_chat`).
        self.chat = check_chat_setting(chat)
        self.layouts = PromptBuilder(self.tokenizer, ptokens, chat=self.chat is True)
        self.ptokens_source = ptokens_source
        self.memory = memory
        # KV caches of the last `prefix_cache` prompt prefixes (demonstrations + fact), for
        # repeated questions about one edit; 0 = off. Greedy generation and score() use them.
        self.prefix_cache = PrefixCache(self.model, prefix_cache) if prefix_cache else None
        # The decode stack (editkit.runtime): which decoder and which cached scorer run is
        # decided here, once, from the settings; ask/stream/score just call them. The scorer
        # always keeps the KV cache of the edit-independent head (chat head, the m P-Token begin
        # markers), so a question about a fresh edit computes only what follows it.
        # The batched paths (ask_many, generate_batched: the server, LangChain's batch) also
        # reuse the keys and values of prompt starts across requests, up to `prefix_store_mb`
        # (runtime.generation.PrefixStore).
        _check_prefix_store_mb(prefix_store_mb)
        self.generator = TextGenerator(self.model, self.tokenizer, decoder_for(
            self.model, self.tokenizer, prefix_cache=self.prefix_cache,
            decode_model=self.decode_model), prefix_bytes=int(prefix_store_mb * 2**20))
        self.scorer = CachedScorer(self.model, self.prefix_cache)
        # Concurrent greedy requests (LangChain's batch, a server's requests) decoded together.
        self.batcher = MicroBatcher(self.generator)
        self.mode = Mode.parse(mode)
        self.retrieval = retrieval or RetrievalSettings()
        self._demos = demos
        self._special = tokenizer_special_strings(self.tokenizer)

    @property
    def fact_policy(self) -> FactPolicy:
        """What facts may contain (prompt-injection guard); strict by default, see
        `editkit.safety`. Assign a `FactPolicy`, a dict of its fields, or None for the default."""
        return self._fact_policy

    @fact_policy.setter
    def fact_policy(self, value: FactPolicy | dict[str, Any] | None) -> None:
        if value is None:
            value = FactPolicy()
        elif isinstance(value, dict):
            try:
                value = FactPolicy(**value)
            except ValidationError as exc:
                raise InvalidInputError(f"Invalid fact policy: {exc}") from exc
        elif not isinstance(value, FactPolicy):
            raise InvalidInputError(f"fact_policy must be a FactPolicy, a dict or None, got "
                                    f"{type(value).__name__}.")
        self._fact_policy = value

    @property
    def ptokens(self) -> PTokens:
        """The P-Token set of this model; assigning one also changes what prompts are built
        with (one copy, kept by `self.layouts`), and caches are keyed by its content."""
        return self.layouts.ptokens

    @ptokens.setter
    def ptokens(self, value: PTokens) -> None:
        if not isinstance(value, PTokens):
            raise InvalidInputError(f"ptokens must be a PTokens object, got "
                                    f"{type(value).__name__}.")
        self.layouts.ptokens = value

    def check_fact(self, text: str, what: str = "fact") -> None:
        """Raise `UnsafeFactError` if the fact policy refuses `text`."""
        names = self.ptokens.config.begin_tokens + self.ptokens.config.end_tokens
        self._fact_policy.check(text, what, special=self._special, ptoken_names=names)

    # ---- construction ---------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        model: str | os.PathLike[str] | None = None,
        ptokens: PTokens | str | os.PathLike[str] | None = None,
        memory: EditStore | str | os.PathLike[str] | None = None,
        mode: Mode | str = Mode.PTOKENS,
        quantization: str | None = None,
        device: str = "auto",
        dtype: str | None = None,
        *,
        m: int = DEFAULT_M,
        top_k: int = DEFAULT_TOP_K,
        threshold: float = DEFAULT_THRESHOLD,
        namespace: str = DEFAULT_NAMESPACE,
        gate: str = DEFAULT_GATE,
        chat: ChatSetting = "auto",
        demos: DemoStore | str | os.PathLike[str] | None = None,
        trust_remote_code: bool = False,
        fact_policy: FactPolicy | dict[str, Any] | None = None,
        prefix_cache: int = 0,
        decode_dtype: str | None = None,
        prefix_store_mb: float = DEFAULT_PREFIX_BYTES / 2**20,
    ) -> EditableLM:
        """Load a model (None = the embedded SmolLM2-135M-Instruct), P-Tokens and a memory.

        ptokens: a P-Token directory or object; None picks the trained set shipped for the model,
        or, where none ships, fresh untrained tokens initialised from the text " new fact".
        memory: an SQLite file path (persistent), None (in RAM for this process), or any object
        implementing `editkit.memory.EditStore` (e.g. the LangChain vector-store memory).
        fact_policy: what facts may contain (None: the strict default, `FactPolicy.off()`: no
        prompt-injection checks); see `editkit.safety`.
        top_k / threshold / gate / namespace: the retrieval policy (`editkit.retrieval`): at most
        top_k edits placed; gate 'learned' (the shipped relevance gate decides which retrieved
        edits are about the question) or 'threshold' (every edit above the cosine threshold).
        prefix_cache: keep the KV cache of this many prompt prefixes (IKE demonstrations + fact),
        so repeated questions about one edit skip recomputing them (0 = off).
        decode_dtype: 'bfloat16' or 'float16' to decode greedy answers (`ask` and `stream`) with a
        copy of the weights in that dtype after a full-precision prefill (None = off; sampling
        stays in full precision; docs/benchmarks.md, bf16).
        chat: "auto" (default) lays a question ("What is ...?", "Which ...", a trailing "?") out
        in the model's chat template when it has one, and continues any other text inline
        ("The mother tongue of X is"); True / False: always / never the template.
        prefix_store_mb: memory for the keys and values of prompt prefixes (an edit and its
        P-Token markers) that the batched paths (`ask_many`, `generate_batched`: the server and
        LangChain's `batch`) reuse for the next question about the same edit in the same
        namespace (0 = only the edit-independent head; docs/serving.md).
        """
        mode = Mode.parse(mode)
        _check_prefix_store_mb(prefix_store_mb)
        check_chat_setting(chat)
        try:
            retrieval = RetrievalSettings(top_k=top_k, threshold=threshold, gate=gate,
                                          namespace=check_namespace(namespace))
        except ValidationError as exc:
            raise InvalidInputError(f"Invalid retrieval settings: {exc}") from exc
        loaded = load_model(model, quantization=quantization, device=device, dtype=dtype,
                            trust_remote_code=trust_remote_code)
        pt, source = cls._resolve_ptokens(loaded, ptokens, m)
        # A path or None opens an EditMemory (its embedder loads on first use); anything else
        # must implement the protocol (isinstance reads `embedder`, which may load it).
        if memory is None or isinstance(memory, (str, os.PathLike)):
            mem: EditStore = EditMemory(memory)
        elif isinstance(memory, EditStore):
            mem = memory
        else:
            raise InvalidInputError(f"memory must be a path, None or an editkit EditStore; got "
                                    f"{type(memory).__name__}.")
        return cls(loaded, pt, mem, mode, retrieval=retrieval, chat=chat, demos=demos,
                   ptokens_source=source, fact_policy=fact_policy, prefix_cache=prefix_cache,
                   prefix_store_mb=prefix_store_mb,
                   decode_dtype=decode_dtype)

    @staticmethod
    def _resolve_ptokens(loaded: LoadedModel, ptokens: Any, m: int) -> tuple[PTokens, str]:
        lm, tok, name = loaded.model, loaded.tokenizer, loaded.name
        if isinstance(ptokens, PTokens):
            here = fingerprint(lm, tok, name)
            if not ptokens.config.base_model.same_base(here):
                raise PTokenMismatchError(
                    f"These P-Tokens were made for {ptokens.config.base_model.short()}, "
                    f"not for {here.short()}.")
            return ptokens, "given"
        if ptokens is not None:
            return PTokens.from_pretrained(ptokens, lm, tok, name=name), str(ptokens)
        shipped = shipped_ptokens_dir(name, m, loaded.quantization)
        if shipped is not None:
            pt = PTokens.from_pretrained(shipped, lm, tok, name=name)
            if loaded.quantization and not shipped.name.endswith(loaded.quantization):
                return pt, (f"shipped ({shipped}; trained on the full-precision model, none "
                            f"trained for {loaded.quantization} ships yet)")
            return pt, f"shipped ({shipped})"
        warn_untrained(name, m)  # once per (model, m): mode="ptokens" would edit poorly
        pt = PTokens.create(lm, tok, name=name, m=m, init="text")
        return pt, f"untrained: m={m}, initialised from the text {pt.config.init_text!r}"

    @property
    def demos(self) -> DemoStore:
        """The IKE demonstration store (built on first use: embeds its keys once, then cached)."""
        if not isinstance(self._demos, DemoStore):
            self._demos = (DemoStore.default() if self._demos is None
                           else DemoStore.from_file(self._demos))
        return self._demos

    # ---- memory ---------------------------------------------------------------------------
    def edit(self, facts: Any, namespace: str | None = None) -> EditableLM:
        """Store one fact or a list of facts (str or {'text', 'subject', 'relation', 'object'}).

        Returns self so calls chain: `lm.edit(fact).ask(question)`. A fact the fact policy
        refuses raises `UnsafeFactError`, and nothing of the call is stored.
        """
        self.add_edits(facts, namespace)
        return self

    def add_edits(self, facts: Any, namespace: str | None = None) -> list[Edit]:
        """`edit`, returning the stored `Edit`s (ids included) instead of self."""
        items = facts if isinstance(facts, (list, tuple)) else [facts]
        for f in items:
            if isinstance(f, (str, dict, FactInput)):
                parsed = FactInput.parse(f)  # InvalidInputError for what memory would refuse
                for field in ("text", "subject", "relation", "object"):
                    value = getattr(parsed, field)
                    if value is not None:
                        self.check_fact(value, "fact" if field == "text" else f"fact {field}")
        return self.memory.add(facts, namespace=namespace or self.retrieval.namespace)

    def forget(self, edit_id: str, namespace: str | None = None) -> Edit:
        """Delete one stored edit by id (only from `namespace`, when given) and return it."""
        return self.memory.forget(edit_id, namespace)

    def edits(self, namespace: str | None = None) -> list[Edit]:
        return self.memory.edits(namespace)

    def clear(self, namespace: str | None = None) -> int:
        return self.memory.clear(namespace)

    def retrieve(self, question: str, namespace: str | None = None) -> list[RetrievedEdit]:
        """Relevant stored edits for a question, best first (empty if none passes the threshold)."""
        q = clean_text(question, "question", MAX_QUESTION_CHARS)
        r = self.retrieval
        return self.memory.retrieve(q, k=r.top_k, threshold=r.threshold,
                                    namespace=namespace or r.namespace)

    def select(self, question: str, namespace: str | None = None, *,
               memory: EditStore | None = None, k: int | None = None,
               settings: RetrievalSettings | None = None) -> Selection:
        """The retrieval policy's choice for a question (`editkit.retrieval`): the stored edit
        placed as the fact and the ones placed as distractors, fact policy applied.

        memory / k / settings: another store, another number of placed edits, other retrieval
        settings, for this call (evaluation uses them); by default this model's memory and
        `retrieval` settings.
        """
        q = clean_text(question, "question", MAX_QUESTION_CHARS)
        return select(self.memory if memory is None else memory, q,
                      self.retrieval if settings is None else settings,
                      namespace=namespace, k=k, accept=self._accept)

    # ---- prompts --------------------------------------------------------------------------
    def prompt(self, question: str, *, mode: Mode | str | None = None,
               namespace: str | None = None, fact: str | None = None,
               distractors: Sequence[str] | None = None, chat: bool | None = None,
               history: Sequence[tuple[str, str]] = (), max_new_tokens: int = 1,
               ) -> tuple[Prompt, RetrievedEdit | None, list[RetrievedEdit]]:
        """The prompt a question would be sent as, plus the edits placed in it.

        With `fact` given, memory is bypassed (evaluation uses this); otherwise the best retrieved
        edit is the fact and the other retrieved edits are distractors. chat: True / False /
        "auto" for this call, None for the model's setting (`use_chat`). history: earlier
        (role, text) turns of a conversation, laid out before the question (the LangChain chat
        model uses this). max_new_tokens: room the answer needs; InvalidInputError when prompt
        and answer together would not fit the model's context (`check_context`).
        """
        mode = Mode.parse(self.mode if mode is None else mode)
        q = clean_text(question, "question", MAX_QUESTION_CHARS)
        edit, others = None, []
        if fact is not None:
            fact = clean_text(fact, "fact", MAX_FACT_CHARS)
            dis = [clean_text(d, "distractor", MAX_FACT_CHARS) for d in (distractors or ())]
            if mode is not Mode.NONE:  # mode none leaves the fact out of the prompt
                self.check_fact(fact)
                for d in dis:
                    self.check_fact(d, "distractor")
        elif mode is Mode.NONE:
            dis = []
        else:
            sel = self.select(q, namespace)
            edit, others = sel.edit, sel.distractors
            fact, dis = sel.fact, sel.distractor_texts
        demos, n_demos = "", 0
        if mode is Mode.IKE and fact is not None:
            d = self.demos.retrieve(fact)
            demos, n_demos = d.text, len(d.case_ids)
        p = self.layouts.build(mode, q, fact, dis, demos, chat=self.use_chat(q, chat),
                               n_demos=n_demos, history=history)
        self.check_context(len(p), max_new_tokens)
        return p, edit, others

    @property
    def has_chat_template(self) -> bool:
        """Whether the tokenizer has a chat template (instruct models do)."""
        return bool(getattr(self.tokenizer, "chat_template", None))

    def use_chat(self, question: str, chat: ChatSetting | None = None) -> bool:
        """Whether `question` is laid out in the chat template: `chat` (this call's setting, None
        for the model's) True / False decides; "auto" picks the template for a question
        (`layouts.reads_as_question`) when the model has one, inline text otherwise."""
        setting = self.chat if chat is None else check_chat_setting(chat)
        if setting == "auto":
            return self.has_chat_template and reads_as_question(question)
        return bool(setting)

    def check_context(self, prompt_tokens: int, new_tokens: int) -> None:
        """InvalidInputError when a prompt of `prompt_tokens` plus `new_tokens` generated (or
        scored) tokens would overrun the model's context. The one context rule: `ask`,
        `stream`, `score` and the LangChain chat model all apply it."""
        limit = context_length(self.model)
        if limit and prompt_tokens + new_tokens > limit:
            raise InvalidInputError(
                f"The prompt has {prompt_tokens} tokens and the answer needs up to {new_tokens} "
                f"more, beyond this model's context of {limit}; shorten the question, the facts "
                f"or the conversation, or ask for fewer new tokens.")

    def _accept(self, hit: RetrievedEdit) -> bool:
        """Whether the fact policy lets a retrieved edit (stored by another writer or policy)
        into a prompt; raises instead when the policy says so."""
        try:
            self.check_fact(hit.edit.text, f"stored edit {hit.edit.id}")
        except UnsafeFactError as exc:
            if self._fact_policy.on_retrieved == "raise":
                raise UnsafeFactError(f"{exc} (forget it with lm.forget({hit.edit.id!r}))"
                                      ) from None
            log.warning("left out of the prompt: %s", exc)
            return False
        return True

    # ---- asking ---------------------------------------------------------------------------
    def ask(self, question: str, *, max_new_tokens: int = 32, stop: Sequence[str] | None = None,
            mode: Mode | str | None = None, namespace: str | None = None,
            fact: str | None = None, distractors: Sequence[str] | None = None,
            chat: bool | None = None, do_sample: bool = False,
            temperature: float = 1.0, seed: int | None = None) -> Answer:
        """Answer a question with the relevant edits in context (greedy by default).

        Args:
            question: the question, or the start of a sentence to complete.
            max_new_tokens: at most this many new tokens (1-4096); prompt plus answer must fit
                the model's context.
            stop: strings that end the answer; the text is cut before the first one found
                (`finish_reason` "stop", as for EOS; "length" when `max_new_tokens` ran out).
                None (default): where the answer ends: the model's end of turn in the chat
                template, the end of the first line inline (`layouts.ANSWER_END`); `()` runs
                to EOS or `max_new_tokens`.
            mode / namespace / chat: override the instance's for this call (chat True, False
                or "auto": the chat template for a question, see `use_chat`).
            fact / distractors: place these instead of retrieving from memory.
            do_sample / temperature / seed: sample at this temperature instead of greedy
                decoding, from a generator seeded with `seed` (None: drawn from torch's global
                generator); the same seed gives the same answer, alone or in a batch (the
                prefix-cache and bf16 decoders are greedy; sampling runs in full precision).
        """
        return self.stream(question, max_new_tokens=max_new_tokens, stop=stop, mode=mode,
                           namespace=namespace, fact=fact, distractors=distractors, chat=chat,
                           do_sample=do_sample, temperature=temperature, seed=seed).answer()

    def stream(self, question: str, *, max_new_tokens: int = 32,
               stop: Sequence[str] | None = None,
               mode: Mode | str | None = None, namespace: str | None = None,
               fact: str | None = None, distractors: Sequence[str] | None = None,
               chat: bool | None = None, do_sample: bool = False,
               temperature: float = 1.0, seed: int | None = None) -> AnswerStream:
        """`ask`, streamed: an `AnswerStream` of text pieces (same arguments, same text).

        Generation starts on the first piece requested. Closing the stream (or leaving a `for`
        loop over it early) cancels the generation at its next step.
        """
        _check_sampling(do_sample, temperature)
        check_generation_args(max_new_tokens)
        p, edit, others = self.prompt(question, mode=mode, namespace=namespace, fact=fact,
                                      distractors=distractors, chat=chat,
                                      max_new_tokens=max_new_tokens)
        gen = self.generate_from(p, max_new_tokens=max_new_tokens, stop=_answer_stop(stop, p.chat),
                                 temperature=temperature if do_sample else None, seed=seed)
        return AnswerStream(gen, p, edit, others)

    def ask_many(self, questions: Sequence[str], *, max_new_tokens: int = 32,
                 stop: Sequence[str] | None = None,
                 mode: Mode | str | Sequence[Mode | str] | None = None,
                 namespace: str | None = None, chat: bool | None = None,
                 facts: Sequence[str | None] | None = None,
                 distractors: Sequence[Sequence[str] | None] | None = None,
                 do_sample: bool = False, temperature: float = 1.0,
                 seeds: Sequence[int | None] | None = None,
                 batch_size: int = 16) -> list[Answer]:
        """Answers to many questions, decoded together: what `ask` gives for each.

        Each question gets its own retrieval and may have its own mode (`mode` a list), or its
        own given fact and distractors (`facts` / `distractors`: one entry per question, None
        to retrieve). Up to `batch_size` prompts are decoded token by token together
        (`runtime.generation.DecodeBatch`); a finished answer leaves the batch and the next
        question takes its row. Sampled with `do_sample`, each question from its own seed
        (`seeds`), as `ask(..., seed=)` samples it alone. Every question is validated before
        anything is decoded.
        """
        if isinstance(questions, str):
            raise InvalidInputError("questions must be a list of strings.")
        check_generation_args(max_new_tokens)
        _check_sampling(do_sample, temperature)
        modes = _per_question_modes(mode, len(questions))
        given = _per_question(facts, "facts", len(questions))
        others = _per_question(distractors, "distractors", len(questions))
        placed = [self.prompt(q, mode=m, namespace=namespace, chat=chat, fact=f, distractors=d,
                              max_new_tokens=max_new_tokens)
                  for q, m, f, d in zip(questions, modes, given, others, strict=True)]
        # One P-Token set serves every row: it only replaces P-Token ids, which the prompts of
        # the other modes do not hold.
        gens = self.generator.generate_many([p.ids for p, _, _ in placed], ptokens=self.ptokens,
                                            max_new_tokens=max_new_tokens,
                                            stops=[_answer_stop(stop, p.chat)
                                                   for p, _, _ in placed],
                                            temperature=temperature if do_sample else None,
                                            seeds=seeds, batch_size=batch_size,
                                            prefix_lens=[p.prefix_len for p, _, _ in placed],
                                            cache_salt=self._salt(namespace))
        return [Answer(text=g.text, mode=p.mode.value, edit=edit, distractors=ds,
                       prompt_tokens=len(p), completion_tokens=g.completion_tokens,
                       finish_reason=g.finish_reason or "stop")
                for (p, edit, ds), g in zip(placed, gens, strict=True)]

    def generate_batched(self, prompt: Prompt, *, max_new_tokens: int = 32,
                         stop: Sequence[str] | None = (), temperature: float | None = None,
                         seed: int | None = None, namespace: str | None = None) -> Generation:
        """The whole generation after `prompt`, the result `generate_from` gives run to its end.

        Requests from other threads join the same running batch as they arrive
        (`runtime.batching.MicroBatcher`: LangChain's `batch`, the server), greedy or sampled
        (each sampled request with its own `seed`). Models with a prefix cache or a bf16
        decode copy (per-sequence decoders) run each request alone through their decoder.
        namespace: the one whose edits built the prompt (default: the model's); the keys and
        values of the prompt's prefix are reused by later requests of that namespace only
        (`runtime.generation.PrefixStore`).
        """
        if self._decodes_alone:
            return self.generator.generate(prompt.ids, ptokens=self._ptokens_for(prompt),
                                           max_new_tokens=max_new_tokens,
                                           temperature=temperature, stop=stop,
                                           prefix_len=prompt.prefix_len, seed=seed)
        # Every prompt shares this model's P-Token set: it only replaces P-Token ids, so the
        # prompts of all modes can share a batch.
        return self.batcher.generate(prompt.ids, ptokens=self.ptokens,
                                     max_new_tokens=max_new_tokens, stop=stop,
                                     temperature=temperature, seed=seed,
                                     prefix_len=prompt.prefix_len,
                                     cache_salt=self._salt(namespace))

    def _salt(self, namespace: str | None) -> str:
        """Who may reuse a prompt prefix's keys and values: its namespace's requests."""
        return namespace or self.retrieval.namespace

    @property
    def _decodes_alone(self) -> bool:
        """A prefix cache or a bf16 decode copy: decoders that hold one sequence, so requests
        do not join the running batch."""
        return self.prefix_cache is not None or self.decode_model is not None

    def stream_batched(self, prompt: Prompt, *, max_new_tokens: int = 32,
                       stop: Sequence[str] | None = (), temperature: float | None = None,
                       seed: int | None = None,
                       namespace: str | None = None) -> BatchedStream | GenerationStream:
        """`generate_batched`, streamed: the text pieces of a row of the running batch (the
        server's `stream: true`). Models with per-sequence decoders stream alone
        (`generate_from`)."""
        if self._decodes_alone:
            return self.generate_from(prompt, max_new_tokens=max_new_tokens, stop=stop,
                                      temperature=temperature, seed=seed)
        return self.batcher.stream(prompt.ids, ptokens=self.ptokens,
                                   max_new_tokens=max_new_tokens, stop=stop,
                                   temperature=temperature, seed=seed,
                                   prefix_len=prompt.prefix_len,
                                   cache_salt=self._salt(namespace))

    def generate_from(self, prompt: Prompt, *, max_new_tokens: int = 32,
                      stop: Sequence[str] | None = (),
                      temperature: float | None = None,
                      seed: int | None = None) -> GenerationStream:
        """A generation stream after a prompt built by `prompt()` (greedy unless
        `temperature > 0`, then sampled with `seed`), through this model's decoder (prefix
        cache, bf16 decoding). The LangChain chat model generates through this."""
        return self.generator.stream(prompt.ids, ptokens=self._ptokens_for(prompt),
                                     max_new_tokens=max_new_tokens, temperature=temperature,
                                     stop=stop, prefix_len=prompt.prefix_len, seed=seed)

    def score(self, question: str, candidates: Sequence[str], *,
              mode: Mode | str | None = None, namespace: str | None = None,
              fact: str | None = None, distractors: Sequence[str] | None = None,
              chat: bool | None = None) -> ScoreResult:
        """Mean log-probability of each candidate continuing the question (teacher forced).

        Candidates are scored with a leading space, as in ROME's CounterFact scoring
        (`tok(" " + target)`), except inside a chat template, where they start the reply.
        """
        req = self._score_request(question, candidates, mode=mode, namespace=namespace,
                                  fact=fact, distractors=distractors, chat=chat)
        p = req[0]
        logps = self.scorer.continuations(p.ids, self._ptokens_for(p), req[4],
                                          prefix_len=p.prefix_len, head_len=p.head_len)
        return self._score_result(req, logps)

    @torch.no_grad()
    def score_many(self, questions: Sequence[str], candidates: Sequence[Sequence[str]], *,
                   mode: Mode | str | Sequence[Mode | str] | None = None,
                   namespace: str | None = None, chat: bool | None = None,
                   forest_tokens: int = 4096) -> list[ScoreResult]:
        """`score` for many questions at once: the same results, in few forward passes.

        Each question gets its own retrieval (its own edit and distractors) and may have its own
        mode (`mode` a list, one per question). Their prompts go side by side, each a packed tree
        of its candidates, with a block-diagonal mask and positions restarting in each
        (`runtime.scoring.packed_logprobs_many`), in runs of at most `forest_tokens` tokens.
        Every question is validated before any forward runs.
        """
        if isinstance(questions, str) or isinstance(candidates, str):
            raise InvalidInputError("questions and candidates must be lists (one candidate list "
                                    "per question).")
        if len(questions) != len(candidates):
            raise InvalidInputError(f"{len(questions)} questions but {len(candidates)} candidate "
                                    "lists: give one candidate list per question.")
        modes = _per_question_modes(mode, len(questions))
        reqs = [self._score_request(q, c, mode=m, namespace=namespace, chat=chat)
                for q, c, m in zip(questions, candidates, modes, strict=True)]
        # Trees of every mode share one forward: the P-Token rows only replace P-Token ids, so
        # the prompts without any are embedded as they would be alone.
        trees = [(r[0].ids, [ScoreItem(question=[], targets=[list(c) for c in r[4]])], i)
                 for i, r in enumerate(reqs)]
        logps: list[list[list[float]]] = [[] for _ in reqs]
        for run in forests(trees, forest_tokens):
            dists = packed_logprobs_many(self.model, self.ptokens,
                                         [(ids, items) for ids, items, _ in run])
            for (_, items, i), tree in zip(run, dists, strict=True):
                logps[i] = [target_logprobs(d, t).tolist()
                            for d, t in zip(tree[0], items[0].targets, strict=True)]
        return [self._score_result(r, lp) for r, lp in zip(reqs, logps, strict=True)]

    def _score_request(self, question: str, candidates: Sequence[str], **prompt_kw: Any
                       ) -> tuple[Prompt, RetrievedEdit | None, list[RetrievedEdit], list[str],
                                  list[list[int]]]:
        """The prompt, placed edits, cleaned candidates and their token ids, checked."""
        if isinstance(candidates, str) or not isinstance(candidates, Sequence) or not candidates:
            raise InvalidInputError("candidates must be a non-empty list of strings.")
        cands = [clean_text(c, "candidate", MAX_FACT_CHARS) for c in candidates]
        p, edit, others = self.prompt(question, **prompt_kw)
        # Inline, the answer continues the question's sentence (" Paris"); in a chat template it
        # opens the assistant's reply ("Paris").
        cont = [self.layouts.target_ids(c, chat=p.chat) for c in cands]
        self.check_context(len(p), max(len(c) for c in cont) - 1)
        return p, edit, others, cands, cont

    @staticmethod
    def _score_result(req: tuple[Any, ...], logps: Sequence[Sequence[float]]) -> ScoreResult:
        p, edit, others, cands, _ = req
        scores = [CandidateScore(candidate=c, mean_logprob=sum(lp) / len(lp),
                                 token_logprobs=list(lp))
                  for c, lp in zip(cands, logps, strict=True)]
        return ScoreResult(mode=p.mode.value, scores=scores, edit=edit, distractors=others,
                           prompt_tokens=len(p))

    def _ptokens_for(self, prompt: Prompt) -> PTokens | None:
        """The P-Tokens a prompt's ids refer to (only P-Token layouts hold any)."""
        return self.ptokens if prompt.mode is Mode.PTOKENS else None

    def __repr__(self) -> str:
        return (f"EditableLM(model={self.name!r}, mode={self.mode.value!r}, m={self.ptokens.m}, "
                f"ptokens={self.ptokens_source!r}, memory={self.memory.path!r})")
