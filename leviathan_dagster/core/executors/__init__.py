"""Executors run one attempt's worker somewhere: ``local`` (a subprocess), ``k8s``, ``k8s-stub``."""
