"""A privacy delete while the meeting still streams, over real sockets through `framesink
local` on both ingresses (the issue: 42 frames that arrived after a delete mid-stream were left
under a recording `recordings` no longer listed, its PART# items back).

Now: frames after the delete are refused (``recording_deleted``) once the ingest process has
seen the tombstone (within 2 s), frames that passed the check just before are removed by the
delete's second sweep, and no participant total is written back."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

import pytest

from framesink.local import LocalConfig, background_stack
from framesink.simulator import SimConfig, simulate
from framesink_core.ingest.tombstones import is_deleted
from framesink_core.read.delete import delete_recording
from framesink_core.shared import schema

GUARD = 120
pytestmark = pytest.mark.slow


@pytest.mark.parametrize("ingress", ["apigw", "direct"])
def test_a_delete_mid_stream_leaves_nothing_and_refuses_what_comes_after(ingress):
    rec = f"del-{uuid.uuid4().hex[:8]}"
    with background_stack(LocalConfig.isolated("delrace", ingress=ingress), timeout=GUARD) as local:
        s3, ddb = local.client("s3"), local.client("dynamodb")
        config = local.config
        deleted = {}

        def delete_at_3s():
            time.sleep(3.0)
            deleted["result"] = delete_recording(s3, ddb, config.bucket, config.table, rec, dry_run=False)
            deleted["at"] = time.monotonic()

        deleter = threading.Thread(target=delete_at_3s)
        deleter.start()
        report = local.run(simulate(SimConfig(url=local.state["ws_url"], participants=3, seconds=10, small=True,
                                              recording_id=rec)), GUARD)
        deleter.join(GUARD)
        local.run(local.wait_idle(), GUARD)
        time.sleep(0.5)
        objects = s3.list_objects_v2(Bucket=config.bucket, Prefix=schema.recording_prefix(rec)).get("KeyCount", 0)
        items = ddb.query(TableName=config.table, KeyConditionExpression="pk = :pk",
                          ExpressionAttributeValues={":pk": {"S": schema.recording_pk(rec)}})["Items"]
        listed = [r["recording_id"] for r in local.index().recordings()]
        tombstone = is_deleted(ddb, config.table, rec)
    stats = local.final_stats
    result = deleted["result"]
    outcomes = stats["outcomes"]
    refused = outcomes.get("rejected", 0)
    print(f"{ingress}: sent {report.frames_sent}, deleted {result.objects} frames ({result.late_objects} late), "
          f"outcomes {dict(outcomes)}")
    assert report.frames_sent == 60 and report.connections == 1  # the stream went on...
    assert objects == 0 and items == [] and rec not in listed and tombstone  # ...and nothing of it is left
    assert result.objects >= 1 and result.complete
    # Every frame after the delete's first ~3 s plus the 2 s tombstone cache (and a second of
    # slack on a loaded box), at 6 frames/s, was refused.
    assert refused >= 60 - 6 * (3 + 2 + 1)
    assert outcomes["stored"] + refused == 60 and outcomes.get("failed", 0) == 0
