"""The project config ``leviathan.yaml``: its sections, secrets references and YAML safety."""
