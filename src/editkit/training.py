"""P-Token training: distil the IKE prompt into persuasion tokens (the model stays frozen).

For each training record five kinds of pairs are built (edit, paraphrase, neighbour, distractor,
empty edit). The teacher is the model under the IKE layout (32 demonstrations) — or, optionally for
neighbour pairs, the unedited model, which is the ideal locality reference; the empty-edit teacher
is always the unedited model. The student is the same question under the P-Token layout. The loss
is KL(teacher ‖ student) of the next-token distributions at every answer position (teacher forced
along the answer), temperature 1. The teacher never changes, so its distributions are computed
once and cached as top-k log-probs plus the remaining mass; epochs then only run the short student
sequences.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from .datasets import CounterFactRecord, load_records, one_edit_per_fact
from .embedder import DEFAULT_EMBEDDER
from .errors import InvalidInputError
from .fileio import atomic_write, cache_dir
from .ike import DEMO_SCHEDULE_VERSION, DemoStore, default_train_file
from .layouts import LAYOUT_VERSION, Mode, PromptBuilder, reads_as_question
from .ptokens import DEFAULT_INIT_TEXT, DEFAULT_M, PTokens, fingerprint
from .runtime.scoring import ScoreItem, forests, packed_logprobs_many, target_logprobs

Kind = Literal["edit", "paraphrase", "neighbour", "distractor", "empty", "absent"]
KINDS: tuple[Kind, ...] = ("edit", "paraphrase", "neighbour", "distractor", "empty", "absent")
QUESTION_KINDS = KINDS[:3]  # the questions a record asks; distractor pairs reuse one of them
CACHE_FORMAT = 2  # 2: the teacher cache also holds the unedited model's answer margin per pair
STATE_NAME = "trainer_state.json"
OPTIM_NAME = "optimizer.safetensors"


class TrainConfig(BaseModel):
    """Everything a training run depends on (saved with the artifact as provenance)."""

    model_config = ConfigDict(extra="forbid")
    m: int = Field(DEFAULT_M, ge=1, le=64, description="begin (and end) tokens; the default is "
                   "editkit.ptokens.DEFAULT_M, the m that from_pretrained loads")
    data: list[Path] | None = Field(
        None, description="training files, EasyEdit CounterFact or zsRE (default: the vendored "
        "CounterFact train split); several files contribute in turn, one record each")
    demos: Path | None = Field(None, description="IKE demonstration file (default: vendored)")
    n_train: int = Field(200, ge=1, description="records used for training (after the "
                         "validation records, shuffled)")
    n_val: int = Field(40, ge=1, description="records held out for validation (drawn first, "
                       "so they stay the same when n_train changes)")
    max_distractors: int = Field(10, ge=1, le=100)
    edit_teacher: Literal["ike", "prompt"] = Field(
        "ike", description="teacher layout for edit/paraphrase/distractor pairs: the IKE prompt "
        "(the paper) or the plain `New Fact: ...\nPrompt: ...` layout")
    neighbour_teacher: Literal["ike", "unedited"] = "ike"
    distractor_teacher: Literal["clean", "ike"] = Field(
        "clean", description="clean: the teacher sees the fact without the distractors (what "
        "the answer should be); ike: the IKE prompt with the distractors")
    weights: dict[Kind, float] = Field(
        default_factory=lambda: {k: 1.0 for k in KINDS},
        description="loss weight per pair kind (a kind left out weighs 1; an unknown kind, "
        "e.g. the spelling 'neighbor', is an error)")
    init: Literal["text", "vocab_mean", "random"] = "text"
    init_text: str = DEFAULT_INIT_TEXT
    init_from: str | None = Field(None, description="start from the rows of this P-Token "
                                  "directory (same model and m) instead of `init`: fine-tune "
                                  "tokens, e.g. full-precision ones on a quantized model")
    lr: float = Field(5e-3, gt=0)
    batch_size: int = Field(8, ge=1, description="records per optimiser step")
    epochs: int = Field(10, ge=1)
    patience: int = Field(3, ge=1)
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.98)
    topk: int = Field(64, ge=1, le=4096, description="teacher log-probs kept per position")
    ce_weight: float = Field(0.0, ge=0, description="weight of an added cross-entropy term on "
                             "the gold answer (0 = pure distillation)")
    ce_kinds: tuple[Kind, ...] = Field(("edit", "paraphrase", "distractor"),
                                       description="pair kinds that get the cross-entropy term")
    margin_weight: float = Field(0.0, ge=0, description="weight of the answer-margin hinge "
                                 "(0 = off); see `margin_loss`")
    margin: float = Field(1.0, ge=0, description="the margin, in nats of mean token log-prob")
    margin_kinds: tuple[Kind, ...] = Field(
        ("edit", "paraphrase", "neighbour", "distractor", "empty", "absent"),
        description="pair kinds that get the margin term")
    hard_neighbours: bool = Field(False, description="add, per record, a neighbour question "
                                  "about another record whose subject shares a word with this "
                                  "one's (the case a relevance gate lets through)")
    absent_pairs: bool = Field(False, description="add, per record, a pair whose context holds "
                               "only other facts: the answer must stay the unedited one")
    select_by: Literal["val_s", "val_kl"] = Field(
        "val_s", description="what picks the saved P-Tokens among the validations: ROME S on "
        "the validation records (ties: lower KL) or the validation KL")
    eval_every: int | None = Field(None, ge=1, description="validate (and checkpoint) every "
                                   "this many training records, besides each epoch's end")
    forest_tokens: int = Field(1024, ge=64, description="most tokens in one packed forward "
                               "(a batch's pairs go through in as few forwards as fit)")
    chat_questions: bool = Field(False, description="lay out every pair whose question reads "
                                 "as one (`layouts.reads_as_question`) in the model's chat "
                                 "template, for teacher and student, as `EditableLM(chat='auto')` "
                                 "sends it; sentences to complete stay inline")
    seed: int = 0

    @field_validator("data", mode="before")
    @classmethod
    def _one_file_is_a_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str | os.PathLike) else value


# How each TrainConfig field reaches the teacher cache (tests check that every field is listed):
TEACHER_FIELDS = frozenset({"edit_teacher", "neighbour_teacher", "distractor_teacher", "topk"})
"""Fields that change the teacher's distributions for a given pair: hashed into the cache key."""
PAIR_FIELDS = frozenset({"data", "n_train", "n_val", "max_distractors", "seed",
                         "hard_neighbours", "absent_pairs", "chat_questions"})
