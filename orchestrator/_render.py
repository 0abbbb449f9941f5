"""Human-readable views of a run: the tree of nodes with status, score and tokens."""

from __future__ import annotations

from rich.markup import escape
from rich.tree import Tree

from ._graph import Node, RunGraph

__all__ = ["render_tree"]

_STATUS_STYLE = {"done": "green", "failed": "red", "cancelled": "yellow"}


def _label(node: Node, max_text: int) -> str:
    text = " ".join(node.text.split())
    if len(text) > max_text:
        text = text[: max_text - 1] + "…"
    style = _STATUS_STYLE.get(node.status.value, "white")
    parts = [f"[bold]{node.id}[/bold] {node.kind} [{style}]{node.status.value}[/{style}]"]
    if node.score is not None:
        parts.append(f"score={node.score:.3g}")
    answer = getattr(node.attrs, "answer", None)
    if answer is not None:
        parts.append(f"answer={escape(str(answer))}")
    if node.usage.generated_tokens:
        parts.append(f"{node.usage.generated_tokens} tok")
    if node.pruned:
        parts.append("[dim]pruned[/dim]")
    if node.error:
        parts.append(f"[red]{escape(node.error)}[/red]")
    if text:
        parts.append(f"[dim]{escape(text)}[/dim]")
    return "  ".join(parts)


def render_tree(graph: RunGraph, *, max_text: int = 80) -> Tree:
    """A rich ``Tree`` of the run. A join (several parents) is drawn under its first parent
    and names the others."""
    top = Tree("[bold]run[/bold]")

    def add(branch: Tree, node: Node) -> None:
        label = _label(node, max_text)
        if len(node.parent_ids) > 1:
            label += f"  [dim](joins {', '.join(node.parent_ids)})[/dim]"
        sub = branch.add(label)
        for child in graph.children(node.id):
            if child.parent_ids[0] == node.id:
                add(sub, child)

    for root in graph.roots():
        add(top, root)
    return top
