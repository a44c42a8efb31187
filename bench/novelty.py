"""Novelty (framesink_core/analyze/novelty.py): what scoring a frame costs against storing it,
and how many frames come out novel on a slide deck, a static screen and a talking head.

Both the store (Ingestor.handle, what the receiver and $default do per frame) and the scorer
(NoveltyScorer.score: GetObject, decode + thumbnail, GetItem, UpdateItem; the event is not
sent here) run against in-process moto on the same frames, interleaved, so the ratio holds on
a noisy box. The scorer runs in its own function in AWS, never in the receiver: this is what
that function pays per frame, and why it is not on the ingest path.

    python -m bench.novelty [--quick]
"""

from __future__ import annotations

import io
import math
import sys
import time
import uuid

from . import Row

SLIDES, HEARTBEAT_S = 6, 10.0


def _talking_head(k: int, size: tuple[int, int]) -> bytes:
    from PIL import Image, ImageDraw

    from framesink.synthetic import make_png

    base = Image.open(io.BytesIO(make_png(*size, seed=3, detailed=True))).convert("RGB")
    x = size[0] // 2 + int(6 * math.sin(k / 3)) + (40 if 30 <= k < 45 else 0)  # leans aside for 7.5 s
    ImageDraw.Draw(base).ellipse((x - 60, 40, x + 60, 200), fill=(205, 170, 140))
    out = io.BytesIO()
    Image.blend(base, Image.effect_noise(size, 24).convert("RGB"), 0.06).save(out, "PNG")
    return out.getvalue()


def run(quick: bool = False) -> tuple[list[Row], dict]:
    import boto3
    from moto import mock_aws

    from framesink.local.aws import provision
    from framesink.synthetic import frame_message, make_slide
    from framesink_core.analyze.novelty import NoveltyScorer
    from framesink_core.ingest.outlet import Outlet
    from framesink_core.read.feed import FrameRef
    from framesink_core.service import Service
    from framesink_core.shared.items import BOTO_CONFIG
    from framesink_core.shared.settings import Settings

    rows: list[Row] = []
    result: dict = {}
    with mock_aws():
        clients = {n: boto3.client(n, region_name="us-east-1", config=BOTO_CONFIG)
                   for n in ("s3", "dynamodb", "secretsmanager")}
        provision(**clients, bucket="bench-novelty", table="bench-novelty", token=None)
        svc = Service(Settings(bucket="bench-novelty", table="bench-novelty", totals_flush_seconds=0),
                      s3=clients["s3"], dynamodb=clients["dynamodb"])
        scorer = NoveltyScorer(svc.settings.bucket, svc.settings.table, svc.s3, svc.dynamodb, Outlet(),
                               heartbeat_seconds=HEARTBEAT_S)

        def stream(pngs: list[bytes], frame_type: str, timed: bool = False) -> tuple[list[bool], float, float]:
            rec = f"bench-{uuid.uuid4().hex[:8]}"
            store_s = score_s = 0.0
            novel = []
            for k, png in enumerate(pngs):
                message = frame_message(png, recording_id=rec, participant_id=1, relative=k * 0.5,
                                        frame_type=frame_type)
                t0 = time.perf_counter()
                outcome = svc.ingestor.handle(message, connection_id="c")
                t1 = time.perf_counter()
                novel.append(scorer.score(FrameRef.from_key(svc.settings.bucket, outcome.key)).novel)
                t2 = time.perf_counter()
                store_s, score_s = store_s + t1 - t0, score_s + t2 - t1
            return novel, store_s * 1000 / len(pngs), score_s * 1000 / len(pngs)

        per_slide = 2 if quick else 4
        deck = [make_slide(i, 1280, 720, noise_seed=k) for i in range(SLIDES) for k in range(per_slide)]
        novel, store_ms, score_ms = stream(deck, "screenshare")
        changes = [k for k in range(len(deck)) if k % per_slide == 0]
        result["deck"] = {"frames": len(deck), "novel": sum(novel), "slide_changes": len(changes),
                          "changes_novel": sum(novel[k] for k in changes), "store_ms": store_ms, "score_ms": score_ms}
        rows.append(Row("novelty", "score a 1280x720 screenshare frame (per frame)", round(score_ms, 1), "ms",
                        round(store_ms, 1), "store it (Ingestor.handle)",
                        note=f"slide changes novel {result['deck']['changes_novel']}/{len(changes)}, "
                        f"novel {sum(novel)}/{len(deck)} frames"))

        static = [make_slide(0, 1280, 720, noise_seed=k % 3) for k in range(40 if quick else 120)]
        novel, _, _ = stream(static, "screenshare")
        seconds = len(static) * 0.5
        result["static"] = {"frames": len(static), "seconds": seconds, "novel": sum(novel),
                            "heartbeats": math.ceil(seconds / HEARTBEAT_S)}
        rows.append(Row("novelty", "novel frames on a static screen", sum(novel), "frames",
                        math.ceil(seconds / HEARTBEAT_S), f"heartbeats in {seconds:g} s",
                        note="goal: at most one per heartbeat"))

        head = [_talking_head(k, (480, 360)) for k in range(60)]
        novel, store_ms, score_ms = stream(head, "webcam")
        result["webcam"] = {"frames": len(head), "novel": sum(novel), "store_ms": store_ms, "score_ms": score_ms}
        rows.append(Row("novelty", "score a 480x360 webcam frame (per frame)", round(score_ms, 1), "ms",
                        round(store_ms, 1), "store it (Ingestor.handle)",
                        note=f"talking head: {sum(novel)}/{len(head)} frames novel"))
    return rows, result


if __name__ == "__main__":
    from .__main__ import print_table

    result_rows, result = run(quick="--quick" in sys.argv)
    print_table(result_rows)
    print(result)
