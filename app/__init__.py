"""User-facing doors: the promptsep CLI, the Gradio demo and the HTTP API."""