"""Fields that choose the pairs: the key hashes the pairs themselves, so these reach it that way."""
DEMO_FIELDS = frozenset({"demos"})
"""The IKE teacher's demonstration file: the key hashes its content, not its path."""
STUDENT_FIELDS = frozenset({"m", "weights", "init", "init_text", "init_from", "lr", "batch_size",
                            "epochs", "patience", "weight_decay", "betas", "ce_weight", "ce_kinds",
                            "margin_weight", "margin", "margin_kinds", "select_by",
                            "eval_every", "forest_tokens"})
"""Fields that only change the student (optimisation, P-Token shape, selection): a teacher cache
is reused. (`forest_tokens` also groups the teacher's forwards, which changes nothing but float
rounding.)"""


class Pair(BaseModel):
    """One training question: the fact (None for empty edits), distractors and the answer."""

    kind: Kind
    record: int
    case_id: int = -1  # the teacher's IKE demonstrations never come from this record
    asks: Literal["edit", "paraphrase", "neighbour", ""] = ""  # distractor pairs: which question
    fact: str | None
    distractors: list[str] = Field(default_factory=list)
    question: str
    answer: str
    contrast: str | None = None  # the competing answer of the margin term (None: no margin)
    chat: bool = False  # laid out in the chat template (teacher and student), answer bare

    @property
    def keeps_old_answer(self) -> bool:
        """True where the answer must stay the unedited one (neighbour questions, no fact)."""
        return self.kind in ("neighbour", "empty", "absent") or self.asks == "neighbour"


def _contrast(answer: str, other: str) -> str | None:
    return None if other.strip().casefold() == answer.strip().casefold() else other


def _subject_words(subject: str) -> set[str]:
    """The words that make two subjects look alike to an embedder ("Toyota Camry" / "Toyota
    Corolla"): three letters or more, not a function word."""
    words = "".join(c if c.isalnum() else " " for c in subject.casefold()).split()
    return {w for w in words if len(w) >= 3 and w not in _FUNCTION_WORDS}


_FUNCTION_WORDS = frozenset({"the", "and", "for", "von", "van", "der", "des", "del", "della",
                             "les", "los", "las", "una", "uno"})


def build_pairs(records: Sequence[CounterFactRecord], cfg: TrainConfig,
                pool: Sequence[CounterFactRecord], rng: random.Random) -> list[Pair]:
    """Five pairs per record (seven with `hard_neighbours` and `absent_pairs`).

    Distractor pairs carry 1..max_distractors facts of other `pool` records. A hard neighbour asks
    about a `pool` record whose subject shares a word with this record's subject; an absent pair
    puts only other records' facts in the context. Both keep the unedited answer.
    """
    by_word: dict[str, list[int]] = {}
    if cfg.hard_neighbours:
        for j, o in enumerate(pool):
            for w in _subject_words(o.subject):
                by_word.setdefault(w, []).append(j)
    pairs = []
    for i, r in enumerate(records):
        qa = [(r.prompt, r.target_new, r.ground_truth),
              (r.rephrase_prompt, r.target_new, r.ground_truth),
              (r.locality_prompt, r.locality_ground_truth, r.target_new)]
        common = {"record": i, "case_id": r.case_id}
        for kind, (q, a, c) in zip(QUESTION_KINDS, qa):
            pairs.append(Pair(kind=kind, fact=r.fact, question=q, answer=a,
                              contrast=_contrast(a, c), **common))
        k = rng.randint(1, cfg.max_distractors)
        others = rng.sample([o.fact for o in pool if o.fact != r.fact], k)
        asks, (q, a, c) = rng.choice(list(zip(QUESTION_KINDS, qa)))
        pairs.append(Pair(kind="distractor", fact=r.fact, distractors=others, question=q,
                          answer=a, asks=asks, contrast=_contrast(a, c), **common))
        pairs.append(Pair(kind="empty", fact=None, question=r.prompt, answer=r.ground_truth,
                          contrast=_contrast(r.ground_truth, r.target_new), **common))
        if cfg.hard_neighbours:
            near = sorted({j for w in _subject_words(r.subject) for j in by_word.get(w, ())
                           if pool[j].subject.casefold() != r.subject.casefold()})
            if near:
                o = pool[rng.choice(near)]
                pairs.append(Pair(kind="neighbour", fact=r.fact, question=o.prompt,
                                  answer=o.ground_truth,
                                  contrast=_contrast(o.ground_truth, r.target_new), **common))
        if cfg.absent_pairs:
            k = rng.randint(1, cfg.max_distractors)
            foreign = rng.sample([o.fact for o in pool
                                  if o.subject.casefold() != r.subject.casefold()], k)
            pairs.append(Pair(kind="absent", fact=foreign[0], distractors=foreign[1:],
                              question=r.prompt, answer=r.ground_truth,
                              contrast=_contrast(r.ground_truth, r.target_new), **common))
    if cfg.chat_questions:
        pairs = [p.model_copy(update={"chat": True}) if _chat_pair(p) else p for p in pairs]
    return pairs


