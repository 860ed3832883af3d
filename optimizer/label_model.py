"""Quality without labels: how accurate several judges of the same yes/no question are,
learned from how they agree (a weak-supervision label model).

Each source (a prompt variant, another model, a proxy with its threshold, a synthesized
function) votes YES, NO or abstains on each record. The model is Dawid and Skene's (1979),
with two parameters per source, as Snorkel's and Evaporate's label models use it: its
**sensitivity** (P(YES | the truth is YES)) and **specificity** (P(NO | the truth is NO)),
with a prior share of YES records. The sources are assumed independent given the truth; EM
finds the parameters that make the observed agreements likeliest, starting from the majority
vote (so the solution is the one in which the sources are, on the whole, better than a coin:
the model cannot tell a panel of liars from a panel of truth-tellers, and nothing can).

From the parameters follow each source's precision, recall, F1 and accuracy, and a posterior
probability of YES per record. **Uncertainty** is a bootstrap over records: the EM is re-run on
resampled records, and the spread of each estimate (its 5th to 95th percentile) is reported.

What it cannot do: two sources that make the same mistakes (two prompts of one weak model, a
lexical and an embedding proxy keyed on the same words) look more reliable than they are,
since their agreement is counted as independent evidence. The sources to combine are best
different in kind.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

ABSTAIN = -1


@dataclass(frozen=True)
class SourceQuality:
    """A source's estimated quality against the latent truth, with bootstrap intervals."""

    name: str
    sensitivity: float
    specificity: float
    precision: float
    recall: float
    f1: float
    accuracy: float
    votes: int  # records it voted on
    f1_interval: tuple[float, float] = (0.0, 1.0)
    accuracy_interval: tuple[float, float] = (0.0, 1.0)


@dataclass(frozen=True)
class LabelModelFit:
    sources: dict[str, SourceQuality]
    prior: float  # the estimated share of YES records
    posterior: list[float]  # P(YES) per record
    iterations: int
    method: str = "Dawid-Skene (two-coin), EM from the majority vote; bootstrap intervals"

    def best(self, by: str = "f1") -> SourceQuality:
        return max(self.sources.values(), key=lambda s: getattr(s, by))


def _matrix(votes: Mapping[str, Sequence[bool | None]]) -> tuple[list[str], np.ndarray]:
    names = list(votes)
    lengths = {len(v) for v in votes.values()}
    if len(lengths) != 1:
        raise ValueError("every source votes on the same records (None: abstains)")
    (n,) = lengths
    m = np.full((n, len(names)), ABSTAIN, dtype=np.int8)
    for j, name in enumerate(names):
        for i, v in enumerate(votes[name]):
            if v is not None:
                m[i, j] = int(bool(v))
    return names, m


def _em(
    m: np.ndarray, iterations: int, tol: float
) -> tuple[np.ndarray, np.ndarray, float, np.ndarray, int]:
    """(sensitivity, specificity, prior, posterior, iterations) of votes ``m`` (records x
    sources, 1 / 0 / ABSTAIN)."""
    yes, no = (m == 1), (m == 0)
    voted = yes.sum(axis=1) + no.sum(axis=1)
    # start from the majority vote (ties: one half)
    q = np.where(voted > 0, (yes.sum(axis=1) + 0.5 * (voted == 0)) / np.maximum(voted, 1), 0.5)
    q = np.where(yes.sum(axis=1) * 2 == voted, 0.5, q)
    sens = spec = np.full(m.shape[1], 0.7)
    prior = 0.5
    done = 0
    for step in range(1, iterations + 1):
        done = step
        # M step, with one pseudo-vote each way (Beta(1, 1)) so no parameter is 0 or 1
        prior = float(np.clip(q.mean(), 1e-3, 1 - 1e-3))
        w1, w0 = q[:, None], (1 - q)[:, None]
        sens = ((w1 * yes).sum(axis=0) + 1) / ((w1 * (yes | no)).sum(axis=0) + 2)
        spec = ((w0 * no).sum(axis=0) + 1) / ((w0 * (yes | no)).sum(axis=0) + 2)
        # E step
        log_yes = np.log(prior) + (yes * np.log(sens) + no * np.log(1 - sens)).sum(axis=1)
        log_no = np.log(1 - prior) + (yes * np.log(1 - spec) + no * np.log(spec)).sum(axis=1)
        new_q = 1 / (1 + np.exp(np.clip(log_no - log_yes, -50, 50)))
        if np.abs(new_q - q).max() < tol:
            q = new_q
            break
        q = new_q
    return sens, spec, prior, q, done


def _qualities(sens: np.ndarray, spec: np.ndarray, prior: float) -> dict[str, np.ndarray]:
    tp = prior * sens
    fp = (1 - prior) * (1 - spec)
    fn = prior * (1 - sens)
    precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1e-12), 1.0)
    f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1e-12), 1.0)
    return {
        "precision": precision,
        "recall": sens,
        "f1": f1,
        "accuracy": prior * sens + (1 - prior) * spec,
    }


def fit(
    votes: Mapping[str, Sequence[bool | None]],
    *,
    iterations: int = 200,
    tol: float = 1e-6,
    bootstrap: int = 50,
    seed: int = 0,
) -> LabelModelFit:
    """The label model of ``votes`` (source name -> one vote per record, None: abstains).

    >>> import random
    >>> rng = random.Random(0)
    >>> truth = [rng.random() < 0.3 for _ in range(1000)]
    >>> noisy = lambda acc: [y if rng.random() < acc else not y for y in truth]
    >>> f = fit({"a": noisy(0.9), "b": noisy(0.8), "c": noisy(0.7)}, bootstrap=0)
    >>> [round(f.sources[s].accuracy, 1) for s in "abc"]
    [0.9, 0.8, 0.7]
    """
    names, m = _matrix(votes)
    if m.shape[1] < 3:
        raise ValueError("a label model needs at least three sources to learn their accuracies")
    sens, spec, prior, q, done = _em(m, iterations, tol)
    point = _qualities(sens, spec, prior)
    intervals: dict[str, np.ndarray] = {}
    if bootstrap and m.shape[0] > 1:
        rng = np.random.default_rng(seed)
        draws = {"f1": [], "accuracy": []}
        for _ in range(bootstrap):
            idx = rng.integers(0, m.shape[0], m.shape[0])
            s_b, p_b, pr_b, _, _ = _em(m[idx], iterations, tol)
            qb = _qualities(s_b, p_b, pr_b)
            draws["f1"].append(qb["f1"])
            draws["accuracy"].append(qb["accuracy"])
        for k, v in draws.items():
            intervals[k] = np.percentile(np.array(v), [5, 95], axis=0)
    sources = {}
    for j, name in enumerate(names):

        def interval(k: str, j: int = j) -> tuple[float, float]:
            if k not in intervals:
                return (0.0, 1.0)
            return (float(intervals[k][0, j]), float(intervals[k][1, j]))

        sources[name] = SourceQuality(
            name,
            sensitivity=float(sens[j]),
            specificity=float(spec[j]),
            precision=float(point["precision"][j]),
            recall=float(point["recall"][j]),
            f1=float(point["f1"][j]),
            accuracy=float(point["accuracy"][j]),
            votes=int((m[:, j] != ABSTAIN).sum()),
            f1_interval=interval("f1"),
            accuracy_interval=interval("accuracy"),
        )
    return LabelModelFit(sources, prior, [float(x) for x in q], done)
