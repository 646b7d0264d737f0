"""Who may call, and how often: API keys, prompt and key hashing, per-key limits."""