def _chat_pair(p: Pair) -> bool:
    """A question (as `ask` would lay it out in the chat template) whose answers are not empty:
    a few zsRE records have an empty new object, which inline reads as " " but in a chat reply
    has no token at all."""
    return (reads_as_question(p.question) and bool(p.answer.strip())
            and (p.contrast is None or bool(p.contrast.strip())))


def _groups(pairs: Sequence[Pair], idx: Sequence[int]) -> dict[tuple[Any, ...], list[int]]:
    """Pairs (by index) that share a context (fact, distractors, layout): one packed pass each."""
    out: dict[tuple[Any, ...], list[int]] = {}
    for i in idx:
        p = pairs[i]
        out.setdefault((p.record, p.fact, tuple(p.distractors), p.chat), []).append(i)
    return out


def load_training_records(cfg: TrainConfig) -> list[CounterFactRecord]:
    """The records of `cfg.data` (default: vendored CounterFact train), one edit per fact, in the
    order training draws them; sizes the files cannot supply are refused.

    Each file is shuffled (seed `cfg.seed`) and the files contribute in turn, one record each
    until one runs out, so a small zsRE file is not drowned by a large CounterFact one. zsRE
    records become CounterFact-shaped ones (`ZsreRecord.as_counterfact`).
    """
    paths = cfg.data or [default_train_file()]
    rng = random.Random(cfg.seed)
    streams = []
    for path in paths:
        fmt, raw = load_records(path)
        if fmt == "zsre":
            raw = [r.as_counterfact() for r in raw if r.answers]  # no old answer: no pairs
        elif fmt != "counterfact":
            raise InvalidInputError(
                f"{path} holds {fmt} records; training reads EasyEdit CounterFact or zsRE files.")
        kept, _ = one_edit_per_fact(raw)
        rng.shuffle(kept)
        streams.append(kept)
    records = [r for row in _round_robin(streams) for r in row]
    if cfg.n_train + cfg.n_val > len(records):
        raise InvalidInputError(
            f"n_train + n_val = {cfg.n_train} + {cfg.n_val} = {cfg.n_train + cfg.n_val}, but "
            f"{', '.join(map(str, paths))} hold(s) {len(records)} records (one per fact). Lower "
            "--n-train / --n-val, or pass a larger --data file.")
    return records


def _round_robin(streams: Sequence[Sequence[Any]]) -> list[list[Any]]:
    """Rows of one item per stream, while any stream has items left."""
    return [[s[i] for s in streams if i < len(s)] for i in range(max(map(len, streams)))]


