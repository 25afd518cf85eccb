"""Dense downstream evaluation: depth, surface normals and object detection on a backbone.

- `rgbd_sources`, `rgbd`: RGB-D frames (7-Scenes npz, RGB + depth PNG folders, NYU v2 .mat),
  resized to a coarse resolution with invalid depth masked out, split by frame index;
- `geometry`: surface normals from depth and camera intrinsics;
- `decoder`, `losses`, `metrics`, `depth_eval`: `selfsup eval depth`;
- `boxes`, `detection_data`, `detector`, `detect_eval`: `selfsup eval detect`;
- `figures`: the image grids both write; `settings`: what both measure with; `cli`: their
  arguments.
"""
