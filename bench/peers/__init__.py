"""Small servers the benchmark starts: ceilings (bare HTTP, bare gRPC) and peer model scripts."""
