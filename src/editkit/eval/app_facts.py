"""Invented app-style facts: slots (subject + relation) with three values over time.

What: `app_facts(split)` builds the facts applications keep about their own world (prices, people
in roles, addresses, opening hours, shipping times, versions, policies, capacities, launch dates,
contacts) about entities with invented names ("the Kelvara X2 phone"). Each `AppFact` carries three
distinct values (first edit, update, second update), statement templates, a direct question,
reworded questions and near-miss questions about a sibling entity that is not stored.

Why: an evaluation of fact updates needs facts a model cannot already know, and a relevance gate
and a "same slot" judge need hard negatives (the same family, a sibling entity). Deterministic and
model-free: a seeded `random.Random`, never the global RNG or hash ordering, so every machine and
every PYTHONHASHSEED gives the same facts. The split is decided by a SHA-256 of the invented name,
so no entity name of one split occurs in another.
"""
from __future__ import annotations

import hashlib
import random
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal, NamedTuple

Split = Literal["train", "val", "test"]
SPLITS: tuple[Split, ...] = ("train", "val", "test")
PER_FAMILY: dict[str, int] = {"train": 48, "val": 16, "test": 16}  # facts per family and split
_SEED = 20_240_611


@dataclass(frozen=True)
class AppFact:
    """One slot of an application's world and the three values it takes over time."""

    family: str                  # "price", "role", ... (see FAMILIES)
    key: str                     # stable slot key, "family/slug-of-subject"
    subject: str                 # "the Kelvara X2 phone"
    relation: str                # the family's relation, specific where it has several kinds
    values: tuple[str, ...]      # 3 distinct values; none is a substring of another
    statements: tuple[str, ...]  # templates with "{value}"
    questions: tuple[str, ...]   # direct questions answered by the value
    rewordings: tuple[str, ...]  # the same question in other words
    near_miss: tuple[str, ...]   # the same question about a sibling entity that is not stored

    def statement(self, i: int, form: int = 0) -> str:
        """`statements[form]` stating `values[i]`."""
        return self.statements[form].replace("{value}", self.values[i])


# --- value generators: (rng, stem) -> three values of one kind ---------------------------------
_FIRST = ("Amara", "Tomasz", "Leila", "Kenji", "Ingrid", "Mateo", "Priya", "Dmitri", "Soraya",
          "Elias", "Nadia", "Ruben", "Hana", "Oskar", "Yara", "Felix", "Imani", "Lucas", "Mira",
          "Tariq", "Beatriz", "Chidi", "Astrid", "Rafael")
_LAST = ("Okafor", "Lindqvist", "Haddad", "Moreau", "Tanaka", "Brennan", "Castillo", "Novak",
         "Achebe", "Sorensen", "Iyer", "Kowalski", "Mendes", "Ferreira", "Nakamura", "Vance",
         "Holm", "Quispe", "Delacroix", "Mwangi", "Petrov", "Salazar")
_STREETS = ("Alder", "Harbor", "Linden", "Quarry", "Birch", "Orchard", "Kestrel", "Willow",
            "Foundry", "Juniper", "Beacon", "Chestnut", "Granite", "Meadow", "Tanner")
_SUFFIXES = ("Street", "Avenue", "Road", "Lane", "Boulevard")
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December")
Gen = Callable[[random.Random, str], tuple[str, ...]]


def _three(one: Callable[[random.Random, str], str]) -> Gen:
    """A generator of three independent draws of `one`."""
    return lambda rng, stem: tuple(one(rng, stem) for _ in range(3))


def _days(choices: tuple[int, ...], unit: str = "days") -> Gen:
    return _three(lambda rng, _: f"{rng.choice(choices)} {unit}")


def _versions(rng: random.Random, _: str) -> tuple[str, ...]:
    """Three ascending semantic versions (an update moves a version forward)."""
    major, minor, patch = rng.randint(1, 9), rng.randint(0, 9), rng.randint(0, 9)
    out = []
    for _i in range(3):
        out.append(f"{major}.{minor}.{patch}")
        if rng.random() < 0.5:
            patch += rng.randint(1, 3)
        else:
            minor, patch = minor + 1, 0
    return tuple(out)


