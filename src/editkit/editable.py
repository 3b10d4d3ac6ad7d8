"""`EditableLM`: the front door. A thin facade over loading, P-Tokens, layouts, memory and the
decode stack (`editkit.runtime`).

    lm = EditableLM.from_pretrained()
    lm.edit("The Eiffel Tower is located in Rome.").ask("The Eiffel Tower is in the city of")
    for piece in lm.stream("The Eiffel Tower is in the city of", stop=["."]): ...
"""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from .answers import AnswerStream  # noqa: F401  (its old home; users import it here)
from .asking import AskingMixin
from .building import (
    check_prefix_store_mb,
    load_parts,
    shipped_ptokens_dir,  # noqa: F401  (its old home; users import it here)
)
from .errors import InvalidInputError, UnsafeFactError
from .ike import DemoStore
from .layouts import (
    ChatSetting,
    Mode,
    Prompt,
    PromptBuilder,
    check_chat_setting,
)
from .loading import LoadedModel
from .ptokens import DEFAULT_M, PTokens
from .records import (
    DEFAULT_NAMESPACE,
    MAX_FACT_CHARS,
    MAX_QUESTION_CHARS,
    Edit,
    FactInput,
    RetrievedEdit,
    clean_text,
)
from .retrieval import (
    DEFAULT_GATE,
    DEFAULT_THRESHOLD,
    DEFAULT_TOP_K,
    EditStore,
    Judge,
    RetrievalSettings,
    Selection,
    select,
)
from .retrieval.updates import DEFAULT_ON_UPDATE, OnUpdate, check_on_update, edits_as_of
from .runtime.engine import Engine, InProcessEngine
from .runtime.generation import DEFAULT_PREFIX_BYTES
from .safety import FactPolicy, tokenizer_special_strings

log = logging.getLogger(__name__)
_IN_PROCESS_PARTS = frozenset({"generator", "scorer", "batcher", "prefix_cache",
                               "decode_model"})


