from cpfmap.cli.commands import main

main()
