#!/usr/bin/env python3
"""Checks Cloak's Kubernetes manifests offline; run through scripts/validate-k8s.sh.

Renders the base and every overlay under deploy/kubernetes (render.py, kustomize's semantics)
and checks each rendered object twice:

1. against the Kubernetes OpenAPI schemas for one pinned Kubernetes version, in strict mode
   (kubernetes-validate: unknown fields, wrong types and missing required fields fail);
2. for the cross-references a schema cannot see and an API server accepts anyway, so that they
   would only fail in the cluster, often silently: a Deployment's selector matches its pods;
   Services, PodDisruptionBudgets and HorizontalPodAutoscalers find their pods or Deployment;
   target ports, probe ports and volume mounts name what exists; requests do not exceed limits;
   extended resources (sgx.intel.com/...) request what they limit.

The Secret templates under secrets/ are checked as they are. Where kubectl is installed, each
rendering is also compared with `kubectl kustomize`'s.

Exit status: 0 when everything passes, 1 when anything fails, 2 on bad usage.
`--self-test` instead breaks copies of the manifests in a temporary directory in several ways
and succeeds only if each broken copy is refused and the unbroken copy passes.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from decimal import Decimal, InvalidOperation
from pathlib import Path

import kubernetes_validate
import yaml

# No __pycache__ beside the manifests.
sys.dont_write_bytecode = True
import render  # noqa: E402

KUBERNETES_VERSION = "1.30.0"
HERE = Path(__file__).resolve().parent

WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}


def targets(root: Path) -> list[Path]:
    """The kustomizations to render: the base and each overlay."""
    found = [root / "base"]
    overlays = root / "overlays"
    if overlays.is_dir():
        found += sorted(p for p in overlays.iterdir() if p.is_dir())
    return found


def schema_errors(obj: dict) -> list[str]:
    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        path = ".".join(str(p) for p in e.path) or "(top level)"
        return [f"schema: {path}: {e.message}"]
    except kubernetes_validate.SchemaNotFoundError as e:
        # The command-line tool only warns here; an object no schema covers is not checked at
        # all, so it fails here.
        return [f"schema: {e.message}"]
    return []


# --- quantities -------------------------------------------------------------------------------

SUFFIXES = {
    "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1),
    "k": Decimal(10) ** 3, "M": Decimal(10) ** 6, "G": Decimal(10) ** 9, "T": Decimal(10) ** 12,
    "P": Decimal(10) ** 15, "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10, "Mi": Decimal(2) ** 20, "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40, "Pi": Decimal(2) ** 50, "Ei": Decimal(2) ** 60,
}


def quantity(value) -> Decimal:
    """A Kubernetes resource quantity ("500m", "8Gi", 2) as a number."""
    text = str(value).strip()
    for suffix in sorted(SUFFIXES, key=len, reverse=True):
        if suffix and text.endswith(suffix):
            number, scale = text[: -len(suffix)], SUFFIXES[suffix]
            break
    else:
        number, scale = text, Decimal(1)
    try:
        return Decimal(number) * scale
    except InvalidOperation:
        raise ValueError(f"not a quantity: {value!r}") from None


# --- cross-references -------------------------------------------------------------------------

def pod_template(obj: dict) -> dict | None:
    if obj.get("kind") in WORKLOAD_KINDS:
        return (obj.get("spec") or {}).get("template")
    return None


def selector_matches(match_labels: dict, labels: dict) -> bool:
    return bool(match_labels) and all(labels.get(k) == v for k, v in match_labels.items())


def semantic_errors(objects: list[dict]) -> dict[str, list[str]]:
    """Errors by object description, for references between the rendered objects."""
    errors: dict[str, list[str]] = {}

    def fail(obj: dict, message: str) -> None:
        errors.setdefault(render.describe(obj), []).append(message)

    workloads = [o for o in objects if pod_template(o) is not None]

    def pods_selected(obj: dict, match_labels: dict) -> list[dict]:
        ns = (obj.get("metadata") or {}).get("namespace", "")
        return [w for w in workloads
                if (w.get("metadata") or {}).get("namespace", "") == ns
                and selector_matches(match_labels,
                                     ((pod_template(w).get("metadata") or {}).get("labels") or {}))]

    for obj in objects:
        kind = obj.get("kind")
        spec = obj.get("spec") or {}
        template = pod_template(obj)
        if template is not None:
            labels = (template.get("metadata") or {}).get("labels") or {}
            selector = spec.get("selector") or {}
            if set(selector) - {"matchLabels"}:
                fail(obj, "selector: only matchLabels is checked here")
            if not selector_matches(selector.get("matchLabels") or {}, labels):
                fail(obj, "selector.matchLabels does not match the pod template's labels")
            check_pod(obj, template.get("spec") or {}, fail)
        elif kind == "Service" and spec.get("selector"):
            selected = pods_selected(obj, spec["selector"])
            if not selected:
                fail(obj, "selector matches no pod template")
            for port in spec.get("ports") or []:
                target = port.get("targetPort", port.get("port"))
                if not any(has_port(pod_template(w), target) for w in selected):
                    fail(obj, f"targetPort {target!r} is no container port of the selected pods")
        elif kind == "PodDisruptionBudget":
            match = (spec.get("selector") or {}).get("matchLabels") or {}
            if not pods_selected(obj, match):
                fail(obj, "selector matches no pod template")
        elif kind == "HorizontalPodAutoscaler":
            ref = spec.get("scaleTargetRef") or {}
            ns = (obj.get("metadata") or {}).get("namespace", "")
            found = [w for w in workloads
                     if w["kind"] == ref.get("kind")
                     and w["metadata"].get("name") == ref.get("name")
                     and w["metadata"].get("namespace", "") == ns]
            if not found:
                fail(obj, f"scaleTargetRef {ref.get('kind')}/{ref.get('name')} "
                          "is not rendered here")
            for metric in spec.get("metrics") or []:
                resource = (metric.get("resource") or {})
                if metric.get("type") == "Resource" and \
                        (resource.get("target") or {}).get("type") == "Utilization":
                    for w in found:
                        for c in (pod_template(w).get("spec") or {}).get("containers") or []:
                            if resource.get("name") not in ((c.get("resources") or {})
                                                            .get("requests") or {}):
                                fail(obj, f"utilization of {resource.get('name')} needs a request "
                                          f"on container {c.get('name')}")
    return errors


def has_port(template: dict, target) -> bool:
    for c in (template.get("spec") or {}).get("containers") or []:
        for p in c.get("ports") or []:
            if target in (p.get("name"), p.get("containerPort")):
                return True
    return False


def check_pod(obj: dict, pod: dict, fail) -> None:
    volumes = {v.get("name") for v in pod.get("volumes") or []}
    for c in (pod.get("initContainers") or []) + (pod.get("containers") or []):
        name = c.get("name")
        for m in c.get("volumeMounts") or []:
            if m.get("name") not in volumes:
                fail(obj, f"container {name}: volumeMount {m.get('name')!r} names no volume")
        ports = {p.get("name") for p in c.get("ports") or []} | \
                {p.get("containerPort") for p in c.get("ports") or []}
        for probe_name in ("startupProbe", "livenessProbe", "readinessProbe"):
            probe = c.get(probe_name) or {}
            for handler in ("httpGet", "tcpSocket", "grpc"):
                port = (probe.get(handler) or {}).get("port")
                if port is not None and port not in ports:
                    fail(obj, f"container {name}: {probe_name} port {port!r} is no container port")
        resources = c.get("resources") or {}
        requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
        for resource, requested in requests.items():
            try:
                if resource in limits and quantity(requested) > quantity(limits[resource]):
                    fail(obj, f"container {name}: {resource} request exceeds its limit")
                native = "/" not in resource or resource.split("/")[0].endswith("kubernetes.io")
                # The API server's rule for resources it cannot overcommit.
                if not native and (resource not in limits
                                   or quantity(requested) != quantity(limits[resource])):
                    fail(obj, f"container {name}: extended resource {resource} must request "
                              "what it limits")
            except ValueError as e:
                fail(obj, f"container {name}: {resource}: {e}")


# --- driving ----------------------------------------------------------------------------------

def check_tree(root: Path, quiet: bool = False) -> list[str]:
    """Renders and checks everything under a deploy/kubernetes-like directory.

    Returns one line per failure (and prints them, and a summary per kustomization, unless quiet).
    """
    failures: list[str] = []

    def fail(line: str) -> None:
        failures.append(line)
        if not quiet:
            print(f"FAIL {line}")

    def check(label: str, objects: list[dict]) -> None:
        semantic = semantic_errors(objects)
        bad = 0
        for obj in objects:
            problems = schema_errors(obj) + semantic.get(render.describe(obj), [])
            for p in problems:
                fail(f"{label}: {render.describe(obj)}: {p}")
            bad += bool(problems)
        if not quiet:
            noun = "object" if len(objects) == 1 else "objects"
            print(f"{label}: {len(objects)} {noun}, {'ok' if not bad else f'{bad} invalid'}")

    for target in targets(root):
        label = str(target.relative_to(root))
        try:
            objects = render.render(target)
        except (render.RenderError, OSError, yaml.YAMLError) as e:
            fail(f"{label}: cannot render: {e}")
            continue
        check(label, objects)
    for template in sorted((root / "secrets").glob("*.yaml")):
        label = str(template.relative_to(root))
        try:
            objects = render.load_yaml_documents(template)
        except (render.RenderError, OSError, yaml.YAMLError) as e:
            fail(f"{label}: cannot read: {e}")
            continue
        check(label, objects)
    return failures


def compare_with_kustomize(root: Path) -> list[str]:
    """Where kubectl is installed, checks that render.py renders what its kustomize renders.

    kubectl carries kustomize (`kubectl kustomize`); neither is needed for the checks above, but
    where one is at hand it tells whether render.py still agrees with the real thing. The
    objects must be the same; a different order is only reported.
    """
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        print("kubectl not found: renderings not compared with kustomize")
        return []
    failures = []
    for target in targets(root):
        label = str(target.relative_to(root))
        try:
            proc = subprocess.run([kubectl, "kustomize", str(target)], capture_output=True,
                                  text=True, timeout=120, check=False)
        except (OSError, subprocess.TimeoutExpired) as e:
            failures.append(f"{label}: kubectl kustomize did not run: {e}")
            continue
        if proc.returncode != 0:
            failures.append(f"{label}: kubectl kustomize failed: {proc.stderr.strip()}")
            continue
        theirs = [d for d in yaml.safe_load_all(proc.stdout) if d is not None]
        ours = render.render(target)
        by_id = lambda objs: {render.describe(o): o for o in objs}  # noqa: E731
        mine, kustomize = by_id(ours), by_id(theirs)
        differing = sorted(k for k in mine.keys() | kustomize.keys()
                           if mine.get(k) != kustomize.get(k))
        if differing:
            failures.append(f"{label}: render.py and kubectl kustomize differ in: "
                            + "; ".join(differing))
        elif [render.describe(o) for o in ours] != [render.describe(o) for o in theirs]:
            print(f"{label}: same objects as kubectl kustomize, in another order")
        else:
            print(f"{label}: identical to kubectl kustomize")
    return failures


def replace_once(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    if text.count(old) != 1:
        raise SystemExit(f"self-test: {path.name} no longer contains {old!r} exactly once; "
                         "update the self-test's breakages")
    path.write_text(text.replace(old, new), encoding="utf-8")


# Each breakage: what it is, the file under deploy/kubernetes, the text replaced, its
# replacement, and words the refusal must contain (so that a copy refused for another reason,
# say a replacement that broke the YAML, does not count).
BREAKAGES = [
    ("a misspelt field (strict schema)",
     "base/server.yaml", "          readinessProbe:", "          readinesProbe:",
     "'readinesProbe' was unexpected"),
    ("a wrong type (schema)",
     "base/kbs.yaml", "  replicas: 2", "  replicas: two",
     "spec.replicas: 'two' is not of type"),
    ("a missing required field (schema)",
     "base/kbs.yaml", "      port: 8700\n      targetPort: https", "      targetPort: https",
     "'port' is a required property"),
    ("a Service selecting no pods (cross-reference)",
     "base/kbs.yaml", "  selector:\n    app.kubernetes.io/name: cloak-kbs",
     "  selector:\n    app.kubernetes.io/name: cloak-kbz",
     "selector matches no pod template"),
    ("a probe on an unknown port (cross-reference)",
     "base/kbs.yaml",
     "            tcpSocket:\n              port: https\n            periodSeconds: 10",
     "            tcpSocket:\n              port: http\n            periodSeconds: 10",
     "readinessProbe port 'http' is no container port"),
    ("a request above its limit (cross-reference)",
     "base/kbs.yaml", "              memory: 128Mi", "              memory: 1Gi",
     "memory request exceeds its limit"),
    ("an extended resource whose request differs from its limit (overlay)",
     "overlays/intel-sgx-device-plugin/server-sgx.yaml",
     "requests/sgx.intel.com~1epc\n  value: 8Gi", "requests/sgx.intel.com~1epc\n  value: 4Gi",
     "extended resource sgx.intel.com/epc must request what it limits"),
    ("a patch path that does not exist (render)",
     "overlays/aks-confcom/server-sgx.yaml",
     "/spec/template/spec/containers/0/volumeMounts/-",
     "/spec/template/spec/containers/1/volumeMounts/-",
     "cannot apply to apps/v1 Deployment cloak/cloak-server"),
    ("a kustomize feature render.py does not implement (render)",
     "base/kustomization.yaml", "namespace: cloak", "namespace: cloak\nnamePrefix: x-",
     "unsupported field(s) ['namePrefix']"),
]


def self_test() -> int:
    with tempfile.TemporaryDirectory(prefix="cloak-k8s-selftest-") as tmp:
        pristine = Path(tmp) / "pristine"
        shutil.copytree(HERE, pristine, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        print("self-test: the unbroken copy")
        failures = check_tree(pristine, quiet=True)
        for line in failures:
            print(f"    {line}")
        if failures:
            print("self-test FAILED: the unbroken copy does not pass")
            return 1
        print("  accepted")
        ok = True
        for i, (what, file, old, new, expected) in enumerate(BREAKAGES):
            broken = Path(tmp) / f"broken-{i}"
            shutil.copytree(pristine, broken)
            replace_once(broken / file, old, new)
            print(f"self-test: {what} in {file}")
            failures = check_tree(broken, quiet=True)
            for line in failures:
                print(f"    {line.replace(str(broken) + '/', '')}")
            if not failures:
                print("  NOT REFUSED")
                ok = False
            elif not any(expected in line for line in failures):
                print(f"  refused, but not for the expected reason ({expected!r})")
                ok = False
            else:
                print("  refused")
        if not ok:
            print("self-test FAILED")
            return 1
        print(f"self-test passed: {len(BREAKAGES)} broken copies refused for the expected "
              "reasons, the unbroken copy accepted")
        return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--self-test", action="store_true",
                        help="check that broken copies of the manifests are refused")
    parser.add_argument("--render", metavar="DIR",
                        help="only print the rendered YAML of one kustomization")
    args = parser.parse_args()
    if args.render:
        return render.main(["render.py", args.render])
    if args.self_test:
        return self_test()
    print(f"Validating {HERE} against Kubernetes {KUBERNETES_VERSION} (strict schemas, "
          f"kubernetes-validate {kubernetes_validate.__version__})")
    failures = check_tree(HERE)
    if not failures:
        for line in compare_with_kustomize(HERE):
            print(f"FAIL {line}")
            failures.append(line)
    if failures:
        print(f"{len(failures)} failure(s)")
        return 1
    print("all manifests valid")
    return 0


if __name__ == "__main__":
    sys.exit(main())
