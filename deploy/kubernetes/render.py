#!/usr/bin/env python3
"""Renders a kustomization the way `kustomize build` does, for the features Cloak's manifests use.

kustomize is not available where the manifests are checked (scripts/validate-k8s.sh), so this
renderer implements the subset of it that deploy/kubernetes uses, with kustomize's semantics:

- `resources`: YAML files (every document in them) and directories holding a kustomization,
  built recursively, in the order listed;
- `patches` whose content is a list of RFC 6902 operations, from `path` or inline `patch`, applied
  to every resource its `target` selects (group, version, kind, name, namespace; name and kind
  as anchored regular expressions, as kustomize matches them);
- `namespace`: set on every namespaced resource;
- `labels` with `includeSelectors: false`: added to metadata.labels only;
- `images`: `newName`, `newTag` and `digest` for matching container and init-container images;
- the output order of `kustomize build` (its default "legacy" sort).

Within one kustomization the transformations run in kustomize's order: patches, namespace,
labels, images. Anything else in a kustomization.yaml is refused rather than ignored, so a
feature added to the manifests without being added here fails loudly instead of rendering
differently from kustomize. Where kustomize would silently do nothing (a patch whose target
matches no resource), this renderer fails too. Formatting (key order, quoting) may differ from
kustomize's; the objects are the same.

Usage: render.py DIR   (prints the rendered multi-document YAML)
"""

from __future__ import annotations

import copy
import re
import sys
from pathlib import Path

import jsonpatch
import yaml

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
SUPPORTED_KEYS = {"apiVersion", "kind", "resources", "namespace", "labels", "images", "patches"}

# Kinds that have no namespace, among those a kustomization here could plausibly hold.
CLUSTER_SCOPED = {
    "APIService", "ClusterIssuer", "ClusterRole", "ClusterRoleBinding",
    "CustomResourceDefinition", "IngressClass", "MutatingWebhookConfiguration", "Namespace",
    "PersistentVolume", "PodSecurityPolicy", "PriorityClass", "RuntimeClass", "StorageClass",
    "ValidatingWebhookConfiguration", "VolumeAttachment", "CSIDriver", "CSINode",
}

# kustomize's default ("legacy") output order: these kinds first, in this order...
ORDER_FIRST = [
    "Namespace", "ResourceQuota", "StorageClass", "CustomResourceDefinition", "ServiceAccount",
    "PodSecurityPolicy", "Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding",
    "ConfigMap", "Secret", "Endpoints", "Service", "LimitRange", "PriorityClass",
    "PersistentVolume", "PersistentVolumeClaim", "Deployment", "StatefulSet", "CronJob",
    "PodDisruptionBudget",
]
# ...these last, and every other kind in between.
ORDER_LAST = ["MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"]


class RenderError(Exception):
    """A kustomization this renderer cannot render exactly as kustomize would."""


def load_yaml_documents(path: Path) -> list[dict]:
    """Every non-empty document of a YAML file, each of which must be a mapping."""
    with path.open(encoding="utf-8") as f:
        docs = [d for d in yaml.safe_load_all(f) if d is not None]
    for d in docs:
        if not isinstance(d, dict):
            raise RenderError(f"{path}: a document is not a mapping")
    return docs


def find_kustomization(directory: Path) -> Path:
    found = [directory / n for n in KUSTOMIZATION_FILES if (directory / n).is_file()]
    if len(found) != 1:
        raise RenderError(f"{directory}: expected one kustomization file, found {len(found)}")
    return found[0]


def split_api_version(api_version: str) -> tuple[str, str]:
    """('apps', 'v1') for 'apps/v1'; ('', 'v1') for the core group's 'v1'."""
    if "/" in api_version:
        group, version = api_version.split("/", 1)
        return group, version
    return "", api_version


def resource_id(res: dict) -> tuple[str, str, str, str, str]:
    group, version = split_api_version(res.get("apiVersion", ""))
    meta = res.get("metadata") or {}
    return (group, version, res.get("kind", ""), meta.get("namespace", ""), meta.get("name", ""))


def describe(res: dict) -> str:
    group, version, kind, namespace, name = resource_id(res)
    gv = f"{group}/{version}" if group else version
    return f"{gv} {kind} {namespace + '/' if namespace else ''}{name}"


