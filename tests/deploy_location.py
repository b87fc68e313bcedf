"""The code location ``tests/test_postgres_deploy.py`` serves to its daemon.

The project's ``defs`` (same assets, checks, resources, jobs, schedules, sensors and automation)
with the in-process executor: a run is one process instead of one per step, which keeps the
end-to-end test within a few minutes on a 2-core CI machine. The instance, the queue, the daemon
and the run launcher are the production ones.
"""

import dagster as dg

from pipelines.definitions import build_definitions

defs = build_definitions(executor_def=dg.in_process_executor)
