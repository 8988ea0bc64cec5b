"""Build corpora/sample_ner: a small English NER corpus written for this project.

Sentences come from templates and name lists written here (no external text).
Test and validation sentences draw half of their names from lists the train
split never uses, so a model must read context and spelling, not memorise.
Run `python corpora/build_sample.py` to rebuild the JSON-lines files; the
output is deterministic.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).parent / "sample_ner"

# Each name list has a part for train and a held-out part for validation/test.
PER = (
    ["Mara Lindqvist", "Tomas Ferreira", "Aiko Tanabe", "Dmitri Volkov", "Grace Okafor", "Lukas Brandt",
     "Priya Raman", "Henrik Dahl", "Sofia Marchetti", "Omar Haddad", "Elena Kovac", "Jonas Weber",
     "Nadia Petrenko", "Carlos Mendes", "Ingrid Holm", "Yusuf Demir", "Clara Jensen", "Felix Moreau",
     "Hana Suzuki", "Victor Alvarez", "Merkel", "Okafor", "Brandt", "Haddad"],
    ["Astrid Nyberg", "Rafael Costa", "Keiko Mori", "Pavel Novak", "Amara Nwosu", "Bruno Keller",
     "Leila Farouk", "Stefan Lind", "Nora Quist", "Ivo Rossi", "Tessa Blom", "Nyberg", "Costa"],
)
ORG = (
    ["Northwind Bank", "Alder Motors", "the Harbor Authority", "Crestline Foods", "Blue Fjord Airlines",
     "Vantor Systems", "the Riverside Council", "Kestrel Pharma", "Orbis Telecom", "Granite Insurance",
     "Solvey University", "the Meridian Institute", "Tallis Steel", "Greenfield United", "Brightwater FC",
     "Corvo Energy", "Polaris Shipping", "Ardent Media"],
    ["Halden Group", "Sable Rail", "Ostrava Chemicals", "Linden Capital", "Marlow Athletic",
     "Quarry Labs", "the Eastport Commission", "Vireo Networks"],
)
LOC = (
    ["Lisbon", "Oslo", "Nairobi", "Osaka", "Toronto", "Valencia", "Krakow", "Bergen", "Porto", "Tunis",
     "Lake Tamsin", "the Vell Valley", "Northern Ireland", "South Africa", "New Zealand", "Brazil",
     "Canada", "Finland", "Morocco", "Chile"],
    ["Gdansk", "Tampere", "Accra", "Sapporo", "Montevideo", "Riga", "Lyon", "the Arlo Coast", "Peru", "Iceland"],
)
MISC = (
    ["French", "Japanese", "German", "Brazilian", "Canadian", "Olympic", "Euro", "Nobel Prize",
     "World Cup", "Spanish", "Kenyan", "Norwegian"],
    ["Italian", "Chilean", "Polish", "Icelandic", "Grand Prix", "Davis Cup"],
)

TEMPLATES = [
    "{PER} said on Tuesday that {ORG} would cut 200 jobs in {LOC} .",
    "{ORG} shares rose 3.5 percent in {LOC} after the results .",
    "{PER} , a spokesman for {ORG} , declined to comment .",
    "The {MISC} team beat {LOC} 2-1 in the final on Sunday .",
    "{PER} will visit {LOC} next week for talks with {PER} .",
    "Police in {LOC} arrested two men on Friday , {ORG} reported .",
    "{ORG} agreed to buy {ORG} for 1.2 billion dollars .",
    "{PER} won the {MISC} title in {LOC} .",
    "Officials from {ORG} met {MISC} diplomats in {LOC} .",
    "\" We are very happy with the result , \" {PER} told reporters .",
    "{LOC} and {LOC} signed a trade agreement on Monday .",
    "{PER} scored twice as {ORG} beat {ORG} 3-0 .",
    "The {MISC} government said prices in {LOC} fell in March .",
    "{ORG} opened a new office in {LOC} , chief executive {PER} said .",
    "Heavy rain closed roads across {LOC} on Wednesday .",
    "{PER} resigned from {ORG} after ten years .",
    "Fans travelled from {LOC} to watch the {MISC} final .",
    "Analysts at {ORG} expect growth of 2 percent this year .",
    "{PER} and {PER} will meet in the second round .",
    "The company said demand in {LOC} remained weak .",
    "{ORG} said it had no plans to leave {LOC} .",
    "A {MISC} court in {LOC} sentenced the man to five years .",
    "Talks between {ORG} and the unions broke down on Thursday .",
    "{PER} , 34 , joined {ORG} from {ORG} in January .",
    "Inflation in {LOC} rose to 4.1 percent , the central bank said .",
    "The minister said the plan would help farmers .",
    "Markets were closed for the holiday .",
    "{PER} finished third behind {PER} and {PER} .",
    "Temperatures in {LOC} reached 38 degrees on Saturday .",
    "{ORG} reported a net profit of 45 million euros .",
]
SLOTS = {"PER": PER, "ORG": ORG, "LOC": LOC, "MISC": MISC}


def sentence(rng: random.Random, template: str, held_out: bool):
    tokens, tags = [], []
    for piece in template.split():
        slot = piece.strip("{}")
        if piece.startswith("{") and slot in SLOTS:
            train_names, unseen_names = SLOTS[slot]
            pool = unseen_names if held_out and rng.random() < 0.5 else train_names
            words = rng.choice(pool).split()
            if words[0] == "the":  # "the" is not part of the name
                tokens.append("the")
                tags.append("O")
                words = words[1:]
            tokens.extend(words)
            tags.extend([f"B-{slot}"] + [f"I-{slot}"] * (len(words) - 1))
        else:
            tokens.append(piece)
            tags.append("O")
    if tokens and tokens[0] == "the":
        tokens[0] = "The"
    return tokens, tags


def build(split: str, n: int, seed: int, held_out: bool):
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        tokens, tags = sentence(rng, rng.choice(TEMPLATES), held_out)
        rows.append({"id": f"{split}-{i}", "tokens": tokens, "ner_tags": tags})
    return rows


def main() -> None:
    HERE.mkdir(exist_ok=True)
    for split, n, seed, held_out in (("train", 600, 1, False), ("validation", 150, 2, True), ("test", 150, 3, True)):
        with open(HERE / f"{split}.jsonl", "w", encoding="utf8") as f:
            for row in build(split, n, seed, held_out):
                f.write(json.dumps(row, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
