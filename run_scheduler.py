#!/usr/bin/env python3
"""Run the campaign engine as a service: a sending pass every TICK_SECONDS until SIGTERM.

python run_scheduler.py            # run until stopped
python run_scheduler.py --once     # drain what is due now and exit (cron, tests)
python run_scheduler.py --once --now 2026-12-01T07:00:00+00:00
python run_scheduler.py --http 127.0.0.1:8000   # also serve the signup pages in this process

The same as `campaign run` (installed with the package); the code is campaign.interfaces.service.
"""

from __future__ import annotations

import sys

from campaign.interfaces.service import main

if __name__ == "__main__":
    sys.exit(main())
