from leviathan_dagster.cli.main import cli

cli()