def file_digest(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def teacher_cache_key(cfg: TrainConfig, pairs: Sequence[Pair], *, base_model: str,
                      demos_digest: str, embedder: str = DEFAULT_EMBEDDER,
                      layout_version: int = LAYOUT_VERSION) -> str:
    """The teacher cache's name: a hash of everything the teacher's distributions depend on.

    base_model: the fingerprint (JSON) of the model; pairs: the questions, answers and contexts;
    the TEACHER_FIELDS of `cfg`; the demonstration file's content digest and the embedder that
    retrieves from it (the IKE teacher's demonstrations) and how it orders their kinds; the prompt
    layout version.
    """
    h = hashlib.sha256()
    parts = {"base_model": base_model, "pairs": [p.model_dump() for p in pairs],
             "teacher": cfg.model_dump(mode="json", include=set(TEACHER_FIELDS)),
             "demos": demos_digest, "embedder": embedder, "layout": layout_version,
             "demo_schedule": DEMO_SCHEDULE_VERSION, "format": CACHE_FORMAT}
    h.update(json.dumps(parts, sort_keys=True).encode())
    return h.hexdigest()[:20]


class TeacherCache:
    """Top-k teacher log-probs per pair and answer position, plus the log of the remaining mass,
    and the unedited model's answer margin (NaN where the pair has none, see `margin_loss`)."""

    def __init__(self, values: list[torch.Tensor], indices: list[torch.Tensor],
                 rest: list[torch.Tensor], margins: list[torch.Tensor]) -> None:
        self.values, self.indices, self.rest, self.margins = values, indices, rest, margins

    def save(self, path: Path) -> None:
        from safetensors.torch import save_file

        tensors = {}
        for i, (v, ix, r, m) in enumerate(zip(self.values, self.indices, self.rest,
                                              self.margins)):
            tensors[f"{i}.v"], tensors[f"{i}.i"], tensors[f"{i}.r"] = v, ix.to(torch.int32), r
            tensors[f"{i}.m"] = m.reshape(1)
        atomic_write(path, lambda p: save_file(tensors, str(p)))

    @classmethod
    def load(cls, path: Path, n: int) -> TeacherCache | None:
        from safetensors.torch import load_file

        try:
            t = load_file(str(path))
        except Exception:  # noqa: BLE001 - a damaged cache is simply recomputed
            return None
        if len(t) != 4 * n:
            return None
        return cls([t[f"{i}.v"] for i in range(n)], [t[f"{i}.i"].long() for i in range(n)],
                   [t[f"{i}.r"] for i in range(n)], [t[f"{i}.m"][0] for i in range(n)])

    def to(self, device: torch.device | str) -> TeacherCache:
        """The same cache on `device`. A cache read from disk is on the CPU, and the loss
        gathers the student's log-probs with its indices, so it must sit where the model runs."""
        return TeacherCache([v.to(device) for v in self.values],
                            [ix.to(device) for ix in self.indices],
                            [r.to(device) for r in self.rest], [m.to(device) for m in self.margins])


def topk_with_rest(logp: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(values, indices, log remaining mass) of a (T, V) log-distribution."""
    v, ix = logp.topk(min(k, logp.shape[-1]), dim=-1)
    rest = torch.log1p(-v.exp().sum(-1).clamp(max=1 - 1e-6))
    return v, ix, rest


def kl_topk(teacher_v: torch.Tensor, teacher_ix: torch.Tensor, teacher_rest: torch.Tensor,
            student_logp: torch.Tensor) -> torch.Tensor:
    """KL(teacher ‖ student) per position, with the teacher's tail lumped into one bucket.

    Exact when k covers the vocabulary; otherwise a lower bound that is tight where the teacher
    is peaked (which is where editing happens).
    """
    s_top = student_logp.gather(-1, teacher_ix)
    s_rest = torch.log1p(-s_top.exp().sum(-1).clamp(max=1 - 1e-6))
    p_top, p_rest = teacher_v.exp(), teacher_rest.exp()
    return (p_top * (teacher_v - s_top)).sum(-1) + p_rest * (teacher_rest - s_rest)


def answer_margin(answer_logp: torch.Tensor, contrast_logp: torch.Tensor) -> torch.Tensor:
    """Mean token log-prob of the answer minus that of the competing answer: the quantity whose
    sign ROME's ES/PS/NS compare (the evaluation scores mean token NLLs)."""
    return answer_logp.mean() - contrast_logp.mean()


def margin_loss(student_margin: torch.Tensor, margin: float, unedited_margin: torch.Tensor,
                keeps_old: bool) -> torch.Tensor:
    """Hinge on the answer margin: the distillation matches distributions, this asks for the
    ranking that ES/PS/NS count.

    Edit questions: the new object must beat the old one by `margin`. Questions whose answer must
    stay (neighbours, no fact, absent fact): the student must keep the unedited model's margin up
    to `margin`. Where the unedited model itself ranked the edit's object first, only that smaller
    margin is asked: the tokens should not fix the model, only leave it alone.
    """
    target = torch.clamp(unedited_margin, max=margin) if keeps_old else torch.tensor(margin)
    return torch.relu(target - student_margin)


class Trainer:
    """Train P-Tokens for one loaded model. `run()` returns the best P-Tokens found."""

    def __init__(self, model: Any, tokenizer: Any, name: str, cfg: TrainConfig,
                 log: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.model, self.tokenizer, self.name, self.cfg = model, tokenizer, name, cfg
        self.log = log or (lambda row: None)
        records = load_training_records(cfg)  # shuffled; validation records first
        self.val_records = records[: cfg.n_val]
        self.train_records = records[cfg.n_val: cfg.n_val + cfg.n_train]
        # Separate streams: the validation pairs do not change with n_train (a learning curve
        # compares runs on the same validation pairs).
        self.val_pairs = build_pairs(self.val_records, cfg, records,
                                     random.Random(f"{cfg.seed}-val"))
        self.train_pairs = build_pairs(self.train_records, cfg, records,
                                       random.Random(f"{cfg.seed}-train"))
        self.teacher_layouts = PromptBuilder(tokenizer)
        self.device = model.device  # where the teacher's distributions are kept for the loss
        self._demos: DemoStore | None = None
        self._demos_digest: str | None = None
        self._chat_frame: tuple[list[int], list[int]] | None = None

    # ---- teacher ----------------------------------------------------------------------------
    def _teacher_mode(self, p: Pair) -> Mode:
        """Empty edits and absent facts: the unedited model. Neighbour questions (also inside
        distractor pairs): `neighbour_teacher`. Edit and paraphrase questions: `edit_teacher`."""
        if p.kind in ("empty", "absent"):
            return Mode.NONE
        if "neighbour" in (p.kind, p.asks):
            return Mode.NONE if self.cfg.neighbour_teacher == "unedited" else Mode.IKE
        return Mode.PROMPT if self.cfg.edit_teacher == "prompt" else Mode.IKE

    def _items(self, layouts: Any, mode: Mode, pairs: Sequence[Pair]) -> list[ScoreItem]:
        """The pairs' questions (with the chat template's tail in chat pairs) and answers, laid
        out as `PromptBuilder.build` lays them out: what training scores is what `ask` sends."""
        edited = mode is not Mode.NONE
        return [ScoreItem(question=layouts.text_ids(layouts.question_text(mode, p.question,
                                                                          edited))
                          + (self._frame(layouts, p.chat)[1]),
                          targets=[layouts.target_ids(p.answer, chat=p.chat)]) for p in pairs]

    def _frame(self, layouts: Any, chat: bool) -> tuple[list[int], list[int]]:
        """Ids before the context and after the question: BOS inline; the chat template's head
        (its default system turn included) and tail (the assistant's turn opened) in chat."""
        if not chat:
            return list(layouts.bos), []
        if self._chat_frame is None:  # the template renders the same for every pair: once
            self._chat_frame = layouts.frame(True)
        return self._chat_frame

    def _contrast_ids(self, layouts: Any, p: Pair) -> list[int]:
        return layouts.target_ids(p.contrast or "", chat=p.chat)

    def _cache_path(self, pairs: Sequence[Pair]) -> Path:
        if self._demos_digest is None:
            self._demos_digest = file_digest(self.cfg.demos or default_train_file())
        key = teacher_cache_key(
            self.cfg, pairs,
            base_model=fingerprint(self.model, self.tokenizer, self.name).model_dump_json(),
            demos_digest=self._demos_digest)
        return cache_dir() / "teacher" / f"{key}.safetensors"

    @torch.no_grad()
    def teacher(self, pairs: Sequence[Pair]) -> TeacherCache:
        """Teacher distributions for `pairs`, from the disk cache or computed once."""
        path = self._cache_path(pairs)
        cached = TeacherCache.load(path, len(pairs))
        if cached is not None:
            return cached.to(self.device)
        if self._demos is None:
            self._demos = (DemoStore.from_file(self.cfg.demos) if self.cfg.demos
                           else DemoStore.default())
        out: list[Any] = [None] * len(pairs)
        lay = self.teacher_layouts
        clean = self.cfg.distractor_teacher == "clean"
        teacher_pairs = [p.model_copy(update={"distractors": []}) if clean else p for p in pairs]
        trees = []
        for (_, fact, dis, chat), idx in _groups(teacher_pairs, range(len(pairs))).items():
            by_mode: dict[Mode, list[int]] = {}
            for i in idx:
                by_mode.setdefault(self._teacher_mode(pairs[i]), []).append(i)
            for mode, ids in by_mode.items():
                demos = (self._demos.retrieve(fact, exclude=[pairs[ids[0]].case_id]).text
                         if mode is Mode.IKE else "")
                ctx, _ = lay.context(mode, fact if mode is not Mode.NONE else None, dis, demos)
                trees.append((self._frame(lay, chat)[0] + ctx,
                              self._items(lay, mode, [pairs[i] for i in ids]), ids))
        for run in forests(trees, self.cfg.forest_tokens):
            for (_, _, ids), dists in zip(run, packed_logprobs_many(
                    self.model, None, [(pre, items) for pre, items, _ in run])):
                for i, d in zip(ids, dists):
                    out[i] = topk_with_rest(d[0], self.cfg.topk)
        margins = self._unedited_margins(pairs)
        cache = TeacherCache([o[0].half().float() for o in out], [o[1] for o in out],
                             [o[2] for o in out], margins)
        cache.save(path)
        return cache.to(self.device)

    def _unedited_margins(self, pairs: Sequence[Pair]) -> list[torch.Tensor]:
        """`answer_margin` under the unedited model (the question alone) for the pairs that must
        keep their answer and have a competing one; NaN for the others."""
        lay = self.teacher_layouts
        margins = [torch.tensor(float("nan")) for _ in pairs]
        wanted = [i for i, p in enumerate(pairs) if p.contrast is not None and p.keeps_old_answer]
        step = max(1, self.cfg.forest_tokens // 32)  # questions are short: ~32 tokens a branch
        by_chat = [[i for i in wanted if pairs[i].chat == c] for c in (False, True)]
        for ids in (b[s: s + step] for b in by_chat for s in range(0, len(b), step)):
            items = self._items(lay, Mode.NONE, [pairs[i] for i in ids])
            for i, item in zip(ids, items):
                item.targets.append(self._contrast_ids(lay, pairs[i]))
            head = self._frame(lay, pairs[ids[0]].chat)[0]
            [dists] = packed_logprobs_many(self.model, None, [(head, items)])
            for i, item, (a, c) in zip(ids, items, dists):
                margins[i] = answer_margin(target_logprobs(a, item.targets[0]),
                                           target_logprobs(c, item.targets[1]))
        return margins

    # ---- student ----------------------------------------------------------------------------
    def student_loss(self, pt: PTokens, pairs: Sequence[Pair], teacher: TeacherCache,
                     idx: Sequence[int]) -> tuple[torch.Tensor, dict[str, float]]:
        """Weighted mean KL over the pairs `idx` (grad flows to the P-Token rows only)."""
        total, weight_sum, per_kind = self._loss_sum(pt, pairs, teacher, idx)
        return total / max(weight_sum, 1e-9), {k: sum(v) / len(v) for k, v in per_kind.items()}

    def _weight(self, pairs: Sequence[Pair], idx: Sequence[int]) -> float:
        return sum(self.cfg.weights.get(pairs[i].kind, 1.0) for i in idx)

    def _loss_sum(self, pt: PTokens, pairs: Sequence[Pair], teacher: TeacherCache,
                  idx: Sequence[int]) -> tuple[torch.Tensor, float, dict[str, list[float]]]:
        """Weighted sum of the per-pair losses, the weight sum and the losses by kind.

        The pairs of one context are one packed tree; the trees go through in forests of at most
        `forest_tokens` tokens (one forward each)."""
        cfg = self.cfg
        total, weight_sum, per_kind = torch.zeros(()), 0.0, {}
        trees = self.student_trees(pt, pairs, idx)
        for run in forests(trees, cfg.forest_tokens):
            outs = packed_logprobs_many(self.model, pt, [(pre, items) for pre, items, _ in run])
            for (_, items, chosen), dists in zip(run, outs):
                for i, item, d in zip(chosen, items, dists):
                    kl = kl_topk(teacher.values[i], teacher.indices[i], teacher.rest[i],
                                 d[0]).mean()
                    w = cfg.weights.get(pairs[i].kind, 1.0)
                    if cfg.ce_weight and pairs[i].kind in cfg.ce_kinds:
                        # The teacher (IKE on a 135M model) often fails to flip the answer; a
                        # small gold-answer term lets the student beat it, as the paper's
                        # students did.
                        kl = kl - cfg.ce_weight * target_logprobs(d[0], item.targets[0]).mean()
                    if len(d) > 1:
                        kl = kl + cfg.margin_weight * margin_loss(
                            answer_margin(target_logprobs(d[0], item.targets[0]),
                                          target_logprobs(d[1], item.targets[1])),
                            cfg.margin, teacher.margins[i], pairs[i].keeps_old_answer)
                    total = total + w * kl
                    weight_sum += w
                    per_kind.setdefault(pairs[i].kind, []).append(float(kl.detach()))
        return total, weight_sum, per_kind

    def student_trees(self, pt: PTokens, pairs: Sequence[Pair], idx: Sequence[int]
                      ) -> list[tuple[list[int], list[ScoreItem], list[int]]]:
        """(prefix, items, pair indices) per shared context, under the P-Token layout: prefix +
        item.question is exactly the prompt `PromptBuilder.build` makes for `ask`; item.targets
        are the answer (and the margin's competing answer where it applies)."""
        lay = PromptBuilder(self.tokenizer, pt)
        trees = []
        for (_, fact, dis, chat), chosen in _groups(pairs, idx).items():
            ctx, _ = lay.context(Mode.PTOKENS, "" if fact is None else fact, dis)
            items = self._items(lay, Mode.PTOKENS, [pairs[i] for i in chosen])
            for i, item in zip(chosen, items):
                if self._margin_applies(pairs[i]):
                    item.targets.append(self._contrast_ids(lay, pairs[i]))
            trees.append((self._frame(lay, chat)[0] + ctx, items, chosen))
        return trees

    def _margin_applies(self, p: Pair) -> bool:
        return bool(self.cfg.margin_weight) and p.contrast is not None and \
            p.kind in self.cfg.margin_kinds

    def _batches(self, epoch: int) -> list[list[int]]:
        by_record: dict[int, list[int]] = {}
        for i, p in enumerate(self.train_pairs):
            by_record.setdefault(p.record, []).append(i)
        recs = list(by_record)
        random.Random(f"{self.cfg.seed}-{epoch}").shuffle(recs)
        b = self.cfg.batch_size
        return [[i for r in recs[s: s + b] for i in by_record[r]] for s in range(0, len(recs), b)]

    @torch.no_grad()
    def validate(self, pt: PTokens, teacher: TeacherCache) -> tuple[float, dict[str, float]]:
        loss, kinds = self.student_loss(pt, self.val_pairs, teacher, range(len(self.val_pairs)))
        return float(loss), kinds

    @torch.no_grad()
    def val_scores(self, pt: PTokens) -> dict[str, float]:
        """ROME-style ES/PS/NS/S (in %) of the validation records under the P-Token layout.

        Scored by `editkit eval`'s ROME CounterFact task (same scorer, per-record metrics and
        aggregation), here on the EasyEdit records (one paraphrase and one neighbour each), so it
        tracks the real metric cheaply during training rather than replacing it.
        """
        from .eval.scorer import Scorer
        from .eval.tasks.counterfact_rome import CounterFactRomeTask
        from .layouts import PromptBuilder

        task = CounterFactRomeTask()
        scorer = Scorer(self.model, PromptBuilder(self.tokenizer, pt), pt)
        rows = [task.score_record(scorer, Mode.PTOKENS, r.fact, task.probes_from_easyedit(r))
                for r in self.val_records]
        values = task.aggregate(rows)
        return {k: values[k].value for k in ("ES", "PS", "NS", "S")}

    # ---- loop -------------------------------------------------------------------------------
    def run(self, out: str | os.PathLike[str], *, resume: bool = False,
            stop_after_steps: int | None = None) -> PTokens:
        """Train; validate at each epoch's end and every `eval_every` records; checkpoint at each
        validation under out/checkpoint; keep the best validation (`select_by`) in out/.

        A resumed run skips the batches its checkpoint had done, so it ends where an
        uninterrupted run ends. `stop_after_steps` ends the call after that many optimiser steps
        without saving, as a kill would (used to test `resume`).
        """
        from accelerate import Accelerator

        cfg, out = self.cfg, Path(out)
        ckpt = out / "checkpoint"
        accel = Accelerator(cpu=self.model.device.type == "cpu")
        # Data parallel (`accelerate launch` / torchrun): process r owns the training records
        # with index % world == r, computes (and caches) only their teacher, and the gradients
        # of each step are summed over processes. The global batches are the same as in one
        # process, so the result is the same up to float rounding.
        world, rank = accel.num_processes, accel.process_index
        mine = [i for i, p in enumerate(self.train_pairs) if p.record % world == rank]
        t0 = time.perf_counter()
        local = self.teacher([self.train_pairs[i] for i in mine])
        teacher_train = _scatter(local, mine, len(self.train_pairs))
        teacher_val = self.teacher(self.val_pairs)  # small: every process has all of it
        teacher_s = time.perf_counter() - t0
        accel.wait_for_everyone()
        log = self.log if accel.is_main_process else (lambda row: None)
        # epoch: epochs finished; batch: batches done in the next one; best: the selection key
        state: dict[str, Any] = {"epoch": 0, "batch": 0, "records_seen": 0, "best": None,
                                 "bad_evals": 0, "history": [], "steps": 0}
        if resume and (ckpt / STATE_NAME).is_file():
            pt = PTokens.from_pretrained(ckpt, self.model, self.tokenizer, name=self.name)
            state.update(json.loads((ckpt / STATE_NAME).read_text()))
            if "bad_evals" not in state or not isinstance(state["best"], list | None):
                raise InvalidInputError(
                    f"{ckpt} was written by an older editkit (per-epoch checkpoints); it cannot "
                    "be resumed by this one. Train again without --resume.")
        elif cfg.init_from is not None:
            pt = PTokens.from_pretrained(cfg.init_from, self.model, self.tokenizer,
                                         name=self.name)
            if pt.m != cfg.m:
                raise InvalidInputError(f"init_from {cfg.init_from} holds m={pt.m} tokens, the "
                                        f"config asks for m={cfg.m}.")
        else:
            pt = PTokens.create(self.model, self.tokenizer, name=self.name, m=cfg.m,
                                init=cfg.init, init_text=cfg.init_text, seed=cfg.seed)
        pt.layer.weight.requires_grad_(True)
        opt = torch.optim.AdamW(pt.parameters(), lr=cfg.lr, betas=cfg.betas,
                                weight_decay=cfg.weight_decay)
        if resume and (ckpt / OPTIM_NAME).is_file():
            _load_optimizer(opt, ckpt / OPTIM_NAME, state)
        opt = accel.prepare(opt)

        def validate_and_keep(losses: list[float]) -> None:
            """One validation: log it, save the P-Tokens if they are the best so far, and write
            the checkpoint (rows, optimiser, state) that `resume` continues from."""
            val, kinds = self.validate(pt, teacher_val)
            scores = self.val_scores(pt)
            key = [scores["S"], -val] if cfg.select_by == "val_s" else [-val]
            improved = state["best"] is None or key > state["best"]
            row = {"epoch": state["epoch"] + (state["batch"] > 0), "step": state["steps"],
                   "records_seen": state["records_seen"], "val_kl": val}
            if losses:
                row["train_kl"] = sum(losses) / len(losses)
            state["history"].append({**row, "val_kinds": kinds, "val_scores": scores,
                                     "seconds": round(time.perf_counter() - t0, 1)})
            state.update(best=key if improved else state["best"],
                         bad_evals=0 if improved else state["bad_evals"] + 1)
            log({**row, **{f"val_{k}": v for k, v in kinds.items()},
                 **{f"val_{k}": v for k, v in scores.items()}})
            if accel.is_main_process:
                if improved:
                    self._save_final(pt, out, state, teacher_s, t0)
                pt.save_pretrained(ckpt)
                _save_optimizer(opt, ckpt / OPTIM_NAME)
                atomic_write(ckpt / STATE_NAME,
                             lambda p: p.write_text(json.dumps(state, indent=1)))
            accel.wait_for_everyone()

        if not state["history"]:
            validate_and_keep([])  # the initial rows: the reference every step is measured from
        every = math.ceil(cfg.eval_every / cfg.batch_size) if cfg.eval_every else None
        taken = 0
        while state["epoch"] < cfg.epochs and state["bad_evals"] < cfg.patience:
            batches = self._batches(state["epoch"] + 1)
            losses: list[float] = []
            while state["batch"] < len(batches) and state["bad_evals"] < cfg.patience:
                batch = batches[state["batch"]]
                owned = [i for i in batch if self.train_pairs[i].record % world == rank]
                total, _, _ = self._loss_sum(pt, self.train_pairs, teacher_train, owned)
                if not owned:  # this rank got no record of the batch: contribute a zero gradient
                    total = pt.layer.weight.sum() * 0.0
                loss = total / self._weight(self.train_pairs, batch)  # global-batch mean
                opt.zero_grad()
                accel.backward(loss)
                if world > 1:
                    grad = pt.layer.weight.grad
                    pt.layer.weight.grad = accel.reduce(
                        grad if grad is not None else torch.zeros_like(pt.layer.weight), "sum")
                    loss = accel.reduce(loss.detach(), "sum")
                opt.step()
                losses.append(float(loss.detach()))
                state["steps"] += 1
                state["batch"] += 1
                state["records_seen"] += len({self.train_pairs[i].record for i in batch})
                taken += 1
                if stop_after_steps is not None and taken >= stop_after_steps:
                    return pt  # simulated interruption (tests): no checkpoint for these steps
                if state["batch"] == len(batches):
                    state.update(epoch=state["epoch"] + 1, batch=0)
                    validate_and_keep(losses)
                    break
                if every and state["batch"] % every == 0:
                    validate_and_keep(losses)
                    losses = []
        return PTokens.from_pretrained(out, self.model, self.tokenizer, name=self.name)

    def _save_final(self, pt: PTokens, out: Path, state: dict[str, Any], teacher_s: float,
                    t0: float) -> None:
        cfg, last = self.cfg, state["history"][-1]
        objective = (f"KL(teacher || student) at answer positions, T=1, teacher top-k {cfg.topk}"
                     " + tail")
        if cfg.margin_weight:
            objective += f" + {cfg.margin_weight} x answer-margin hinge ({cfg.margin} nats)"
        pt.config.trained = True
        pt.config.training = {
            "objective": objective,
            "config": json.loads(cfg.model_dump_json()),
            "train_records": len(self.train_records), "val_records": len(self.val_records),
            "train_pairs": len(self.train_pairs), "val_pairs": len(self.val_pairs),
            "best_epoch": round(last["records_seen"] / len(self.train_records), 3),
            "best_step": last["step"], "best_records_seen": last["records_seen"],
            "best_val_kl": last["val_kl"], "best_val_scores": last["val_scores"],
            "selected_by": cfg.select_by,
            "teacher_seconds": round(teacher_s, 1),
            "epoch_seconds": _epoch_seconds(state["history"], len(self.train_records)),
            "seconds": round(time.perf_counter() - t0, 1),
            # where it ran and on which weights: tokens trained on a quantized model ship apart
            "device": str(self.model.device),
            "quantization": ("8bit" if getattr(self.model, "is_loaded_in_8bit", False) else
                             "4bit" if getattr(self.model, "is_loaded_in_4bit", False) else
                             getattr(self.model.config, "editkit_simulated_quantization", None)),
            "quantization_simulated": bool(getattr(self.model.config,
                                                   "editkit_simulated_quantization", None)),
            "init_from": cfg.init_from,
        }
        pt.save_pretrained(out)


def _scatter(local: TeacherCache, positions: Sequence[int], n: int) -> TeacherCache:
    """A cache indexed like all n pairs, holding entries only at `positions` (this shard's)."""
    full: list[list[Any]] = [[None] * n for _ in range(4)]
    for j, i in enumerate(positions):
        full[0][i], full[1][i], full[2][i] = local.values[j], local.indices[j], local.rest[j]
        full[3][i] = local.margins[j]
    return TeacherCache(*full)


def _epoch_seconds(history: list[dict[str, Any]], n_train: int) -> float | None:
    """Wall time of one epoch (training and its validations), from the validations' time stamps
    (the teacher and the first validation excluded); None before any training step."""
    first, last = history[0], history[-1]
    seen = last["records_seen"] - first["records_seen"]
    if not seen:
        return None
    return round((last["seconds"] - first["seconds"]) / seen * n_train, 1)


def _save_optimizer(opt: Any, path: Path) -> None:
    """AdamW moments as safetensors (no pickle) plus the step count in the tensor names."""
    from safetensors.torch import save_file

    inner = getattr(opt, "optimizer", opt)
    tensors = {}
    for i, st in enumerate(inner.state.values()):
        for key in ("exp_avg", "exp_avg_sq", "step"):
            if key in st:
                tensors[f"{i}.{key}"] = torch.as_tensor(st[key]).detach().clone().float()
    atomic_write(path, lambda p: save_file(tensors, str(p)))


def _load_optimizer(opt: Any, path: Path, state: dict[str, Any]) -> None:
    from safetensors.torch import load_file

    t = load_file(str(path))
    for i, p in enumerate(opt.param_groups[0]["params"]):
        if f"{i}.exp_avg" in t:
            opt.state[p] = {"exp_avg": t[f"{i}.exp_avg"], "exp_avg_sq": t[f"{i}.exp_avg_sq"],
                            "step": t[f"{i}.step"]}
