"""The documentation pages generated from the code and from measured results, one module per
page family; tools/gen_docs.py, the MkDocs hook, puts them together.

- pages: what every page uses: the repository's paths, Markdown tables, YAML values;
- cli_reference, config_reference: `reference/cli.md` and `reference/config.md`;
- results_data: the benchmark entries, the papers' figures, `bench/results/*.json` and what
  one entry's data becomes (probe tables, facts, commands, plots);
- probe_pages: the counting, multi-task and transitive-invariance results pages;
- tool_pages: the results pages of the other benchmarks (video, graph, learning, GPU);
- results: the results index and every results page together;
- method_blocks: the `<!-- results: KEY -->` block of each method page;
- figures: the method pages' figures.
"""
