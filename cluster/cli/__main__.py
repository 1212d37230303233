import sys

from switchyard.cluster.cli.main import main

sys.exit(main())
