"""Build stages for the demo datasets: OWT-like train/validation and Pile-like sets, then the Pile-filtered set.

``make_datasets`` tokenizes the two corpora of :mod:`lnfree_core.demo.corpora`, holds out every
``val_every``-th OWT-like document as validation, adds the IOI sentences of :mod:`.ioi_text` to the
training documents only (spread among them), packs rows of ``seq_len`` tokens (each beginning
with EOT when ``row_start_eot``: the models' attention sink, see :mod:`.tokens`), builds the
compact vocabulary from all of them, and writes each dataset folder in compact ids with its
``vocab_map.json`` and a ``dataset.json`` (what it is, sizes, corpus hashes, the IOI text's count,
SHA-256 and share of the training tokens).

``make_filtered`` runs the project's Pile-filtered builder (:func:`lnfree_core.data.build_filtered`)
with reference = the OWT-like training split and target = the Pile-like set, on GPT-2 ids (so its
Table 5 report names real tokens), and stores the kept sequences in compact ids.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from lnfree_core.data.filter import build_filtered
from lnfree_core.data.tokenizer import EOT_ID
from lnfree_core.data.vocab_map import from_gpt2_ids, load_vocab_map, save_vocab_map, to_gpt2_ids

from .corpora import describe_source, pile_documents, prose_documents
from .ioi_text import describe as describe_ioi
from .ioi_text import interleave, ioi_documents
from .paths import demo_dataset_path, demo_root
from .repeats import describe as describe_repeats
from .repeats import repeat_documents
from .sizes import DemoSize
from .tokens import build_vocab, pack_rows, read_rows, tokenize, unigram_entropy, write_rows

Progress = Callable[[str, int, int], None]
_BATCH_DOCS = 32


def _hash_texts(texts: list[str]) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()


def _write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data, indent=1, ensure_ascii=True) + "\n")


def _collect(docs, budget_tokens: int | None, budget_chars: int | None, on_batch) -> tuple[list, list[np.ndarray]]:
    """Tokenize documents in batches until the token or character budget is reached."""
    taken, ids, n_tok, n_chr = [], [], 0, 0
    batch = []
    for doc in docs:
        batch.append(doc)
        n_chr += len(doc.text)
        full = budget_chars is not None and n_chr >= budget_chars
        if len(batch) == _BATCH_DOCS or full:
            out = tokenize([d.text for d in batch])
            taken += batch
            ids += out
            n_tok += sum(len(a) for a in out)
            on_batch(len(taken))
            batch = []
            if full or (budget_tokens is not None and n_tok >= budget_tokens):
                break
    if batch:
        taken += batch
        ids += tokenize([d.text for d in batch])
        on_batch(len(taken))
    return taken, ids


def make_datasets(root: str | Path, size: DemoSize, progress: Progress) -> dict:
    """Write ``owt-demo`` and ``pile-demo`` (compact ids) and the root ``vocab_map.json``; returns their numbers."""
    root = demo_root(root)
    source = describe_source()
    est = source["prose_modules"] + source["topics"]  # documents of the whole OWT-like corpus, at most
    prose, prose_ids = _collect(prose_documents(), None, size.prose_chars,
                                lambda n: progress("datasets", min(n, est), est + 1))
    pile, pile_ids = _collect(pile_documents(), (size.pile_rows + 1) * size.seq_len, None, lambda n: None)
    progress("datasets", est, est + 1)
    val_docs = [a for i, a in enumerate(prose_ids) if i % size.val_every == 0]
    train_docs = [a for i, a in enumerate(prose_ids) if i % size.val_every != 0]
    ioi_docs = ioi_documents(size.ioi_sentences, seed=size.seed) if size.ioi_sentences else []
    ioi_ids = tokenize([d.text for d in ioi_docs]) if ioi_docs else []
    train_docs = interleave(train_docs, ioi_ids)  # IOI text in the training split only (.ioi_text)
    reps = repeat_documents(train_docs, size.repeat_spans, seed=size.seed) if size.repeat_spans else []
    train_docs = interleave(train_docs, reps)  # repeated spans, also training split only (.repeats)
    repeats = describe_repeats(reps, size.repeat_spans, size.seed, int(sum(len(a) for a in train_docs)))
    ioi = describe_ioi(ioi_docs, size.ioi_sentences, size.seed)
    ioi_tokens = int(sum(len(a) for a in ioi_ids))
    ioi["tokens"] = ioi_tokens
    ioi["share_of_train_stream"] = ioi_tokens / max(1, int(sum(len(a) for a in train_docs)))
    start = EOT_ID if size.row_start_eot else None  # GPT-2 id: the rows are compacted below
    train = pack_rows(train_docs, size.seq_len, start_token=start)
    val = pack_rows(val_docs, size.seq_len, start_token=start)
    pile_rows = pack_rows(pile_ids, size.seq_len, max_rows=size.pile_rows, start_token=start)
    if min(len(train), len(val), len(pile_rows)) == 0:
        raise RuntimeError(f"the demo corpora are too small for sequences of {size.seq_len} tokens "
                           f"(train {len(train)}, validation {len(val)}, pile {len(pile_rows)} rows)")
    vocab = build_vocab(train, val, pile_rows)
    root.mkdir(parents=True, exist_ok=True)
    save_vocab_map(root, vocab)
    H = unigram_entropy(from_gpt2_ids(train, vocab), len(vocab))

    owt = demo_dataset_path("owt-demo", root)
    owt.mkdir(parents=True, exist_ok=True)
    write_rows(owt / "train.parquet", from_gpt2_ids(train, vocab))
    write_rows(owt / "validation.parquet", from_gpt2_ids(val, vocab))
    save_vocab_map(owt, vocab)
    _write_json(owt / "dataset.json", {
        "name": "owt-demo", "kind": "OWT-like: Python standard library documentation (docstrings, pydoc topics)"
                + (", plus IOI sentences in the train split" if ioi_docs else ""),
        "seq_len": size.seq_len, "row_start_eot": size.row_start_eot,
        "splits": {"train": len(train), "validation": len(val)},
        "tokens": {"train": int(train.size), "validation": int(val.size)}, "vocab_size": len(vocab),
        "unigram_entropy_train": H, "documents": len(prose), "validation_every": size.val_every,
        "corpus_sha256": _hash_texts([d.text for d in prose]), "source": source, "ioi": ioi, "repeats": repeats,
        "ids": "compact (see vocab_map.json)",
    })
    _write_json(owt / "documents.json", [d.source for d in prose] + [d.source for d in ioi_docs])

    pile_dir = demo_dataset_path("pile-demo", root)
    pile_dir.mkdir(parents=True, exist_ok=True)
    write_rows(pile_dir / "train.parquet", from_gpt2_ids(pile_rows, vocab))
    save_vocab_map(pile_dir, vocab)
    _write_json(pile_dir / "dataset.json", {
        "name": "pile-demo", "kind": "Pile-like: Python standard library source and data files as shipped",
        "seq_len": size.seq_len, "row_start_eot": size.row_start_eot, "splits": {"train": len(pile_rows)},
        "tokens": {"train": int(pile_rows.size)},
        "vocab_size": len(vocab), "documents": len(pile), "corpus_sha256": _hash_texts([d.text for d in pile]),
        "source": source, "ids": "compact (see vocab_map.json)",
    })
    _write_json(pile_dir / "documents.json", [d.source for d in pile])
    progress("datasets", est + 1, est + 1)
    return {"vocab_size": len(vocab), "eot_compact_id": int(len(vocab) - 1), "unigram_entropy": H,
            "train_sequences": len(train), "validation_sequences": len(val), "pile_sequences": len(pile_rows),
            "prose_documents": len(prose), "pile_documents": len(pile), "source": source, "ioi": ioi}


def make_filtered(root: str | Path, size: DemoSize, progress: Progress) -> dict:
    """Write ``pile-filtered-demo``: Pile-like sequences without tokens absent from the OWT-like train split."""
    root = demo_root(root)
    owt, pile = demo_dataset_path("owt-demo", root), demo_dataset_path("pile-demo", root)
    vocab = load_vocab_map(owt)
    ref_rows, tgt_rows = read_rows(owt / "train.parquet"), read_rows(pile / "train.parquet")
    out = demo_dataset_path("pile-filtered-demo", root)
    out.mkdir(parents=True, exist_ok=True)
    progress("filter", 0, 2)
    (root / "work").mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root / "work", prefix="filter-") as tmp:
        tmp = Path(tmp)
        for name, rows in (("reference", ref_rows), ("target", tgt_rows)):
            (tmp / name).mkdir()
            write_rows(tmp / name / "train.parquet", to_gpt2_ids(rows, vocab))
        report = build_filtered(tmp / "reference", tmp / "target", tmp / "out", scan=max(len(ref_rows), len(tgt_rows)),
                                seq_len=size.seq_len, keep=size.filter_keep, offline=True)
        kept = read_rows(tmp / "out" / "train.parquet")
    progress("filter", 1, 2)
    if len(kept) == 0:
        raise RuntimeError("the Pile-filtered demo set is empty: every Pile-like sequence has a token absent "
                           "from the OWT-like training split; raise pile_rows")
    write_rows(out / "train.parquet", from_gpt2_ids(kept, vocab))
    save_vocab_map(out, vocab)
    data = report.to_dict()
    data.update(reference=f"{owt} (split train)", target=str(pile), out_dir=str(out),
                ids="token_id = GPT-2 id (the data in train.parquet is in compact ids, see vocab_map.json)")
    _write_json(out / "tokens_removed.json", data["removed_tokens"])
    _write_json(out / "filter_report.json", data)
    progress("filter", 2, 2)
    removed = np.array([t.token_id for t in report.removed_tokens], dtype=np.int64)
    clean = int((~np.isin(to_gpt2_ids(tgt_rows, vocab), removed).any(axis=1)).sum())
    return {"removed_tokens": len(removed), "scanned_sequences": report.target_sequences,
            "clean_sequences": clean, "kept_sequences": len(kept),
            "top_removed": [t["repr"] for t in data["removed_tokens"][:12]],
            "tab_removed": bool(197 in removed), "form_feed_removed": bool(200 in removed)}
