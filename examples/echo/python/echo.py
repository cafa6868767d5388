"""Echo function for awslambdaric: ``python3 -m awslambdaric echo.handler``.

The result is the event itself. A dict event can also ask for test behaviours, applied in this
order:

* ``"allocate_mb": N``: allocate N MiB and touch every page (memory reporting);
* ``"sleep": S``: sleep S seconds (timeouts);
* ``"exit": N``: end the runtime process at once with status N (crashes);
* ``"fail": true``: raise ``ValueError("boom")`` (function errors).
"""

import os
import time

PAGE = 4096


def handler(event, context):
    if not isinstance(event, dict):
        return event
    if "allocate_mb" in event:
        block = bytearray(int(event["allocate_mb"]) * 1024 * 1024)
        for offset in range(0, len(block), PAGE):
            block[offset] = 1
        del block
    if "sleep" in event:
        time.sleep(float(event["sleep"]))
    if "exit" in event:
        os._exit(int(event["exit"]))
    if event.get("fail") is True:
        raise ValueError("boom")
    return event
