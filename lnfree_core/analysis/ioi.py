"""Indirect object identification (IOI) prompts for the patching experiment of section 5.2 (Fig. 2).

Wang et al. (2022) templates: "While [B] and [A] were working at the [PLACE], [B] gave a [OBJECT] to"
is completed by the indirect object A (IO), not by the subject B, whose name comes twice (S1, S2).
Every name, place and object is ONE GPT-2 token (with its leading space, checked with the GPT-2 BPE),
and all templates of a set share one token layout, so every prompt has the same length T and the
names, place and object sit at the same positions: activations of different prompts align position
by position.

A set of n prompts is made of groups of four sharing a template, two names {X, Y}, a place and an
object, one prompt per name ordering (first mention order x which name is repeated):

    "X and Y ..., Y gave a .. to" -> X      "X and Y ..., X gave a .. to" -> Y
    "Y and X ..., X gave a .. to" -> Y      "Y and X ..., Y gave a .. to" -> X

Prompt i's corrupted counterpart is the prompt of its group with the other name at S2 (IO and S
swapped, only the S2 token differs), so every prompt is paired with counterparts over all name
orderings. Groups are drawn with numpy's default_rng(seed): the set is deterministic by seed; n need
not be a multiple of 4 (the last group is cut).

Models with a compact (demo) vocabulary: the templates and pools are restricted to those the
vocabulary can write and the tokens mapped to compact ids (vocab_map.py); when no template is left
(or fewer than two names, no place or no object) IOI is unavailable for that model (ValueError
saying what is missing). The demo suite's training split holds complete sentences written from these
templates and pools (lnfree_core.demo.ioi_text), so the demo models can write every prompt.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..data import load_gpt2_tokenizer
from ..data.vocab_map import from_gpt2_ids

# Wang et al. (2022), BABA templates of one token layout (15 tokens; names at 1, 3, 10; place 8; object 13).
DEFAULT_TEMPLATES = (
    "While [B] and [A] were working at the [PLACE], [B] gave a [OBJECT] to",
    "While [B] and [A] were commuting to the [PLACE], [B] gave a [OBJECT] to",
)
# Wang et al.'s name, place and object pools (single GPT-2 tokens are kept).
NAMES = (
    "Michael", "Christopher", "Jessica", "Matthew", "Ashley", "Jennifer", "Joshua", "Amanda", "Daniel", "David",
    "James", "Robert", "John", "Joseph", "Andrew", "Ryan", "Brandon", "Jason", "Justin", "Sarah", "William",
    "Jonathan", "Stephanie", "Brian", "Nicole", "Nicholas", "Anthony", "Heather", "Eric", "Elizabeth", "Adam",
    "Megan", "Melissa", "Kevin", "Steven", "Thomas", "Timothy", "Christina", "Kyle", "Rachel", "Laura", "Lauren",
    "Amber", "Brittany", "Danielle", "Richard", "Kimberly", "Jeffrey", "Amy", "Crystal", "Michelle", "Tiffany",
    "Jeremy", "Benjamin", "Mark", "Emily", "Aaron", "Charles", "Rebecca", "Jacob", "Stephen", "Patrick", "Sean",
    "Erin", "Zachary", "Jamie", "Kelly", "Samantha", "Nathan", "Sara", "Dustin", "Paul", "Angela", "Tyler",
    "Scott", "Katherine", "Andrea", "Gregory", "Erica", "Mary", "Travis", "Lisa", "Kenneth", "Bryan", "Lindsey",
    "Kristen", "Jose", "Alexander", "Jesse", "Katie", "Lindsay", "Shannon", "Vanessa", "Courtney", "Christine",
    "Alicia", "Cody", "Allison", "Bradley", "Samuel",
)
PLACES = ("store", "garden", "restaurant", "school", "hospital", "office", "house", "station")
OBJECTS = ("ring", "kiss", "bone", "basketball", "computer", "necklace", "drink", "snack")
DEFAULT_N_PROMPTS = 480
SLOTS = ("[A]", "[B]", "[PLACE]", "[OBJECT]")


@dataclass
class IOIPrompts:
    """n prompts of T tokens (ids of the model's vocabulary: GPT-2 ids, or compact ids when mapped)."""

    clean: np.ndarray  # [n, T] int64
    corrupt: np.ndarray  # [n, T] int64: the counterpart with IO and S swapped at S2
    io: np.ndarray  # [n] the correct answer token (" IO") of the clean prompt
    s: np.ndarray  # [n] the subject token (" S"), the clean prompt's wrong answer
    positions: dict[str, int]  # "name1", "name2" (IO or S1: the orderings vary), "S2", "place", "object", "end"
    labels: list[str]  # [T] a label per position for the heatmaps
    texts: list[str]  # [n] the clean prompts
    seed: int

    @property
    def n(self) -> int:
        return int(self.clean.shape[0])

    @property
    def length(self) -> int:
        return int(self.clean.shape[1])


def _single_tokens(tok, words, allowed: set[int] | None) -> list[tuple[str, int]]:
    out = []
    for w in words:
        ids = tok.encode(" " + w)
        if len(ids) == 1 and (allowed is None or ids[0] in allowed):
            out.append((w, ids[0]))
    return out


def _layout(tok, template: str) -> list[str | int]:
    """The template as a list of GPT-2 ids and slot names, one per token (slots are single tokens)."""
    out: list[str | int] = []
    rest = template
    while rest:
        cut = min(((rest.find(s), s) for s in SLOTS if rest.find(s) >= 0), default=(-1, ""))
        if cut[0] < 0:
            out.extend(tok.encode(rest))
            break
        head = rest[: cut[0]]
        if head.endswith(" "):
            head = head[:-1]  # the slot's word carries the space: " Mary" is one token
        elif head:
            raise ValueError(f"template {template!r}: a slot must follow a space or start the template")
        if head:
            out.extend(tok.encode(head))
        out.append(cut[1])
        rest = rest[cut[0] + len(cut[1]):]
    return out


def _shape(layout: list[str | int]) -> tuple:
    return tuple(x if isinstance(x, str) else "" for x in layout)


def build_ioi_prompts(n: int = DEFAULT_N_PROMPTS, seed: int = 0, *, templates: tuple[str, ...] = DEFAULT_TEMPLATES,
                      vocab_map: np.ndarray | None = None, tokenizer=None) -> IOIPrompts:
    """n IOI prompts (module docstring), deterministic by `seed`; ids mapped into `vocab_map`'s compact
    vocabulary when given. Raises ValueError when the templates do not share one token layout or the
    vocabulary lacks what the prompts need."""
    if n < 1:
        raise ValueError(f"the number of IOI prompts must be >= 1, got {n}")
    if tokenizer is None:
        tokenizer = load_gpt2_tokenizer()

    allowed = None if vocab_map is None else set(int(i) for i in np.asarray(vocab_map))
    layouts = [_layout(tokenizer, t) for t in templates]
    if not layouts or any(_shape(lay) != _shape(layouts[0]) for lay in layouts):
        raise ValueError("IOI templates must share one token layout (same length, slots at the same positions): "
                         + "; ".join(f"{t!r}: {len(lay)} tokens" for t, lay in zip(templates, layouts)))
    shape = _shape(layouts[0])
    if shape.count("[A]") != 1 or shape.count("[B]") != 2:
        raise ValueError("an IOI template names [A] once and [B] twice (S1 and S2)")
    if allowed is not None:  # keep the templates the compact vocabulary can write
        keep = [i for i, lay in enumerate(layouts) if all(x in allowed for x in lay if isinstance(x, int))]
        if not keep:
            missing = sorted({x for lay in layouts for x in lay if isinstance(x, int) and x not in allowed})
            words = [tokenizer.decode([i]) for i in missing[:8]]
            raise ValueError(f"IOI is unavailable for this model: its compact vocabulary lacks the template "
                             f"tokens {words}")
        templates, layouts = tuple(templates[i] for i in keep), [layouts[i] for i in keep]
    names = _single_tokens(tokenizer, NAMES, allowed)
    places = _single_tokens(tokenizer, PLACES, allowed)
    objects = _single_tokens(tokenizer, OBJECTS, allowed)
    if len(names) < 2 or not places or not objects:
        raise ValueError(f"IOI is unavailable for this model: its vocabulary holds {len(names)} single-token names, "
                         f"{len(places)} places and {len(objects)} objects (needs >= 2, 1, 1)")
    b_pos = [i for i, x in enumerate(shape) if x == "[B]"]
    a_pos = shape.index("[A]")
    pos = {"name1": b_pos[0], "name2": a_pos, "S2": b_pos[1], "end": len(shape) - 1}
    for slot, key in (("[PLACE]", "place"), ("[OBJECT]", "object")):
        if slot in shape:
            pos[key] = shape.index(slot)
    rng = np.random.default_rng(seed)
    rows, io, s, texts = [], [], [], []
    n_groups = -(-n // 4)
    for _ in range(n_groups):
        t = int(rng.integers(len(templates)))
        x, y = rng.choice(len(names), size=2, replace=False)
        place = places[int(rng.integers(len(places)))]
        obj = objects[int(rng.integers(len(objects)))]
        (xw, xi), (yw, yi) = names[int(x)], names[int(y)]
        # (first-mentioned, second-mentioned, S2): B is first and repeated in the template's BABA form,
        # so "first, second, S2" = "[B], [A], S2" with S2 either of them.
        for first, second, s2 in ((yi, xi, yi), (yi, xi, xi), (xi, yi, xi), (xi, yi, yi)):
            fill = {"[PLACE]": place[1], "[OBJECT]": obj[1]}
            ids = []
            seen_b = 0
            for item in layouts[t]:
                if item == "[B]":
                    ids.append(first if seen_b == 0 else s2)
                    seen_b += 1
                elif item == "[A]":
                    ids.append(second)
                elif isinstance(item, str):
                    ids.append(fill[item])
                else:
                    ids.append(item)
            rows.append(ids)
            io.append(second if s2 == first else first)
            s.append(s2)
            texts.append(tokenizer.decode(ids))
    clean = np.asarray(rows, dtype=np.int64)[:n]  # [n, T]
    io_a, s_a = np.asarray(io, dtype=np.int64)[:n], np.asarray(s, dtype=np.int64)[:n]
    corrupt = clean.copy()
    corrupt[:, pos["S2"]] = io_a  # the other name at S2: IO and S swap
    for i, text in enumerate(texts[:n]):  # every prompt tokenizes back to the same ids (length, positions)
        if tokenizer.encode(text) != clean[i].tolist():
            raise ValueError(f"IOI prompt {text!r} does not tokenize to its {clean.shape[1]} ids")
    labels = []
    for j, item in enumerate(layouts[0]):
        if isinstance(item, str):
            labels.append(next((k for k in ("name1", "name2", "S2") if pos[k] == j), item.strip("[]").lower()))
        else:
            words = sorted({tokenizer.decode([lay[j]]) for lay in layouts})
            labels.append("/".join(w.strip() or w for w in words))
    labels = [f"{j}:{lab}" for j, lab in enumerate(labels)]
    if vocab_map is not None:
        clean, corrupt = from_gpt2_ids(clean, vocab_map), from_gpt2_ids(corrupt, vocab_map)
        io_a, s_a = from_gpt2_ids(io_a, vocab_map), from_gpt2_ids(s_a, vocab_map)
    return IOIPrompts(clean=clean, corrupt=corrupt, io=io_a, s=s_a, positions=pos, labels=labels,
                      texts=texts[:n], seed=seed)
