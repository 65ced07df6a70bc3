"""Helpers shared by the infra tests and gen_docs.py: parse the Terraform with python-hcl2,
render the IAM policy templates, and read the Rust sources the way the tests need them."""

from __future__ import annotations

import functools
import json
import re
import tomllib
from pathlib import Path

import hcl2
import yaml

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
MODULE = INFRA / "modules" / "stashless"
FUNCTIONS = ROOT / "functions"


# --------------------------------------------------------------------------- Terraform


def tf_files() -> list[Path]:
    return sorted(p for p in INFRA.rglob("*.tf") if ".terraform" not in p.parts)


@functools.cache
def parse(path: Path) -> dict:
    with open(path, encoding="utf-8") as f:
        return hcl2.load(f)


def unquote(s):
    """python-hcl2 8.x keeps the quotes of string literals and labels."""
    if isinstance(s, str) and len(s) >= 2 and s[0] == '"' and s[-1] == '"':
        return s[1:-1]
    return s


def expr(s) -> str:
    """An expression as python-hcl2 renders it, without the ${ } wrapper."""
    if isinstance(s, str) and s.startswith("${") and s.endswith("}"):
        return s[2:-1]
    return s


def module_blocks(kind: str, directory: Path = MODULE) -> list[tuple[str, dict, Path]]:
    """(label, body, file) of every top-level `kind` block (variable, output, locals...)."""
    out = []
    for path in sorted(directory.glob("*.tf")):
        for block in parse(path).get(kind, []):
            if kind == "locals":
                out.append(("", block, path))
                continue
            for label, body in block.items():
                out.append((unquote(label), body, path))
    return out


def resources(rtype: str, directory: Path = MODULE) -> dict[str, dict]:
    """name → body of every resource of type `rtype` in the module."""
    out = {}
    for path in sorted(directory.glob("*.tf")):
        for block in parse(path).get("resource", []):
            for t, named in block.items():
                if unquote(t) != rtype:
                    continue
                for name, body in named.items():
                    out[unquote(name)] = body
    return out


@functools.cache
def module_locals() -> dict:
    merged = {}
    for _, block, _ in module_blocks("locals"):
        for k, v in block.items():
            if not k.startswith("__"):
                merged[k] = v
    return merged


def hcl_keys(value) -> set[str]:
    """Attribute names of an object: a parsed dict, or an object constructor inside an
    expression string such as merge(local.a, {X = ...}); local.* references are followed."""
    names: set[str] = set()
    if isinstance(value, dict):
        for k, v in value.items():
            if not k.startswith("__"):
                names.add(unquote(k))
        return names
    if isinstance(value, str):
        names |= set(re.findall(r"\b([A-Z][A-Z0-9_]*)\s*=(?!=)", value))
        for ref in re.findall(r"\blocal\.([a-z_][a-z0-9_]*)\b", value):
            if ref in module_locals():
                names |= hcl_keys(module_locals()[ref])
    return names


# --------------------------------------------------------------------------- checkov skips
#
# checkov reads a skip from a `#checkov:skip=<check>:<reason>` comment (Terraform; the secrets
# framework, in any file, on the secret's line or next to it) and, for Kubernetes objects,
# only from a `checkov.io/skip<n>: <check>=<reason>` annotation (comments there are ignored).

SKIP_COMMENT = re.compile(r"#\s*checkov:skip=(.*)$")
SKIP_ANNOTATION_PREFIXES = ("checkov.io/skip", "bridgecrew.io/skip", "cortex.io/skip")


def yaml_files() -> list[Path]:
    return sorted(p for p in INFRA.rglob("*") if p.suffix in (".yaml", ".yml") and ".terraform" not in p.parts)


def skip_comments(path: Path) -> list[tuple[int, str]]:
    """(line, text after `checkov:skip=`) of every skip comment in a file."""
    return [(n, m.group(1)) for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if (m := SKIP_COMMENT.search(line))]


def skip_annotations(path: Path) -> list[tuple[str, str]]:
    """(object, annotation value) of every checkov skip annotation in a YAML file."""
    out = []
    for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
        if not isinstance(doc, dict):
            continue
        meta = doc.get("metadata") or {}
        for key, value in (meta.get("annotations") or {}).items():
            if any(p in key for p in SKIP_ANNOTATION_PREFIXES):
                out.append((f"{doc.get('kind')}/{meta.get('name')}", value))
    return out


