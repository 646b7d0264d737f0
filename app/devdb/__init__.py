"""A private PostgreSQL from the local server binaries: the embedded development database of
`agent-service serve`, and the throwaway clusters of the tests and benchmarks."""
