"""Offline dataset preparation, run once before training by the ``tools/prepare_*.py`` and
``tools/make_list.py`` commands (the runtime pipeline, :mod:`rsanet.data`, never imports this package).

* :mod:`rsanet.prep.frames`: JPEG frame extraction, ``ffmpeg -i <video> -vf scale=-1:<height> -q:v 1
  -start_number <frame_start> <out>/%05d.jpg``, one folder per video, mirroring the video tree
  (``rgb/x.mp4`` -> ``rgb/x/00001.jpg``), so that the frames backend finds each sample where the video
  backend found its file, minus the extension. Without the ffmpeg binary, PyAV (else decord) decodes and
  Pillow writes the JPEGs (slower; same layout and frame size).
* :mod:`rsanet.prep.lists`: list files (``<path> <num_frames> <label>``) from an annotation split and the
  real frame counts; class lists and ``<path> <label>`` lines for videos sorted into class folders.
* :mod:`rsanet.prep.finegym`: FineGym's two-stage cut, as in the release: each event from its YouTube video
  at the event's absolute timestamps (``<yt>_E_xxxxxx_yyyyyy.mp4``), then each sub-action from its event clip
  at the timestamps relative to the event start, from the first stage's start to the last stage's end
  (``<yt>_E_xxxxxx_yyyyyy_A_aaaa_bbbb.mp4``, the clip id of the element files). Cuts re-encode (H.264, no
  audio), so they are frame accurate.
* :mod:`rsanet.prep.jobs`: the ffmpeg lookup and the parallel job runner that never leaves a truncated
  result under its final name.

The logic is testable without ffmpeg; the tools are the command-line entry points.
"""
