"""A tiny real Prefect flow, run as its own process by ``test_prefect_postgres.py``.

The process talks to the server through the environment alone (``PREFECT_API_URL``,
``PREFECT_API_AUTH_STRING``), as the compose stack's Prefect worker and ``make demo`` against a
remote server do.  Prints one JSON line: the flow run id, its final state and result.
"""

from __future__ import annotations

import json

from prefect import flow, task


@task
def add(a: int, b: int) -> int:
    return a + b


@flow(name="infra-smoke")
def smoke(x: int = 2) -> int:
    """Two tasks, so the server records task runs as well as the flow run."""
    return add(add(x, 3), 4)


if __name__ == "__main__":
    state = smoke(return_state=True)
    print(json.dumps({"flow_run_id": str(state.state_details.flow_run_id), "state": state.type.value,
                      "result": state.result(raise_on_failure=False)}))