def checkov_skips() -> list[tuple[Path, str, str]]:
    """(file, check, reason) of every checkov skip under infra/ (test_terraform.py checks their form)."""
    out = []
    for path in tf_files() + yaml_files():
        for _, text in skip_comments(path):
            check, _, reason = text.partition(":")
            out.append((path, check.strip(), reason.strip()))
        if path.suffix in (".yaml", ".yml"):
            for _, value in skip_annotations(path):
                check, _, reason = str(value).partition("=")
                out.append((path, check.strip(), reason.strip()))
    return out


# --------------------------------------------------------------------------- policy templates

_DIRECTIVE = re.compile(r"%\{(~?)\s*(if\s+([a-z_]+)\s*!=\s*\"\"|endif)\s*(~?)\}")
_INTERP = re.compile(r"\$\{([a-z_]+)\}")


def render_template(path: Path, variables: dict[str, str]) -> str:
    """A small subset of Terraform's templatefile(): ${name} and %{ if name != "" } ...
    %{ endif }, with ~ strip markers. Anything else in a directive fails loudly."""
    text = path.read_text(encoding="utf-8")
    if re.search(r"%\{", _DIRECTIVE.sub("", text)):
        raise AssertionError(f"{path}: template directive this test cannot render")
    out, pos, stack = [], 0, []

    def emitting():
        return all(stack)

    for m in _DIRECTIVE.finditer(text):
        chunk = text[pos : m.start()]
        if m.group(1):
            chunk = chunk.rstrip()
        if emitting():
            out.append(chunk)
        if m.group(2) == "endif":
            stack.pop()
        else:
            stack.append(variables[m.group(3)] != "")
        pos = m.end()
        if m.group(4):
            while pos < len(text) and text[pos] in " \t\r\n":
                pos += 1
    assert not stack, f"{path}: unbalanced %{{ if }}"
    out.append(text[pos:])

    def sub(m):
        if m.group(1) not in variables:
            raise AssertionError(f"{path}: ${{{m.group(1)}}} is not a template variable")
        return variables[m.group(1)]

    return _INTERP.sub(sub, "".join(out))


SAMPLE_VARS = {
    "bucket_arn": "arn:aws:s3:::stashless-111122223333-eu-west-1",
    "prefix": "vault/",
    "kms_key_arn": "arn:aws:kms:eu-west-1:111122223333:key/00000000-0000-0000-0000-000000000000",
    "escrow_kms_key_arn": "arn:aws:kms:eu-west-1:111122223333:key/11111111-1111-1111-1111-111111111111",
    # Lists go in as JSON arrays ("" when empty), as iam.tf passes them.
    "unsealer_ssm_parameter_arns": json.dumps(["arn:aws:ssm:eu-west-1:111122223333:parameter/vault-unsealer/k8s.prod.vault.vault-*"]),
    "unsealer_kms_key_arns": json.dumps(["arn:aws:kms:eu-west-1:111122223333:key/22222222-2222-2222-2222-222222222222"]),
    "cluster_arn": "arn:aws:eks:eu-west-1:111122223333:cluster/prod",
    "bus_arn": "arn:aws:events:eu-west-1:111122223333:event-bus/stashless",
    "dlq_arn": "arn:aws:sqs:eu-west-1:111122223333:stashless-x-dlq",
    "log_group_arn": "arn:aws:logs:eu-west-1:111122223333:log-group:/aws/lambda/stashless-x",
}


def policy(name: str, **overrides) -> dict:
    variables = dict(SAMPLE_VARS, **overrides)
    return json.loads(render_template(MODULE / "policies" / f"{name}.json.tftpl", variables))


def statements(doc: dict) -> list[dict]:
    st = doc["Statement"]
    return st if isinstance(st, list) else [st]


def as_list(v) -> list:
    return v if isinstance(v, list) else [v]


def granted_actions(doc: dict) -> set[str]:
    out = set()
    for st in statements(doc):
        assert st["Effect"] == "Allow", st
        out |= set(as_list(st["Action"]))
    return out


# --------------------------------------------------------------------------- Rust sources


def crates() -> dict[str, dict]:
    """Directory name under functions/ → parsed Cargo.toml."""
    out = {}
    for toml in sorted(FUNCTIONS.glob("*/Cargo.toml")):
        with open(toml, "rb") as f:
            out[toml.parent.name] = tomllib.load(f)
    return out


def is_binary(crate_dir: str, manifest: dict) -> bool:
    return (FUNCTIONS / crate_dir / "src" / "main.rs").exists() or bool(manifest.get("bin"))


