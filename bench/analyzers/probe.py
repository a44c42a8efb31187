"""bench/analyze.py's analyzers: ``probe`` reads nothing and answers at once (the kit's own
latency); ``slow`` takes SLOW_SECONDS per frame, 10x slower than a 3-participant meeting's
frames arrive at one worker."""
import time

SLOW_SECONDS = 1.67  # 3 participants x 2 fps = 6 frames/s; one worker at 0.6 frames/s


def analyze(frame):
    return {"w": frame.width}


def slow(frame):
    time.sleep(SLOW_SECONDS)
    return {"w": frame.width}
