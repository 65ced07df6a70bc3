"""infra/README.md is in sync with the module, and documents what it must."""

import re
import subprocess
import sys

import gen_docs
import tf


def test_readme_tables_are_generated_from_the_module():
    current = gen_docs.README.read_text(encoding="utf-8")
    assert gen_docs.rendered(current) == current, "run: bash tests/infra/run.sh --fix (or python tests/infra/gen_docs.py --write)"


def test_every_variable_and_output_is_in_the_readme():
    text = gen_docs.README.read_text(encoding="utf-8")
    for kind in ("variable", "output"):
        for name, _, _ in tf.module_blocks(kind):
            assert f"| `{name}` |" in text, f"{kind} {name} missing from infra/README.md"


def test_gen_docs_check_mode():
    r = subprocess.run([sys.executable, str(tf.ROOT / "tests" / "infra" / "gen_docs.py"), "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_readme_names_every_checkov_skip():
    """Terraform's, the manifests' (annotations) and the secret scanner's (comments) alike."""
    text = gen_docs.README.read_text(encoding="utf-8")
    skips = tf.checkov_skips()
    assert any(p.suffix == ".tf" for p, _, _ in skips) and any(p.suffix == ".yaml" for p, _, _ in skips)
    for path, check, _ in skips:
        prefix, number = check.rsplit("_", 1)
        # `CKV_AWS_109/111/356` names three checks.
        assert check in text or re.search(rf"\b{re.escape(prefix)}_[\d/]*\b{number}\b", text), f"{check} ({path.relative_to(tf.ROOT)}) is skipped but not explained in infra/README.md"