def build(directory: Path) -> list[dict]:
    """The resources a kustomization directory produces, transformed, in resource order."""
    directory = directory.resolve()
    kfile = find_kustomization(directory)
    with kfile.open(encoding="utf-8") as f:
        k = yaml.safe_load(f) or {}
    if not isinstance(k, dict):
        raise RenderError(f"{kfile}: not a mapping")
    unsupported = set(k) - SUPPORTED_KEYS
    if unsupported:
        raise RenderError(f"{kfile}: unsupported field(s) {sorted(unsupported)}; "
                          f"render.py implements only {sorted(SUPPORTED_KEYS)}")
    if k.get("apiVersion", "kustomize.config.k8s.io/v1beta1") != "kustomize.config.k8s.io/v1beta1":
        raise RenderError(f"{kfile}: unsupported apiVersion {k.get('apiVersion')!r}")
    if k.get("kind", "Kustomization") != "Kustomization":
        raise RenderError(f"{kfile}: kind must be Kustomization (components are not supported)")

    resources: list[dict] = []
    for entry in k.get("resources") or []:
        if not isinstance(entry, str) or "://" in entry or entry.startswith("github.com/"):
            raise RenderError(f"{kfile}: resource {entry!r}: only local files and directories")
        path = directory / entry
        if path.is_dir():
            resources.extend(build(path))
        elif path.is_file():
            resources.extend(load_yaml_documents(path))
        else:
            raise RenderError(f"{kfile}: resource {entry!r} does not exist")
    check_unique(resources, kfile)

    for patch in k.get("patches") or []:
        apply_patch(resources, patch, directory, kfile)
    if "namespace" in k:
        set_namespace(resources, k["namespace"], kfile)
    for entry in k.get("labels") or []:
        add_labels(resources, entry, kfile)
    for image in k.get("images") or []:
        set_images(resources, image, kfile)
    check_unique(resources, kfile)
    return resources


def check_unique(resources: list[dict], kfile: Path) -> None:
    seen: set[tuple] = set()
    for res in resources:
        for field in ("apiVersion", "kind"):
            if not res.get(field):
                raise RenderError(f"{kfile}: a resource has no {field}")
        if not (res.get("metadata") or {}).get("name"):
            raise RenderError(f"{kfile}: a {res['kind']} has no metadata.name")
        group, _version, kind, namespace, name = resource_id(res)
        # kustomize identifies a resource by group, kind, namespace and name (not version).
        key = (group, kind, namespace, name)
        if key in seen:
            raise RenderError(f"{kfile}: {describe(res)} appears more than once")
        seen.add(key)


def full_match(pattern: str, value: str) -> bool:
    return re.fullmatch(pattern, value) is not None


def target_matches(res: dict, target: dict) -> bool:
    group, version, kind, namespace, name = resource_id(res)
    if "group" in target and target["group"] != group:
        return False
    if "version" in target and target["version"] != version:
        return False
    if "kind" in target and not full_match(target["kind"], kind):
        return False
    if "name" in target and not full_match(target["name"], name):
        return False
    if "namespace" in target and not full_match(target["namespace"], namespace):
        return False
    if "labelSelector" in target:
        labels = (res.get("metadata") or {}).get("labels") or {}
        for term in target["labelSelector"].split(","):
            if "=" not in term or "!=" in term:
                raise RenderError(
                    f"labelSelector {target['labelSelector']!r}: only key=value terms")
            key, value = (s.strip() for s in term.split("=", 1))
            if labels.get(key) != value:
                return False
    return True


def apply_patch(resources: list[dict], patch: dict, directory: Path, kfile: Path) -> None:
    if not isinstance(patch, dict):
        raise RenderError(f"{kfile}: a patch is not a mapping")
    unsupported = set(patch) - {"path", "patch", "target"}
    if unsupported:
        raise RenderError(f"{kfile}: patch field(s) {sorted(unsupported)} not supported")
    if ("path" in patch) == ("patch" in patch):
        raise RenderError(f"{kfile}: a patch needs exactly one of `path` and `patch`")
    target = patch.get("target")
    if not isinstance(target, dict) or not target:
        raise RenderError(f"{kfile}: JSON 6902 patches need a `target`")
    unknown = set(target) - {"group", "version", "kind", "name", "namespace", "labelSelector"}
    if unknown:
        raise RenderError(f"{kfile}: target field(s) {sorted(unknown)} not supported")
    if "path" in patch:
        source = directory / patch["path"]
        with source.open(encoding="utf-8") as f:
            ops = yaml.safe_load(f)
    else:
        source = kfile
        ops = yaml.safe_load(patch["patch"])
    if not isinstance(ops, list):
        raise RenderError(f"{source}: not a list of RFC 6902 operations "
                          "(strategic-merge patches are not supported)")
    try:
        compiled = jsonpatch.JsonPatch(ops)
    except (jsonpatch.InvalidJsonPatch, TypeError) as e:
        raise RenderError(f"{source}: invalid JSON patch: {e}") from e
    matched = 0
    for i, res in enumerate(resources):
        if target_matches(res, target):
            try:
                resources[i] = compiled.apply(res)
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as e:
                raise RenderError(f"{source}: cannot apply to {describe(res)}: {e}") from e
            matched += 1
    if matched == 0:
        raise RenderError(f"{source}: target {target} matches no resource")


