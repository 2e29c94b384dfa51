"""The judge's calls sent through the OpenAI Batch API (`charter generate --batch`).

`options` declares the settings, `journal` records each batch in the store so a stopped run
resumes polling it, `wire` writes the request lines and reads the result lines, and `model`
is the judge that gathers calls into batches and hands each result back to its caller.
"""
