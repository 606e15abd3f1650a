"""Score samples produced elsewhere with the harness's metrics.

    python -m flowbench score SAMPLES.npy.xz|.jsonl|.txt --corpus SUITE.yaml|MAPPING [--judge NAME]
    python -m flowbench score RESULTS --row ROW_KEY --corpus ...

SAMPLES: a row's samples file as a run writes it (.npy.xz, token ids: flowbench/samples.py), a
.jsonl file of records with "ids" (token ids of the corpus's tokenizer) or "text", or a .txt file
with one sample per line. RESULTS --row ROW_KEY: that row of a results folder, from its own file
or the folder's packed samples (flowbench/samples.py). Texts are encoded with the corpus's
tokenizer; every sample is cut to the corpus's sequence length, and shorter ones are dropped (and
counted), since every metric compares sequences of the same length as the held-out references.
--corpus: a suite file (its corpus, judge and metric settings) or an inline YAML mapping such
as '{name: hmm_language, seq_len: 32}'. The row is printed as JSON (and appended to --out).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
import yaml

from flowbench.config import EvalConfig, Suite, SuiteError, validate
from flowbench.samples import SUFFIX, SamplesError, load_ids, row_ids


class ScoreError(ValueError):
    """Samples that cannot be scored (one line naming file and line)."""


def read_samples(path: str | Path, corpus, *, row: str | None = None) -> tuple[torch.Tensor, int]:
    """(N, L) ids of the samples at `path` (of its row `row` if it is a results folder), and how
    many were too short to keep."""
    path = Path(path)
    if path.is_dir() or row is not None:
        return _row(path, row, corpus), 0
    if not path.is_file():
        raise ScoreError(f"samples file not found: {path}")
    if path.name.endswith(SUFFIX):
        return _compact(path, corpus), 0
    rows, short = [], 0
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        if path.suffix == ".jsonl":
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ScoreError(f"{path}:{i}: not JSON ({err.msg})") from None
            ids = record.get("ids") if isinstance(record, dict) else None
            if ids is None:
                if not isinstance(record, dict) or "text" not in record:
                    raise ScoreError(f"{path}:{i}: a record needs 'ids' or 'text'")
                ids = encode(corpus, record["text"], where=f"{path}:{i}")
        else:
            ids = encode(corpus, line, where=f"{path}:{i}")
        if any(not isinstance(t, int) or not 0 <= t < corpus.vocab_size for t in ids):
            raise ScoreError(f"{path}:{i}: ids outside the corpus vocabulary 0..{corpus.vocab_size - 1}")
        if len(ids) < corpus.seq_len:
            short += 1
            continue
        rows.append(ids[: corpus.seq_len])
    if not rows:
        raise ScoreError(f"{path}: no sample of at least {corpus.seq_len} tokens")
    return torch.tensor(rows, dtype=torch.long), short


def _row(results: Path, row: str | None, corpus) -> torch.Tensor:
    if not results.is_dir():
        raise ScoreError(f"--row {row}: {results} is not a results folder")
    if row is None:
        raise ScoreError(f"{results} is a results folder: name the row to score with --row ROW_KEY")
    try:
        ids = row_ids(results, row)
    except SamplesError as err:
        raise ScoreError(str(err)) from None
    return _fitted(ids, corpus, where=f"{results} row {row}")


def _compact(path: Path, corpus) -> torch.Tensor:
    try:
        ids = load_ids(path)
    except SamplesError as err:
        raise ScoreError(str(err)) from None
    return _fitted(ids, corpus, where=str(path))


def _fitted(ids: torch.Tensor, corpus, *, where: str) -> torch.Tensor:
    """Stored ids checked against the corpus, cut to its sequence length."""
    if ids.numel() and int(ids.max()) >= corpus.vocab_size:
        raise ScoreError(f"{where}: ids outside the corpus vocabulary 0..{corpus.vocab_size - 1}")
    if ids.shape[1] < corpus.seq_len:
        raise ScoreError(f"{where}: samples of {ids.shape[1]} tokens, the corpus needs {corpus.seq_len}")
    return ids[:, : corpus.seq_len]


def encode(corpus, text: str, *, where: str) -> list[int]:
    if hasattr(corpus, "encode"):
        return corpus.encode(text)
    index = {w: i for i, w in enumerate(getattr(corpus, "words", []))}  # the embedded language's words
    ids = [index.get(w) for w in text.split()]
    if None in ids:
        raise ScoreError(f"{where}: word {text.split()[ids.index(None)]!r} is not in the corpus vocabulary")
    return ids


def suite_for(corpus_spec: str, judge: str | None) -> Suite:
    """A suite holding the corpus and evaluation settings to score with."""
    path = Path(corpus_spec)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        data = yaml.safe_load(path.read_text())
    else:
        try:
            corpus = yaml.safe_load(corpus_spec)
        except yaml.YAMLError:
            corpus = None
        if not isinstance(corpus, dict):
            raise SuiteError(f"--corpus: {corpus_spec!r} is neither a suite file nor a mapping like "
                             "'{name: hmm_language, seq_len: 32}'")
        data = {"corpus": corpus}
    evaluation = dict(data.get("eval") or {})
    if judge and judge != evaluation.get("judge"):  # another judge: the suite's judge_params are not its
        evaluation["judge"] = judge
        evaluation.pop("judge_params", None)
    return validate(Suite, {"name": "score", "train": {"steps": 1}, "runs": [], **data,
                            "eval": validate(EvalConfig, evaluation, "eval").model_dump()}, "")


def score_file(samples: str | Path, *, corpus_spec: str, judge: str | None = None, seed: int = 0,
               cache_dir: Path, text: int = 0, row: str | None = None) -> dict:
    """The metrics of a samples file (or of row `row` of a results folder); `text`: also the first
    `text` samples, decoded."""
    from flowbench.judges import JudgeError
    from flowbench.metrics import check_metrics, score_samples
    from flowbench.plan import make_corpus
    from flowbench.registry import JUDGES
    from flowbench.trainer import resolve_device

    suite = suite_for(corpus_spec, judge)
    corpus = make_corpus(suite, cache_dir=cache_dir)
    check_metrics(suite.eval, corpus)
    tokens, short = read_samples(samples, corpus, row=row)
    judge_cls = JUDGES.get(suite.eval.judge)
    judge_cls.check_params(suite.eval.judge_params)
    try:
        judge_obj = judge_cls(corpus=corpus, cache_dir=cache_dir, device=resolve_device(suite.eval.device),
                              **suite.eval.judge_params)
    except TypeError as err:
        raise JudgeError(f"judge {suite.eval.judge!r}: {err}") from None
    scores = score_samples(tokens, corpus=corpus, judge=judge_obj, eval_config=suite.eval, seed=seed,
                           cache_dir=cache_dir)
    return {"samples": str(samples), **({"row_key": row} if row else {}), "num_samples": len(tokens),
            "dropped_short": short, "corpus": json.dumps(corpus.describe(), sort_keys=True),
            "judge": suite.eval.judge, "judge_ppl": getattr(judge_obj, "held_out_ppl", None), **scores,
            **({"text": [corpus.decode(t) for t in tokens[:text]]} if text else {})}
