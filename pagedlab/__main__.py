import sys

from pagedlab.tools.cli import main

sys.exit(main())
