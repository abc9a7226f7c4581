"""Content keys: what identifies a computation, independently of paths, hosts, clocks and mtimes.

    key(node) = sha256( canonical JSON of {step, params, upstream keys, raw-input identity},
                        code fingerprint of the step )

The code fingerprint of a step covers its script and every module of the project it imports,
transitively. Each source file is reduced to a normal form (the AST dump with docstrings removed,
no line numbers), so comments, docstrings and formatting never change a key, while any change of
behaviour does.

Everything here is pure Python and fast: keys are computed when the Snakefile is parsed.
"""

from __future__ import annotations

import ast
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

KEY_CHARS = 20  # 80 bits: collision-free for any store this project will see, and short paths


def canonical_json(obj) -> str:
    """JSON with sorted keys and no whitespace; floats as repr so 0.1 stays 0.1."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def sha256_hex(data: bytes | str) -> str:
    if isinstance(data, str):
        data = data.encode()
    return hashlib.sha256(data).hexdigest()


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                # An empty body is not valid Python; `pass` keeps the dump well formed.
                node.body = body[1:] or [ast.Pass()]
    return tree


def normalised_source_hash(path: Path) -> str:
    """sha256 of the AST dump of a Python file, docstrings removed (comments and layout never reach the AST)."""
    tree = ast.parse(Path(path).read_text(encoding="utf-8"), filename=str(path))
    return sha256_hex(ast.dump(_strip_docstrings(tree), annotate_fields=True, include_attributes=False))


@dataclass
class Fingerprinter:
    """Computes code fingerprints of scripts over the modules of one package, with a per-file cache.

    `src_dir` holds the package directory (e.g. `src/` holding `saeflow/`); only modules of `package`
    are followed, third-party imports are recorded by versions in manifests, not in keys.
    """

    src_dir: Path
    package: str = "saeflow"
    _file_hash: dict = field(default_factory=dict)
    _imports: dict = field(default_factory=dict)

    def _module_path(self, dotted: str) -> Path | None:
        parts = dotted.split(".")
        if parts[0] != self.package:
            return None
        base = Path(self.src_dir).joinpath(*parts)
        if base.with_suffix(".py").is_file():
            return base.with_suffix(".py")
        if (base / "__init__.py").is_file():
            return base / "__init__.py"
        return None

    def _project_imports(self, path: Path, module: str | None) -> set[str]:
        """Dotted names of project modules imported by the file (relative imports resolved)."""
        if path in self._imports:
            return self._imports[path]
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        found: set[str] = set()
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    if module is None:
                        continue
                    anchor = module.split(".")
                    drop = node.level - 1 if is_pkg else node.level
                    anchor = anchor[: len(anchor) - drop] if drop else anchor
                    base = ".".join(anchor + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                names = [base] + [f"{base}.{a.name}" for a in node.names]
            for name in names:
                # `import saeflow.a.b` also executes saeflow/__init__ and saeflow/a/__init__.
                parts = name.split(".")
                for i in range(1, len(parts) + 1):
                    dotted = ".".join(parts[:i])
                    if self._module_path(dotted) is not None:
                        found.add(dotted)
        self._imports[path] = found
        return found

    def _hash(self, path: Path) -> str:
        if path not in self._file_hash:
            self._file_hash[path] = normalised_source_hash(path)
        return self._file_hash[path]

    def fingerprint(self, script: Path) -> dict:
        """{"script": hash, "modules": {dotted: hash}, "digest": combined hash} for a script."""
        script = Path(script)
        seen: dict[str, str] = {}
        todo = list(self._project_imports(script, None))
        while todo:
            mod = todo.pop()
            if mod in seen:
                continue
            path = self._module_path(mod)
            seen[mod] = self._hash(path)
            todo.extend(self._project_imports(path, mod))
        parts = {"script": self._hash(script), "modules": dict(sorted(seen.items()))}
        parts["digest"] = sha256_hex(canonical_json(parts))
        return parts


def node_key(step: str, params: dict, upstream: dict[str, str], inputs: dict, code_digest: str) -> str:
    """The key of a node: see the module docstring. `upstream` maps role -> upstream key."""
    payload = {"step": step, "params": params, "upstream": upstream, "inputs": inputs}
    return sha256_hex(canonical_json(payload) + "|" + code_digest)[:KEY_CHARS]
