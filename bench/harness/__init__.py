"""The benchmark library: one set of sections, one `Sizes`, shared by every script in bench/.

- record: where inputs and results live, the machine, commands and text without machine
  paths, results files written whole, plots saved;
- sizes: `Sizes` and its three profiles (quick, cpu, gpu) as one table;
- data: the data folder (shared, carried to a GPU machine, or made from the bundled sample
  with --quick), subsets, train / validation splits, video patches merged with images;
- commands: the `selfsup train` command lines the sections time and run;
- timing: warm-up steps, alternating timed windows, training FLOPs, the matmul rate;
- stepper: the library's training step, made by the loop's own functions;
- lightly_peer: LightlySSL's SimCLR as its CIFAR-10 benchmark writes it, in or out of process;
- runner: `Bench` (what every section reads) and the loop that runs sections into a file;
- sections, each `<name>_section(bench) -> dict`: overhead, peer, hardware, scaling and
  profile (bench/perf.py), and gpu_sections (bench/gpu.py's end-to-end ones).

A profile is a script: bench/perf.py and bench/gpu.py each pick sections and a size profile.
"""
