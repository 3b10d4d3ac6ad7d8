"""Print the mean log-prob of new vs old object for two example edits in each mode (docs table).

    .venv/bin/python scripts/probe_examples.py
"""
from editkit import EditableLM

CASES = [
    ("The mother tongue of Danielle Darrieux is English.",
     "The mother tongue of Danielle Darrieux is", "English", "French"),
    ("The Eiffel Tower is located in Rome.",
     "The Eiffel Tower is located in the city of", "Rome", "Paris"),
]

lm = EditableLM.from_pretrained(device="cpu")
print("| question | fact | mode | chat | new | old | winner |")
print("|---|---|---|---|---|---|---|")
for fact, q, new, old in CASES:
    for mode in ("none", "prompt", "ptokens (untrained)"):
        for chat in (False, True):
            s = lm.score(q, [new, old], mode=mode.split()[0], fact=fact, chat=chat).as_dict()
            print(f"| {q} | {fact} | {mode} | {chat} | {s[new]:.2f} | {s[old]:.2f} | "
                  f"{new if s[new] > s[old] else old} |")
