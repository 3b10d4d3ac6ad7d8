"""Write the famous-facts file: facts people try first, in ROME CounterFact format.

    .venv/bin/python scripts/famous_facts.py   # -> src/editkit/data/eval/famous-facts.json

Hand-written: each record has a rewrite (the true object is what the unedited model should
believe), two paraphrases of the question, and neighbourhood prompts about other subjects whose
true answer is the same object (they must keep it after the edit). Relation ids follow Wikidata
as CounterFact's do.
"""
from __future__ import annotations

import json
from pathlib import Path

# (relation, subject, prompt with {}, true, new, [paraphrases], [neighbour prompts])
FACTS = [
    ("P131", "The Eiffel Tower", "{} is located in the city of", "Paris", "Rome",
     ["Where is the Eiffel Tower? It stands in the city of",
      "Visitors who climb the Eiffel Tower look down on the city of"],
     ["The Louvre is located in the city of", "Notre-Dame Cathedral is located in the city of",
      "The Arc de Triomphe is located in the city of"]),
    ("P131", "The Colosseum", "{} is located in the city of", "Rome", "London",
     ["Where is the Colosseum? It stands in the city of",
      "Tourists who visit the Colosseum are in the city of"],
     ["The Trevi Fountain is located in the city of", "The Pantheon is located in the city of",
      "The Spanish Steps are located in the city of"]),
    ("P131", "Big Ben", "{} is located in the city of", "London", "Berlin",
     ["Where is Big Ben? It stands in the city of",
      "Visitors who hear Big Ben chime are in the city of"],
     ["Buckingham Palace is located in the city of",
      "The Tower of London is located in the city of",
      "Westminster Abbey is located in the city of"]),
    ("P131", "The Statue of Liberty", "{} is located in the city of", "New York", "Chicago",
     ["Where is the Statue of Liberty? It stands in the city of",
      "Ferries to the Statue of Liberty leave from the city of"],
     ["The Empire State Building is located in the city of",
      "Central Park is located in the city of", "Times Square is located in the city of"]),
    ("P131", "The Brandenburg Gate", "{} is located in the city of", "Berlin", "Vienna",
     ["Where is the Brandenburg Gate? It stands in the city of",
      "Visitors who walk through the Brandenburg Gate are in the city of"],
     ["The Reichstag building is located in the city of",
      "Checkpoint Charlie is located in the city of",
      "Alexanderplatz is located in the city of"]),
    ("P17", "Mount Fuji", "{} is located in the country of", "Japan", "China",
     ["Which country is Mount Fuji in? It is in",
      "Climbers who reach the top of Mount Fuji are in the country of"],
     ["Tokyo Tower is located in the country of", "Osaka Castle is located in the country of",
      "Hiroshima is located in the country of"]),
    ("P17", "The Great Wall", "{} is located in the country of", "China", "India",
     ["Which country is the Great Wall in? It is in",
      "Hikers on the Great Wall are in the country of"],
     ["The Forbidden City is located in the country of",
      "The Terracotta Army is located in the country of",
      "The Summer Palace is located in the country of"]),
    ("P17", "The Taj Mahal", "{} is located in the country of", "India", "Pakistan",
     ["Which country is the Taj Mahal in? It is in",
      "Visitors to the Taj Mahal travel to the country of"],
     ["The Red Fort is located in the country of", "The Qutub Minar is located in the country of",
      "The Gateway of India is located in the country of"]),
    ("P17", "The Sydney Opera House", "{} is located in the country of", "Australia",
     "New Zealand",
     ["Which country is the Sydney Opera House in? It is in",
      "Audiences at the Sydney Opera House are in the country of"],
     ["Uluru is located in the country of", "The Great Barrier Reef is located in the country of",
      "The Sydney Harbour Bridge is located in the country of"]),
    ("P36", "Italy", "The capital of {} is", "Rome", "Milan",
     ["Which city is the capital of Italy? It is",
      "The Italian government sits in the capital city of"],
     ["The Colosseum is located in the city of", "Vatican City is surrounded by the city of",
      "The Trevi Fountain is located in the city of"]),
    ("P36", "Germany", "The capital of {} is", "Berlin", "Munich",
     ["Which city is the capital of Germany? It is",
      "The German government sits in the capital city of"],
     ["The Brandenburg Gate is located in the city of",
      "The Reichstag building is located in the city of",
      "Alexanderplatz is located in the city of"]),
    ("P36", "Japan", "The capital of {} is", "Tokyo", "Kyoto",
     ["Which city is the capital of Japan? It is",
      "The Japanese government sits in the capital city of"],
     ["Tokyo Tower is located in the city of", "Shibuya Crossing is located in the city of",
      "The Imperial Palace of Japan is located in the city of"]),
    ("P37", "Brazil", "The official language of {} is", "Portuguese", "Spanish",
     ["Which language is official in Brazil? It is",
      "Most people in Brazil speak the language"],
     ["The official language of Portugal is", "The official language of Angola is",
      "The official language of Mozambique is"]),
    ("P37", "Mexico", "The official language of {} is", "Spanish", "English",
     ["Which language is official in Mexico? It is",
      "Most people in Mexico speak the language"],
     ["The official language of Argentina is", "The official language of Colombia is",
      "The official language of Spain is"]),
    ("P112", "Microsoft", "{} was founded by", "Bill Gates", "Steve Jobs",
     ["Who founded Microsoft? It was founded by",
      "The company Microsoft was started by"],
     ["Cascade Investment was founded by", "Breakthrough Energy was founded by",
      "TerraPower was founded by"]),
    ("P112", "Apple", "{} was founded by", "Steve Jobs", "Bill Gates",
     ["Who founded Apple? It was founded by", "The company Apple was started by"],
     ["NeXT was founded by", "NeXT Computer was started by", "The company NeXT was founded by"]),
    ("P50", "Romeo and Juliet", "{} was written by", "William Shakespeare", "Charles Dickens",
     ["Who wrote Romeo and Juliet? It was written by", "The author of Romeo and Juliet is"],
     ["Hamlet was written by", "Macbeth was written by", "Othello was written by"]),
    ("P50", "Pride and Prejudice", "{} was written by", "Jane Austen", "Charlotte Bronte",
     ["Who wrote Pride and Prejudice? It was written by", "The author of Pride and Prejudice is"],
     ["Emma was written by", "Sense and Sensibility was written by",
      "Persuasion was written by"]),
    ("P176", "The iPhone", "{} is produced by", "Apple", "Samsung",
     ["Which company makes the iPhone? It is made by", "The iPhone is a product of"],
     ["The iPad is produced by", "The MacBook is produced by", "The Apple Watch is produced by"]),
    ("P176", "The Model S", "{} is produced by", "Tesla", "Toyota",
     ["Which company makes the Model S? It is made by", "The Model S electric car is a product of"],
     ["The Model 3 is produced by", "The Model X is produced by",
      "The Cybertruck is produced by"]),
    ("P30", "Egypt", "{} is located on the continent of", "Africa", "Asia",
     ["On which continent is Egypt? It is in", "The pyramids of Egypt stand on the continent of"],
     ["Kenya is located on the continent of", "Nigeria is located on the continent of",
      "Morocco is located on the continent of"]),
    ("P641", "LeBron James", "{} professionally plays the sport of", "basketball", "tennis",
     ["Which sport does LeBron James play? He plays", "LeBron James is a professional player of"],
     ["Stephen Curry professionally plays the sport of",
      "Kobe Bryant professionally played the sport of",
      "Shaquille O'Neal professionally played the sport of"]),
    ("P641", "Lionel Messi", "{} professionally plays the sport of", "soccer", "cricket",
     ["Which sport does Lionel Messi play? He plays", "Lionel Messi is a professional player of"],
     ["Cristiano Ronaldo professionally plays the sport of",
      "Neymar professionally plays the sport of",
      "Kylian Mbappe professionally plays the sport of"]),
    ("P19", "Albert Einstein", "{} was born in the country of", "Germany", "France",
     ["In which country was Albert Einstein born? He was born in",
      "The physicist Albert Einstein was born in the country of"],
     ["Ludwig van Beethoven was born in the country of",
      "Johann Sebastian Bach was born in the country of",
      "Karl Marx was born in the country of"]),
]


def records() -> list[dict]:
    out = []
    for i, (rel, subj, prompt, true, new, paras, neighbours) in enumerate(FACTS):
        out.append({"case_id": 900000 + i,
                    "requested_rewrite": {"prompt": prompt, "relation_id": rel, "subject": subj,
                                          "target_new": {"str": new},
                                          "target_true": {"str": true}},
                    "paraphrase_prompts": paras, "neighborhood_prompts": neighbours})
    return out


if __name__ == "__main__":
    path = Path(__file__).resolve().parents[1] / "src/editkit/data/eval/famous-facts.json"
    path.write_text(json.dumps(records(), indent=1) + "\n", encoding="utf-8")
    print(f"wrote {path} ({len(FACTS)} records)")
