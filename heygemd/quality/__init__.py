"""The check of every rendered video: is the mouth in sync with the speech, and does the render look right?

Run after encoding, on the frames as the viewer sees them, on the CPU (dlib landmarks, no model weights):

- ``observe``: the face's landmarks fitted on the video's frames (the face region only), the seam on a few;
- ``measures``: AV offset and sync strength, mouth movement in silence, frozen mouth, face coverage, jitter;
- ``verdict``: each measure against its threshold (``[quality]`` settings) -> a ``report.QualityReport``;
- ``check``: ``check_render`` (the daemon's worker, after each video) and ``score_file`` (``heygemd score``).

No daemon knowledge: the worker records the report in status.json and decides what a video to review gets.
"""
