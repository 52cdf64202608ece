"""A tiny model that really emits a tool call: the random tiny:qwen2 overfit (plain torch, about 10 to 40 s
on 2 busy CPU cores) to answer every prompt with

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>

so evaluation, `transformers serve` and the agent loop can be tested end to end on real generated text
with outputs known in advance. Used by tests/test_evaluate.py and tests/test_agent.py (slow tests).
"""

from __future__ import annotations

from pathlib import Path

CALL_TEXT = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
DATA = Path(__file__).parent / "data" / "eval_small.jsonl"


def build_tiny_caller(path: Path, max_steps: int = 400) -> Path:
    """Train and save the model into `path` (once: an existing folder is reused)."""
    path = Path(path)
    if (path / "config.json").exists():
        return path
    import torch

    from toolcall_kit.evaluate import cases_from_records, load_records, render_prompts
    from toolcall_kit.models import load_model_and_tokenizer
    from toolcall_kit.templates import detect_family

    torch.manual_seed(0)
    model, tok = load_model_and_tokenizer("tiny:qwen2")
    prompts = render_prompts(tok, cases_from_records(load_records(DATA)), detect_family(tok))
    target = tok(CALL_TEXT + "<|im_end|>", add_special_tokens=False)["input_ids"]
    seqs = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    recent: list[float] = []
    for step in range(max_steps):
        prompt = seqs[step % len(seqs)]
        ids = torch.tensor([prompt + target])
        labels = torch.tensor([[-100] * len(prompt) + target])
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        recent = (recent + [loss.item()])[-len(seqs) :]
        if len(recent) == len(seqs) and max(recent) < 0.01:  # every prompt's target is near-certain
            break
    model.eval()
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path