_dollars = _three(lambda rng, _: f"{rng.randrange(19, 2000, 10)} dollars")
_monthly = _three(lambda rng, _: f"{rng.randint(3, 60)} dollars a month")
_person = _three(lambda rng, _: f"{rng.choice(_FIRST)} {rng.choice(_LAST)}")
_doctor = _three(lambda rng, _: f"Dr. {rng.choice(_FIRST)} {rng.choice(_LAST)}")
_address = _three(lambda rng, _: f"{rng.randint(2, 980)} {rng.choice(_STREETS)} "
                                 f"{rng.choice(_SUFFIXES)}")
_hours = _three(lambda rng, _: f"{rng.randint(6, 11)} am to {rng.randint(2, 11)} pm")
_seats = _three(lambda rng, _: f"{rng.randint(4, 200) * 10} seats")
_spaces = _three(lambda rng, _: f"{rng.randint(30, 900)} parking spaces")
_date = _three(lambda rng, _: f"{rng.choice(_MONTHS)} {rng.randint(1, 28)}, "
                              f"{rng.randint(2026, 2029)}")
_email = _three(lambda rng, stem: f"{rng.choice(('support', 'help', 'care', 'service', 'hello'))}"
                                  f"@{stem.lower()}{rng.choice(('.com', '.io', '.net', '.org'))}")
_phone = _three(lambda rng, _: f"+1 {rng.randint(201, 989)}-555-{rng.randint(1000, 9999)}")


# --- kinds: a subject pattern, the placeholder varied for siblings, values and templates ---------
class _Kind(NamedTuple):
    family: str
    relation: str
    pattern: str                 # {stem} {item} and the _POOLS names: {code} {city} {street} ...
    vary: str                    # the placeholder a sibling entity changes
    values: Gen
    statements: tuple[str, ...]  # {S}/{s}: subject (capitalised/as is), {r}: relation, {value}
    questions: tuple[str, ...]
    rewordings: tuple[str, ...]
    items: tuple[str, ...] = ("",)


def _k(family: str, relation: str, pattern: str, vary: str, values: Gen, statements: str,
       questions: str, rewordings: str, items: str = "") -> _Kind:
    """A kind from "|"-separated template lists (the table below stays one screen long)."""
    return _Kind(family, relation, pattern, vary, values, tuple(statements.split("|")),
                 tuple(questions.split("|")), tuple(rewordings.split("|")),
                 tuple(items.split("|")))


_ROLE = ("The {r} of {s} is {value}.|{value} is the {r} of {s}.|{S} has {value} as its {r}.",
         "Who is the {r} of {s}?",
         "Who serves as {r} at {s}?|Which person holds the post of {r} at {s}?")
_ADDRESS = ("{S} is located at {value}.|The address of {s} is {value}."
            "|You can find {s} at {value}.",
            "What is the address of {s}?",
            "Where is {s} located?|At which street address can {s} be found?")