class EditableLM(AskingMixin):
    """A frozen language model + P-Tokens + an edit memory, asked through one of four modes.

    This module: construction, the memory, the retrieval policy's choice and the prompt; the
    calls that answer and score (`ask`, `stream`, `ask_many`, `score`, ...) are `asking.py`'s.
    """

    def __init__(self, loaded: LoadedModel, ptokens: PTokens, memory: EditStore,
                 mode: Mode | str = Mode.PTOKENS, *, retrieval: RetrievalSettings | None = None,
                 chat: ChatSetting = "auto",
                 demos: DemoStore | str | os.PathLike[str] | None = None,
                 ptokens_source: str = "",
                 fact_policy: FactPolicy | dict[str, Any] | None = None,
                 prefix_cache: int = 0, decode_dtype: str | None = None,
                 prefix_store_mb: float = DEFAULT_PREFIX_BYTES / 2**20,
                 engine: Engine | None = None, on_update: OnUpdate = DEFAULT_ON_UPDATE) -> None:
        self.model, self.tokenizer, self.name = loaded.model, loaded.tokenizer, loaded.name
        self.quantization = loaded.quantization
        self.fact_policy = fact_policy  # validated by the property setter
        # The builder holds the one P-Token set; `self.ptokens` reads and assigns it there.
        # Its own default layout (what evaluation's scorer builds) is inline unless chat=True;
        # `ask` and friends resolve "auto" per question (`use_chat`).
        self.chat = check_chat_setting(chat)
        self.layouts = PromptBuilder(self.tokenizer, ptokens, chat=self.chat is True)
        self.ptokens_source = ptokens_source
        self.memory = memory
        # What runs the model (runtime.engine): every generation and score goes through it.
        # In process by default: the batched decoder, KV caches of prompt prefixes reused per
        # namespace up to `prefix_store_mb`, optionally the last `prefix_cache` edit prefixes
        # (0 = off) and a bf16/fp16 decode copy (`decode_dtype`).
        check_prefix_store_mb(prefix_store_mb)
        self.engine: Engine = engine if engine is not None else InProcessEngine(
            self.model, self.tokenizer, ptokens, prefix_cache=prefix_cache,
            decode_dtype=decode_dtype, prefix_store_mb=prefix_store_mb)
        self.mode = Mode.parse(mode)
        self.retrieval = retrieval or RetrievalSettings()
        # what an edit of a slot already held does to the older value (retrieval.updates)
        self.on_update = check_on_update(on_update)
        self._demos = demos
        self._special = tokenizer_special_strings(self.tokenizer)

    def __getattr__(self, name: str) -> Any:
        # The in-process runtime's parts (generator, scorer, batcher, prefix_cache,
        # decode_model), read where benchmarks and tests look inside; they live in the engine.
        if name in _IN_PROCESS_PARTS and isinstance(self.__dict__.get("engine"),
                                                     InProcessEngine):
            return getattr(self.__dict__["engine"], name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

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
        if isinstance(self.engine, InProcessEngine):
            self.engine.ptokens = value

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
        gate: str | Judge = DEFAULT_GATE,
        chat: ChatSetting = "auto",
        demos: DemoStore | str | os.PathLike[str] | None = None,
        trust_remote_code: bool = False,
        fact_policy: FactPolicy | dict[str, Any] | None = None,
        prefix_cache: int = 0,
        decode_dtype: str | None = None,
        prefix_store_mb: float = DEFAULT_PREFIX_BYTES / 2**20,
        engine: str | None = None,
        engine_model: str | None = None,
        on_update: OnUpdate = DEFAULT_ON_UPDATE,
    ) -> EditableLM:
        """Load a model (None = the embedded SmolLM2-135M-Instruct), P-Tokens and a memory.

        ptokens: a P-Token directory or object; None picks the trained set shipped for the model,
        or, where none ships, fresh untrained tokens initialised from the text " new fact".
        memory: an SQLite file path (persistent), None (in RAM for this process), a
        postgresql:// URL (one memory shared by replicas, `editkit[postgres]`), or any object
        implementing `editkit.retrieval.EditStore` (e.g. the LangChain vector-store memory).
        fact_policy: what facts may contain (None: the strict default, `FactPolicy.off()`: no
        prompt-injection checks); see `editkit.safety`.
        top_k / threshold / gate / namespace: the retrieval policy (`editkit.retrieval`): at most
        top_k edits placed; gate 'learned' (the shipped relevance gate decides which retrieved
        edits are about the question), 'threshold' (every edit above the cosine threshold), or
        a `Judge` of your own (a cross-encoder, a classifier) in the gate's place.
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
        engine: the URL of an OpenAI-compatible engine (`http://host:port/v1`: vLLM, SGLang,
        TGI, llama.cpp's server, `transformers serve`) serving `model`, which must then be the
        directory `editkit export` wrote (docs/engines.md). Memory, retrieval, the gate and the
        layout stay here; only the rendered prompt goes to the engine. engine_model: the id the
        engine serves it under (None: the only model it lists). Loading, quantization and
        decoding options are the engine's then, and `score` needs prompt log-probabilities.
        on_update: what a new value of a slot already stored does (`retrieval.updates`):
        'latest' supersedes the older edit (kept in history, never served), 'keep-both' stores
        both, 'refuse' raises `EditConflictError`.
        """
        mode = Mode.parse(mode)
        parts = load_parts(model, ptokens, memory, quantization=quantization, device=device,
                           dtype=dtype, m=m, top_k=top_k, threshold=threshold,
                           namespace=namespace, gate=gate, chat=chat,
                           trust_remote_code=trust_remote_code, prefix_cache=prefix_cache,
                           decode_dtype=decode_dtype, prefix_store_mb=prefix_store_mb,
                           engine=engine, engine_model=engine_model)
        return cls(parts.loaded, parts.ptokens, parts.memory, mode, retrieval=parts.retrieval,
                   chat=chat, demos=demos, ptokens_source=parts.source,
                   fact_policy=fact_policy, prefix_cache=prefix_cache,
                   prefix_store_mb=prefix_store_mb, decode_dtype=decode_dtype,
                   engine=parts.engine, on_update=on_update)

    @property
    def demos(self) -> DemoStore:
        """The IKE demonstration store (built on first use: embeds its keys once, then cached)."""
        if not isinstance(self._demos, DemoStore):
            self._demos = (DemoStore.default() if self._demos is None
                           else DemoStore.from_file(self._demos))
        return self._demos

    # ---- memory ---------------------------------------------------------------------------
    def edit(self, facts: Any, namespace: str | None = None, *, key: str | None = None,
             on_update: OnUpdate | None = None) -> EditableLM:
        """Store one fact or a list of facts (str or {'text', 'subject', 'relation', 'object',
        'key'}).

        Returns self so calls chain: `lm.edit(fact).ask(question)`. A fact the fact policy
        refuses raises `UnsafeFactError`, and nothing of the call is stored. A fact that gives a
        new value for a slot already stored (same `key`; else same subject and relation; else
        the slot judge's verdict) supersedes the older edit under `on_update` (None: this
        model's, 'latest' by default); `add_edits` returns what was superseded.
        """
        self.add_edits(facts, namespace, key=key, on_update=on_update)
        return self

    def add_edits(self, facts: Any, namespace: str | None = None, *, key: str | None = None,
                  on_update: OnUpdate | None = None) -> list[Edit]:
        """`edit`, returning the stored `Edit`s (ids, and `supersedes`: the ids each retired)
        instead of self. key: the slot key of a single fact ("warehouse/ghent/shipping")."""
        if key is not None:
            if isinstance(facts, (list, tuple)):
                raise InvalidInputError("key= names the slot of one fact; for a list, give each "
                                        "fact as a dict with its own 'key'.")
            facts = {**FactInput.parse(facts).model_dump(), "key": key}
        items = facts if isinstance(facts, (list, tuple)) else [facts]
        for f in items:
            if isinstance(f, (str, dict, FactInput)):
                parsed = FactInput.parse(f)  # InvalidInputError for what memory would refuse
                for field in ("text", "subject", "relation", "object"):
                    value = getattr(parsed, field)
                    if value is not None:
                        self.check_fact(value, "fact" if field == "text" else f"fact {field}")
        policy = self.on_update if on_update is None else check_on_update(on_update)
        return self.memory.add(facts, namespace=namespace or self.retrieval.namespace,
                               on_update=policy)

    def forget(self, edit_id: str, namespace: str | None = None) -> Edit:
        """Delete one stored edit by id (only from `namespace`, when given) and return it. The
        edits it had superseded are live again (`Edit.supersedes` lists them)."""
        return self.memory.forget(edit_id, namespace)

    def edits(self, namespace: str | None = None, *, history: bool = False,
              as_of: Any = None) -> list[Edit]:
        """The live edits, oldest first; history=True: superseded ones too (with
        `superseded_by` / `superseded_at`); as_of: the edits that were live at that time."""
        if as_of is None:
            return self.memory.edits(namespace, history=history)
        return edits_as_of(self.memory, namespace, as_of)

    def clear(self, namespace: str | None = None) -> int:
        """Delete every edit, history included (of one namespace if given)."""
        return self.memory.clear(namespace)

    def retrieve(self, question: str, namespace: str | None = None, *,
                 as_of: Any = None) -> list[RetrievedEdit]:
        """The stored edits `ask` would place for a question, through the retrieval policy and
        its relevance gate (`select`): the edit about the question first, then the others placed
        beside it as distractors; [] when the policy places none. The one public answer to
        "which edits apply" (LangChain's retriever gives the same)."""
        sel = self.select(question, namespace, as_of=as_of)
        return ([sel.edit] if sel.edit is not None else []) + sel.distractors

    def retrieve_raw(self, question: str, namespace: str | None = None) -> list[RetrievedEdit]:
        """The memory's raw search: the top-k stored edits by cosine similarity above the
        threshold, best first, with no relevance gate. A candidate list, not a decision: a
        similar edit about another subject is in it (use `retrieve` or `select` for that)."""
        q = clean_text(question, "question", MAX_QUESTION_CHARS)
        r = self.retrieval
        return self.memory.retrieve(q, k=r.top_k, threshold=r.threshold,
                                    namespace=namespace or r.namespace)

    def select(self, question: str, namespace: str | None = None, *,
               memory: EditStore | None = None, k: int | None = None,
               settings: RetrievalSettings | None = None, as_of: Any = None) -> Selection:
        """The retrieval policy's choice for a question (`editkit.retrieval`): the stored edit
        placed as the fact and the ones placed as distractors, fact policy applied.

        memory / k / settings: another store, another number of placed edits, other retrieval
        settings, for this call (evaluation uses them); by default this model's memory and
        `retrieval` settings. as_of: choose among the edits live at that time.
        """
        q = clean_text(question, "question", MAX_QUESTION_CHARS)
        return select(self.memory if memory is None else memory, q,
                      self.retrieval if settings is None else settings,
                      namespace=namespace, k=k, accept=self._accept, as_of=as_of)

    # ---- prompts --------------------------------------------------------------------------
    def prompt(self, question: str, *, mode: Mode | str | None = None,
               namespace: str | None = None, fact: str | None = None,
               distractors: Sequence[str] | None = None, chat: bool | None = None,
               history: Sequence[tuple[str, str]] = (), max_new_tokens: int = 1,
               as_of: Any = None) -> tuple[Prompt, RetrievedEdit | None, list[RetrievedEdit]]:
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
            sel = self.select(q, namespace, as_of=as_of)
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

    def __repr__(self) -> str:
        return (f"EditableLM(model={self.name!r}, mode={self.mode.value!r}, m={self.ptokens.m}, "
                f"ptokens={self.ptokens_source!r}, memory={self.memory.path!r})")
