from deepar_cli.cli import main

main()
