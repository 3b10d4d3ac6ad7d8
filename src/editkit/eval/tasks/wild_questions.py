"""`wild-questions`: CounterFact asked as a user asks, in questions, answered freely and judged.

CounterFact's prompts are sentences to complete ("The mother tongue of Danielle Darrieux is");
users ask questions ("What is the mother tongue of Danielle Darrieux?"), which `ask` lays out in
the chat template. This task asks each ROME CounterFact record through the `wild` task's path
(memory, retrieval + gate, generation to the natural end of the answer, containment of the new
object) with questions written per relation (CounterFact has 34):

- edit question: the relation's first template with the record's subject;
- rephrased question: its second template, worded differently (the paraphrase of the edit);
- unrelated questions: the first template with the record's first two distinct neighbourhood
  subjects: the same relation about another subject, the case where a similar edit
  must stay out of the prompt (locality: the answer equals the unedited model's).

A neighbourhood prompt is a sentence ("Michel Rocard is a native speaker of"); its subject is read
off with CounterFact's own prompt templates (every rewrite prompt of the shipped CounterFact
files, subject cut out; all 3,000 neighbourhood prompts of the test split match one).
"""
from __future__ import annotations

import functools
import json
from typing import Any

from ...data_files import data_file
from ...datasets import RomeCounterFactRecord
from ..registry import register_task
from .wild import WildItem, WildTask

QUESTIONS: dict[str, tuple[str, str]] = {
    "P101": ("What field does {} work in?", "What is {}'s area of expertise?"),
    "P103": ("What is the mother tongue of {}?", "Which language did {} grow up speaking?"),
    "P106": ("What is {}'s profession?", "What does {} do for a living?"),
    "P108": ("Who employs {}?", "Which organisation does {} work for?"),
    "P127": ("Who owns {}?", "Which company is {} owned by?"),
    "P1303": ("What instrument does {} play?", "Which musical instrument is {} known for?"),
    "P131": ("Where is {} located?", "In which region can {} be found?"),
    "P136": ("What genre of music does {} play?", "Which musical genre is {} associated with?"),
    "P138": ("What is {} named after?", "Who or what was {} named for?"),
    "P140": ("What religion is {} affiliated with?", "Which religion does {} follow?"),
    "P1412": ("What language does {} speak?", "In which language does {} communicate?"),
    "P159": ("Where is {} headquartered?", "In which city are the headquarters of {}?"),
    "P17": ("Which country is {} located in?", "In what country can {} be found?"),
    "P176": ("Which company produces {}?", "Who manufactures {}?"),
    "P178": ("Which company developed {}?", "Who created {}?"),
    "P19": ("Where was {} born?", "What is the birthplace of {}?"),
    "P190": ("What is the twin city of {}?", "Which city is {} twinned with?"),
    "P20": ("Where did {} die?", "In which city did {} pass away?"),
    "P264": ("What is {}'s record label?", "Which record label is {} signed to?"),
    "P27": ("Which country is {} a citizen of?", "What is the nationality of {}?"),
    "P276": ("Where is {} located?", "In which place can {} be found?"),
    "P30": ("Which continent is {} on?", "On what continent can {} be found?"),
    "P36": ("What is the capital of {}?", "Which city is the capital of {}?"),
    "P364": ("What is the original language of {}?", "In which language was {} first made?"),
    "P37": ("What is the official language of {}?", "Which language is official in {}?"),
    "P39": ("What position does {} hold?", "Which office does {} hold?"),
    "P407": ("What language was {} written in?", "In which language is {} written?"),
    "P413": ("What position does {} play?", "In which position does {} play?"),
    "P449": ("Which network did {} premiere on?", "Where was {} first broadcast?"),
    "P463": ("What organisation is {} affiliated with?", "Which organisation is {} a member of?"),
    "P495": ("Which country does {} come from?", "What is the country of origin of {}?"),
    "P641": ("What sport does {} play?", "Which sport is {} associated with?"),
    "P740": ("Where was {} formed?", "In which city was {} founded?"),
    "P937": ("Where did {} work?", "In which city did {} work?"),
}


@functools.cache
def prompt_templates() -> tuple[tuple[str, str], ...]:
    """CounterFact's prompt templates as (before, after) the subject, longest wording first: every
    rewrite prompt of the shipped CounterFact files with its subject cut out."""
    seen: set[str] = set()
    for name in ("counterfact-rome-test.json", "counterfact-val.json", "counterfact-test.json",
                 "counterfact-train.json"):
        for r in json.loads(data_file("counterfact", name).read_text(encoding="utf-8")):
            rw = r.get("requested_rewrite")
            if rw is not None:
                seen.add(rw["prompt"])
            elif r.get("subject") and r["subject"] in r.get("prompt", ""):
                seen.add(r["prompt"].replace(r["subject"], "{}", 1))
    parts = [tuple(t.split("{}", 1)) for t in seen if t.count("{}") == 1]
    return tuple(sorted(parts, key=lambda p: (-len(p[0]) - len(p[1]), p)))  # type: ignore[misc]


def prompt_subject(prompt: str) -> str | None:
    """The subject of a CounterFact sentence, read off with its prompt templates; None if no
    template fits."""
    for before, after in prompt_templates():
        if (prompt.startswith(before) and prompt.endswith(after)
                and len(prompt) > len(before) + len(after)):
            return prompt[len(before):len(prompt) - len(after)].strip() or None
    return None


def question_item(record: RomeCounterFactRecord) -> WildItem:
    rw = record.requested_rewrite
    edit_q, rephrase_q = QUESTIONS[str(rw.relation_id)]
    others: list[str] = []  # the first two distinct neighbourhood subjects
    for s in map(prompt_subject, record.neighborhood_prompts):
        if s is not None and s != rw.subject and s not in others and len(others) < 2:
            others.append(s)
    return WildItem(rw.fact, rw.target_new.text, [edit_q.format(rw.subject)],
                    [rephrase_q.format(rw.subject)], [edit_q.format(s) for s in others])


@register_task
class WildQuestionsTask(WildTask):
    name = "wild-questions"
    formats = frozenset({"counterfact-rome"})
    default_data = "counterfact/counterfact-rome-test.json"

    def item(self, record: Any) -> WildItem:
        return question_item(record)

    def settings(self, run: Any) -> dict[str, Any]:
        return {**super().settings(run), "questions": "CounterFact as questions: per-relation "
                "templates (edit, rephrased), neighbourhood subjects asked with the edit's "
                "template (eval/tasks/wild_questions.py)"}

    def skip_reason(self, record: Any) -> str | None:
        rel = record.requested_rewrite.relation_id
        if rel not in QUESTIONS:
            return f"relation {rel} has no question template"
        return None
