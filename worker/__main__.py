"""The attempt runner: one attempt, in a fresh workspace, the same in a local subprocess and in a pod."""

import gc
import sys

# The imports make some hundred thousand objects and almost no garbage: without collections while
# they run, and with what they made set aside for good afterwards (gc.freeze), start-up does not pay
# for the collector walking the same live objects again and again.
gc.disable()
from worker.attempt import main  # noqa: E402

gc.freeze()
gc.enable()

sys.exit(main())