def mask_rust(src: str) -> str:
    """Same length as src, with comments blanked and string/char literal contents replaced by
    spaces (quotes kept), so code structure can be scanned with regexes."""
    out = list(src)
    i, n = 0, len(src)

    def blank(a, b):
        for k in range(a, b):
            if out[k] != "\n":
                out[k] = " "

    while i < n:
        c = src[i]
        if src.startswith("//", i):
            j = src.find("\n", i)
            j = n if j < 0 else j
            blank(i, j)
            i = j
        elif src.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if src.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif src.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            blank(i, j)
            i = j
        elif (m := re.match(r'b?r(#*)"', src[i:])) and (i == 0 or not (src[i - 1].isalnum() or src[i - 1] == "_")):
            close = '"' + m.group(1)
            start = i + len(m.group(0))
            j = src.find(close, start)
            j = n if j < 0 else j
            blank(start, j)
            i = j + len(close)
        elif c == '"':
            j = i + 1
            while j < n and src[j] != '"':
                j += 2 if src[j] == "\\" else 1
            blank(i + 1, j)
            i = j + 1
        elif c == "'" and (m := re.match(r"'(\\.|\\u\{[0-9a-fA-F]+\}|[^\\'])'", src[i:])):
            blank(i + 1, i + len(m.group(0)) - 1)
            i += len(m.group(0))
        else:
            i += 1
    return "".join(out)


def test_block_ranges(masked: str) -> list[tuple[int, int]]:
    """Ranges of `#[cfg(test)] mod x { ... }` blocks (test code is not production code)."""
    ranges = []
    for m in re.finditer(r"#\[cfg\(test\)\]\s*(pub\s+)?mod\s+\w+\s*\{", masked):
        depth, j = 1, m.end()
        while j < len(masked) and depth:
            if masked[j] == "{":
                depth += 1
            elif masked[j] == "}":
                depth -= 1
            j += 1
        ranges.append((m.start(), j))
    return ranges


def without_ranges(text: str, ranges: list[tuple[int, int]]) -> str:
    out = list(text)
    for a, b in ranges:
        for k in range(a, b):
            if out[k] != "\n":
                out[k] = " "
    return "".join(out)


@functools.cache
def rust_sources() -> dict[Path, tuple[str, str]]:
    """Every .rs file under functions/*/src → (production text, masked production text):
    #[cfg(test)] modules removed from both."""
    out = {}
    for path in sorted(FUNCTIONS.glob("*/src/**/*.rs")):
        raw = path.read_text(encoding="utf-8")
        masked = mask_rust(raw)
        ranges = test_block_ranges(masked)
        out[path] = (without_ranges(raw, ranges), without_ranges(masked, ranges))
    return out


def crate_of(path: Path) -> str:
    return path.relative_to(FUNCTIONS).parts[0]


def string_literals(raw: str, masked: str) -> list[tuple[int, str]]:
    """(offset, content) of the string literals in production code."""
    out = []
    i = 0
    while True:
        a = masked.find('"', i)
        if a < 0:
            break
        b = masked.find('"', a + 1)
        if b < 0:
            break
        out.append((a, raw[a + 1 : b]))
        i = b + 1
    return out


def sdk_calls(masked: str) -> list[tuple[int, str]]:
    """(offset, operation) of every AWS SDK fluent call: a method chain that ends in
    `.send()` or `.presigned(` and starts with a zero-argument method, e.g.
    `self.s3.create_multipart_upload().bucket(b).key(k).send()`."""
    found = []
    for m in re.finditer(r"\.\s*(send\s*\(\s*\)|presigned\s*\()", masked):
        end = m.start()
        i, depth = end - 1, 0
        while i >= 0:
            c = masked[i]
            if c in ")]}":
                depth += 1
            elif c in "([{":
                if depth == 0:
                    break
                depth -= 1
            elif depth == 0 and c in ";,":
                break
            elif depth == 0 and c == "=" and masked[i + 1] != ">" and masked[i - 1] not in "=!<>":
                break
            i -= 1
        chain = masked[i + 1 : end]
        # The first zero-argument method call at depth 0 of the chain (calls with
        # arguments before it build the client).
        depth = 0
        for k, ch in enumerate(chain):
            if ch in "([{":
                depth += 1
            elif ch in ")]}":
                depth -= 1
            elif ch == "." and depth == 0:
                mm = re.match(r"\.\s*([a-z_][a-z0-9_]*)\s*\(\s*(\)?)", chain[k:])
                if mm and mm.group(2):
                    found.append((i + 1 + k, mm.group(1)))
                    break
    return found
