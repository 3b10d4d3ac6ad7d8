"""The calls that answer and score: `ask`, `stream`, `ask_many`, the batched generation doors
(the server and LangChain) and `score` / `score_many`. A mixin of `EditableLM` (as transformers'
`GenerationMixin` is of its models): everything here builds the prompt with `EditableLM.prompt`
and hands it to the engine (`runtime.engine`), so a question takes the same way through every
door.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .answers import AnswerStream, answer_stop, check_sampling, per_question, per_question_modes
from .errors import InvalidInputError
from .layouts import ChatSetting, Mode, Prompt, check_chat_setting, reads_as_question
from .limits import MAX_FACT_CHARS
from .records import Answer, CandidateScore, RetrievedEdit, ScoreResult, clean_text
from .runtime.engine import GenerateOptions, TextStream
from .runtime.generation import Generation, check_generation_args, check_stop

if TYPE_CHECKING:
    from .layouts import PromptBuilder
    from .retrieval import RetrievalSettings
    from .runtime.engine import Engine


class AskingMixin:
    """Answering and scoring, for `EditableLM` (which provides the attributes below)."""

    engine: Engine
    layouts: PromptBuilder
    retrieval: RetrievalSettings

    if TYPE_CHECKING:
        chat: ChatSetting
        tokenizer: Any

        def prompt(self, question: str, **kw: Any
                   ) -> tuple[Prompt, RetrievedEdit | None, list[RetrievedEdit]]: ...

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
        limit = self.engine.context_length
        if limit and prompt_tokens + new_tokens > limit:
            raise InvalidInputError(
                f"The prompt has {prompt_tokens} tokens and the answer needs up to {new_tokens} "
                f"more, beyond this model's context of {limit}; shorten the question, the facts "
                f"or the conversation, or ask for fewer new tokens.")

    # ---- asking ----------------------------------------------------------------------------
    def ask(self, question: str, *, max_new_tokens: int = 32, stop: Sequence[str] | None = None,
            mode: Mode | str | None = None, namespace: str | None = None,
            fact: str | None = None, distractors: Sequence[str] | None = None,
            chat: bool | None = None, do_sample: bool = False,
            temperature: float = 1.0, seed: int | None = None, as_of: Any = None) -> Answer:
        """Answer a question with the relevant edits in context (greedy by default).

        Args:
            question: the question, or the start of a sentence to complete.
            max_new_tokens: at most this many new tokens (`limits.MAX_NEW_TOKENS`); prompt plus
                answer must fit
                the model's context.
            stop: strings that end the answer; the text is cut before the first one found
                (`finish_reason` "stop", as for EOS; "length" when `max_new_tokens` ran out).
                None (default): where the answer ends: the model's end of turn in the chat
                template, the end of the first line inline (`layouts.ANSWER_END`); `()` runs
                to EOS or `max_new_tokens`.
            mode / namespace / chat: override the instance's for this call (chat True, False
                or "auto": the chat template for a question, see `use_chat`).
            fact / distractors: place these instead of retrieving from memory.
            as_of: a datetime (or epoch seconds): answer with the edits that were live then
                (audits: "what did the assistant believe on March 3?"); None: the live edits.
            do_sample / temperature / seed: sample at this temperature instead of greedy
                decoding, from a generator seeded with `seed` (None: drawn from torch's global
                generator); the same seed gives the same answer, alone or in a batch (the
                prefix-cache and bf16 decoders are greedy; sampling runs in full precision).
        """
        return self.stream(question, max_new_tokens=max_new_tokens, stop=stop, mode=mode,
                           namespace=namespace, fact=fact, distractors=distractors, chat=chat,
                           do_sample=do_sample, temperature=temperature, seed=seed,
                           as_of=as_of).answer()

    def stream(self, question: str, *, max_new_tokens: int = 32,
               stop: Sequence[str] | None = None,
               mode: Mode | str | None = None, namespace: str | None = None,
               fact: str | None = None, distractors: Sequence[str] | None = None,
               chat: bool | None = None, do_sample: bool = False,
               temperature: float = 1.0, seed: int | None = None,
               as_of: Any = None) -> AnswerStream:
        """`ask`, streamed: an `AnswerStream` of text pieces (same arguments, same text).

        Generation starts on the first piece requested. Closing the stream (or leaving a `for`
        loop over it early) cancels the generation at its next step.
        """
        check_sampling(do_sample, temperature)
        check_generation_args(max_new_tokens)
        p, edit, others = self.prompt(question, mode=mode, namespace=namespace, fact=fact,
                                      distractors=distractors, chat=chat,
                                      max_new_tokens=max_new_tokens, as_of=as_of)
        gen = self.generate_from(p, max_new_tokens=max_new_tokens, stop=answer_stop(stop, p.chat),
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
                 batch_size: int = 16, as_of: Any = None) -> list[Answer]:
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
        check_sampling(do_sample, temperature)
        modes = per_question_modes(mode, len(questions))
        given = per_question(facts, "facts", len(questions))
        others = per_question(distractors, "distractors", len(questions))
        seeds = per_question(seeds, "seeds", len(questions))
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidInputError("batch_size must be an int ≥ 1.")
        placed = [self.prompt(q, mode=m, namespace=namespace, chat=chat, fact=f, distractors=d,
                              max_new_tokens=max_new_tokens, as_of=as_of)
                  for q, m, f, d in zip(questions, modes, given, others, strict=True)]
        gens = self.engine.generate_many(
            [p for p, _, _ in placed],
            [self._options(max_new_tokens, answer_stop(stop, p.chat),
                           temperature if do_sample else None, seed, namespace)
             for (p, _, _), seed in zip(placed, seeds, strict=True)],
            batch_size=batch_size)
        return [Answer(text=g.text, mode=p.mode.value, edit=edit, distractors=ds,
                       prompt_tokens=len(p), completion_tokens=g.completion_tokens,
                       finish_reason=g.finish_reason or "stop")
                for (p, edit, ds), g in zip(placed, gens, strict=True)]

    def generate_batched(self, prompt: Prompt, *, max_new_tokens: int = 32,
                         stop: Sequence[str] | None = (), temperature: float | None = None,
                         seed: int | None = None, namespace: str | None = None) -> Generation:
        """The whole generation after `prompt` on the engine's shared path: requests from other
        threads are decoded together (in process: they join the running batch, greedy or each
        sampled with its own `seed`; remote: concurrent requests to the engine). The server and
        LangChain's `batch` generate through this. namespace: the one whose edits built the
        prompt (default: the model's); cached keys and values of its prefix serve later
        requests of that namespace only (`runtime.generation.PrefixStore`).
        """
        return self.engine.generate(prompt, self._options(max_new_tokens, stop, temperature,
                                                          seed, namespace), shared=True)

    def stream_batched(self, prompt: Prompt, *, max_new_tokens: int = 32,
                       stop: Sequence[str] | None = (), temperature: float | None = None,
                       seed: int | None = None, namespace: str | None = None) -> TextStream:
        """`generate_batched`, streamed (the server's `stream: true`)."""
        return self.engine.stream(prompt, self._options(max_new_tokens, stop, temperature, seed,
                                                        namespace), shared=True)

    def generate_from(self, prompt: Prompt, *, max_new_tokens: int = 32,
                      stop: Sequence[str] | None = (),
                      temperature: float | None = None,
                      seed: int | None = None) -> TextStream:
        """A generation stream after a prompt built by `prompt()` (greedy unless
        `temperature > 0`, then sampled with `seed`), this caller's own request (in process:
        through the model's decoder, prefix cache and bf16 decoding included)."""
        return self.engine.stream(prompt, self._options(max_new_tokens, stop, temperature, seed,
                                                        None))

    def _options(self, max_new_tokens: int, stop: Sequence[str] | None,
                 temperature: float | None, seed: int | None,
                 namespace: str | None) -> GenerateOptions:
        """One request's settings; the namespace decides who may reuse its prefix's cache."""
        return GenerateOptions(max_new_tokens=max_new_tokens, stop=tuple(check_stop(stop)),
                               temperature=temperature, seed=seed,
                               namespace=namespace or self.retrieval.namespace)

    def score(self, question: str, candidates: Sequence[str], *,
              mode: Mode | str | None = None, namespace: str | None = None,
              fact: str | None = None, distractors: Sequence[str] | None = None,
              chat: bool | None = None, as_of: Any = None) -> ScoreResult:
        """Mean log-probability of each candidate continuing the question (teacher forced).

        Candidates are scored with a leading space, as in ROME's CounterFact scoring
        (`tok(" " + target)`), except inside a chat template, where they start the reply.
        as_of: score with the edits live at that time (as `ask`).
        """
        req = self._score_request(question, candidates, mode=mode, namespace=namespace,
                                  fact=fact, distractors=distractors, chat=chat, as_of=as_of)
        [logps] = self.engine.score([(req[0], req[4])], forest_tokens=None)
        return self._score_result(req, logps)

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
        modes = per_question_modes(mode, len(questions))
        reqs = [self._score_request(q, c, mode=m, namespace=namespace, chat=chat)
                for q, c, m in zip(questions, candidates, modes, strict=True)]
        logps = self.engine.score([(r[0], r[4]) for r in reqs], forest_tokens=forest_tokens)
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

