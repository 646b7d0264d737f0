"""Unit tests of app/access: hashing of prompts and API keys."""
