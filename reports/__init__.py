"""Reports: read result files (results.csv, summary.json, pytest-benchmark JSON) and write
self-contained HTML + PNG. Imports neither kernels nor nets; never launches a kernel."""
