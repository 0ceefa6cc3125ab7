"""`python -m sandbox.wechat`: see sandbox/wechat/cli.py."""

import sys

from sandbox.wechat.cli import main

sys.exit(main())
