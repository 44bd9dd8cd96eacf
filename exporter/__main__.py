from exporter.cli.commands import main

main()
