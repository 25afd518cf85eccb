"""The parts of bench/perf.py, one module per section, and what its sections share with
bench/gpu.py and bench/learning.py.

- common: the tasks, the sizes of a full and a --quick run, `Bench` (what every section
  reads), data subsets, `selfsup train` command lines, and the timing helpers: alternating
  timed windows after warm-up steps, training FLOPs;
- stepper: the library's training step, made by the loop's own functions (`LoopStepper`);
- overhead, peer, hardware, scaling, profile: the sections of bench/perf.py, each with its
  `<name>_section(bench) -> dict`.

The modules import bench/run.py as `run`: bench/ must be on sys.path, as the scripts there
put it.
"""
