"""Facts that change: which stored edits a new edit supersedes, and how forgetting undoes it.

An app edits a fact again because the fact changed (a price drops, a clinic gets a new head).
The newer edit *supersedes* the older one: the older stays in history, marked superseded (by which
edit, when), and retrieval never serves it again, neither as the fact nor as a distractor.

"The same thing" (a *slot*) is decided in this order:
1. **A key** (`edit(fact, key="warehouse/ghent/shipping")`): edits with equal keys share a slot;
   a keyed edit is never matched any other way, and never retires an unkeyed one.
2. **Subject and relation**, when both edits carry them: equal (case and spacing aside) = one
   slot, otherwise not.
3. **The slot judge**, for the rest: the shipped `LearnedSlotJudge` (`slot.py`) reads the new
   fact against the live edits nearest to it by cosine and says whether each states a value for
   the same subject and relation. Its threshold is set for precision: a wrong "yes" retires a
   true fact, a wrong "no" leaves both live (as before supersession existed).

Within one `add` of several facts, a later fact supersedes an earlier one of the same call by key
or subject/relation only (the judge compares a new fact with what was stored before the call).

What happens to a match is the update policy (`on_update`): `latest` (default) supersedes it,
`keep-both` stores the new edit beside it, `refuse` raises `EditConflictError` naming it and
stores nothing. Forgetting undoes supersession as if the forgotten edit had never been made: the
edits it retired are live again (or, when it was itself superseded, they pass to its successor).

Backends (`sqlite.py`, `postgres.py`) run this inside their write transaction, so no reader ever
sees both values of a slot live, or neither.
"""
from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ..errors import EditConflictError, InvalidInputError
from ..records import Edit

if TYPE_CHECKING:
    from .slot import SlotJudge

OnUpdate = Literal["latest", "keep-both", "refuse"]
UPDATE_POLICIES: tuple[str, ...] = ("latest", "keep-both", "refuse")
DEFAULT_ON_UPDATE: OnUpdate = "latest"
SLOT_CANDIDATES = 8  # live edits, nearest by cosine, that the slot judge reads per new edit
SLOT_MIN_COSINE = 0.5  # below this two facts are not about one slot (the judge is not asked)

SlotJudgeSetting = Any  # "learned" (the shipped judge), "off", or a SlotJudge of your own


def check_on_update(value: Any) -> OnUpdate:
    """Validate an update policy name."""
    if value not in UPDATE_POLICIES:
        raise InvalidInputError(f"on_update must be one of {', '.join(UPDATE_POLICIES)}; got "
                                f"{value!r}.")
    return value  # type: ignore[no-any-return]


def slot_judge_for(embedder: Any, setting: SlotJudgeSetting) -> SlotJudge | None:
    """The judge a memory uses for keyless, triple-less edits: the one shipped for its embedder
    ('learned'; None where none ships), none ('off'), or the caller's own."""
    if setting == "off" or setting is None:
        return None
    from .slot import SlotJudge, shipped_slot_judge  # loaded at the first judged edit

    if setting == "learned":
        name = getattr(embedder, "name", None)
        return shipped_slot_judge(name) if isinstance(name, str) else None
    if not isinstance(setting, SlotJudge):
        raise InvalidInputError("slot_judge must be 'learned', 'off' or an object with "
                                "`threshold` and `probabilities(new, olds)`.")
    return setting


def slot_of(edit: Edit) -> str | None:
    """The deterministic slot of an edit: its key, else its subject and relation; None when it
    has neither (then only the judge can match it)."""
    if edit.key is not None:
        return "key:" + edit.key
    if edit.subject and edit.relation:
        return "sr:" + _norm(edit.subject) + "\x1f" + _norm(edit.relation)
    return None


def _norm(text: str) -> str:
    return " ".join(text.casefold().split())


def check_as_of(value: Any) -> float:
    """A point in time as seconds since the epoch: a datetime (naive = local time, as
    `datetime.timestamp` reads it) or a number."""
    if isinstance(value, _dt.datetime):
        return value.timestamp()
    if isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value):
        return float(value)
    raise InvalidInputError(f"as_of must be a datetime or seconds since the epoch, got "
                            f"{type(value).__name__}.")


