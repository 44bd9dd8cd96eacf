from exporter.cli.entry import cli

cli()
