"""Executors run one attempt somewhere (local subprocess now; k8s and k8s-stub later)."""
