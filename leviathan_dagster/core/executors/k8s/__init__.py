"""The ``k8s`` and ``k8s-stub`` executors: one worker Job per attempt."""
