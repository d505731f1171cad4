"""Taxonomy review in the browser: reviewers vote keep/remove, the majority decides.

store (SQLite, one transaction per vote) -> rules (tallies, quorum, effective state) ->
export (today's taxonomy YAML) ; app serves it all over HTTP.
"""
