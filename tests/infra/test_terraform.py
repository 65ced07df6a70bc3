"""The Terraform itself: every file parses, the module's interface is documented and typed,
the version constraints are what the README promises, the examples use the module."""

import re

import pytest

import tf


@pytest.mark.parametrize("path", tf.tf_files(), ids=lambda p: str(p.relative_to(tf.ROOT)))
def test_parses(path):
    assert isinstance(tf.parse(path), dict)


def test_there_is_something_to_check():
    files = {str(p.relative_to(tf.INFRA)) for p in tf.tf_files()}
    for f in [
        "modules/stashless/main.tf",
        "modules/stashless/variables.tf",
        "modules/stashless/outputs.tf",
        "modules/stashless/versions.tf",
        "examples/complete/main.tf",
        "examples/minimal/main.tf",
    ]:
        assert f in files


@pytest.mark.parametrize("directory", [tf.MODULE, tf.INFRA / "examples" / "complete", tf.INFRA / "examples" / "minimal"], ids=lambda p: p.name)
def test_every_variable_has_description_and_type(directory):
    variables = tf.module_blocks("variable", directory)
    assert variables
    for name, body, path in variables:
        assert tf.unquote(body.get("description", "")).strip(), f"{path.name}: variable {name} has no description"
        assert "type" in body, f"{path.name}: variable {name} has no type"
        if "validation" in body:
            for v in body["validation"]:
                assert "condition" in v and "error_message" in v


@pytest.mark.parametrize("directory", [tf.MODULE, tf.INFRA / "examples" / "complete", tf.INFRA / "examples" / "minimal"], ids=lambda p: p.name)
def test_every_output_has_description(directory):
    for name, body, path in tf.module_blocks("output", directory):
        assert tf.unquote(body.get("description", "")).strip(), f"{path.name}: output {name} has no description"


def test_variables_and_outputs_are_unique_and_sorted_into_their_files():
    for kind, filename in [("variable", "variables.tf"), ("output", "outputs.tf")]:
        blocks = tf.module_blocks(kind)
        names = [n for n, _, _ in blocks]
        assert len(names) == len(set(names)), f"duplicate {kind}s"
        assert {p.name for _, _, p in blocks} == {filename}, f"{kind} blocks belong in {filename}"


@pytest.mark.parametrize("directory", [tf.MODULE, tf.INFRA / "examples" / "complete", tf.INFRA / "examples" / "minimal"], ids=lambda p: p.name)
def test_version_constraints(directory):
    (terraform,) = tf.parse(directory / "versions.tf")["terraform"]
    assert tf.unquote(terraform["required_version"]) == ">= 1.5"
    (providers,) = terraform["required_providers"]
    aws = providers["aws"]
    kubernetes = providers["kubernetes"]
    assert tf.unquote(aws["source"]) == "hashicorp/aws"
    assert tf.unquote(kubernetes["source"]) == "hashicorp/kubernetes"
    if directory == tf.MODULE:
        assert re.fullmatch(r">= 5\.\d+", tf.unquote(aws["version"]))
        assert re.fullmatch(r">= 2\.2\d", tf.unquote(kubernetes["version"]))
    else:
        # A root module pins what it was tested with: the next major versions may break it.
        assert re.fullmatch(r">= 5\.\d+, < 7\.0", tf.unquote(aws["version"]))
        assert re.fullmatch(r">= 2\.2\d, < 4\.0", tf.unquote(kubernetes["version"]))


@pytest.mark.parametrize("example", ["complete", "minimal"])
def test_examples_use_the_module_and_configure_kubernetes_from_eks(example):
    main = tf.parse(tf.INFRA / "examples" / example / "main.tf")
    (module,) = [b for b in main["module"] if '"stashless"' in b]
    body = module['"stashless"']
    assert tf.unquote(body["source"]) == "../../modules/stashless"
    module_vars = {n for n, _, _ in tf.module_blocks("variable")}
    required = {n for n, b, _ in tf.module_blocks("variable") if "default" not in b}
    given = {k for k in body if not k.startswith("__") and k != "source"}
    assert given <= module_vars, f"unknown module inputs: {given - module_vars}"
    assert required <= given, f"required inputs missing: {required - given}"
    data = {tf.unquote(t) for block in main["data"] for t in block}
    assert "aws_eks_cluster" in data
    # A token read at plan time expires in about 15 minutes: a long apply or a saved plan
    # would meet 401. The exec plugin fetches one per call.
    assert "aws_eks_cluster_auth" not in data
    (kubernetes,) = [v for p in main["provider"] for k, v in p.items() if tf.unquote(k) == "kubernetes"]
    assert "token" not in kubernetes
    (exec_,) = kubernetes["exec"]
    assert tf.unquote(exec_["command"]) == "aws"
    assert [tf.unquote(a) for a in exec_["args"]][:2] == ["eks", "get-token"]


