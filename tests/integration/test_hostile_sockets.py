"""The hostile-input corpus (tests/hostile.py) over real sockets, through `framesink local`
on both ingresses: one connection carries every hostile message, each followed by an honest
frame. The connection is never dropped, every honest frame is stored, and every hostile
message gets its outcome (none is an internal error or a store failure).

API Gateway itself closes a connection on any frame over 32 KB (1009) before framesink
sees it, so its run skips the cases that do not fit (the container receiver takes them).
"""

from __future__ import annotations

import uuid
from collections import Counter

import pytest
from hostile import cases, good_frame
from websockets.asyncio.client import connect

from framesink.local import LocalConfig, background_stack

GUARD = 120  # seconds: hang guard only

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("ingress", ["apigw", "direct"])
def test_hostile_messages_leave_the_connection_open_and_honest_frames_stored(ingress):
    prefix = f"h{uuid.uuid4().hex[:6]}"
    corpus = [c for c in cases(prefix) if ingress == "direct" or c.fits_apigw]
    expected = Counter()
    messages, good_keys = [], []
    for k, case in enumerate(corpus):
        for step in case.steps:
            messages.append(step.message)
            expected[step.status] += 1
        message, key = good_frame(prefix, k)
        messages.append(message)
        good_keys.append(key)
        expected["stored"] += 1

    async def send_all(url):
        async with connect(url, compression=None, max_size=None) as ws:
            for message in messages:
                await ws.send(message)
        return ws.close_code

    config = LocalConfig.isolated("hostile", ingress=ingress)
    with background_stack(config, timeout=GUARD) as local:
        close_code = local.run(send_all(local.state["ws_url"]), GUARD)
        local.run(local.wait_idle(), GUARD)
        s3 = local.client("s3")
        stored_keys = {o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=config.bucket)
                       for o in page.get("Contents", [])}
    stats = local.final_stats
    assert close_code == 1000 and stats["closes"] == {"1000": 1}  # never dropped, closed by us normally
    assert set(good_keys) <= stored_keys  # every honest frame after a hostile one was stored
    assert Counter(stats["outcomes"]) == expected
    assert "failed" not in stats["outcomes"] and stats.get("handler_errors", 0) == 0
    if ingress == "direct":
        assert stats["unfinished"] == 0
    # one object per stored outcome: the honest frames, the capped-name cases, the conflict's first
    assert len(stored_keys) == expected["stored"]