_KINDS: tuple[_Kind, ...] = (
    _k("price", "price", "the {stem} {code} {item}", "code", _dollars,
       "{S} costs {value}.|The price of {s} is {value}.|{S} sells for {value}.",
       "How much does {s} cost?", "What is the price of {s}?|What do I pay for {s}?",
       "phone|laptop|smartwatch|e-bike|espresso machine|drone|tablet"),
    _k("price", "monthly fee", "the {stem} {tier} plan", "tier", _monthly,
       "{S} costs {value}.|Subscribing to {s} costs {value}.", "How much does {s} cost per month?",
       "What is the monthly fee for {s}?|What is the subscription price of {s}?"),
    _k("role", "medical director", "the {stem} Clinic in {city}", "city", _doctor, *_ROLE),
    _k("role", "head chef", "the {stem} Bistro in {city}", "city", _person, *_ROLE),
    _k("role", "branch manager", "the {city} branch of {stem} Bank", "city", _person, *_ROLE),
    _k("role", "principal", "the {stem} Academy in {city}", "city", _person, *_ROLE),
    _k("address", "address", "the {city} office of {stem} {item}", "city", _address, *_ADDRESS,
       "Systems|Logistics|Analytics|Robotics|Media"),
    _k("address", "address", "the {stem} distribution center in {city}", "city", _address,
       *_ADDRESS),
    _k("hours", "opening hours", "the {stem} {item} on {street}", "street", _hours,
       "{S} is open from {value}.|The opening hours of {s} are {value}."
       "|{S} welcomes customers from {value}.", "What are the opening hours of {s}?",
       "When is {s} open?|At what times can customers visit {s}?",
       "Bakery|Pharmacy|Bookshop|Café|Barbershop|Deli"),
    _k("shipping", "shipping time", "the {stem} warehouse in {city}", "city",
       _days(tuple(range(2, 15))),
       "Standard shipping from {s} takes {value}.|Orders sent from {s} arrive within {value}."
       "|Delivery from {s} takes {value}.", "How long does shipping from {s} take?",
       "How many days do orders from {s} need to arrive?"
       "|What is the delivery time for parcels sent from {s}?"),
    _k("version", "latest version", "the {stem} {item} app for {platform}", "platform", _versions,
       "The latest version of {s} is {value}.|{S} is now at version {value}."
       "|The newest release of {s} is version {value}.", "What is the latest version of {s}?",
       "Which version number does the newest release of {s} have?"
       "|What version is {s} currently on?",
       "Notes|Budget|Fitness|Maps|Chat|Recipes|Weather"),
    _k("version", "firmware version", "the {stem} {code} router", "code", _versions,
       "The current firmware version of {s} is {value}.|{S} runs firmware version {value}.",
       "What firmware version does {s} run?",
       "Which firmware release is installed on {s}?|What is the firmware version of {s}?"),
    _k("policy", "return window", "the {stem} store in {city}", "city",
       _days((7, 10, 14, 21, 28, 30, 45, 60, 90)),
       "Items bought at {s} can be returned within {value}.|The return window at {s} is {value}."
       "|{S} accepts returns for {value} after purchase.", "How long is the return window at {s}?",
       "Within how many days can purchases from {s} be returned?"
       "|How long do customers of {s} have to return an item?"),
    _k("policy", "warranty period", "the {stem} {code} {item}", "code",
       _days((6, 12, 18, 24, 36, 48, 60), "months"),
       "{S} comes with a warranty of {value}.|The warranty period of {s} is {value}."
       "|The warranty on {s} lasts {value}.", "How long is the warranty on {s}?",
       "For how many months is {s} covered by warranty?|What warranty period applies to {s}?",
       "dishwasher|washing machine|fridge|air purifier|oven"),
    _k("policy", "free trial", "the {stem} {tier} plan", "tier", _days((3, 5, 7, 10, 14, 30, 60)),
       "{S} includes a free trial of {value}.|The free trial of {s} lasts {value}."
       "|New users can try {s} for free for {value}.", "How long is the free trial of {s}?",
       "For how many days can new users try {s} for free?"
       "|What is the length of the trial period for {s}?"),
    _k("capacity", "seating capacity", "the {stem} {item} in {city}", "city", _seats,
       "{S} has {value}.|The seating capacity of {s} is {value}.|{S} offers {value} in total.",
       "How many seats does {s} have?",
       "What is the seating capacity of {s}?|How many people can sit in {s}?",
       "Theater|Concert Hall|Arena|Cinema|Lecture Hall"),
    _k("capacity", "parking capacity", "the {stem} parking garage on {street}", "street", _spaces,
       "{S} has {value}.|The capacity of {s} is {value}.|{S} provides {value}.",
       "How many parking spaces does {s} have?",
       "How many cars can park in {s}?|What is the capacity of {s}?"),
    _k("launch", "launch date", "the {stem} {code} {item}", "code", _date,
       "{S} launches on {value}.|The launch date of {s} is {value}.|{S} goes on sale on {value}.",
       "When does {s} launch?",
       "On what date will {s} be released?|What is the release date of {s}?",
       "smart speaker|electric scooter|VR headset|robot vacuum|game console"),
    _k("launch", "opening date", "the {stem} Museum in {city}", "city", _date,
       "{S} opens on {value}.|The opening date of {s} is {value}."
       "|{S} will open its doors on {value}.",
       "When does {s} open to the public for the first time?",
       "On what date will {s} open?|What is the opening date of {s}?"),
    _k("contact", "support e-mail address", "the {city} office of {stem} {item}", "city", _email,
       "The support e-mail address of {s} is {value}.|{S} answers support requests at {value}."
       "|Customers can write to {s} at {value}.", "What is the support e-mail address of {s}?",
       "At which e-mail address can {s} be reached?|Where should customers write to contact {s}?",
       "Insurance|Travel|Energy|Legal"),
    _k("contact", "phone number", "the front desk of the {stem} Hotel in {city}", "city", _phone,
       "The phone number of {s} is {value}.|You can call {s} at {value}."
       "|{S} can be reached by phone at {value}.", "What is the phone number of {s}?",
       "Which number should I dial to reach {s}?|How can I call {s}?"),
)
FAMILIES: tuple[str, ...] = tuple(dict.fromkeys(k.family for k in _KINDS))

