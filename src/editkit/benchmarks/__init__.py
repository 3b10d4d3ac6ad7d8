"""editkit benchmarks: each module prints a table and writes JSON
(`python -m editkit.benchmarks.<name>` or `editkit bench <name>`); every comparison is a ratio
measured in the same run."""
