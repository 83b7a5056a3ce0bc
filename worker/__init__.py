"""The attempt runner: one attempt, in a fresh workspace, the same in a local subprocess and in a pod."""