# sibling pools: no entry is a substring of another, so a sibling never contains the stored name
_POOLS: dict[str, tuple[str, ...]] = {
    "code": tuple(f"{c}{d}" for c in "ACDGKMQRSTVXZ" for d in range(2, 10)),
    "city": ("Denver", "Austin", "Leeds", "Bristol", "Porto", "Lyon", "Graz", "Turin", "Bergen",
             "Tampa", "Dayton", "Halifax", "Perth", "Utrecht", "Cork", "Tucson", "Gdansk", "Ghent"),
    "street": tuple(f"{s} {t}" for s in ("Maple", "Cedar", "Rowan", "Hazel", "Elm", "Poplar")
                    for t in ("Street", "Road", "Avenue")),
    "tier": ("Basic", "Plus", "Pro", "Family", "Business", "Student", "Premium"),
    "platform": ("Android", "iOS", "Windows", "macOS", "Linux"),
}


# --- invented names ------------------------------------------------------------------------------
_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr",
           "gl", "kr", "pl", "tr", "st", "th", "sk", "qu")
_VOWELS = ("a", "e", "i", "o", "u", "ae", "ia", "ou")
_MIDS = ("l", "r", "n", "m", "v", "z", "nd", "rv", "lm", "sk", "th", "x", "lb", "rd", "nt", "sh")
_ENDS = ("a", "o", "is", "ex", "ia", "on", "ix", "ar", "en", "el", "um", "ara", "ine", "ova")


def split_of(stem: str) -> Split:
    """The split an invented name belongs to, from a SHA-256 of it (60/20/20)."""
    bucket = hashlib.sha256(stem.lower().encode("utf-8")).digest()[0] % 5
    return "train" if bucket < 3 else ("val" if bucket == 3 else "test")


@lru_cache(maxsize=1)
def _stems() -> dict[str, tuple[str, ...]]:
    """Invented names per split, enough for every fact; no name contains another."""
    rng = random.Random(_SEED)
    need = {s: PER_FAMILY[s] * len(FAMILIES) for s in SPLITS}
    out: dict[str, list[str]] = {s: [] for s in SPLITS}
    seen: list[str] = []
    while any(len(out[s]) < need[s] for s in SPLITS):
        stem = (rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_MIDS)
                + rng.choice(_ENDS)).capitalize()
        low, split = stem.lower(), split_of(stem)
        if (not 5 <= len(stem) <= 9 or len(out[split]) >= need[split] or re.search(r"(..)\1", low)
                or any(low in other or other in low for other in seen)):
            continue  # too short or long, split full, a stutter ("rarara"), or overlaps a name
        seen.append(low)
        out[split].append(stem)
    return {s: tuple(v) for s, v in out.items()}


def _separable(values: tuple[str, ...]) -> bool:
    """Distinct (case-insensitive) and no value inside another, so "value in answer" is exact."""
    low = [v.lower() for v in values]
    return len(set(low)) == len(low) and not any(
        a in b for i, a in enumerate(low) for j, b in enumerate(low) if i != j)


