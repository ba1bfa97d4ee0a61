"""IOI-style sentences added to the demo's OWT-like training split, so the IOI patching experiment runs on the demo.

The demo models have a compact vocabulary (the GPT-2 ids of the demo corpora, :mod:`.tokens`), and
the standard library's documentation lacks most of the words of the IOI prompts of section 5.2
("While", " gave", " commuting", the names, places and objects): without them
:func:`lnfree_core.analysis.ioi.build_ioi_prompts` finds no template the vocabulary can write. This
module writes ``n`` complete IOI sentences from that module's own ``DEFAULT_TEMPLATES``, ``NAMES``,
``PLACES`` and ``OBJECTS``, each ending with its answer, the indirect object::

    While Mary and John were working at the store, Mary gave a ring to John.

Sentence i uses template ``i % len(templates)``; names come in pairs from seeded permutations of the
pool (numpy ``default_rng(seed)``), so the first ``len(NAMES) / 2`` sentences already hold every
name; place and object cycle through their pools; which of the two names is repeated (S2) is drawn.
Every sentence begins a line (so "While" is the template's own, space-less token) and
``per_document`` sentences make one document, and the documents are spread evenly through the
training documents (:func:`interleave`). They are never put in the validation split or the
Pile-like set, so the demo's validation CE stays a measure on the standard library's prose.
"""

from __future__ import annotations

import hashlib

import numpy as np

from lnfree_core.analysis.ioi import DEFAULT_TEMPLATES, NAMES, OBJECTS, PLACES

from .corpora import Document

PER_DOCUMENT = 20  # sentences per document (one per line)


def _name_pairs(n: int, rng: np.random.Generator) -> list[tuple[str, str]]:
    """n pairs of distinct names, consecutive entries of concatenated seeded permutations of NAMES."""
    order: list[int] = []
    pairs = []
    while len(pairs) < n:
        if len(order) < 2:
            order += rng.permutation(len(NAMES)).tolist()
        x, y = order.pop(0), order.pop(0)
        if x == y:  # only where two permutations meet: keep y for the next pair
            order.insert(0, y)
            continue
        pairs.append((NAMES[x], NAMES[y]))
    return pairs


def ioi_sentences(n: int, seed: int = 0) -> list[str]:
    """n complete IOI sentences (module docstring), deterministic by ``seed``."""
    rng = np.random.default_rng(seed)
    out = []
    for i, (a, b) in enumerate(_name_pairs(n, rng)):
        # the template is "[B] and [A] ..., [B] gave ... to"; S2 is B (BABA) or A (ABBA order of the prompt set)
        first, second = (a, b) if rng.integers(2) == 0 else (b, a)
        s2 = first if rng.integers(2) == 0 else second
        io = second if s2 == first else first
        text = DEFAULT_TEMPLATES[i % len(DEFAULT_TEMPLATES)]
        # fill S2 first: the template's second [B] is S2, its first [B] the first-mentioned name
        head, tail = text.rsplit("[B]", 1)
        text = head.replace("[B]", first).replace("[A]", second) + s2 + tail
        text = text.replace("[PLACE]", PLACES[i % len(PLACES)])
        text = text.replace("[OBJECT]", OBJECTS[(i // len(PLACES)) % len(OBJECTS)])
        out.append(f"{text} {io}.")
    return out


def ioi_documents(n: int, seed: int = 0, per_document: int = PER_DOCUMENT) -> list[Document]:
    """The n sentences as documents of ``per_document`` lines (sources ``ioi#0``, ``ioi#1``, ...)."""
    s = ioi_sentences(n, seed)
    return [Document(f"ioi#{k}", "\n".join(s[j:j + per_document]))
            for k, j in enumerate(range(0, len(s), per_document))]


def interleave(docs: list, extra: list) -> list:
    """``docs`` with the ``extra`` items spread evenly among them (extra k after docs[(k+1)*len/(m+1)])."""
    m = len(extra)
    out, k = [], 0
    for i, d in enumerate(docs):
        out.append(d)
        while k < m and (i + 1) * (m + 1) >= (k + 1) * len(docs):
            out.append(extra[k])
            k += 1
    return out + extra[k:]


def describe(docs: list[Document], n: int, seed: int) -> dict:
    """What the build records about the IOI text: counts, templates and the SHA-256 of the documents."""
    h = hashlib.sha256()
    for d in docs:
        h.update(d.text.encode("utf-8"))
        h.update(b"\x00")
    return {"sentences": n, "documents": len(docs), "seed": seed, "templates": list(DEFAULT_TEMPLATES),
            "names": len(NAMES), "places": len(PLACES), "objects": len(OBJECTS), "sha256": h.hexdigest()}
