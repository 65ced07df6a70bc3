"""Generate the Inputs and Outputs tables of infra/README.md from the module's
variables.tf and outputs.tf (the terraform-docs layout, without needing terraform-docs).

    python tests/infra/gen_docs.py           # print the tables
    python tests/infra/gen_docs.py --write   # rewrite them in infra/README.md
    python tests/infra/gen_docs.py --check   # exit 1 when infra/README.md is out of date

The tables live between <!-- BEGIN_TF_INPUTS --> / <!-- END_TF_INPUTS --> and
<!-- BEGIN_TF_OUTPUTS --> / <!-- END_TF_OUTPUTS -->.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tf  # noqa: E402

README = tf.INFRA / "README.md"


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ").strip()


def hcl_value(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, str):
        if v.startswith("${") and v.endswith("}"):
            return v[2:-1]
        return json.dumps(tf.unquote(v))
    if isinstance(v, list):
        return "[" + ", ".join(hcl_value(x) for x in v) + "]"
    if isinstance(v, dict):
        items = [(k, x) for k, x in v.items() if not k.startswith("__")]
        return "{" + ", ".join(f"{tf.unquote(k)} = {hcl_value(x)}" for k, x in items) + "}"
    return str(v)


def inputs_table() -> str:
    rows = ["| Name | Description | Type | Default | Required |", "|------|-------------|------|---------|:--------:|"]
    for name, body, _ in sorted(tf.module_blocks("variable"), key=lambda b: b[0]):
        description = cell(tf.unquote(body.get("description", "")))
        typ = cell(tf.expr(body.get("type", "any")))
        if "default" in body:
            default, required = f"`{cell(hcl_value(body['default']))}`", "no"
        else:
            default, required = "n/a", "yes"
        rows.append(f"| `{name}` | {description} | `{typ}` | {default} | {required} |")
    return "\n".join(rows)


def outputs_table() -> str:
    rows = ["| Name | Description |", "|------|-------------|"]
    for name, body, _ in sorted(tf.module_blocks("output"), key=lambda b: b[0]):
        rows.append(f"| `{name}` | {cell(tf.unquote(body.get('description', '')))} |")
    return "\n".join(rows)


def replace_section(text: str, marker: str, table: str) -> str:
    pattern = re.compile(rf"(<!-- BEGIN_{marker} -->\n).*?(<!-- END_{marker} -->)", re.S)
    if not pattern.search(text):
        raise SystemExit(f"{README}: markers <!-- BEGIN_{marker} --> / <!-- END_{marker} --> not found")
    return pattern.sub(lambda m: m.group(1) + table + "\n" + m.group(2), text)


def rendered(text: str) -> str:
    text = replace_section(text, "TF_INPUTS", inputs_table())
    return replace_section(text, "TF_OUTPUTS", outputs_table())


def main(argv: list[str]) -> int:
    if "--write" in argv or "--check" in argv:
        current = README.read_text(encoding="utf-8")
        new = rendered(current)
        if "--check" in argv:
            if new != current:
                print(f"{README} is out of date: run python tests/infra/gen_docs.py --write")
                return 1
            return 0
        README.write_text(new, encoding="utf-8")
        return 0
    print("## Inputs\n\n" + inputs_table() + "\n\n## Outputs\n\n" + outputs_table())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
