"""Judge: scores separated tracks by their alignment with the prompt and reranks candidates."""