@dataclass
class Lookup:
    """What a backend found for one new edit inside its write transaction: the live edits of its
    deterministic slot, and (when the judge is asked) the nearest live edits with their cosine."""

    slot_matches: list[Edit] = field(default_factory=list)
    near: list[tuple[Edit, float]] = field(default_factory=list)


@dataclass
class Plan:
    """The new edits (their `supersedes` filled) and the retirements: (old id, new id, at)."""

    edits: list[Edit]
    retire: list[tuple[str, str, float]]


def plan_updates(edits: Sequence[Edit], vectors: np.ndarray, on_update: OnUpdate,
                 judge: SlotJudge | None,
                 lookup: Callable[[Edit, np.ndarray, bool], Lookup]) -> Plan:
    """Decide, for each new edit in order, which live edits it supersedes.

    lookup(edit, vector, near_wanted) is the backend's query (inside its transaction). Raises
    `EditConflictError` under `refuse` when any new edit has a match (nothing is written then).
    """
    on_update = check_on_update(on_update)
    if on_update == "keep-both":  # nothing to decide, nothing to look up (bulk loads)
        return Plan(list(edits), [])
    out: list[Edit] = []
    retire: list[tuple[str, str, float]] = []
    retired: set[str] = set()
    for e, v in zip(edits, vectors):
        slot = slot_of(e)
        found = lookup(e, v, judge is not None and e.key is None)
        olds = [o for o in found.slot_matches if o.id not in retired]
        olds += [b for b in out if slot is not None and slot_of(b) == slot
                 and b.id not in retired]
        if judge is not None and e.key is None:
            olds += _judged(e, found.near, judge, {o.id for o in olds} | retired)
        if olds and on_update == "refuse":
            first = olds[0]
            raise EditConflictError(
                f"The fact {e.text!r} gives a new value for what the stored edit {first.id} "
                f"({first.text!r}) says, and on_update='refuse'. Nothing was stored; forget "
                f"{first.id} first, or edit with on_update='latest' to replace it (or "
                "'keep-both').", conflicts=olds)
        for o in olds:
            retired.add(o.id)
            retire.append((o.id, e.id, e.created_at))
        out.append(e.model_copy(update={"supersedes": tuple(o.id for o in olds)}))
    return Plan(out, retire)


def _judged(new: Edit, near: list[tuple[Edit, float]], judge: SlotJudge,
            skip: set[str]) -> list[Edit]:
    """The nearby live edits the judge finds to be the same slot as `new`. Keyed edits and edits
    whose subject/relation already decided (both triples given) are not the judge's."""
    new_has_slot = slot_of(new) is not None
    cands = [(o, c) for o, c in near
             if o.id not in skip and o.key is None and c >= SLOT_MIN_COSINE
             and not (new_has_slot and slot_of(o) is not None)]
    if not cands:
        return []
    probs = judge.probabilities(new.text, [(o.text, c) for o, c in cands])
    return [o for (o, _), p in zip(cands, probs) if p >= judge.threshold]


def edits_as_of(memory: Any, namespace: str | None, as_of: Any) -> list[Edit]:
    """The edits of a memory (one namespace if given) that were live at `as_of`, from its
    history: what `EditableLM.edits(as_of=)` and `editkit edits --as-of` list."""
    t = check_as_of(as_of)
    return [e for e in memory.edits(namespace, history=True) if e.live_at(t)]


def with_supersedes(edits: Sequence[Edit]) -> list[Edit]:
    """History rows with each edit's `supersedes` filled from the others' `superseded_by`."""
    by: dict[str, list[str]] = {}
    for e in edits:
        if e.superseded_by is not None:
            by.setdefault(e.superseded_by, []).append(e.id)
    return [e.model_copy(update={"supersedes": tuple(by[e.id])}) if e.id in by else e
            for e in edits]
