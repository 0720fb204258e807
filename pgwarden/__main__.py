import sys

from pgwarden.cli import main

sys.exit(main())
