import sys

from worker.attempt import main

sys.exit(main())