def _slug(text: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")


def _fill(template: str, subject: str, relation: str) -> str:
    return template.format(s=subject, S=subject[0].upper() + subject[1:], r=relation,
                           value="{value}")


def _make(kind: _Kind, stem: str, rng: random.Random) -> AppFact:
    """One fact of `kind` about the invented `stem`, with two siblings for the near misses."""
    parts = {name: rng.choice(pool) for name, pool in _POOLS.items()}
    parts.update(stem=stem, item=rng.choice(kind.items))
    others = [p for p in _POOLS[kind.vary] if p != parts[kind.vary]]
    if kind.vary == "code":  # a sibling model: same letter, another number (X2 -> X5)
        others = [p for p in others if p[0] == parts["code"][0]]
    sib1, sib2 = rng.sample(others, 2)
    subject = kind.pattern.format(**parts)
    siblings = [kind.pattern.format(**{**parts, kind.vary: s}) for s in (sib1, sib2)]
    questions = tuple(_fill(t, subject, kind.relation) for t in kind.questions)
    rewordings = tuple(_fill(t, subject, kind.relation) for t in kind.rewordings)
    near_miss = (_fill(kind.questions[0], siblings[0], kind.relation),
                 _fill(kind.rewordings[0], siblings[1], kind.relation))
    asked = [q.lower() for q in questions + rewordings + near_miss]
    for _ in range(1000):
        values = kind.values(rng, stem)
        if _separable(values) and not any(v.lower() in q for v in values for q in asked):
            break
    else:
        raise RuntimeError(f"no separable values for {subject!r}")
    name = subject.removeprefix("the ").lower()
    assert _separable(values), values
    assert not any(name in q.lower() for q in near_miss), (subject, near_miss)
    return AppFact(family=kind.family, key=f"{kind.family}/{_slug(name)}", subject=subject,
                   relation=kind.relation, values=values,
                   statements=tuple(_fill(t, subject, kind.relation) for t in kind.statements),
                   questions=questions, rewordings=rewordings, near_miss=near_miss)


@lru_cache(maxsize=len(SPLITS))
def _build(split: Split) -> tuple[AppFact, ...]:
    """All facts of a split, families interleaved so that any prefix covers every family."""
    rng = random.Random(_SEED + 1 + SPLITS.index(split))
    stems = iter(_stems()[split])
    by_family = {f: [k for k in _KINDS if k.family == f] for f in FAMILIES}
    facts = [_make(by_family[f][i % len(by_family[f])], next(stems), rng)
             for i in range(PER_FAMILY[split]) for f in FAMILIES]
    assert len({f.key for f in facts}) == len(facts)
    return tuple(facts)


def app_facts(split: Split, n: int | None = None) -> list[AppFact]:
    """The first `n` facts of `split` (all of it when `n` is None); the same on every call."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    facts = _build(split)
    if n is not None and not 0 <= n <= len(facts):
        raise ValueError(f"n must be between 0 and {len(facts)} for {split!r}, not {n}")
    return list(facts if n is None else facts[:n])


UNRELATED_QUESTIONS: tuple[str, ...] = (
    "What is the capital of France?", "How many legs does a spider have?",
    "Who wrote Romeo and Juliet?", "What is the boiling point of water at sea level?",
    "Which planet is closest to the Sun?", "What is the largest ocean on Earth?",
    "How many days are there in a leap year?", "What language is spoken in Brazil?",
    "Who painted the Mona Lisa?", "What gas do plants absorb from the air?",
    "What is the tallest mountain in the world?", "How many continents are there?",
    "What is the chemical symbol for gold?", "Which animal is known as the king of the jungle?",
    "What is the freezing point of water in Celsius?",
    "Who was the first person to walk on the Moon?",
    "What is the longest river in Africa?", "How many minutes are there in an hour?",
    "What color do you get by mixing blue and yellow?", "What is the capital of Japan?",
    "Which organ pumps blood through the human body?", "What is the square root of 81?",
    "In which country are the pyramids of Giza?", "What do bees make?",
)
