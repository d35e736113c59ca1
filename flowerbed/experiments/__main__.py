"""``python -m flowerbed.experiments <name>``: same as ``flowerbed experiment <name>``."""

import sys

from flowerbed.cli import main

sys.exit(main(["experiment", *sys.argv[1:]]))
