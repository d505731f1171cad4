"""Stage 0: an LLM-drafted taxonomy for people to review.

Several differently-worded prompts each list fields, sub-fields and disciplines; the drafts are
merged into one (glan.stages.taxonomy_merge: same-meaning fields joined, each discipline once,
non-fields dropped, every discipline grouped) and written as YAML. What is kept in the end is
the reviewers' vote.
"""

from __future__ import annotations

from typing import Any

from glan.llm import ChatRequest, LLMClient, RequestFailed, user
from glan.stages.taxonomy_merge import MergeReport, merge_drafts
from glan.taxonomy import Taxonomy

PROMPTS = (
    "List the main fields of human knowledge and capabilities, from the academic sciences and "
    "humanities to industries and everyday skills. Break each field into sub-fields, and each "
    "sub-field into the disciplines a university or a profession would teach.",
    "You are designing the course catalogue of a university that teaches everything people know "
    "and do. Give its faculties (fields), their departments (sub-fields), and the disciplines "
    "each department teaches.",
    "Make a map of the skills and knowledge a well-rounded assistant should master: broad "
    "areas, the sub-areas within each, and the specific disciplines within each sub-area.",
)


def schema(max_fields: int) -> dict[str, Any]:
    name = {"type": "string", "minLength": 2, "maxLength": 80}
    return {
        "type": "object",
        "properties": {
            "fields": {
                "type": "array",
                "minItems": 1,
                "maxItems": max_fields,
                "items": {
                    "type": "object",
                    "properties": {
                        "name": name,
                        "subfields": {
                            "type": "array",
                            "minItems": 1,
                            "maxItems": 8,
                            "items": {
                                "type": "object",
                                "properties": {
                                    "name": name,
                                    "disciplines": {
                                        "type": "array",
                                        "minItems": 1,
                                        "maxItems": 10,
                                        "items": name,
                                    },
                                },
                                "required": ["name", "disciplines"],
                            },
                        },
                    },
                    "required": ["name", "subfields"],
                },
            }
        },
        "required": ["fields"],
    }


def merge(drafts: list[dict[str, Any]]) -> Taxonomy:
    """The drafts as one taxonomy (what was merged: `merge_drafts`)."""
    return merge_drafts(drafts)[0]


async def build_taxonomy(
    client: LLMClient, seed: int = 0, samples_per_prompt: int = 1, max_fields: int = 12
) -> tuple[Taxonomy, MergeReport]:
    drafts = []
    for p_idx, text in enumerate(PROMPTS):
        for i in range(samples_per_prompt):
            request = ChatRequest(
                messages=user(text),
                json_schema=schema(max_fields),
                schema_name="taxonomy",
                temperature=1.0,
                top_p=0.95,
                max_tokens=4096,
                seed=seed,
                sample_index=p_idx * 1000 + i,
                tag="taxonomy",
            )
            try:
                drafts.append((await client.chat(request)).parsed)
            except RequestFailed:
                continue
    return merge_drafts(drafts)
