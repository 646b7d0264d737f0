"""Integration tests: a real PostgreSQL (the session's throwaway server), the app in process."""
