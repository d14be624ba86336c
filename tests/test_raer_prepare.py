"""The data-preparation command's real face detector (OpenCV's Haar cascade, shipped inside opencv) on a real photo."""

import json

import numpy as np
from PIL import Image
from skimage import data

from affectlab.datasets.prepare import prepare_boxes

# Where the face is in scikit-image's astronaut photo (512 x 512), read off the picture.
FACE = (170, 60, 280, 170)


def overlap(a, b):
    w = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_real_detector_writes_face_and_body_boxes_in_the_official_format(tmp_path):
    photo = data.astronaut()
    clip = tmp_path / "images" / "SelfStudy" / "Library" / "0001"
    clip.mkdir(parents=True)
    for k, shift in enumerate((0, 4, 8), start=1):  # the student moves a little between frames
        Image.fromarray(np.roll(photo, shift, axis=1)).save(clip / f"{k}.jpg", quality=95)
    found = prepare_boxes(tmp_path)
    face = json.loads((tmp_path / "bounding_box" / "face.json").read_text())
    body = json.loads((tmp_path / "bounding_box" / "body.json").read_text())
    assert set(face) == {"SelfStudy/Library/0001"} == set(body)
    boxes = face["SelfStudy/Library/0001"]
    assert set(boxes) == {"1.jpg", "2.jpg", "3.jpg"}
    assert overlap(boxes["1.jpg"], FACE) > 0.5, boxes["1.jpg"]
    assert boxes["3.jpg"][0] > boxes["1.jpg"][0]  # the box follows the face
    x1, y1, x2, y2 = body["SelfStudy/Library/0001"]
    for bx1, by1, bx2, by2 in boxes.values():  # the body box takes in every face of the clip, and more below it
        assert x1 <= bx1 and y1 <= by1 and bx2 <= x2 and by2 < y2
    assert found == {"SelfStudy/Library/0001": 3}
