"""The benchmark library: one set of sections, one `Sizes`, shared by every script in bench/.

record (files, options, commands, the machine), runner (`Sizes`, `Bench`, `run_all`), data,
rows (bench/gpu_results.yaml), stepper (the timed `selfsup train` step), lightly_peer (the
peer), and the sections, each `<name>_section(bench) -> dict`: overhead and hardware, peer,
scaling and profile (bench/perf.py), gpu_sections (bench/gpu.py's end-to-end ones). A profile
is a script: perf.py and gpu.py pick sections and a size profile; gpu_results.py and run.py
run rows through one protocol.
"""
