"""The ``github`` forge: pull requests on GitHub or GitHub Enterprise."""
