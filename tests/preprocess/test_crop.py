"""The several-faces policy: largest first, then the tracked face in a video."""

import numpy as np

from heser.preprocess.crop import choose_face
from tests.conftest import read_rgb


def test_largest_face_first_then_the_tracked_one(face_backend):
    small = read_rgb("images/st_woman_B_happy1.png")  # 226x221: the smaller face
    big = read_rgb("images/dt_man_E_crop256.png")
    h, w = small.shape[:2]
    canvas = np.zeros((256, w + 256, 3), np.uint8)
    canvas[:h, :w], canvas[:, w:] = small, big
    faces = face_backend(canvas)
    assert len(faces) == 2
    largest = choose_face(faces, previous=None)
    assert largest.box[0] > 200  # the man on the right
    other = next(f for f in faces if f is not largest)
    # in a video whose kept face so far is the woman, she keeps the track
    assert choose_face(faces, previous=other) is other
