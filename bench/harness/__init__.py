"""The benchmark library: one set of sections, one `Sizes`, shared by every script in bench/.

- record: where inputs and results live, the options the scripts share, running a command,
  the machine, commands and text without machine paths, results files written whole, plots;
- sizes: `Sizes` and its three profiles (quick, cpu, gpu), read from the table in sizes.yaml;
- runner: `run_all`, the one loop that runs sections, rows, entries or contenders (several
  at once where asked) and saves each as it ends; `Bench`, what every section reads;
- data: the data folder (shared, carried to a GPU machine, or made from the bundled sample
  with --quick), subsets, train / validation splits, video patches merged with images;
- rows: the rows of bench/gpu_results.yaml (which bench/suites.yaml's entries name): the
  data each reads, its `selfsup train` command and schedule, the transitive patch graph;
- commands: the `selfsup train` command lines the sections time and run;
- timing: warm-up steps, alternating timed windows, training FLOPs, the matmul rate;
- stepper: the library's training step, made by the loop's own functions;
- lightly_peer: LightlySSL's SimCLR as its CIFAR-10 benchmark writes it, in or out of process;
- sections, each `<name>_section(bench) -> dict`: overhead, peer, hardware, scaling and
  profile (bench/perf.py), and gpu_sections (bench/gpu.py's end-to-end ones).

A profile is a script: bench/perf.py and bench/gpu.py each pick sections and a size profile;
bench/gpu_results.py and bench/run.py each run rows through one protocol.
"""
