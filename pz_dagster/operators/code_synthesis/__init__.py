"""Code synthesis (Evaporate): a model writes extraction functions from a sample of the batch;
the functions that agree with its own answers vote on every other record, with no model call,
and the model answers only where they abstain or disagree.

- ``map``: the strategy of a semantic map (``code_synthesis_map``);
- ``filter``: the strategy of a semantic filter (``code_synthesis_filter``);
- ``run``: one run over a batch, shared by both (sample, synthesize, vote, fall back);
- ``pool``: the candidate functions of a batch, their scores and their vote;
- ``functions``: the model-free parts: the prompt, reading a function out of an answer,
  inducing functions from answers, scoring candidates and voting;
- ``sandbox`` and ``worker``: running the untrusted candidates, one process each, under a
  seccomp filter (``docs/threat-model.md``).
"""
