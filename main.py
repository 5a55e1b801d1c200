"""Entry point: ``python main.py fit --config configs/quickstart/resnet.yaml``.

See ``python main.py --help`` and ``python main.py fit --help``. ``configs/defaults.yaml`` is
read first by every subcommand; the files given with ``--config`` override it.
"""

from pathlib import Path

from skipln.cli import cli_main

if __name__ == "__main__":
    cli_main(default_config_files=[Path(__file__).resolve().parent / "configs" / "defaults.yaml"])
