"""Thin adapters that make every mhpo objective a one-line switch in TRL and verl.

They convert the host framework's tensors and configuration into one call of
:func:`mhpo.policy_loss` and map the metrics back; no loss math lives here. Each module
imports its framework lazily: ``import mhpo`` never imports trl or verl.
"""
