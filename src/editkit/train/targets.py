"""Generated answer targets (`TrainConfig.answers = "generated"`): train on what users read.

With gold targets a chat pair's answer is the bare object ("Honda"), so the student learns the
first tokens of the reply. A small instruct model rarely replies that way: it restates the
question ("The company that produces Porsche 911 is Honda."), and in such a free answer the
object comes after the restatement, at positions the gold pairs never trained. Here each chat
pair's target becomes the teacher's own greedy reply, generated once before training:

- edit and paraphrase questions (also inside distractor pairs): the plain-prompt teacher's reply
  with the fact given (distractors left out, as the clean distractor teacher does), kept where it
  contains the new object (`eval.matching.matches`, the wild task's judge); otherwise the gold
  object stays, and the cross-entropy term still asks for it;
- questions whose answer must stay (neighbour, empty, absent): the unedited model's reply, so
  locality is trained as the wild task measures it (the same answer, not only the same first
  token).

The margin term compares the mean log-probabilities of two short answers; a pair whose target
became a reply has no competing reply, so its margin is dropped. The replies are cached on disk
(model, pairs, layout version, `answer_tokens`), so a resumed run does not generate them again.
Called by `Trainer.__init__` (loop.py).
"""
from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from typing import Any

from ..answers import answer_stop
from ..eval.matching import matches
from ..fileio import atomic_write, cache_dir
from ..layouts import LAYOUT_VERSION, Mode, PromptBuilder
from ..ptokens import fingerprint
from ..runtime.engine import GenerateOptions, InProcessEngine
from .config import TrainConfig
from .pairs import Pair

log = logging.getLogger(__name__)


Ask = tuple[Mode, str, "str | None", bool]
"""(mode, question, fact, chat): one question to answer."""


def generate(model: Any, tokenizer: Any, pt: Any, asks: Sequence[Ask], max_new_tokens: int,
             batch_size: int = 16) -> list[str]:
    """Greedy answers, batched, each ended where `ask` ends it (`answers.answer_stop`: the
    model's end of turn in chat, the first line inline). The teacher's replies here and the
    student's validation answers (wild_val.py) both come from this."""
    lay = PromptBuilder(tokenizer, pt)
    prompts = [lay.build(mode, q, fact, chat=chat) for mode, q, fact, chat in asks]
    engine = InProcessEngine(model, tokenizer, pt)
    opts = [GenerateOptions(max_new_tokens=max_new_tokens, stop=tuple(answer_stop(None, chat)))
            for *_, chat in asks]
    return [g.text for g in engine.generate_many(prompts, opts, batch_size=batch_size)]


def _teacher_mode(p: Pair) -> Mode:
    """Whose reply becomes the target: the unedited model's where the answer must stay, the
    plain-prompt teacher's (fact given) for edit and paraphrase questions, whatever
    `edit_teacher` says: IKE's demonstrations derail this model's replies in a chat turn
    (docs/results.md, wild task)."""
    return Mode.NONE if p.keeps_old_answer else Mode.PROMPT


def _key(model: Any, tokenizer: Any, name: str, cfg: TrainConfig, pairs: Sequence[Pair]) -> str:
    h = hashlib.sha256()
    h.update(fingerprint(model, tokenizer, name).model_dump_json().encode())
    h.update(json.dumps([LAYOUT_VERSION, cfg.answer_tokens]).encode())
    for p in pairs:
        h.update(json.dumps([p.kind, p.fact, p.question, p.answer, p.chat]).encode())
    return h.hexdigest()[:24]


def generate_replies(model: Any, tokenizer: Any, name: str, cfg: TrainConfig,
                     pairs: Sequence[Pair], *, batch_size: int = 16) -> list[str]:
    """The teacher's greedy reply to each pair's question (chat layout), from the disk cache or
    generated once, batched."""
    path = cache_dir() / "answers" / f"{_key(model, tokenizer, name, cfg, pairs)}.json"
    if path.is_file():
        replies = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(replies, list) and len(replies) == len(pairs):
            return replies
    # What each pair asks the teacher. An edit question comes back in its distractor pair, and
    # an empty and an absent pair ask the unedited model the same question: one reply each.
    asks = [(m := _teacher_mode(p), p.question, None if m is Mode.NONE else p.fact)
            for p in pairs]
    unique = list(dict.fromkeys(asks))
    gens = generate(model, tokenizer, None, [(*a, True) for a in unique], cfg.answer_tokens,
                    batch_size)
    by_ask = {a: g.strip() for a, g in zip(unique, gens, strict=True)}
    replies = [by_ask[a] for a in asks]
    text = json.dumps(replies)
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return replies


def with_generated_targets(model: Any, tokenizer: Any, name: str, cfg: TrainConfig,
                           pairs: Sequence[Pair]) -> list[Pair]:
    """`pairs` with each chat pair's answer replaced by the teacher's reply where it may be (see
    the module docstring); inline pairs are returned unchanged."""
    chat = [i for i, p in enumerate(pairs) if p.chat]
    if not chat:
        return list(pairs)
    replies = generate_replies(model, tokenizer, name, cfg, [pairs[i] for i in chat])
    out = list(pairs)
    kept = 0
    for i, reply in zip(chat, replies, strict=True):
        p = pairs[i]
        if not reply or (not p.keeps_old_answer and not matches(reply, [p.answer])):
            continue  # an empty reply, or the teacher did not take the edit: gold stays
        out[i] = p.model_copy(update={"answer": reply, "contrast": None})
        kept += 1
    log.info("generated targets: %d of %d chat pairs", kept, len(chat))
    return out
