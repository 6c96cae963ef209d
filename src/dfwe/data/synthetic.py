"""The built-in offline task suite: seeded dialogue-style tasks that share latent structure.

Each generated dialogue is a Markov chain over seven latent emotions (a speaker's mood tends to persist
and to echo the previous turn). An utterance mixes cue words of its emotion (some cues are shared by two
emotions, so single words are ambiguous), words of its sentiment, intensity words and filler. Three
annotation tasks label *different* dialogues drawn from the same process, as FETA-Friends does:

* ``demo_emotion`` (the target): the seven emotions;
* ``demo_sentiment``: negative / neutral / positive, a coarsening of the emotion;
* ``demo_mood``: a different seven-way scheme (EmoryNLP-like) that cuts the latent space by emotion and
  intensity.

So a sentiment or mood expert learns words and context cues that the emotion target needs: transfer is
real, and so is the mismatch between tasks. Files use the Friends format and load with
:func:`dfwe.data.tasks.load_task`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from pydantic import Field

from dfwe.schema import Frozen

EMOTIONS = ("anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise")
SENTIMENT = {"anger": "negative", "disgust": "negative", "fear": "negative", "sadness": "negative",
             "joy": "positive", "surprise": "positive", "neutral": "neutral"}
SPEAKERS = ("Ross", "Rachel", "Monica", "Chandler", "Joey", "Phoebe")
TASKS = ("demo_emotion", "demo_sentiment", "demo_mood")


class SyntheticConfig(Frozen):
    """The built-in offline task suite (see :mod:`dfwe.data.synthetic`)."""

    train_size: int = Field(1500, ge=50)
    dev_size: int = Field(300, ge=20)
    test_size: int = Field(600, ge=20)
    vocab_per_label: int = Field(12, ge=2)
    filler_words: int = Field(80, ge=5)


def _mood(emotion: str, intense: bool) -> str:
    if emotion in ("anger", "disgust"):
        return "Mad"
    if emotion == "fear":
        return "Scared"
    if emotion == "sadness":
        return "Sad"
    if emotion in ("joy", "surprise"):
        return "Powerful" if intense else "Joyful"
    return "Peaceful" if intense else "Neutral"


class _Lexicon:
    """Seeded made-up words: cue words per emotion (each shared with a neighbour), sentiment, filler."""

    def __init__(self, rng: np.random.Generator, per_label: int, filler: int):
        syllables = ["ka", "lo", "mi", "ru", "te", "zo", "pa", "ne", "si", "vu", "da", "fe", "go", "hi", "ju", "bo"]
        seen: set[str] = set()

        def fresh() -> str:
            while True:
                word = "".join(rng.choice(syllables, size=int(rng.integers(2, 4))))
                if word not in seen:
                    seen.add(word)
                    return word

        own = {e: [fresh() for _ in range(per_label)] for e in EMOTIONS}
        # every emotion also uses a third of its neighbour's cues: single words are ambiguous
        self.cues = {e: own[e] + own[EMOTIONS[(i + 1) % len(EMOTIONS)]][: per_label // 3] for i, e in enumerate(EMOTIONS)}
        self.sentiment = {s: [fresh() for _ in range(per_label)] for s in ("negative", "neutral", "positive")}
        self.intensity = [fresh() for _ in range(per_label // 2)]
        self.filler = [fresh() for _ in range(filler)]

    @property
    def words(self) -> list[str]:
        groups = [*self.cues.values(), *self.sentiment.values(), self.intensity, self.filler]
        return sorted({w for group in groups for w in group})


def _utterance(rng: np.random.Generator, lexicon: _Lexicon, emotion: str, intense: bool) -> str:
    words = list(rng.choice(lexicon.filler, size=int(rng.integers(3, 7))))
    if rng.random() < 0.85:
        words += list(rng.choice(lexicon.cues[emotion], size=int(rng.integers(1, 3))))
    if rng.random() < 0.7:
        words.append(str(rng.choice(lexicon.sentiment[SENTIMENT[emotion]])))
    if intense:
        words.append(str(rng.choice(lexicon.intensity)))
    rng.shuffle(words)
    return " ".join(words)


def _dialogues(rng: np.random.Generator, lexicon: _Lexicon, n_utterances: int, prefix: str) -> list[dict]:
    """Dialogues of 4-10 turns; each turn keeps its latent emotion and intensity for labelling."""
    rows: list[dict] = []
    dialogue = 0
    while len(rows) < n_utterances:
        turns = []
        emotion = str(rng.choice(EMOTIONS, p=[0.1, 0.06, 0.07, 0.18, 0.35, 0.1, 0.14]))
        for u in range(int(rng.integers(4, 11))):
            if u and rng.random() > 0.55:
                emotion = str(rng.choice(EMOTIONS, p=[0.1, 0.06, 0.07, 0.18, 0.35, 0.1, 0.14]))
            intense = bool(rng.random() < 0.35)
            speaker = str(rng.choice(SPEAKERS))
            text = _utterance(rng, lexicon, emotion, intense)
            rows.append({"id": f"{prefix}-d{dialogue}-u{u}", "dialogue_id": f"{prefix}-d{dialogue}", "speaker": speaker,
                         "utterance": text, "context": [f"{t['speaker']}: {t['utterance']}" for t in turns[-3:]],
                         "_emotion": emotion, "_intense": intense})
            turns.append(rows[-1])
        dialogue += 1
    return rows[:n_utterances]


def _label(task: str, row: dict) -> str:
    if task == "demo_emotion":
        return row["_emotion"]
    if task == "demo_sentiment":
        return SENTIMENT[row["_emotion"]]
    return _mood(row["_emotion"], row["_intense"])


def generate_suite(out_dir: Path, config: SyntheticConfig, seed: int) -> tuple[list[str], list[str]]:
    """Write the three task folders under ``out_dir``; return the vocabulary the tokenizer needs and the
    unlabelled text of the train splits (what the demo's tiny base is pretrained on)."""
    rng = np.random.default_rng([seed, 0xDE70])
    lexicon = _Lexicon(rng, config.vocab_per_label, config.filler_words)
    sizes = {"train": config.train_size, "dev": config.dev_size, "test": config.test_size}
    unlabelled: list[str] = []
    for task in TASKS:
        for split, size in sizes.items():
            rows = _dialogues(rng, lexicon, size, f"{task}-{split}")
            if split == "train":
                unlabelled.extend(f"{row['speaker']}: {row['utterance']}" for row in rows)
            path = out_dir / task / f"{split}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("w") as handle:
                for row in rows:
                    public = {k: v for k, v in row.items() if not k.startswith("_")}
                    handle.write(json.dumps({**public, "label": _label(task, row)}) + "\n")
    return [*lexicon.words, *(s.lower() for s in SPEAKERS), ":"], unlabelled