def test_lambda_functions_are_configured_as_the_readme_says():
    (fn,) = tf.resources("aws_lambda_function").values()
    assert tf.unquote(fn["runtime"]) == "provided.al2023"
    assert tf.unquote(fn["handler"]) == "bootstrap"
    assert fn["architectures"] == ["${var.architecture}"]
    (logging,) = fn["logging_config"]
    assert tf.unquote(logging["log_format"]) == "JSON"
    (vpc,) = fn["vpc_config"]
    assert vpc["subnet_ids"] == "${var.subnet_ids}"
    assert vpc["security_group_ids"] == "${var.security_group_ids}"
    defaults = {n: b.get("default") for n, b, _ in tf.module_blocks("variable")}
    assert defaults["architecture"] == '"arm64"'
    assert (defaults["scheduler_memory_size"], defaults["scheduler_timeout"]) == (256, 60)
    assert (defaults["backup_memory_size"], defaults["backup_timeout"]) == (512, 900)
    assert (defaults["restore_memory_size"], defaults["restore_timeout"]) == (512, 900)
    # No reservation by default: it fails on accounts with a low concurrency quota (Lambda
    # keeps 100 unreserved); ticks are idempotent and restores exclude each other.
    assert defaults["restore_reserved_concurrency"] is None
    assert defaults["scheduler_reserved_concurrency"] is None
    assert defaults["backup_reserved_concurrency"] is None
    assert defaults["cloudwatch_logs_retention_in_days"] == 30
    assert defaults["namespaces"] == []


def test_checkov_skips_are_justified():
    """Every skip is inline, names one check and says why (checkov itself reports them). In
    YAML, a Kubernetes check is skipped by annotation, the only place checkov reads one from."""
    seen = 0
    for path in tf.tf_files() + tf.yaml_files():
        where = path.relative_to(tf.ROOT)
        for lineno, text in tf.skip_comments(path):
            seen += 1
            m = re.fullmatch(r"(CKV2?_[A-Z0-9]+_\d+):(.+)", text.strip())
            assert m, f"{where}:{lineno}: malformed skip: {text}"
            assert len(m.group(2).split()) >= 8, f"{where}:{lineno}: skip {m.group(1)} needs a real justification"
            if path.suffix != ".tf":
                # Of the YAML frameworks only the secrets scanner reads comments.
                assert m.group(1).startswith("CKV_SECRET_"), f"{where}:{lineno}: checkov ignores a comment skip of {m.group(1)} in YAML: use a checkov.io/skip<n> annotation"
        if path.suffix == ".tf":
            continue
        for obj, value in tf.skip_annotations(path):
            seen += 1
            # checkov splits the value on "=": exactly one, between the check and the reason.
            m = re.fullmatch(r"(CKV2?_K8S_\d+)=([^=]+)", str(value))
            assert m, f"{where} {obj}: malformed skip annotation (want <check>=<reason without '='>): {value!r}"
            assert len(m.group(2).split()) >= 8, f"{where} {obj}: skip {m.group(1)} needs a real justification"
    assert seen == len(tf.checkov_skips()) and seen > 0


REF = re.compile(r"\b(var|local|module|data\.[a-z0-9_]+|(?:aws|kubernetes)_[a-z0-9_]+)\.([a-z0-9_]+)\b")


def declared(directory):
    names = {"var": set(), "local": set(), "module": set()}
    for path in sorted(directory.glob("*.tf")):
        doc = tf.parse(path)
        for block in doc.get("variable", []):
            names["var"] |= {tf.unquote(k) for k in block}
        for block in doc.get("locals", []):
            names["local"] |= {k for k in block if not k.startswith("__")}
        for block in doc.get("module", []):
            names["module"] |= {tf.unquote(k) for k in block}
        for kind, prefix in (("resource", ""), ("data", "data.")):
            for block in doc.get(kind, []):
                for t, named in block.items():
                    names.setdefault(prefix + tf.unquote(t), set()).update(tf.unquote(n) for n in named)
    return names


@pytest.mark.parametrize("directory", [tf.MODULE, tf.INFRA / "examples" / "complete", tf.INFRA / "examples" / "minimal"], ids=lambda p: p.name)
def test_every_reference_resolves(directory):
    """What `terraform validate` would catch first (it cannot run here: no provider downloads)."""
    names = declared(directory)
    outputs = {n for n, _, _ in tf.module_blocks("output")}
    for path in sorted(directory.glob("*.tf")):
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0] if not line.lstrip().startswith("description") else ""
            for m in REF.finditer(code):
                kind, name = m.groups()
                where = f"{path.relative_to(tf.ROOT)}:{lineno}"
                if kind == "module":
                    assert name in names["module"], f"{where}: unknown module {name}"
                    rest = code[m.end():]
                    attr = re.match(r"\.([a-z0-9_]+)", rest)
                    if attr and name == "stashless":
                        assert attr.group(1) in outputs, f"{where}: module.stashless has no output {attr.group(1)}"
                    continue
                assert name in names.get(kind, set()), f"{where}: {kind}.{name} is not declared"


def test_every_module_variable_is_used():
    text = "\n".join(p.read_text() for p in sorted(tf.MODULE.glob("*.tf")) if p.name != "variables.tf")
    for name, _, _ in tf.module_blocks("variable"):
        assert re.search(rf"\bvar\.{name}\b", text), f"variable {name} is never used"
