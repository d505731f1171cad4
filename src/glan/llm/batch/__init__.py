"""Batch APIs (OpenAI, Azure OpenAI, Anthropic) as one more backend: half price, a day's wait."""
