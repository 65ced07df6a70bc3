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
    text = gen_docs.README.read_text(encoding="utf-8")
    for path in tf.tf_files():
        for check in re.findall(r"#checkov:skip=(CKV2?_AWS_\d+|CKV_K8S_\d+)", path.read_text()):
            number = check.rsplit("_", 1)[1]
            assert check in text or re.search(rf"CKV_AWS_[\d/]*\b{number}\b", text), f"{check} is skipped but not explained in infra/README.md"
