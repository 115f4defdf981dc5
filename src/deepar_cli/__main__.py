from deepar_cli.cli import run

run()
