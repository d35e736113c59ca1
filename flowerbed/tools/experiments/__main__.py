"""``python -m flowerbed.tools.experiments <name>``: same as ``flowerbed experiment <name>``."""

import sys

from flowerbed.tools.cli import main

sys.exit(main(["experiment", *sys.argv[1:]]))
