"""`EditableLM`: the front door. A thin facade over loading, P-Tokens, layouts, memory and inference.

    lm = EditableLM.from_pretrained()
    lm.edit("The Eiffel Tower is located in Rome.").ask("The Eiffel Tower is located in the city of")
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .runtime import scoring as inference
from .errors import InvalidInputError, PTokenMismatchError, UnsafeFactError
from .ike import DemoStore
from .layouts import Mode, Prompt, PromptBuilder
from .loading import LoadedModel, load_model
from .memory import EditMemory, EditStore
from .runtime.mixed_decode import decode_copy, greedy_mixed
from .runtime.prefix_cache import PrefixCache
from .ptokens import DEFAULT_M, PTokens, fingerprint, warn_untrained
from .retrieval import DEFAULT_THRESHOLD, DEFAULT_TOP_K, RetrievalSettings, Selection, select
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
from .safety import FactPolicy, tokenizer_special_strings

log = logging.getLogger(__name__)


def shipped_ptokens_dir(model_name: str, m: int) -> Path | None:
    """Trained P-Tokens shipped inside the package for a model, if any."""
    # join before str(): the package root may be a MultiplexedPath, whose str() is not a path
    path = Path(str(resources.files("editkit.data") / "ptokens" / model_name / f"m{m}"))
    return path if (path / "ptokens_config.json").is_file() else None


class AnswerStream:
    """Iterate to get text pieces as they are generated; `.text` holds the whole answer after."""

    def __init__(self, pieces: Iterator[str], prompt: Prompt, edit: RetrievedEdit | None,
                 distractors: list[RetrievedEdit]) -> None:
        self._pieces = pieces
        self.prompt_tokens = len(prompt)
        self.mode = prompt.mode.value
        self.edit = edit
        self.distractors = distractors
        self.text = ""

    def __iter__(self) -> Iterator[str]:
        for piece in self._pieces:
            self.text += piece
            yield piece


class EditableLM:
    """A frozen language model + P-Tokens + an edit memory, asked through one of four modes."""

    def __init__(self, loaded: LoadedModel, ptokens: PTokens, memory: EditStore,
                 mode: Mode | str = Mode.PTOKENS, *, retrieval: RetrievalSettings | None = None,
                 chat: bool = False, demos: DemoStore | str | os.PathLike[str] | None = None,
                 ptokens_source: str = "",
                 fact_policy: FactPolicy | dict[str, Any] | None = None,
                 prefix_cache: int = 0, decode_dtype: str | None = None) -> None:
        self.model, self.tokenizer, self.name = loaded.model, loaded.tokenizer, loaded.name
        # Optional bf16/fp16 copy of the weights for greedy decoding after an fp32 prefill
        # (editkit.runtime.mixed_decode): faster on CPUs where decoding is memory-bound.
        self.decode_model = decode_copy(self.model, decode_dtype) if decode_dtype else None
        self.fact_policy = fact_policy  # validated by the property setter
        self.ptokens = ptokens
        self.ptokens_source = ptokens_source
        self.memory = memory
        # KV caches of the last `prefix_cache` prompt prefixes (demonstrations + fact), for
        # repeated questions about one edit; 0 = off. Greedy ask() and score() use them.
        self.prefix_cache = PrefixCache(self.model, None, prefix_cache) if prefix_cache else None
        # Always on: the KV cache of the edit-independent head (chat head, the m P-Token begin
        # markers), so a question about a fresh edit computes only what follows it.
        self._head_cache = PrefixCache(self.model, None, 4)
        self.mode = Mode.parse(mode)
        self.retrieval = retrieval or RetrievalSettings()
        self.layouts = PromptBuilder(self.tokenizer, ptokens, chat=chat)
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
        chat: bool = False,
        demos: DemoStore | str | os.PathLike[str] | None = None,
        trust_remote_code: bool = False,
        fact_policy: FactPolicy | dict[str, Any] | None = None,
        prefix_cache: int = 0,
        decode_dtype: str | None = None,
    ) -> EditableLM:
        """Load a model (None = the embedded SmolLM2-135M-Instruct), P-Tokens and a memory.

        ptokens: a P-Token directory or object; None picks the trained set shipped for the model,
        or, where none ships, fresh untrained tokens initialised from the text " new fact".
        memory: an SQLite file path (persistent), None (in RAM for this process), or any object
        implementing `editkit.memory.EditStore` (e.g. the LangChain vector-store memory).
        fact_policy: what facts may contain (None: the strict default, `FactPolicy.off()`: no
        prompt-injection checks); see `editkit.safety`.
        prefix_cache: keep the KV cache of this many prompt prefixes (IKE demonstrations + fact),
        so repeated questions about one edit skip recomputing them (0 = off).
        decode_dtype: 'bfloat16' or 'float16' to decode greedy answers with a copy of the weights
        in that dtype after a full-precision prefill (None = off; docs/benchmarks.md, bf16).
        """
        mode = Mode.parse(mode)
        try:
            retrieval = RetrievalSettings(top_k=top_k, threshold=threshold,
                                          namespace=check_namespace(namespace))
        except ValidationError as exc:
            raise InvalidInputError(f"Invalid retrieval settings: {exc}") from exc
        loaded = load_model(model, quantization=quantization, device=device, dtype=dtype,
                            trust_remote_code=trust_remote_code)
        pt, source = cls._resolve_ptokens(loaded, ptokens, m)
        mem = memory if isinstance(memory, EditStore) else EditMemory(memory)
        return cls(loaded, pt, mem, mode, retrieval=retrieval, chat=chat, demos=demos,
                   ptokens_source=source, fact_policy=fact_policy, prefix_cache=prefix_cache,
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
        shipped = shipped_ptokens_dir(name, m)
        if shipped is not None:
            return PTokens.from_pretrained(shipped, lm, tok, name=name), f"shipped ({shipped})"
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
        items = facts if isinstance(facts, (list, tuple)) else [facts]
        for f in items:
            if isinstance(f, (str, dict, FactInput)):
                parsed = FactInput.parse(f)  # InvalidInputError for what memory would refuse
                for field in ("text", "subject", "relation", "object"):
                    value = getattr(parsed, field)
                    if value is not None:
                        self.check_fact(value, "fact" if field == "text" else f"fact {field}")
        self.memory.add(facts, namespace=namespace or self.retrieval.namespace)
        return self

    def forget(self, edit_id: str) -> Edit:
        return self.memory.forget(edit_id)

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
               memory: EditStore | None = None, k: int | None = None) -> Selection:
        """The retrieval policy's choice for a question (`editkit.retrieval`): the stored edit
        placed as the fact and the ones placed as distractors, fact policy applied.

        memory / k: another store, or another number of candidates, for this call (evaluation
        uses both); by default this model's memory and `retrieval.top_k`.
        """
        q = clean_text(question, "question", MAX_QUESTION_CHARS)
        return select(self.memory if memory is None else memory, q, self.retrieval,
                      namespace=namespace, k=k, accept=self._accept)

    # ---- prompts --------------------------------------------------------------------------
    def prompt(self, question: str, *, mode: Mode | str | None = None,
               namespace: str | None = None, fact: str | None = None,
               distractors: Sequence[str] | None = None, chat: bool | None = None,
               ) -> tuple[Prompt, RetrievedEdit | None, list[RetrievedEdit]]:
        """The prompt a question would be sent as, plus the edits placed in it.

        With `fact` given, memory is bypassed (evaluation uses this); otherwise the best retrieved
        edit is the fact and the other retrieved edits are distractors.
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
        p = self.layouts.build(mode, q, fact, dis, demos, chat=chat, n_demos=n_demos)
        limit = getattr(self.model.config, "max_position_embeddings", None)
        if limit and len(p) >= limit:
            raise InvalidInputError(f"The prompt has {len(p)} tokens, more than this model's "
                                    f"context of {limit}; shorten the question or the facts.")
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

    # ---- asking ---------------------------------------------------------------------------
    def ask(self, question: str, *, max_new_tokens: int = 32, stream: bool = False,
            mode: Mode | str | None = None, namespace: str | None = None,
            fact: str | None = None, distractors: Sequence[str] | None = None,
            chat: bool | None = None, do_sample: bool = False,
            temperature: float = 1.0) -> Answer | AnswerStream:
        """Answer a question with the relevant edits in context (greedy by default)."""
        if not isinstance(max_new_tokens, int) or not 1 <= max_new_tokens <= 4096:
            raise InvalidInputError("max_new_tokens must be an int between 1 and 4096.")
        if do_sample and not (isinstance(temperature, (int, float)) and temperature > 0):
            raise InvalidInputError("temperature must be a number > 0 when do_sample=True.")
        p, edit, others = self.prompt(question, mode=mode, namespace=namespace, fact=fact,
                                      distractors=distractors, chat=chat)
        pt = self.ptokens if p.mode is Mode.PTOKENS else None
        kw = dict(max_new_tokens=max_new_tokens, do_sample=do_sample, temperature=temperature)
        if stream:
            pieces = inference.stream(self.model, self.tokenizer, pt, p.ids, **kw)
            return AnswerStream(pieces, p, edit, others)
        if self.prefix_cache is not None and not do_sample and p.prefix_len:
            new = self.prefix_cache.greedy(p.ids, p.prefix_len, pt,
                                           max_new_tokens=max_new_tokens, eos_ids=self._eos_ids())
        elif self.decode_model is not None and not do_sample:
            new = greedy_mixed(self.model, self.decode_model, pt, p.ids,
                               max_new_tokens=max_new_tokens, eos_ids=self._eos_ids())
        else:
            new = inference.generate(self.model, self.tokenizer, pt, p.ids, **kw)
        text = self.tokenizer.decode(new, skip_special_tokens=True)
        return Answer(text=text.strip(), mode=p.mode.value, edit=edit, distractors=others,
                      prompt_tokens=len(p), completion_tokens=len(new))

    def score(self, question: str, candidates: Sequence[str], *,
              mode: Mode | str | None = None, namespace: str | None = None,
              fact: str | None = None, distractors: Sequence[str] | None = None,
              chat: bool | None = None) -> ScoreResult:
        """Mean log-probability of each candidate continuing the question (teacher forced).

        Candidates are scored with a leading space, as in ROME's CounterFact scoring
        (`tok(" " + target)`), except inside a chat template, where they start the reply.
        """
        if isinstance(candidates, str) or not isinstance(candidates, Sequence) or not candidates:
            raise InvalidInputError("candidates must be a non-empty list of strings.")
        cands = [clean_text(c, "candidate", MAX_FACT_CHARS) for c in candidates]
        p, edit, others = self.prompt(question, mode=mode, namespace=namespace, fact=fact,
                                      distractors=distractors, chat=chat)
        # Inline, the answer continues the question's sentence (" Paris"); in a chat template it
        # opens the assistant's turn ("Paris").
        cont = [self.layouts.target_ids(c, chat=p.chat) for c in cands]
        pt = self.ptokens if p.mode is Mode.PTOKENS else None
        if self.prefix_cache is not None and p.prefix_len:
            logps = self.prefix_cache.continuations(p.ids, p.prefix_len, pt, cont)
        elif p.head_len > 1:
            logps = self._head_cache.continuations(p.ids, p.head_len, pt, cont)
        else:
            logps = inference.score_continuations(self.model, pt, p.ids, cont)
        scores = [CandidateScore(candidate=c, mean_logprob=sum(lp) / len(lp), token_logprobs=lp)
                  for c, lp in zip(cands, logps)]
        return ScoreResult(mode=p.mode.value, scores=scores, edit=edit, distractors=others,
                           prompt_tokens=len(p))

    def _eos_ids(self) -> list[int]:
        eos = getattr(self.model.generation_config, "eos_token_id", None)
        if eos is None:
            eos = self.tokenizer.eos_token_id
        return [int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos])
                if e is not None]

    def __repr__(self) -> str:
        return (f"EditableLM(model={self.name!r}, mode={self.mode.value!r}, m={self.ptokens.m}, "
                f"ptokens={self.ptokens_source!r}, memory={self.memory.path!r})")