def set_namespace(resources: list[dict], namespace: str, kfile: Path) -> None:
    for res in resources:
        if res["kind"] in ("RoleBinding", "ClusterRoleBinding"):
            # kustomize also rewrites their subjects' namespaces; not implemented.
            raise RenderError(f"{kfile}: namespace with {res['kind']} is not supported")
        if res["kind"] in CLUSTER_SCOPED:
            continue
        res.setdefault("metadata", {})["namespace"] = namespace


def add_labels(resources: list[dict], entry: dict, kfile: Path) -> None:
    allowed = {"pairs", "includeSelectors", "includeTemplates"}
    if not isinstance(entry, dict) or set(entry) - allowed:
        raise RenderError(f"{kfile}: labels entries support `pairs` and `includeSelectors: false`")
    if entry.get("includeSelectors") or entry.get("includeTemplates"):
        # Selectors are immutable on Deployments; templates are not needed here.
        raise RenderError(f"{kfile}: labels with includeSelectors/includeTemplates not supported")
    pairs = entry.get("pairs") or {}
    for res in resources:
        labels = res.setdefault("metadata", {}).get("labels") or {}
        labels.update({str(k): str(v) for k, v in pairs.items()})
        res["metadata"]["labels"] = labels


def image_matches(value: str, name: str) -> bool:
    # kustomize: the name alone, optionally followed by a tag and/or a sha256 digest.
    pattern = "^" + re.escape(name) + r"(:[a-zA-Z0-9_.{}-]*)?(@sha256:[a-zA-Z0-9_.{}-]*)?$"
    return re.match(pattern, value) is not None


def split_image(value: str) -> tuple[str, str, str]:
    """(name, tag, digest) of an image reference; a registry's port is part of the name."""
    name, digest = value, ""
    if "@" in value:
        name, digest = value.split("@", 1)
    tag = ""
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        tag = last.rsplit(":", 1)[1]
        name = name[: -(len(tag) + 1)]
    return name, tag, digest


def new_image(value: str, spec: dict) -> str:
    name, tag, digest = split_image(value)
    if spec.get("newName"):
        name = spec["newName"]
    new_tag, new_digest = str(spec.get("newTag", "")), spec.get("digest", "")
    # As kustomize does: a new tag or digest replaces both the old tag and the old digest.
    if new_tag and new_digest:
        tag, digest = new_tag, new_digest
    elif new_tag:
        tag, digest = new_tag, ""
    elif new_digest:
        tag, digest = "", new_digest
    out = name
    if tag:
        out += ":" + tag
    if digest:
        out += "@" + digest
    return out


def containers_in(node):
    """Every container and init container mapping anywhere in an object (pod specs, templates)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("containers", "initContainers") and isinstance(value, list):
                for c in value:
                    if isinstance(c, dict):
                        yield c
            else:
                yield from containers_in(value)
    elif isinstance(node, list):
        for item in node:
            yield from containers_in(item)


def set_images(resources: list[dict], spec: dict, kfile: Path) -> None:
    if not isinstance(spec, dict) or "name" not in spec:
        raise RenderError(f"{kfile}: an images entry needs a name")
    unknown = set(spec) - {"name", "newName", "newTag", "digest"}
    if unknown:
        raise RenderError(f"{kfile}: images field(s) {sorted(unknown)} not supported")
    for res in resources:
        for container in containers_in(res):
            image = container.get("image")
            if isinstance(image, str) and image_matches(image, spec["name"]):
                container["image"] = new_image(image, spec)


def legacy_sort(resources: list[dict]) -> list[dict]:
    """kustomize build's default output order."""
    rank = {kind: i - len(ORDER_FIRST) for i, kind in enumerate(ORDER_FIRST)}
    rank.update({kind: 1 + i for i, kind in enumerate(ORDER_LAST)})

    def key(res: dict):
        group, version, kind, namespace, name = resource_id(res)
        gvk = "_".join([group or "~G", version or "~V", kind or "~K"])
        return (rank.get(kind, 0), gvk, f"{namespace or '~X'}|{name or '~N'}")

    return sorted(resources, key=key)


def render(directory: Path) -> list[dict]:
    return legacy_sort(copy.deepcopy(build(directory)))


def dump(resources: list[dict]) -> str:
    return yaml.safe_dump_all(resources, sort_keys=False, default_flow_style=False, width=100)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: render.py DIR", file=sys.stderr)
        return 2
    try:
        sys.stdout.write(dump(render(Path(argv[1]))))
    except (RenderError, OSError, yaml.YAMLError) as e:
        print(f"render.py: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
