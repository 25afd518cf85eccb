"""The benchmark library: one set of sections (`<name>_section(bench) -> dict`), one `Sizes`
(runner, sizes.yaml), shared by every script in bench/; perf.py and gpu.py are profiles of it,
gpu_results.py and run.py run the rows of gpu_results.yaml through one protocol."""
