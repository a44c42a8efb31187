"""The bare Python floor of bench/sidebyside.py: a websocket server that, per frame, reads the
message, ``json.loads`` it, ``base64.b64decode``s the PNG and makes one S3 ``put_object`` and
one DynamoDB ``put_item`` with plain boto3, one message after the other: the least a Python
receiver that stores and indexes each frame must do. It sends what framesink sends (the same
S3 metadata, an index item with the same attributes, built inline) so the comparison is of
the work around the two calls, not of their size. No auth, no checks, no metrics.

    python -m bench.floor_receiver BUCKET TABLE     (prints {"port": N} once listening)
"""

from __future__ import annotations

import base64
import json
import sys
import time
import uuid
from urllib.parse import quote

import boto3
from websockets.sync.server import serve

from framesink_core.shared.items import BOTO_CONFIG


def main() -> int:
    bucket, table = sys.argv[1], sys.argv[2]
    s3 = boto3.client("s3", config=BOTO_CONFIG)
    ddb = boto3.client("dynamodb", config=BOTO_CONFIG)

    def handle(ws):
        connection = uuid.uuid4().hex
        for message in ws:
            event = json.loads(message)
            if event.get("event") != "video_separate_png.data":
                continue
            data = event["data"]["data"]
            png = base64.b64decode(data["buffer"])
            rec = event["data"]["recording"]["id"]
            pid = str(data["participant"]["id"])
            ms = round(data["timestamp"]["relative"] * 1000)
            key = f"recordings/{rec}/participants/{pid}/{data['type']}/{ms:010d}.png"
            participant = data["participant"]
            absolute = data["timestamp"].get("absolute") or ""
            width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
            stored_at = str(int(time.time() * 1000))
            s3.put_object(Bucket=bucket, Key=key, Body=png, ContentType="image/png", Metadata={
                "absolute": absolute, "bot-id": "", "recording-id": rec, "participant-id": pid, "type": data["type"],
                "relative-ms": str(ms), "width": str(width), "height": str(height),
                "participant-name": quote(participant.get("name") or "", safe=""),
                "is-host": "true" if participant.get("is_host") else "false",
                "platform": quote(participant.get("platform") or "", safe=""), "connection-id": connection,
                "stored-at": stored_at})
            ddb.put_item(TableName=table, Item={
                "pk": {"S": f"REC#{rec}"}, "sk": {"S": f"{ms:010d}#{pid}#{data['type']}"},
                "gsi1pk": {"S": f"PART#{rec}#{pid}"}, "gsi1sk": {"S": f"{ms:010d}#{data['type']}"},
                "kind": {"S": "frame"}, "recording_id": {"S": rec}, "participant_id": {"S": pid},
                "participant_name": {"S": participant.get("name") or ""},
                "is_host": {"BOOL": bool(participant.get("is_host"))},
                "platform": {"S": participant.get("platform") or ""}, "type": {"S": data["type"]},
                "relative_ms": {"N": str(ms)}, "absolute": {"S": absolute}, "bytes": {"N": str(len(png))},
                "width": {"N": str(width)}, "height": {"N": str(height)}, "connection_id": {"S": connection},
                "stored_at": {"N": stored_at}, "expires_at": {"N": str(int(time.time()) + 30 * 86400)}})

    with serve(handle, "127.0.0.1", 0, max_size=None, compression=None) as server:
        print(json.dumps({"port": server.socket.getsockname()[1]}), flush=True)
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
