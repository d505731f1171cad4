"""One module per GLAN stage: its prompt, its reply schema, and how a reply becomes records.

Stages talk to models only through `glan.llm.LLMClient`; they know nothing of HTTP.
"""
