"""Count the faces in each webcam frame: OpenCV's bundled frontal-face Haar cascade."""
import cv2
import numpy as np

CASCADE = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")


def analyze(frame):
    if frame.type != "webcam":
        return None
    gray = cv2.cvtColor(np.asarray(frame.image().convert("RGB")), cv2.COLOR_RGB2GRAY)
    faces = CASCADE.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(40, 40))
    return {"faces": len(faces), "boxes": [[int(v) for v in box] for box in faces]}
