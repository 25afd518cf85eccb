"""Transfer evaluation: depth, surface normals, object detection and VOC 2007 classification.

- `rgbd_sources`, `rgbd`: RGB-D frames (7-Scenes npz, RGB + depth PNG folders, NYU v2 .mat),
  resized to a coarse resolution with invalid depth masked out, split by frame index;
- `geometry`: surface normals from depth and camera intrinsics;
- `decoder`, `losses`, `metrics`, `depth_eval`: `selfsup eval depth`;
- `boxes`, `detection_data`, `detector`, `detect_eval`: `selfsup eval detect`;
- `voc07`: `selfsup eval voc07`, multi-label classification by fine-tuning (VOC's reader);
- `figures`: the image grids both write; `settings`: what both measure with; `cli`: their
  arguments.
"""
